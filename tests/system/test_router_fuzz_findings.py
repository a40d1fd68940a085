"""Router-level cases that ``bench/fuzz.py`` found, each as a deterministic test.

The engine reads a whole batch of received frames before the router sees the events of
the batch, so when the router acts on an event, a later frame of the same batch may
already have ended the link, session or connection the event speaks of.  Each test here
sends such a batch in one write, to a real router process, and checks what a client
would: the outcome of its message, the conditions it was told, that its connection goes
on, and (the ``router`` fixture) that the router logged no traceback.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import Any

import pytest

from system_support import HOST, RawPeer, wait_socket_closed
from switchboard.amqp import events as ev
from switchboard.amqp.codec import decode_value
from switchboard.amqp.connection import Connection
from switchboard.amqp.framing import AMQP_HEADER
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Attach, Begin, Close, Open, Released, Role, Source, Target


def _batch(peer: RawPeer) -> None:
    """Send everything the engine has queued in one write (so it arrives as one read)."""
    peer.send_raw(b"".join(bytes(chunk) for chunk in peer.engine.data_to_send()))


@pytest.mark.parametrize("ending", ["detach", "end"])
def test_message_to_a_consumer_ended_in_the_same_batch(router, ending: str) -> None:
    """A message arrives for a consumer whose own detach (or session end) follows in the
    same read: the consumer is gone, so the message is released, and nobody's connection
    is closed for an internal error."""
    r = router()
    peer = RawPeer(r.port, Connection("same-batch", idle_timeout=None))
    try:
        engine = peer.engine
        engine.open()
        consumer_session = engine.begin_session()
        producer_session = engine.begin_session()
        consumer = consumer_session.receiver("consumer", source=Source(address="batch/one"), target=Target(address="me"), credit=5)
        producer = producer_session.sender("producer", source=Source(address="me"), target=Target(address="batch/one"))
        assert peer.pump(lambda: producer.credit > 0, timeout=10), peer.events

        delivery = producer.send(Message(b"for a consumer about to leave").encode())
        if ending == "detach":
            consumer.detach()
        else:
            consumer_session.end()
        _batch(peer)

        assert peer.pump(lambda: delivery.remote_settled, timeout=10), peer.events
        assert isinstance(delivery.remote_state, Released), delivery.remote_state
        assert not engine.closed, engine.error
        assert producer.active
        assert not [e for e in peer.events if isinstance(e, ev.DeliveryReceived)]
    finally:
        peer.close()


def test_multicast_copy_for_a_consumer_ended_in_the_same_batch(router) -> None:
    """The same for a multicast address: the copy for the leaving consumer is dropped, the
    sender's message is accepted (multicast settles at the router), the connection lives."""
    r = router()
    peer = RawPeer(r.port, Connection("same-batch-multicast", idle_timeout=None))
    try:
        engine = peer.engine
        engine.open()
        session = engine.begin_session()
        consumer = session.receiver("consumer", source=Source(address="multicast/batch"), target=Target(address="me"), credit=5)
        producer = session.sender("producer", source=Source(address="me"), target=Target(address="multicast/batch"))
        assert peer.pump(lambda: producer.credit > 0, timeout=10), peer.events

        delivery = producer.send(Message(b"a copy nobody will take").encode())
        consumer.detach()
        _batch(peer)

        assert peer.pump(lambda: delivery.remote_settled, timeout=10), peer.events
        assert type(delivery.remote_state).__name__ == "Accepted", delivery.remote_state
        assert not engine.closed, engine.error
        assert not [e for e in peer.events if isinstance(e, ev.DeliveryReceived)]
        assert not [e for e in peer.events if isinstance(e, ev.SessionEnded) and e.session is session]
    finally:
        peer.close()



# ======================================================================================
# Raw frames, for a peer that speaks after the router's close
# ======================================================================================
def _frame(performative: Any, channel: int = 0) -> bytes:
    body = bytearray()
    performative.encode_into(body)
    return struct.pack(">IBBH", 8 + len(body), 2, 0, channel) + bytes(body)


def _performatives(data: bytes) -> list[Any]:
    """The router's output, decoded: protocol headers are skipped, heartbeats too."""
    found, offset = [], 0
    while offset + 8 <= len(data):
        if data[offset : offset + 4] == b"AMQP":
            offset += 8
            continue
        size, doff = struct.unpack_from(">IB", data, offset)
        if offset + size > len(data):
            break
        body = data[offset + doff * 4 : offset + size]
        offset += size
        if body:
            found.append(decode_value(body, 0)[0])
    return found


def _read_until(sock: socket.socket, received: bytearray, predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate(_performatives(bytes(received))):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], remaining)
        if readable:
            data = sock.recv(65536)
            if not data:
                return predicate(_performatives(bytes(received)))
            received += data
    return True


def test_nothing_follows_the_routers_close_of_a_refused_connection(router) -> None:
    """The router refuses a connection (open, then close) and waits for the peer's close.
    A peer that begins a session and attaches a link meanwhile was answered, with a begin,
    an attach and a detach after the router's close: no frame may follow a close."""
    r = router("[limits]\nmax_connections = 1\n")
    holder = RawPeer(r.port, Connection("holder", idle_timeout=None))
    late = socket.create_connection((HOST, r.port), timeout=10)
    try:
        holder.engine.open()
        assert holder.pump(lambda: bool(holder.of_type(ev.ConnectionOpened)), timeout=10)

        received = bytearray()
        late.sendall(AMQP_HEADER + _frame(Open(container_id="late")))
        assert _read_until(late, received, lambda ps: any(isinstance(p, Close) for p in ps), timeout=10), \
            _performatives(bytes(received))
        late.sendall(
            _frame(Begin(next_outgoing_id=0, incoming_window=100, outgoing_window=100))
            + _frame(Attach(name="late-link", handle=0, role=Role.RECEIVER, source=Source(address="q"), target=Target()))
        )
        late.sendall(_frame(Close()))
        rest = wait_socket_closed(late, timeout=10)
        assert rest is not None, "the router did not end the connection after our close"

        said = _performatives(bytes(received) + rest)
        closes = [i for i, p in enumerate(said) if isinstance(p, Close)]
        assert len(closes) == 1, said
        assert str(said[closes[0]].error.condition) == "amqp:resource-limit-exceeded"
        assert said[closes[0] + 1 :] == [], f"frames after the router's close: {said[closes[0] + 1:]}"
    finally:
        holder.close()
        late.close()
