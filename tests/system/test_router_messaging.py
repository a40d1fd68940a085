"""Messaging through one router: request/response, balancing, multicast, interop.

Request/response over a dynamic reply address::

    requester ──request (reply-to = its dynamic address)──► service/echo ──► responder
        ▲                                                                       │
        └────────── reply (anonymous relay, to = reply-to) ◄────────────────────┘

Credit-based balancing: three consumers, one ten times slower, share one address; the
router gives each message to a consumer with credit and the fewest unsettled deliveries,
so the slow one takes far fewer.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, deque

from proton import Endpoint
from proton import Message as ProtonMessage

from system_support import ProtonClient, ProtonThread, run_async
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Properties
from switchboard.client.connection import Client, ClientError


# ======================================================================================
# Request/response via a dynamic reply address
# ======================================================================================
class ProtonResponder(ProtonClient):
    """Consumes ``address``; answers each request to its reply-to via the anonymous relay."""

    def __init__(self, url: str, address: str, expected: int) -> None:
        super().__init__(prefetch=10)
        self.url = url
        self.address = address
        self.expected = expected
        self.ready = threading.Event()
        self.waiting: deque[ProtonMessage] = deque()
        self.outcomes: Counter[str] = Counter()
        self.requests = 0

    def on_start(self, event):
        conn = self.connect(event.container, self.url)
        self.receiver = event.container.create_receiver(conn, self.address)
        self.relay = event.container.create_sender(conn, None)

    def on_link_opened(self, event):
        if all(link.state & Endpoint.REMOTE_ACTIVE for link in (self.receiver, self.relay)):
            self.ready.set()

    def on_message(self, event):
        request = event.message
        self.requests += 1
        self.waiting.append(ProtonMessage(
            address=request.reply_to,
            correlation_id=request.correlation_id,
            body=f"reply to {request.body}",
        ))
        self._send()

    def on_sendable(self, event):
        self._send()

    def _send(self):
        while self.waiting and self.relay.credit > 0:
            self.relay.send(self.waiting.popleft())

    def on_accepted(self, event):
        self._outcome("accepted")

    def on_rejected(self, event):
        self._outcome("rejected")

    def on_released(self, event):
        self._outcome("released/modified")

    def _outcome(self, name):
        self.outcomes[name] += 1
        if sum(self.outcomes.values()) == self.expected:
            self.finish()


def test_request_response_our_requester_proton_responder(router) -> None:
    r = router()
    count = 50
    responder = ProtonResponder(r.url, "service/echo", count)
    thread = ProtonThread(responder, timeout=60).start()
    assert responder.ready.wait(20), responder.describe()

    async def requester() -> tuple[str, dict, list]:
        async with await Client.connect(r.url) as client:
            replies = await client.receiver(None, dynamic=True, credit=count)
            reply_to = replies.address
            assert reply_to, "the router gave no dynamic address"
            sender = await client.sender("service/echo")
            futures = []
            for i in range(count):
                request = Message(f"request {i}", properties=Properties(message_id=f"m{i}", correlation_id=i, reply_to=reply_to))
                futures.append(await sender.send(request, wait=False))
            answers = {}
            for _ in range(count):
                item = await replies.receive(timeout=20)
                message = item.message()
                answers[int(message.correlation_id)] = message.body
                item.accept()
            outcomes = await asyncio.gather(*futures)
            return reply_to, answers, outcomes

    reply_to, answers, outcomes = run_async(requester, timeout=60)
    thread.join_result()
    assert reply_to.startswith("_dynamic/")
    assert answers == {i: f"reply to request {i}" for i in range(count)}
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert responder.requests == count
    assert responder.outcomes == {"accepted": count}, responder.outcomes
    assert not responder.errors


class ProtonRequester(ProtonClient):
    """Attaches a dynamic receiver, then sends requests with reply-to set to its address."""

    def __init__(self, url: str, address: str, count: int) -> None:
        super().__init__(prefetch=10)
        self.url = url
        self.address = address
        self.count = count
        self.reply_to = None
        self.sent = 0
        self.accepted = 0
        self.other_outcomes = 0
        self.answers: dict[int, str] = {}
        self.sender = None

    def on_start(self, event):
        self.conn = self.connect(event.container, self.url)
        self.replies = event.container.create_receiver(self.conn, None, dynamic=True)

    def on_link_opened(self, event):
        if event.link.name == self.replies.name and self.sender is None:
            self.reply_to = self.replies.remote_source.address
            self.sender = event.container.create_sender(self.conn, self.address)

    def on_sendable(self, event):
        while self.sender.credit > 0 and self.sent < self.count:
            self.sender.send(ProtonMessage(
                id=f"m{self.sent}", correlation_id=self.sent, reply_to=self.reply_to, body=f"request {self.sent}",
            ))
            self.sent += 1

    def on_message(self, event):
        self.answers[int(event.message.correlation_id)] = event.message.body
        self._check()

    def on_accepted(self, event):
        self.accepted += 1
        self._check()

    def on_rejected(self, event):
        self.other_outcomes += 1
        self._check()

    def on_released(self, event):
        self.other_outcomes += 1
        self._check()

    def _check(self):
        if len(self.answers) == self.count and self.accepted + self.other_outcomes == self.count:
            self.finish()


def test_request_response_proton_requester_our_responder(router) -> None:
    r = router()
    count = 50

    async def responder() -> list:
        async with await Client.connect(r.url) as client:
            requests = await client.receiver("service/echo", credit=10)
            relay = await client.sender(None)
            futures = []
            thread = ProtonThread(ProtonRequester(r.url, "service/echo", count), timeout=60).start()
            for _ in range(count):
                item = await requests.receive(timeout=20)
                request = item.message()
                reply = Message(
                    f"reply to {request.body}",
                    properties=Properties(to=request.reply_to, correlation_id=request.correlation_id),
                )
                futures.append(await relay.send(reply, wait=False))
                item.accept()
            outcomes = await asyncio.gather(*futures)
            requester = await asyncio.to_thread(thread.join_result)
            return outcomes, requester

    outcomes, requester = run_async(responder, timeout=60)
    assert requester.reply_to and requester.reply_to.startswith("_dynamic/")
    assert requester.answers == {i: f"reply to request {i}" for i in range(count)}
    assert requester.accepted == count and requester.other_outcomes == 0
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert not requester.errors


def test_reply_to_a_dynamic_address_that_is_gone_is_released(router) -> None:
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as client:
            replies = await client.receiver(None, dynamic=True)
            reply_to = replies.address
            await replies.close()
            relay = await client.sender(None)
            # Bounded: the detach reaches the router before this message on the same connection.
            return await relay.send(Message("late reply", properties=Properties(to=reply_to)))

    outcome = run_async(scenario, timeout=20)
    assert type(outcome).__name__ == "Released"


# ======================================================================================
# Credit-based balancing
# ======================================================================================
def test_slow_consumer_gets_fewer_messages(router) -> None:
    r = router()
    total = 600
    fast_seconds = 0.002
    slow_seconds = 0.02  # ten times slower to settle

    async def scenario() -> tuple[list[int], list]:
        clients = [await Client.connect(r.url) for _ in range(4)]
        try:
            receivers = [await c.receiver("work/balanced", credit=10) for c in clients[:3]]
            counts = [0, 0, 0]

            async def consume(index: int, seconds: float) -> None:
                receiver = receivers[index]
                while True:
                    item = await receiver.receive()
                    await asyncio.sleep(seconds)  # the work this consumer does per message
                    item.accept()
                    counts[index] += 1

            tasks = [
                asyncio.create_task(consume(0, fast_seconds)),
                asyncio.create_task(consume(1, fast_seconds)),
                asyncio.create_task(consume(2, slow_seconds)),
            ]
            sender = await clients[3].sender("work/balanced")
            futures = [await sender.send(Message(f"job {i}"), wait=False) for i in range(total)]
            outcomes = await asyncio.gather(*futures)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return counts, outcomes
        finally:
            for client in clients:
                await client.close()

    counts, outcomes = run_async(scenario, timeout=90)
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert sum(counts) == total, counts
    fast_a, fast_b, slow = counts
    assert slow < fast_a / 3 and slow < fast_b / 3, counts
    assert slow > 0, counts  # it has credit, so it takes part


# ======================================================================================
# Multicast
# ======================================================================================
class ProtonCollector(ProtonClient):
    """Receives ``expected`` messages from ``address`` and accepts them."""

    def __init__(self, url: str, address: str, expected: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.address = address
        self.expected = expected
        self.bodies: list = []
        self.ready = threading.Event()

    def on_start(self, event):
        conn = self.connect(event.container, self.url)
        self.receiver = event.container.create_receiver(conn, self.address)

    def on_link_opened(self, event):
        self.ready.set()

    def on_message(self, event):
        body = event.message.body
        if isinstance(body, memoryview):
            body = bytes(body)  # Proton lends a view of a buffer it reuses: copy it now
        self.bodies.append(body)
        if len(self.bodies) == self.expected:
            self.finish()


def test_multicast_every_consumer_gets_every_message(router) -> None:
    r = router()
    count = 300
    address = "multicast/news"
    proton_consumer = ProtonCollector(r.url, address, count)
    thread = ProtonThread(proton_consumer, timeout=60).start()
    assert proton_consumer.ready.wait(20)

    async def scenario():
        consumers = [await Client.connect(r.url) for _ in range(2)]
        try:
            receivers = [await c.receiver(address, credit=50) for c in consumers]
            async with await Client.connect(r.url) as producer:
                sender = await producer.sender(address)
                futures = [await sender.send(Message(f"news {i}"), wait=False) for i in range(count)]
                received: list[list] = [[], []]
                held = [[], []]

                async def collect(index: int) -> None:
                    while len(received[index]) < count:
                        item = await receivers[index].receive(timeout=20)
                        received[index].append(item.message().body)
                        held[index].append(item)

                # The consumers settle nothing until the sender has every outcome: multicast
                # is settled at the router, not by the consumers.
                collecting = asyncio.gather(collect(0), collect(1))
                outcomes = await asyncio.gather(*futures)
                await collecting
                for items in held:
                    for item in items:
                        item.accept()
                return outcomes, received
        finally:
            for client in consumers:
                await client.close()

    outcomes, received = run_async(scenario, timeout=60)
    expected = [f"news {i}" for i in range(count)]
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert received[0] == expected
    assert received[1] == expected
    thread.join_result()
    assert proton_consumer.bodies == expected


# ======================================================================================
# Interop: Proton and our client through the router
# ======================================================================================
class ProtonSender(ProtonClient):
    def __init__(self, url: str, address: str, count: int) -> None:
        super().__init__()
        self.url = url
        self.address = address
        self.count = count
        self.sent = 0
        self.outcomes: Counter[str] = Counter()

    def on_start(self, event):
        conn = self.connect(event.container, self.url)
        event.container.create_sender(conn, self.address)

    def on_sendable(self, event):
        while event.sender.credit > 0 and self.sent < self.count:
            event.sender.send(ProtonMessage(body=f"message {self.sent}", id=self.sent))
            self.sent += 1

    def on_accepted(self, event):
        self._outcome("accepted")

    def on_rejected(self, event):
        self._outcome("rejected")

    def on_released(self, event):
        self._outcome("released/modified")

    def _outcome(self, name):
        self.outcomes[name] += 1
        if sum(self.outcomes.values()) == self.count:
            self.finish()


def test_proton_sender_to_our_receiver(router) -> None:
    r = router()
    count = 1000

    async def scenario():
        async with await Client.connect(r.url) as client:
            receiver = await client.receiver("interop/p2s", credit=100)
            thread = ProtonThread(ProtonSender(r.url, "interop/p2s", count), timeout=60).start()
            bodies = []
            for _ in range(count):
                item = await receiver.receive(timeout=20)
                bodies.append(item.message().body)
                item.accept()
            sender = await asyncio.to_thread(thread.join_result)
            return bodies, sender

    bodies, sender = run_async(scenario, timeout=90)
    assert bodies == [f"message {i}" for i in range(count)]
    assert sender.outcomes == {"accepted": count}
    assert not sender.errors


def test_our_sender_to_proton_receiver(router) -> None:
    r = router()
    count = 1000
    collector = ProtonCollector(r.url, "interop/s2p", count, prefetch=100)
    thread = ProtonThread(collector, timeout=60).start()
    assert collector.ready.wait(20)

    async def scenario():
        async with await Client.connect(r.url) as client:
            sender = await client.sender("interop/s2p")
            futures = [await sender.send(Message(f"message {i}"), wait=False) for i in range(count)]
            return await asyncio.gather(*futures)

    outcomes = run_async(scenario, timeout=90)
    thread.join_result()
    assert collector.bodies == [f"message {i}" for i in range(count)]
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert not collector.errors


# ======================================================================================
# Outcomes travel end to end
# ======================================================================================
def test_consumer_outcomes_reach_the_sender(router) -> None:
    """Whatever the consumer decides — accept, reject, release, modify — the sender learns."""
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
            receiver = await consumer_client.receiver("work/outcomes", credit=10)
            sender = await client.sender("work/outcomes")
            futures = [await sender.send(Message(name), wait=False) for name in ("accept", "reject", "release", "modify")]
            for _ in range(4):
                item = await receiver.receive(timeout=10)
                name = item.message().body
                if name == "accept":
                    item.accept()
                elif name == "reject":
                    item.reject("app:bad-request", "cannot do that")
                elif name == "release":
                    item.release()
                else:
                    item.modify(delivery_failed=True, undeliverable_here=True)
            return await asyncio.gather(*futures)

    accepted, rejected, released, modified = run_async(scenario, timeout=30)
    assert type(accepted).__name__ == "Accepted"
    assert type(rejected).__name__ == "Rejected"
    assert str(rejected.error.condition) == "app:bad-request" and rejected.error.description == "cannot do that"
    assert type(released).__name__ == "Released"
    assert type(modified).__name__ == "Modified"
    assert modified.delivery_failed and modified.undeliverable_here


def test_consumer_detaching_with_unsettled_deliveries_fails_them_back(router) -> None:
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
            receiver = await consumer_client.receiver("work/detach", credit=10)
            sender = await client.sender("work/detach")
            futures = [await sender.send(Message(f"m {i}"), wait=False) for i in range(5)]
            for _ in range(5):
                await receiver.receive(timeout=10)  # taken, never settled
            await receiver.close()
            done, pending = await asyncio.wait(futures, timeout=10)
            assert not pending
            return [f.result() for f in futures]

    for outcome in run_async(scenario, timeout=30):
        assert type(outcome).__name__ == "Modified" and outcome.delivery_failed


def test_presettled_messages_reach_a_ready_consumer(router) -> None:
    r = router()
    count = 300

    async def scenario():
        async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
            receiver = await consumer_client.receiver("work/presettled", credit=50)
            sender = await client.sender("work/presettled", presettled=True)

            async def send_all():
                for i in range(count):
                    assert await sender.send(Message(f"m {i}")) is None

            sending = asyncio.create_task(send_all())
            bodies = []
            for _ in range(count):
                item = await receiver.receive(timeout=10)
                bodies.append(item.message().body)
                assert item.delivery.remote_settled
            await sending
            return bodies

    assert run_async(scenario, timeout=30) == [f"m {i}" for i in range(count)]


class Drainer(ProtonClient):
    """Attaches to an empty address, asks to drain 10 credits, records the answer."""

    def __init__(self, url: str) -> None:
        super().__init__(prefetch=0)
        self.url = url
        self.drained = None

    def on_start(self, event):
        conn = self.connect(event.container, self.url)
        self.receiver = event.container.create_receiver(conn, "work/empty")

    def on_link_opened(self, event):
        self.receiver.drain(10)

    def on_link_flow(self, event):
        if not self.receiver.draining() and self.drained is None:
            self.drained = self.receiver.credit
            self.finish()


def test_drain_on_an_empty_address_is_answered(router) -> None:
    r = router()
    drainer = ProtonThread(Drainer(r.url), timeout=20).start().join_result()
    assert drainer.drained == 0


def test_large_message_through_the_router(router) -> None:
    """1 MiB from our sender to a Proton receiver (the router reassembles and re-frames)."""
    r = router()
    body = bytes(range(256)) * 4096
    collector = ProtonCollector(r.url, "work/large", 3)
    thread = ProtonThread(collector, timeout=60).start()
    assert collector.ready.wait(20)

    async def scenario():
        async with await Client.connect(r.url, max_frame_size=16384) as client:
            sender = await client.sender("work/large")
            futures = [await sender.send(Message(body), wait=False) for _ in range(3)]
            return await asyncio.gather(*futures)

    outcomes = run_async(scenario, timeout=60)
    thread.join_result()
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert collector.bodies == [body] * 3


# ======================================================================================
# Credit follows consumers; configured distributions
# ======================================================================================
def test_sender_waits_for_a_consumer_then_flows(router) -> None:
    """No consumer: no credit, so the send waits (nothing is held or lost); a consumer
    attaching brings credit and the waiting message is delivered."""
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as client, await Client.connect(r.url) as consumer_client:
            sender = await client.sender("work/later")
            assert sender.link.credit == 0
            sending = asyncio.create_task(sender.send(Message("early")))
            await asyncio.sleep(0)  # let it reach its wait for credit
            assert not sending.done()
            receiver = await consumer_client.receiver("work/later")
            item = await receiver.receive(timeout=10)
            item.accept()
            return item.message().body, await asyncio.wait_for(sending, 10)

    body, outcome = run_async(scenario, timeout=30)
    assert body == "early" and isinstance(outcome, Accepted)


CONFIGURED_ADDRESSES = """
[[addresses]]
prefix = "fanout/"
distribution = "multicast"

[[addresses]]
prefix = "fanout/rpc/"
distribution = "balanced"
"""


def test_configured_prefixes_longest_wins(router) -> None:
    r = router(CONFIGURED_ADDRESSES)

    async def multicast_counts() -> list[int]:
        async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
            receivers = [await consumer_client.receiver("fanout/news", credit=20) for _ in range(2)]
            sender = await client.sender("fanout/news")
            outcomes = await asyncio.gather(*[await sender.send(Message(f"m {i}"), wait=False) for i in range(10)])
            assert all(isinstance(o, Accepted) for o in outcomes)  # settled by the router
            counts = []
            for receiver in receivers:
                for _ in range(10):
                    (await receiver.receive(timeout=10)).accept()
                counts.append(10)
            return counts

    async def balanced_counts() -> list[int]:
        async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
            receivers = [await consumer_client.receiver("fanout/rpc/call", credit=20) for _ in range(2)]
            sender = await client.sender("fanout/rpc/call")
            futures = [await sender.send(Message(f"m {i}"), wait=False) for i in range(10)]
            taken = [0, 0]

            async def take(index: int) -> None:
                while True:
                    item = await receivers[index].receive()
                    item.accept()
                    taken[index] += 1

            tasks = [asyncio.create_task(take(0)), asyncio.create_task(take(1))]
            outcomes = await asyncio.gather(*futures)  # all settled: every message was taken once
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(o, Accepted) for o in outcomes)
            return taken

    assert run_async(multicast_counts, timeout=30) == [10, 10]
    taken = run_async(balanced_counts, timeout=30)
    assert sum(taken) == 10, taken


def test_inter_router_listener_refuses_clients(router) -> None:
    r = router("[[listeners]]\nport = 0\n\n[[listeners]]\nport = 0\nrole = 'inter-router'\n", listen=False)
    line = r.stdout.wait_for(r":(\d+) \(inter-router\)", 10)
    assert line is not None, r.output()
    ports = {"inter-router": int(line.group(1))}

    async def scenario():
        try:
            client = await Client.connect(f"amqp://127.0.0.1:{ports['inter-router']}")
        except ClientError as exc:
            return exc
        try:
            await client.receiver("x")
        except ClientError as exc:
            return exc
        finally:
            await client.close()

    refused = run_async(scenario, timeout=20)
    assert isinstance(refused, ClientError) and refused.condition == "amqp:not-allowed"
    assert 'role = "normal"' in str(refused)


def test_proton_blocking_clients_through_the_router(router) -> None:
    """Proton's BlockingConnection on both ends (each call bounded by its timeout)."""
    from proton import Timeout
    from proton.utils import BlockingConnection

    r = router()
    consumer = BlockingConnection(r.url, timeout=10)
    producer = BlockingConnection(r.url, timeout=10)
    try:
        receiver = consumer.create_receiver("work/blocking", credit=20)
        sender = producer.create_sender("work/blocking")
        sent = []

        def send_all():  # each send() returns once the receiver has accepted
            for i in range(50):
                sent.append(sender.send(ProtonMessage(body=f"b {i}")))

        thread = threading.Thread(target=send_all, daemon=True)
        thread.start()
        bodies = []
        for _ in range(50):
            bodies.append(receiver.receive(timeout=10).body)
            receiver.accept()
        # Keep the consumer's connection turning until the last acceptance has reached the
        # sender (bounded: 100 turns of at most 0.1 s).
        for _ in range(100):
            if not thread.is_alive():
                break
            try:
                consumer.wait(lambda: not thread.is_alive(), timeout=0.1)
            except Timeout:
                pass
        assert not thread.is_alive(), "the sender is still waiting for outcomes"
        assert len(sent) == 50 and all(d.remote_state == d.ACCEPTED for d in sent)
        assert bodies == [f"b {i}" for i in range(50)]
    finally:
        producer.close()
        consumer.close()
