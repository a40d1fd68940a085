"""Limits and refusals a user can see: expiry, message size, connection/link/session caps,
and the anonymous relay's answers.

    sender ──(ttl 500 ms)──► router ──► consumer with no credit
                               └─ after the TTL: rejected(switchboard:expired) to the sender
"""

from __future__ import annotations

import asyncio
import time

import pytest
from proton import Delivery as ProtonDelivery
from proton import Message as ProtonMessage

from system_support import ProtonClient, ProtonThread, RawPeer, run_async
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Begin, Header, Properties, Rejected, Released
from switchboard.client.connection import Client, ClientError
from switchboard.router.credit import DEFAULT_WINDOW


def _condition(outcome) -> str | None:
    error = getattr(outcome, "error", None)
    return str(error.condition) if error is not None else None


# ======================================================================================
# Expiry
# ======================================================================================
def test_message_waiting_past_its_ttl_is_rejected_as_expired(router) -> None:
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
            await consumer_client.receiver("work/ttl", credit=0)  # attached, no credit
            relay = await client.sender(None)  # the anonymous relay has credit of its own
            expiring = Message("stale", header=Header(ttl=500), properties=Properties(to="work/ttl"))
            sent = time.monotonic()
            outcome = await relay.send(expiring)
            waited = time.monotonic() - sent
            # A marker waits behind it; then a consumer with credit attaches: what it gets
            # first is the marker, not the expired message.
            marker = await relay.send(Message("marker", properties=Properties(to="work/ttl")), wait=False)
            ready = await consumer_client.receiver("work/ttl", credit=10)
            item = await ready.receive(timeout=10)
            item.accept()
            return outcome, waited, item.message().body, await marker

    outcome, waited, first_body, marker_outcome = run_async(scenario, timeout=30)
    assert isinstance(outcome, Rejected), outcome
    assert _condition(outcome) == "switchboard:expired"
    assert 0.5 <= waited < 0.5 + 2.5, f"expired after {waited:.2f} s"
    assert first_body == "marker"
    assert isinstance(marker_outcome, Accepted)


def test_message_with_a_ttl_and_a_ready_consumer_is_delivered(router) -> None:
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as client:
            receiver = await client.receiver("work/ttl-ok")
            sender = await client.sender("work/ttl-ok")
            outcome = await sender.send(Message("fresh", header=Header(ttl=60000)), wait=False)
            item = await receiver.receive(timeout=10)
            item.accept()
            return item.message(), await outcome

    message, outcome = run_async(scenario, timeout=30)
    assert message.body == "fresh" and int(message.header.ttl) == 60000
    assert isinstance(outcome, Accepted)


def test_absolute_expiry_in_the_past_is_rejected_at_once(router) -> None:
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as client:
            receiver = await client.receiver("work/past", credit=10)
            sender = await client.sender("work/past")
            past_ms = int(time.time() * 1000) - 60_000
            started = time.monotonic()
            outcome = await sender.send(Message("too late", properties=Properties(absolute_expiry_time=past_ms)))
            elapsed = time.monotonic() - started
            marker = await sender.send(Message("marker"), wait=False)
            item = await receiver.receive(timeout=10)
            item.accept()
            return outcome, elapsed, item.message().body, await marker

    outcome, elapsed, first_body, marker_outcome = run_async(scenario, timeout=30)
    assert isinstance(outcome, Rejected) and _condition(outcome) == "switchboard:expired"
    assert elapsed < 1.0, "not at once"
    assert first_body == "marker"
    assert isinstance(marker_outcome, Accepted)


class ExpiredSender(ProtonClient):
    """Proton: one message whose absolute expiry time is a minute ago, via the relay."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.sent = False
        self.state = None
        self.condition = None

    def on_start(self, event):
        conn = self.connect(event.container, self.url)
        event.container.create_sender(conn, None)

    def on_sendable(self, event):
        if not self.sent:
            self.sent = True
            event.sender.send(ProtonMessage(address="work/proton-past", body="late", expiry_time=time.time() - 60))

    def on_rejected(self, event):
        self.state = "rejected"
        condition = event.delivery.remote.condition
        self.condition = condition.name if condition else None
        self.finish()

    def on_accepted(self, event):
        self.state = "accepted"
        self.finish()

    def on_released(self, event):
        self.state = "released/modified"
        self.finish()


def test_proton_message_with_past_expiry_is_rejected(router) -> None:
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as client:
            await client.receiver("work/proton-past")  # a consumer with credit exists
            return await asyncio.to_thread(ProtonThread(ExpiredSender(r.url), timeout=20).start().join_result)

    sender = run_async(scenario, timeout=30)
    assert sender.state == "rejected" and sender.condition == "switchboard:expired", sender.describe()


# ======================================================================================
# Message size
# ======================================================================================
@pytest.mark.parametrize("frame_size", [65536, 4096], ids=["one-frame", "multi-frame"])
def test_oversized_message_is_refused_and_smaller_ones_pass(router, frame_size: int) -> None:
    r = router(f"[limits]\nmax_message_size = 10000\nmax_frame_size = {frame_size}\n")

    async def scenario():
        async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
            receiver = await consumer_client.receiver("work/sized", credit=10)
            sender = await client.sender("work/sized")
            advertised = sender.link.remote_max_message_size
            small = await sender.send(Message(b"s" * 5000), wait=False)
            item = await receiver.receive(timeout=10)
            item.accept()
            small_outcome = await small
            with pytest.raises(ClientError) as refused:
                await sender.send(Message(b"B" * 20000))
            # A new link carries on; messages under the limit pass.
            again = await client.sender("work/sized")
            later = await again.send(Message(b"t" * 9000), wait=False)
            item = await receiver.receive(timeout=10)
            item.accept()
            return advertised, small_outcome, refused.value, await later, len(item.message().body)

    advertised, small_outcome, refused, later, later_size = run_async(scenario, timeout=30)
    assert advertised == 10000
    assert isinstance(small_outcome, Accepted)
    assert refused.condition == "amqp:link:message-size-exceeded", refused
    assert isinstance(later, Accepted) and later_size == 9000


class OversizedProtonSender(ProtonClient):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.sent = 0
        self.outcome = None

    def on_start(self, event):
        conn = self.connect(event.container, self.url)
        event.container.create_sender(conn, "work/proton-sized")

    def on_sendable(self, event):
        if self.sent == 0:
            self.sent = 1
            event.sender.send(ProtonMessage(body=b"B" * 20000))

    def on_link_error(self, event):
        super().on_link_error(event)
        self.finish()

    def on_accepted(self, event):
        self.outcome = "accepted"
        self.finish()


def test_oversized_message_from_proton_is_refused(router) -> None:
    r = router("[limits]\nmax_message_size = 10000\n")

    async def scenario():
        async with await Client.connect(r.url) as client:
            await client.receiver("work/proton-sized", credit=10)
            thread = ProtonThread(OversizedProtonSender(r.url), timeout=20).start()
            return await asyncio.to_thread(thread.join_result)

    sender = run_async(scenario, timeout=30)
    assert sender.outcome is None
    assert "link: amqp:link:message-size-exceeded" in sender.errors, sender.describe()


# ======================================================================================
# Connections, links, sessions
# ======================================================================================
async def _refused(url: str) -> ClientError:
    """Connect and use the connection; return the ClientError the refusal surfaces as."""
    try:
        client = await Client.connect(url)
    except ClientError as exc:
        return exc
    try:
        await client.receiver("anything")
    except ClientError as exc:
        return exc
    finally:
        await client.close()
    raise AssertionError("the connection was not refused")


async def _connect_when_free(url: str, attempts: int = 50) -> Client:
    """Connect and attach, retrying while the router still counts a connection that just closed."""
    for _ in range(attempts):
        client = None
        try:
            client = await Client.connect(url)
            await client.receiver("anything")
            return client
        except ClientError as exc:
            if client is not None:
                await client.close()
            if exc.condition != "amqp:resource-limit-exceeded":
                raise
            await asyncio.sleep(0.05)
    raise AssertionError(f"no connection slot came free after {attempts} attempts")


def test_max_connections(router) -> None:
    r = router("[limits]\nmax_connections = 3\n")

    async def scenario():
        clients = [await Client.connect(r.url) for _ in range(3)]
        refused = await _refused(r.url)
        await clients.pop().close()
        # A slot is free again once the router has seen the close.
        clients.append(await _connect_when_free(r.url))
        for client in clients:
            await client.close()
        return refused

    refused = run_async(scenario, timeout=30)
    assert refused.condition == "amqp:resource-limit-exceeded"
    assert "max_connections" in str(refused.error.description)


def test_max_connections_per_host(router) -> None:
    r = router("[limits]\nmax_connections = 100\nmax_connections_per_host = 2\n")

    async def scenario():
        clients = [await Client.connect(r.url) for _ in range(2)]
        refused = await _refused(r.url)
        await clients.pop().close()
        clients.append(await _connect_when_free(r.url))
        for client in clients:
            await client.close()
        return refused

    refused = run_async(scenario, timeout=30)
    assert refused.condition == "amqp:resource-limit-exceeded"
    description = str(refused.error.description)
    assert "127.0.0.1" in description and "max_connections_per_host" in description


def test_refusing_open_says_establishment_failed(router) -> None:
    r = router("[limits]\nmax_connections = 1\n")
    holder = RawPeer(r.port, Connection("holder", idle_timeout=None))
    refused = RawPeer(r.port, Connection("refused", idle_timeout=None))
    try:
        holder.engine.open()
        assert holder.pump(lambda: bool(holder.of_type(ev.ConnectionOpened)), timeout=5)
        refused.engine.open()
        assert refused.pump(lambda: bool(refused.of_type(ev.ConnectionClosed)), timeout=5)
        properties = refused.engine.remote_open.properties or {}
        assert properties.get("amqp:connection-establishment-failed") is True
        closed = refused.of_type(ev.ConnectionClosed)[0]
        assert str(closed.error.condition) == "amqp:resource-limit-exceeded"
    finally:
        holder.close()
        refused.close()


def test_refused_connect_raises(router) -> None:
    r = router("[limits]\nmax_connections = 1\n")

    async def scenario():
        async with await Client.connect(r.url):
            with pytest.raises(ClientError):
                client = await Client.connect(r.url)
                await client.close()

    run_async(scenario, timeout=20)


def test_max_connections_refuses_proton_too(router) -> None:
    r = router("[limits]\nmax_connections = 1\n")

    class Refused(ProtonClient):
        def on_start(self, event):
            self.connect(event.container, r.url)

        def on_connection_opened(self, event):
            pass

        def on_connection_remote_close(self, event):
            condition = event.connection.remote_condition
            self.errors.append(f"closed: {condition.name if condition else None}")
            self.finish()

    async def scenario():
        async with await Client.connect(r.url):
            return await asyncio.to_thread(ProtonThread(Refused(), timeout=20).start().join_result)

    refused = run_async(scenario, timeout=30)
    assert any("amqp:resource-limit-exceeded" in e for e in refused.errors), refused.errors


def test_max_links_per_connection(router) -> None:
    r = router("[limits]\nmax_links_per_connection = 3\n")

    async def scenario():
        async with await Client.connect(r.url) as client:
            links = [await client.receiver(f"work/l{i}") for i in range(2)]
            links.append(await client.sender("work/l2"))
            with pytest.raises(ClientError) as refused:
                await client.receiver("work/one-too-many")
            return refused.value

    refused = run_async(scenario, timeout=30)
    assert refused.condition == "amqp:resource-limit-exceeded"


def test_max_links_counts_links_attached_now_not_ever(router) -> None:
    """A long-lived client that attaches and detaches links (reply receivers, say) must
    not run out: the limit is on links attached at once."""
    r = router("[limits]\nmax_links_per_connection = 3\n")

    async def scenario():
        async with await Client.connect(r.url) as client:
            for i in range(10):
                receiver = await client.receiver(f"work/short-lived-{i}")
                await receiver.close()
                await _until_detached(receiver)
            return [await client.receiver(f"work/kept-{i}") for i in range(3)]

    assert len(run_async(scenario, timeout=30)) == 3


async def _until_detached(receiver, timeout: float = 5.0) -> None:
    from switchboard.amqp.states import LinkState

    deadline = asyncio.get_running_loop().time() + timeout
    while receiver.link.state is not LinkState.DETACHED:
        assert asyncio.get_running_loop().time() < deadline, "the router never answered the detach"
        await asyncio.sleep(0.01)


def _begin_frame(channel: int) -> bytes:
    out = bytearray(b"\x00\x00\x00\x00\x02\x00")
    out += channel.to_bytes(2, "big")
    Begin(next_outgoing_id=0, incoming_window=100, outgoing_window=100).encode_into(out)
    out[0:4] = len(out).to_bytes(4, "big")
    return bytes(out)


def test_max_sessions_per_connection(router) -> None:
    r = router("[limits]\nmax_sessions_per_connection = 2\n")
    peer = RawPeer(r.port, Connection("sessions", idle_timeout=None))
    try:
        engine = peer.engine
        engine.open()
        first = engine.begin_session()
        assert peer.pump(lambda: bool(peer.of_type(ev.ConnectionOpened)), timeout=5)
        assert engine.remote_channel_max == 1  # channels 0 and 1: two sessions
        second = engine.begin_session()
        assert peer.pump(lambda: len(peer.of_type(ev.SessionBegun)) == 2, timeout=5)
        assert first.active and second.active
        # A client that ignores channel-max and begins a third session is cut off.
        peer.send_raw(_begin_frame(2))
        assert peer.pump(lambda: bool(peer.of_type(ev.ConnectionClosed)), timeout=5), peer.events
        closed = peer.of_type(ev.ConnectionClosed)[0]
        assert closed.by_peer
        assert str(closed.error.condition) == "amqp:connection:framing-error"
    finally:
        peer.close()


def test_max_sessions_with_proton(router) -> None:
    r = router("[limits]\nmax_sessions_per_connection = 2\n")

    class Sessions(ProtonClient):
        def __init__(self):
            super().__init__()
            self.opened = 0

        def on_start(self, event):
            self.conn = self.connect(event.container, r.url)
            for _ in range(2):
                self.conn.session().open()

        def on_session_opened(self, event):
            self.opened += 1
            if self.opened == 2:
                self.finish()

    client = ProtonThread(Sessions(), timeout=20).start().join_result()
    assert client.opened == 2 and not client.errors


# ======================================================================================
# The anonymous relay
# ======================================================================================
def test_anonymous_relay_to_an_address_nobody_consumes_is_released_at_once(router) -> None:
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as client:
            relay = await client.sender(None)
            started = time.monotonic()
            outcome = await relay.send(Message("hello?", properties=Properties(to="nobody/home")))
            return outcome, time.monotonic() - started

    outcome, elapsed = run_async(scenario, timeout=20)
    assert isinstance(outcome, Released)
    assert elapsed < 1.0


def test_anonymous_relay_message_without_to_is_rejected(router) -> None:
    r = router()

    async def scenario():
        async with await Client.connect(r.url) as client:
            relay = await client.sender(None)
            no_to = await relay.send(Message("where to?"))
            no_properties = await relay.send(Message("where to?", properties=Properties(subject="x")))
            return no_to, no_properties

    for outcome in run_async(scenario, timeout=20):
        assert isinstance(outcome, Rejected), outcome
        assert _condition(outcome) == "amqp:invalid-field"


class RelayOutcomes(ProtonClient):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.sent = False
        self.states: dict[str, str] = {}

    def on_start(self, event):
        conn = self.connect(event.container, self.url)
        event.container.create_sender(conn, None)

    def on_sendable(self, event):
        if not self.sent:
            self.sent = True
            event.sender.send(ProtonMessage(address="nobody/home", body="a")).context = "unconsumed"
            event.sender.send(ProtonMessage(body="b")).context = "no-to"

    def on_settled(self, event):
        delivery = event.delivery
        names = {ProtonDelivery.RELEASED: "released", ProtonDelivery.REJECTED: "rejected",
                 ProtonDelivery.ACCEPTED: "accepted", ProtonDelivery.MODIFIED: "modified"}
        self.states[delivery.context] = names.get(delivery.remote_state, str(delivery.remote_state))
        if len(self.states) == 2:
            self.finish()


def test_anonymous_relay_outcomes_for_proton(router) -> None:
    r = router()
    client = ProtonThread(RelayOutcomes(r.url), timeout=20).start().join_result()
    assert client.states == {"unconsumed": "released", "no-to": "rejected"}


def test_anonymous_relay_cannot_make_the_router_buffer_without_bound(router) -> None:
    """A consumer with no credit: the relay's messages to it wait in the router, but only a
    window's worth; then the sender waits for credit.  When a consumer with credit comes,
    everything flows and every message is accepted."""
    r = router()
    total = 2 * DEFAULT_WINDOW

    async def scenario():
        async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
            await consumer_client.receiver("work/backlog", credit=0)
            relay = await client.sender(None)
            futures: list = []

            async def send_all():
                for i in range(total):
                    message = Message(f"m {i}", properties=Properties(to="work/backlog"))
                    futures.append(await relay.send(message, wait=False))

            sending = asyncio.create_task(send_all())
            deadline = asyncio.get_running_loop().time() + 10
            while not (relay.link.credit == 0 and sending_blocked(sending, futures, total)):
                assert asyncio.get_running_loop().time() < deadline, f"sent {len(futures)} of {total}, never blocked"
                await asyncio.sleep(0.02)
            held = len(futures)
            assert not any(f.done() for f in futures)

            receiver = await consumer_client.receiver("work/backlog", credit=100)
            bodies = []
            for _ in range(total):
                item = await receiver.receive(timeout=20)
                bodies.append(item.message().body)
                item.accept()
            await sending
            outcomes = await asyncio.gather(*futures)
            return held, bodies, outcomes

    held, bodies, outcomes = run_async(scenario, timeout=60)
    assert held <= DEFAULT_WINDOW, f"the router took {held} messages it could not place"
    assert sorted(bodies, key=lambda b: int(b.split()[1])) == [f"m {i}" for i in range(total)]
    assert all(isinstance(o, Accepted) for o in outcomes)


def sending_blocked(task: asyncio.Task, futures: list, total: int) -> bool:
    return not task.done() and 0 < len(futures) < total


# ======================================================================================
# A consumer's max-message-size
# ======================================================================================
def _strict_consumer(port: int, address: str, max_size: int) -> tuple[RawPeer, object]:
    """Our engine as a consumer whose link announces ``max_size`` (and enforces it)."""
    from switchboard.amqp.spec import Source, Target

    peer = RawPeer(port, Connection("strict-consumer", idle_timeout=None))
    peer.engine.open()
    session = peer.engine.begin_session()
    link = session.receiver("strict", source=Source(address=address), target=Target(address="strict"),
                            max_message_size=max_size, credit=20)
    assert peer.pump(lambda: link.active, timeout=5), peer.events
    return peer, link


def test_router_respects_a_consumers_max_message_size(router) -> None:
    """Large messages go to the consumer that can take them; the small one keeps its link."""
    r = router()
    peer, strict = _strict_consumer(r.port, "work/mixed-sizes", 1000)
    try:
        async def scenario():
            async with await Client.connect(r.url) as consumer_client, await Client.connect(r.url) as client:
                roomy = await consumer_client.receiver("work/mixed-sizes", credit=20)
                sender = await client.sender("work/mixed-sizes")
                futures = [await sender.send(Message(b"L" * 5000), wait=False) for _ in range(5)]
                sizes = []
                for _ in range(5):
                    item = await roomy.receive(timeout=10)
                    sizes.append(len(item.message().body))
                    item.accept()
                return sizes, await asyncio.gather(*futures)

        sizes, outcomes = run_async(scenario, timeout=30)
        assert sizes == [5000] * 5
        assert all(isinstance(o, Accepted) for o in outcomes)
        peer.pump(timeout=0.2)
        assert strict.active, "the router sent the small consumer more than it allows"
        assert not peer.of_type(ev.DeliveryReceived)
    finally:
        peer.close()


def test_message_larger_than_every_consumer_accepts_is_rejected(router) -> None:
    r = router()
    peer, strict = _strict_consumer(r.port, "work/small-only", 1000)
    try:
        async def scenario():
            async with await Client.connect(r.url) as client:
                sender = await client.sender("work/small-only")
                big = await sender.send(Message(b"L" * 5000), wait=False)
                small = await sender.send(Message(b"s" * 100), wait=False)
                # The small one reaches the strict consumer; it accepts.
                await asyncio.to_thread(peer.pump, lambda: bool(peer.of_type(ev.DeliveryReceived)), 5)
                for event in peer.of_type(ev.DeliveryReceived):
                    event.delivery.settle(Accepted())
                await asyncio.to_thread(peer.pump, lambda: False, 0.2)
                return await big, await small

        big, small = run_async(scenario, timeout=30)
        assert isinstance(big, Rejected) and _condition(big) == "amqp:link:message-size-exceeded"
        assert isinstance(small, Accepted)
        assert strict.active
    finally:
        peer.close()
