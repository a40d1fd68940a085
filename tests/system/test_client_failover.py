"""Client failover against real router processes.

    client ──► r1 (killed, stopped, or restarted)
       └ ─ ─► r2 (the next in the URL's list)

Two independent routers: a client on r1 whose router dies goes on with r2, its links
attached again there.  What was in flight on r1 is accounted for: every send resolves to
an outcome or an error, deliveries written to r1 and not settled are ``OutcomeUnknown``,
nothing arrives twice, and messages taken from r1 cannot be settled any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from typing import Any, Callable, Iterator

import pytest

from system_support import HOST, run_async, wait_until
from tls_support import Pki
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted
from switchboard.io.tls import client_context
from switchboard.client import (
    Client,
    ClientError,
    ClientEvent,
    ConnectAttemptFailed,
    Connected,
    ConnectionLost,
    GaveUp,
    OutcomeUnknown,
    Reconnect,
    ReceiverAddressChanged,
    RoundFailed,
    Router,
)

WAIT = 30.0
"""Seconds for anything that should happen within a few: generous on a loaded machine."""

QUICK = Reconnect(timeout=60.0, initial_delay=0.05, max_delay=0.5)
"""Fails over fast, and gives up within the test's bound if something is wrong."""


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where nothing listens: bound (so nobody else takes it), never
    listening, so every connection to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def router_list(*ports: int, address: str = "") -> str:
    return "amqp://" + ",".join(f"{HOST}:{port}" for port in ports) + f"/{address}"


class Recorder:
    """A client event listener that keeps every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[ClientEvent] = []
        self._waiters: list[tuple[Callable[[ClientEvent], bool], asyncio.Future[ClientEvent]]] = []

    def __call__(self, event: ClientEvent) -> None:
        self.events.append(event)
        for matches, future in list(self._waiters):
            if not future.done() and matches(event):
                future.set_result(event)

    def of(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait(self, matches: Callable[[ClientEvent], bool], what: str, timeout: float = WAIT) -> Any:
        for event in self.events:
            if matches(event):
                return event
        future: asyncio.Future[ClientEvent] = asyncio.get_running_loop().create_future()
        entry = (matches, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; events: {self.events}") from None
        finally:
            self._waiters.remove(entry)


def failed_over_to(router: Router) -> Callable[[ClientEvent], bool]:
    return lambda event: isinstance(event, Connected) and event.reconnected and event.router == router


def kill(process: Any) -> None:
    process.expect_exit = True
    process.kill()


def body_of(item: Any) -> str:
    return item.message().body


async def deliver(sender: Any, receiver: Any, body: str) -> tuple[Any, str]:
    """Send one message, take the next one from ``receiver`` and accept it: return the
    sender's outcome and the body received (outcomes are end to end: the receiver's)."""
    outcome = await sender.send(Message(body=body), wait=False)
    item = await receiver.receive(timeout=WAIT)
    item.accept()
    return await outcome, body_of(item)


# ======================================================================================
def test_connect_skips_a_router_that_is_down(router) -> None:
    r2 = router()
    with refused_port() as dead:
        url = router_list(dead, r2.port, address="skip")

        async def scenario() -> None:
            events = Recorder()
            async with await Client.connect(url, on_event=events) as client:
                assert client.router == Router(HOST, r2.port)
                receiver = await client.receiver("skip")
                sender = await client.sender("skip")
                outcome = await sender.send(Message(body="hello"), wait=False)
                item = await receiver.receive(timeout=WAIT)
                assert body_of(item) == "hello"
                item.accept()
                assert isinstance(await outcome, Accepted)
            failed = events.of(ConnectAttemptFailed)
            assert [(event.router.port, event.attempt) for event in failed] == [(dead, 1)]
            assert isinstance(failed[0].error, ConnectionRefusedError)
            assert events.of(Connected) == [Connected(Router(HOST, r2.port), reconnected=False)]

        run_async(scenario, timeout=60)


def test_sigkill_mid_stream_fails_over_and_accounts_for_every_message(router) -> None:
    """A sender pipelines as fast as it can and a receiver accepts; r1 is killed in the
    middle.  Both go on with r2.  Every send resolves, each to accepted or OutcomeUnknown;
    every accepted message was received; nothing was received twice; and messages sent
    after the failover are accepted."""
    r1, r2 = router(), router()
    url = router_list(r1.port, r2.port)
    first, second = Router(HOST, r1.port), Router(HOST, r2.port)

    async def scenario() -> None:
        rx_events, tx_events = Recorder(), Recorder()
        rx_client = await Client.connect(url, reconnect=QUICK, on_event=rx_events)
        tx_client = await Client.connect(url, reconnect=QUICK, on_event=tx_events)
        assert rx_client.router == first and tx_client.router == first
        receiver = await rx_client.receiver("stream", credit=50)
        sender = await tx_client.sender("stream")

        received: list[str] = []
        not_settled: list[str] = []
        after_failover: list[str] = []
        sent: list[tuple[str, asyncio.Future[Any]]] = []
        stop = asyncio.Event()

        async def consume() -> None:
            async for item in receiver:
                body = body_of(item)
                received.append(body)
                if tx_client.router == second and rx_client.router == second:
                    after_failover.append(body)
                try:
                    item.accept()
                except ClientError:
                    not_settled.append(body)

        async def produce() -> None:
            for number in range(100_000):
                if stop.is_set():
                    return
                body = f"m-{number}"
                sent.append((body, await sender.send(Message(body=body), wait=False)))

        consumer = asyncio.create_task(consume())
        producer = asyncio.create_task(produce())
        async with asyncio.timeout(WAIT):
            while len(received) < 300:
                await asyncio.sleep(0.01)
        kill(r1)
        await rx_events.wait(failed_over_to(second), "the receiver to fail over to r2")
        await tx_events.wait(failed_over_to(second), "the sender to fail over to r2")
        async with asyncio.timeout(WAIT):
            while len(after_failover) < 300:
                await asyncio.sleep(0.01)
        stop.set()
        await producer

        outcomes = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        by_kind: dict[str, list[str]] = {"accepted": [], "unknown": [], "other": []}
        for (body, _), outcome in zip(sent, outcomes):
            kind = "accepted" if isinstance(outcome, Accepted) else "unknown" if isinstance(outcome, OutcomeUnknown) else "other"
            by_kind[kind].append(body)
        assert not by_kind["other"], [o for o in outcomes if not isinstance(o, (Accepted, OutcomeUnknown))][:5]
        assert len(received) == len(set(received)), "a message arrived twice"
        missing = set(by_kind["accepted"]) - set(received)
        assert not missing, f"accepted but never received: {sorted(missing)[:10]}"
        assert not set(by_kind["accepted"]) & set(not_settled), "accepted although its settlement failed"
        # The failover's accounting matches what the sender was told.
        lost = tx_events.of(ConnectionLost)
        assert [event.router for event in lost] == [first]
        assert lost[0].outcome_unknown == len(by_kind["unknown"])
        # Sends after the failover went through r2 and were accepted.
        assert set(after_failover) <= set(by_kind["accepted"]) | set(by_kind["unknown"])
        assert len(after_failover) >= 300
        await tx_client.close()
        await rx_client.close()
        await consumer

    run_async(scenario, timeout=180)


def test_in_flight_deliveries_are_reported_unknown_and_held_messages_cannot_be_settled(router) -> None:
    """Fifteen messages sit unsettled at the receiver when r1 dies, ten taken by the
    application and five still prefetched: the sender gets OutcomeUnknown for exactly
    those fifteen, the ten cannot be settled, the five are not handed out, and after the
    failover new messages flow without any of the fifteen coming again."""
    r1, r2 = router(), router()
    url = router_list(r1.port, r2.port)
    first, second = Router(HOST, r1.port), Router(HOST, r2.port)

    async def scenario() -> None:
        rx_events, tx_events = Recorder(), Recorder()
        async with await Client.connect(url, reconnect=QUICK, on_event=rx_events) as rx_client, \
                await Client.connect(url, reconnect=QUICK, on_event=tx_events) as tx_client:
            receiver = await rx_client.receiver("held", credit=20)
            sender = await tx_client.sender("held")
            futures = [await sender.send(Message(body=f"held-{i}"), wait=False) for i in range(15)]
            held = [await receiver.receive(timeout=WAIT) for _ in range(10)]
            assert [body_of(item) for item in held] == [f"held-{i}" for i in range(10)]
            await wait_until(lambda: len(receiver.link.unsettled) == 15, WAIT, "five more prefetched")

            kill(r1)
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            assert all(isinstance(outcome, OutcomeUnknown) for outcome in outcomes), outcomes
            assert "may have been delivered" in str(outcomes[0])
            assert str(first) in str(outcomes[0])
            for item in held:
                with pytest.raises(ClientError, match="cannot settle"):
                    item.accept()

            await rx_events.wait(failed_over_to(second), "the receiver to fail over to r2")
            await tx_events.wait(failed_over_to(second), "the sender to fail over to r2")
            lost = tx_events.of(ConnectionLost)[0]
            assert (lost.router, lost.outcome_unknown, lost.resending) == (first, 15, 0)
            assert rx_client.router == second and tx_client.router == second

            # In order on one link: had any of the fifteen stayed or come again, it would
            # be first.
            for i in range(20):
                outcome, body = await deliver(sender, receiver, f"after-{i}")
                assert isinstance(outcome, Accepted) and body == f"after-{i}"

    run_async(scenario, timeout=120)


def test_sends_waiting_during_the_outage_go_out_on_the_next_router(router) -> None:
    """Messages sent while the client has no router are not failed: they wait, and are
    delivered once the client is on r2."""
    r1, r2 = router(), router()
    url = router_list(r1.port, r2.port)
    second = Router(HOST, r2.port)

    async def scenario() -> None:
        tx_events = Recorder()
        async with await Client.connect(url, reconnect=QUICK) as rx_client, \
                await Client.connect(url, reconnect=QUICK, on_event=tx_events) as tx_client:
            receiver = await rx_client.receiver("outage")
            sender = await tx_client.sender("outage")
            outcome, _ = await deliver(sender, receiver, "before")
            assert isinstance(outcome, Accepted)
            kill(r1)
            await tx_events.wait(lambda e: isinstance(e, ConnectionLost), "the sender to see r1 go")
            assert tx_client.router is None
            sends = [asyncio.create_task(sender.send(Message(body=f"during-{i}"))) for i in range(5)]
            bodies = []
            for _ in range(5):
                item = await receiver.receive(timeout=WAIT)
                item.accept()
                bodies.append(body_of(item))
            assert sorted(bodies) == [f"during-{i}" for i in range(5)]
            outcomes = await asyncio.gather(*sends)
            assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
            assert tx_client.router == second

    run_async(scenario, timeout=120)


def test_messages_never_written_are_sent_again_on_the_next_router(router) -> None:
    """The socket to r1 is cut by our side (as a network fault would) and, before the
    loop notices, two more messages are sent: the engine takes them, but they are never
    written.  They are not reported unknown: they go out on r2, and arrive once each."""
    r1, r2 = router(), router()
    url = router_list(r1.port, r2.port)
    second = Router(HOST, r2.port)

    async def scenario() -> None:
        tx_events = Recorder()
        async with await Client.connect(router_list(r2.port)) as rx_client, \
                await Client.connect(url, reconnect=QUICK, on_event=tx_events) as tx_client:
            receiver = await rx_client.receiver("unwritten")
            # A consumer on r1 too, so that r1 gives the sender credit.
            async with await Client.connect(router_list(r1.port)) as r1_consumer:
                await r1_consumer.receiver("unwritten")
                sender = await tx_client.sender("unwritten")
                await wait_until(lambda: sender.link.credit >= 2, WAIT, "credit from r1")
                tx_client.protocol.transport.abort()
                outcomes = [await sender.send(Message(body=f"unwritten-{i}"), wait=False) for i in range(2)]
                lost = await tx_events.wait(lambda e: isinstance(e, ConnectionLost), "the cut to be noticed")
                assert (lost.outcome_unknown, lost.resending) == (0, 2)
                await tx_events.wait(failed_over_to(second), "the failover to r2")
                bodies = []
                for _ in range(2):
                    item = await receiver.receive(timeout=WAIT)
                    item.accept()
                    bodies.append(body_of(item))
                assert bodies == ["unwritten-0", "unwritten-1"]
                assert all(isinstance(outcome, Accepted) for outcome in await asyncio.gather(*outcomes))

    run_async(scenario, timeout=120)


def test_dynamic_receiver_gets_a_new_address_and_says_so(router) -> None:
    # Dynamic addresses name the router that made them: ids differ, as in a network.
    r1, r2 = router('[router]\nid = "r1"\n'), router('[router]\nid = "r2"\n')
    url = router_list(r1.port, r2.port)
    second = Router(HOST, r2.port)

    async def scenario() -> None:
        events = Recorder()
        async with await Client.connect(url, reconnect=QUICK, on_event=events) as client:
            replies = await client.receiver(None, dynamic=True)
            old = replies.address
            assert old
            kill(r1)
            changed = await events.wait(lambda e: isinstance(e, ReceiverAddressChanged), "a new reply address")
            assert changed.receiver is replies and changed.old == old and changed.new == replies.address
            assert replies.address and replies.address != old
            await events.wait(failed_over_to(second), "the failover to r2")
            sender = await client.sender(replies.address)
            outcome, body = await deliver(sender, replies, "to the new address")
            assert isinstance(outcome, Accepted) and body == "to the new address"

    run_async(scenario, timeout=120)


def test_back_off_between_rounds_when_every_router_is_down() -> None:
    """Attempts go round the list in order; a full round is followed by a growing delay;
    the policy's bound ends it with an error naming each router."""
    policy = Reconnect(max_attempts=6, initial_delay=0.01, max_delay=0.03, factor=2.0, jitter=0.0)

    async def scenario() -> None:
        with refused_port() as a, refused_port() as b:
            events = Recorder()
            with pytest.raises(ClientError) as failure:
                await Client.connect(router_list(a, b, address="q"), reconnect=policy, on_event=events)
            shape = [
                (type(e).__name__, e.router.port if isinstance(e, ConnectAttemptFailed) else e.delay)
                for e in events.events
            ]
            assert shape == [
                ("ConnectAttemptFailed", a), ("ConnectAttemptFailed", b), ("RoundFailed", 0.01),
                ("ConnectAttemptFailed", a), ("ConnectAttemptFailed", b), ("RoundFailed", 0.02),
                ("ConnectAttemptFailed", a), ("ConnectAttemptFailed", b),
            ]
            assert [e.attempt for e in events.of(ConnectAttemptFailed)] == [1, 2, 3, 4, 5, 6]
            assert [e.round for e in events.of(RoundFailed)] == [1, 2]
            message = str(failure.value)
            assert "6 attempts" in message and f"{HOST}:{a}" in message and f"{HOST}:{b}" in message

    run_async(scenario, timeout=60)


def test_losing_every_router_ends_in_an_error_for_whoever_waits(router) -> None:
    """Both routers die under a connected client: it goes round (r2 first, the one after
    r1), backs off, gives up as its policy says, and a pending receive and a send both
    fail with ClientError rather than hang."""
    r1, r2 = router(), router()
    first, second = Router(HOST, r1.port), Router(HOST, r2.port)
    policy = Reconnect(max_attempts=4, initial_delay=0.01, max_delay=0.02, jitter=0.0)

    async def scenario() -> None:
        events = Recorder()
        client = await Client.connect(router_list(r1.port, r2.port), reconnect=policy, on_event=events)
        receiver = await client.receiver("nobody")
        sender = await client.sender("nobody")  # no consumer anywhere: no credit, it will wait
        waiting = asyncio.create_task(receiver.receive())
        sending = asyncio.create_task(sender.send(Message(body="stuck")))
        kill(r2)
        kill(r1)
        gave_up = await events.wait(lambda e: isinstance(e, GaveUp), "the client to give up")
        assert [e.router for e in events.of(ConnectAttemptFailed)] == [second, first, second, first]
        assert [e.round for e in events.of(RoundFailed)] == [1]
        with pytest.raises(ClientError):
            await waiting
        with pytest.raises(ClientError):
            await sending
        with pytest.raises(ClientError):
            await client.sender("later")
        assert client.router is None
        assert "4 attempts" in str(gave_up.error)
        await client.close()

    run_async(scenario, timeout=60)


def test_a_router_restarted_on_the_same_port_is_reconnected_to(router) -> None:
    r1 = router()
    port = r1.port
    only = Router(HOST, port)
    url = router_list(port, address="restart")

    async def scenario() -> None:
        rx_events, tx_events = Recorder(), Recorder()
        async with await Client.connect(url, reconnect=QUICK, on_event=rx_events) as rx_client, \
                await Client.connect(url, reconnect=QUICK, on_event=tx_events) as tx_client:
            receiver = await rx_client.receiver("restart")
            sender = await tx_client.sender("restart")
            outcome, _ = await deliver(sender, receiver, "one")
            assert isinstance(outcome, Accepted)

            kill(r1)
            await rx_events.wait(lambda e: isinstance(e, ConnectionLost), "the receiver to see r1 go")
            await asyncio.to_thread(router, None, listen=False, args=("--listen", f"{HOST}:{port}"))
            await rx_events.wait(failed_over_to(only), "the receiver to reconnect to the restarted router")
            await tx_events.wait(failed_over_to(only), "the sender to reconnect to the restarted router")

            outcome, body = await deliver(sender, receiver, "two")
            assert isinstance(outcome, Accepted) and body == "two"

    run_async(scenario, timeout=120)


def test_a_router_shutting_down_sends_its_clients_on_to_the_next(router) -> None:
    """SIGTERM: the router drains and closes with amqp:connection:forced; the client
    takes that as a reason to fail over, not to end."""
    r1, r2 = router(), router()
    first, second = Router(HOST, r1.port), Router(HOST, r2.port)

    async def scenario() -> None:
        events = Recorder()
        async with await Client.connect(router_list(r1.port, r2.port), reconnect=QUICK, on_event=events) as client:
            receiver = await client.receiver("drain")
            sender = await client.sender("drain")
            outcome, _ = await deliver(sender, receiver, "before")
            assert isinstance(outcome, Accepted)
            r1.expect_exit = True
            r1.signal(signal.SIGTERM)
            lost = await events.wait(lambda e: isinstance(e, ConnectionLost), "the router's close")
            assert lost.router == first and str(lost.error.condition) == "amqp:connection:forced"
            assert "shutting down" in lost.error.description
            await events.wait(failed_over_to(second), "the failover to r2")
            outcome, body = await deliver(sender, receiver, "after")
            assert isinstance(outcome, Accepted) and body == "after"

    run_async(scenario, timeout=120)


def test_heartbeats_detect_a_stopped_router(router) -> None:
    """A SIGSTOPped router keeps its sockets open: only missing heartbeats tell.  With
    ``idle_timeout=1`` the client notices, says why, and fails over to r2."""
    r1, r2 = router(), router()
    first, second = Router(HOST, r1.port), Router(HOST, r2.port)

    async def scenario() -> None:
        events = Recorder()
        async with await Client.connect(router_list(r1.port, r2.port), idle_timeout=1.0, reconnect=QUICK, on_event=events) as client:
            receiver = await client.receiver("stopped")
            sender = await client.sender("stopped")
            r1.signal(signal.SIGSTOP)
            try:
                lost = await events.wait(lambda e: isinstance(e, ConnectionLost), "the stopped router to be noticed")
                assert lost.router == first
                assert str(lost.error.condition) == "amqp:resource-limit-exceeded"
                assert "idle timeout" in lost.error.description
                await events.wait(failed_over_to(second), "the failover to r2")
            finally:
                r1.signal(signal.SIGCONT)
            outcome, body = await deliver(sender, receiver, "on r2")
            assert isinstance(outcome, Accepted) and body == "on r2"

    run_async(scenario, timeout=120)


def test_refused_credentials_are_not_retried(router, tmp_path) -> None:
    """A wrong password fails at once with the router's condition: the same credentials
    go to every router of the list, so going round it would never help."""
    from switchboard.router.credentials import Credentials

    credentials = Credentials()
    credentials.set_password("alice", "right", n=1024)
    credentials.save(tmp_path / "users.creds")
    r1 = router(
        f'[[listeners]]\nhost = "{HOST}"\nport = 0\nsasl_mechanisms = ["PLAIN"]\n'
        '[authentication]\ncredentials_file = "users.creds"\n',
        listen=False,
    )
    r2 = router()

    async def scenario() -> None:
        events = Recorder()
        url = f"amqp://alice:wrong@{HOST}:{r1.port},{HOST}:{r2.port}/q"
        with pytest.raises(ClientError) as failure:
            await Client.connect(url, reconnect=QUICK, on_event=events)
        assert failure.value.condition == "amqp:unauthorized-access"
        assert [e.router for e in events.of(ConnectAttemptFailed)] == [Router(HOST, r1.port)]

    run_async(scenario, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def test_tls_applies_to_every_router_of_the_list(router, pki) -> None:
    """amqps:// with two routers: the failover connection is TLS too, verified with the
    same context (each router's certificate checked against its own host)."""
    server = pki.server("A")
    listener = f"[[listeners]]\nhost = '{HOST}'\nport = 0\ntls_cert = '{server.cert}'\ntls_key = '{server.key}'\n"
    r1, r2 = router(listener, listen=False), router(listener, listen=False)
    second = Router(HOST, r2.port)
    url = f"amqps://{HOST}:{r1.port},{HOST}:{r2.port}"

    async def scenario() -> None:
        events = Recorder()
        tls = client_context(cafile=pki.ca("A").cert)
        async with await Client.connect(url, ssl_context=tls, reconnect=QUICK, on_event=events) as client:
            receiver = await client.receiver("tls-failover")
            sender = await client.sender("tls-failover")
            kill(r1)
            await events.wait(failed_over_to(second), "the failover to r2")
            assert client.protocol.transport.get_extra_info("ssl_object") is not None
            outcome, body = await deliver(sender, receiver, "over tls")
            assert isinstance(outcome, Accepted) and body == "over tls"

    run_async(scenario, timeout=120)
