"""The blocking client from many threads at once, against a real router.

Every test drives ``BlockingClient`` from plain threads (no event loop in the test) and
checks what a threaded program would: each call returns its own answer, messages arrive
once each, settlements reach the sender, timeouts and closes end the waiting calls.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable

import pytest

from system_support import HOST
from test_client_failover import WAIT, kill, router_list
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Modified, Properties, Rejected, Released
from switchboard.client import (
    BlockingClient,
    BlockingReceiver,
    ClientError,
    NotDelivered,
    OutcomeUnknown,
    Reconnect,
    RequestTimeout,
    Router,
)

THREADS = 16
QUICK = Reconnect(timeout=60.0, initial_delay=0.05, max_delay=0.5)


class ThreadedResponder:
    """A service run by ``workers`` threads sharing one receiver: each request is
    accepted and answered with ``tag:body``; ``hold`` set: accepted, never answered."""

    def __init__(self, client: BlockingClient, address: str, tag: str, workers: int = 2) -> None:
        self.receiver = client.receiver(address, credit=50)
        self.replies = client.sender(None)
        self.tag = tag
        self.hold = threading.Event()
        self.held: list[Message] = []
        self.handled_by: dict[str, int] = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._serve, args=(n,), daemon=True) for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def _serve(self, worker: int) -> None:
        for item in self.receiver:  # ends when the receiver (or its client) does
            request = item.message()
            item.accept()
            if self.hold.is_set():
                with self._lock:
                    self.held.append(request)
                continue
            reply = Message(
                body=f"{self.tag}:{request.body}",
                properties=Properties(to=request.reply_to, correlation_id=request.properties.message_id),
            )
            self.replies.send_async(reply)
            with self._lock:
                self.handled_by[request.body] = worker

    def join(self) -> None:
        for thread in self._threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in self._threads), "a responder thread did not end"


def in_threads(work: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """Run ``work(n)`` for n in range(count), each in a thread of its own, all at once;
    return the results in order (re-raising the first failure)."""
    start = threading.Barrier(count)

    def run(n: int) -> Any:
        start.wait(WAIT)
        return work(n)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run, n) for n in range(count)]
        return [future.result(timeout=120) for future in futures]


# ======================================================================================
def test_sixteen_threads_send_receive_and_request_at_once(router) -> None:
    r = router()
    with BlockingClient.connect(r.url) as server, BlockingClient.connect(r.url) as client:
        responder = ThreadedResponder(server, "blocking/service", "svc", workers=3)
        sink: BlockingReceiver = server.receiver("blocking/sink", credit=20)
        sender = client.sender("blocking/sink")
        received: list[str] = []

        def consume() -> None:
            for _ in range(THREADS * 10):
                item = sink.receive(timeout=WAIT)
                received.append(item.message().body)
                item.accept()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()

        def work(n: int) -> tuple[list[Any], list[str]]:
            outcomes, replies = [], []
            for i in range(10):
                outcomes.append(sender.send(Message(body=f"m-{n}-{i}"), timeout=WAIT))
                replies.append(client.request("blocking/service", Message(body=f"q-{n}-{i}"), timeout=WAIT).body)
            return outcomes, replies

        results = in_threads(work)
        consumer.join(WAIT)
        assert not consumer.is_alive()
        for n, (outcomes, replies) in enumerate(results):
            assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
            assert replies == [f"svc:q-{n}-{i}" for i in range(10)]
        assert sorted(received) == sorted(f"m-{n}-{i}" for n in range(THREADS) for i in range(10))
        # The service's three threads shared its receiver: each request was handled once.
        assert len(responder.handled_by) == THREADS * 10
    responder.join()


def test_pipelined_sends_keep_their_order_and_each_gets_its_outcome(router) -> None:
    r = router()
    with BlockingClient.connect(r.url) as client:
        receiver = client.receiver("blocking/pipeline", credit=200)
        sender = client.sender("blocking/pipeline")
        futures = [sender.send_async(Message(body=f"p{i}")) for i in range(100)]
        bodies = []
        for _ in range(100):
            item = receiver.receive(timeout=WAIT)
            bodies.append(item.message().body)
            item.accept()
        assert bodies == [f"p{i}" for i in range(100)]
        assert all(isinstance(future.result(timeout=WAIT), Accepted) for future in futures)


def test_settlements_from_threads_reach_the_sender(router) -> None:
    r = router()
    with BlockingClient.connect(r.url) as client:
        receiver = client.receiver("blocking/settle", credit=10)
        sender = client.sender("blocking/settle")
        settle = {
            "accept": lambda item: item.accept(),
            "reject": lambda item: item.reject("test:bad-order", "order 7 is malformed"),
            "release": lambda item: item.release(),
            "modify": lambda item: item.modify(delivery_failed=True, undeliverable_here=True),
        }
        outcomes = {}
        for name, action in settle.items():
            future = sender.send_async(Message(body=name))
            item = receiver.receive(timeout=WAIT)
            assert item.message().body == name
            threading.Thread(target=action, args=(item,)).start()
            outcomes[name] = future.result(timeout=WAIT)
        assert isinstance(outcomes["accept"], Accepted)
        assert isinstance(outcomes["reject"], Rejected)
        assert str(outcomes["reject"].error.condition) == "test:bad-order"
        assert outcomes["reject"].error.description == "order 7 is malformed"
        assert isinstance(outcomes["release"], Released)
        assert isinstance(outcomes["modify"], Modified)
        assert outcomes["modify"].delivery_failed and outcomes["modify"].undeliverable_here


def test_timeouts_and_errors_reach_the_calling_thread(router) -> None:
    r = router()
    with BlockingClient.connect(r.url) as server, BlockingClient.connect(r.url) as client:
        receiver = client.receiver("blocking/quiet")
        with pytest.raises(TimeoutError):
            receiver.receive(timeout=0.2)
        with pytest.raises(NotDelivered):
            client.request("blocking/nobody", Message(body="?"), timeout=WAIT)
        responder = ThreadedResponder(server, "blocking/slow", "slow")
        responder.hold.set()
        requester = client.requester()
        with pytest.raises(RequestTimeout):
            requester.request("blocking/slow", Message(body="late"), timeout=0.5)
        responder.hold.clear()
        assert requester.request("blocking/slow", Message(body="on time"), timeout=WAIT).body == "slow:on time"


def test_calling_from_the_loop_thread_is_refused(router) -> None:
    """An event listener runs on the client's loop thread: a blocking call there would
    wait for itself, so it raises instead."""
    r = router()
    with BlockingClient.connect(r.url) as client:
        outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def on_loop() -> None:
            try:
                client.sender("blocking/self")
            except RuntimeError as exc:
                outcome.set_result(exc)
            else:
                outcome.set_result(None)

        client.loop.call_soon_threadsafe(on_loop)
        refused = outcome.result(timeout=WAIT)
        assert isinstance(refused, RuntimeError) and "its own event loop thread" in str(refused)
        assert client.sender("blocking/self").address == "blocking/self"  # still fine from here


def test_close_ends_the_calls_waiting_in_other_threads(router) -> None:
    r = router()
    with BlockingClient.connect(r.url) as server:
        responder = ThreadedResponder(server, "blocking/held", "held")
        responder.hold.set()
        client = BlockingClient.connect(r.url)
        receiver = client.receiver("blocking/never")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            waiting = [pool.submit(receiver.receive, None)] + [
                pool.submit(client.request, "blocking/held", Message(body=f"h{i}"), timeout=None) for i in range(3)
            ]
            pause = threading.Event()
            for _ in range(int(WAIT * 100)):  # bounded: until the service holds all three
                if len(responder.held) == 3:
                    break
                pause.wait(0.01)
            assert len(responder.held) == 3
            client.close()
            for future in waiting:
                with pytest.raises(ClientError):
                    future.result(timeout=WAIT)
        with pytest.raises(ClientError, match="client closed"):
            client.request("blocking/held", Message(body="after"), timeout=WAIT)
    responder.join()


def test_threads_requesting_through_a_failover(router) -> None:
    """Sixteen threads keep requesting while r1 is killed: every request either gets
    its reply or fails with OutcomeUnknown (none waits for its long timeout), and each
    thread's next request is answered by r2."""
    r1, r2 = router(), router()
    second = Router(HOST, r2.port)
    with BlockingClient.connect(r1.url) as server1, BlockingClient.connect(r2.url) as server2, \
            BlockingClient.connect(router_list(r1.port, r2.port), reconnect=QUICK) as client:
        ThreadedResponder(server1, "blocking/failover", "r1")
        ThreadedResponder(server2, "blocking/failover", "r2")
        killed = threading.Event()
        answered_once = threading.Barrier(THREADS + 1)

        def work(n: int) -> list[Any]:
            results: list[Any] = []
            for i in range(10_000):  # bounded; ends once r2 has answered this thread
                try:
                    results.append(client.request("blocking/failover", Message(body=f"{n}-{i}"), timeout=120).body)
                except OutcomeUnknown as exc:
                    results.append(exc)
                if i == 0:
                    answered_once.wait(WAIT)
                if killed.is_set() and isinstance(results[-1], str) and results[-1].startswith("r2:"):
                    return results
            raise AssertionError(f"thread {n} never got an answer from r2")

        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(work, n) for n in range(THREADS)]
            answered_once.wait(WAIT)  # every thread has had a reply: requests are in flight
            kill(r1)
            killed.set()
            results = [future.result(timeout=120) for future in futures]
        assert client.router == second
        for thread_results in results:
            assert all(isinstance(result, (str, OutcomeUnknown)) for result in thread_results)
            assert all(result.startswith(("r1:", "r2:")) for result in thread_results if isinstance(result, str))


def test_the_loop_thread_ends_with_the_client(router) -> None:
    r = router()
    before = {thread.ident for thread in threading.enumerate()}
    client = BlockingClient.connect(r.url)
    loop_threads = [t for t in threading.enumerate() if t.ident not in before and t.name == "switchboard-client"]
    assert len(loop_threads) == 1
    client.close()
    client.close()  # twice is fine
    loop_threads[0].join(WAIT)
    assert not loop_threads[0].is_alive()
    with pytest.raises(OSError):  # nothing listens there: the connect fails, its thread ends
        BlockingClient.connect(f"amqp://{HOST}:1", timeout=5.0)
    assert [t for t in threading.enumerate() if t.ident not in before and t.name == "switchboard-client" and t.is_alive()] == []



def test_threads_waiting_on_one_receiver_each_get_a_message(router) -> None:
    r = router()
    with BlockingClient.connect(r.url) as client:
        receiver = client.receiver("blocking/shared", credit=10)
        sender = client.sender("blocking/shared")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            waiting = [pool.submit(receiver.receive, WAIT) for _ in range(4)]
            pause = threading.Event()
            for _ in range(int(WAIT * 100)):  # bounded: until all four threads are in receive()
                if all(future.running() for future in waiting):
                    break
                pause.wait(0.01)
            outcomes = [sender.send_async(Message(body=f"s{i}")) for i in range(4)]
            items = [future.result(timeout=2 * WAIT) for future in waiting]
            for item in items:
                item.accept()
        assert sorted(item.message().body for item in items) == ["s0", "s1", "s2", "s3"]
        assert all(isinstance(outcome.result(timeout=WAIT), Accepted) for outcome in outcomes)
