"""The io layer on its own, over loopback: batching, back-pressure, idle timeout, loss.

::

    Client (AmqpProtocol) ──TCP 127.0.0.1──▶ Broker (io.listen + engine)
    raw socket            ──TCP 127.0.0.1──▶ Broker

The broker is ``tests/interop/amqp_broker.py`` in the test's own loop.  Write calls are
counted by wrapping a protocol's transport (``CountingTransport``).  Tests that depend
on the loop's transport run on both uvloop and asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from typing import Any

import pytest

from amqp_broker import Broker
from interop_support import AMQP_HEADER, arun, performatives
from switchboard.amqp.connection import Connection
from switchboard.amqp.errors import Condition
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Close, Disposition, Error, Open, Source, Target, Transfer
from switchboard.client.connection import Client, ClientError
from switchboard.io.protocol import AmqpProtocol

LOOPS = pytest.mark.parametrize("loop", ["uvloop", "asyncio"])


class CountingTransport:
    """Wraps a transport; counts ``write``/``writelines`` calls and keeps what was written."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.writes = 0
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.writes += 1
        self.written += data
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        chunks = list(chunks)
        self.writes += 1
        for chunk in chunks:
            self.written += chunk
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountingBroker(Broker):
    """A broker whose every connection's transport is a ``CountingTransport``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transports: list[CountingTransport] = []

    def connection_started(self, protocol: AmqpProtocol) -> None:
        counting = CountingTransport(protocol.transport)
        protocol.transport = counting  # type: ignore[assignment]
        self.transports.append(counting)
        super().connection_started(protocol)


def _frame(performative: Any, channel: int = 0) -> bytes:
    body = bytearray()
    performative.encode_into(body)
    return (8 + len(body)).to_bytes(4, "big") + b"\x02\x00" + channel.to_bytes(2, "big") + bytes(body)


class RawPeer(asyncio.Protocol):
    """A raw TCP peer: writes what it is told, keeps what arrives, notes when it closes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    @classmethod
    async def connect(cls, port: int) -> "RawPeer":
        _, peer = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        return peer


# --------------------------------------------------------------------------------------
# One flush per loop turn
# --------------------------------------------------------------------------------------
@LOOPS
def test_many_sends_in_one_loop_turn_become_one_write(loop: str) -> None:
    count = 200

    async def main() -> None:
        broker = CountingBroker(credit_window=1000)
        port = await broker.start()
        try:
            async with await Client.connect(f"amqp://127.0.0.1:{port}") as client:
                sender = await client.sender("batch")
                assert isinstance(await sender.send(b"first"), Accepted)
                assert sender.link.credit >= count
                assert client.protocol is not None
                counting = CountingTransport(client.protocol.transport)
                client.protocol.transport = counting  # type: ignore[assignment]
                server_side = broker.transports[0]
                server_writes_before = server_side.writes

                # One loop turn: with credit in hand, send() never suspends.
                futures = [await sender.send(Message(f"m{n}".encode()), wait=False) for n in range(count)]
                assert counting.writes == 0, "frames must wait for the end of the loop turn"

                outcomes = await asyncio.gather(*futures)
                assert all(isinstance(outcome, Accepted) for outcome in outcomes)
                assert counting.writes == 1
                sent = performatives(bytes(counting.written))
                assert sum(isinstance(p, Transfer) for p in sent) == count

                # The broker's answer is batched as well: a few ranged dispositions.
                server_writes = server_side.writes - server_writes_before
                dispositions = [p for p in performatives(bytes(server_side.written)) if isinstance(p, Disposition)]
                assert 1 <= server_writes <= 10, server_writes
                assert len(dispositions) <= 10 + 1, dispositions
        finally:
            await broker.stop()

    arun(main, timeout=30, loop=loop)


# --------------------------------------------------------------------------------------
# Back-pressure
# --------------------------------------------------------------------------------------
SMALL_SOCKET_BUFFER = 64 * 1024


def _shrink(sock: Any, option: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, option, SMALL_SOCKET_BUFFER)


class SmallBufferBroker(Broker):
    """Small kernel send buffers, so that filling them does not take gigabytes."""

    def connection_started(self, protocol: AmqpProtocol) -> None:
        assert protocol.transport is not None
        _shrink(protocol.transport.get_extra_info("socket"), socket.SO_SNDBUF)
        super().connection_started(protocol)


@LOOPS
def test_a_peer_that_stops_reading_pauses_the_writer(loop: str) -> None:
    """The client stops reading; the broker's handler is told (``writing_paused``).

    The socket buffers are shrunk to 64 KiB each way, so 64 messages of 64 KiB (4 MiB)
    overflow them and the broker's transport buffer passes its high-water mark.  While
    paused the broker holds back messages that arrive for the stalled consumer (it
    still has credit); once the client reads again, resume is reported and everything
    arrives.
    """
    count, size, late = 64, 64 * 1024, 10

    async def main() -> None:
        broker = SmallBufferBroker()
        port = await broker.start()
        broker.queues["big"] = deque(Message(os.urandom(size)).encode() for _ in range(count))
        try:
            async with await Client.connect(f"amqp://127.0.0.1:{port}", idle_timeout=None) as client:
                assert client.protocol is not None and client.protocol.transport is not None
                _shrink(client.protocol.transport.get_extra_info("socket"), socket.SO_RCVBUF)
                receiver = await client.receiver("big", credit=count + late)
                client.protocol.transport.pause_reading()  # before our credit even leaves

                await broker.wait_for(lambda: True in broker.pauses, timeout=20)
                assert broker.pauses == [True]
                async with await Client.connect(f"amqp://127.0.0.1:{port}", idle_timeout=None) as other:
                    sender = await other.sender("big")
                    for _ in range(late):
                        assert isinstance(await sender.send(Message(b"late")), Accepted)
                assert len(broker.queues["big"]) == late, "sent to a consumer whose socket is full"

                client.protocol.transport.resume_reading()
                bodies = []
                for _ in range(count + late):
                    item = await receiver.receive(timeout=20)
                    bodies.append(item.message().body)
                    item.accept()
                assert [len(body) for body in bodies[:count]] == [size] * count
                assert bodies[count:] == [b"late"] * late
                assert broker.pauses[-1] is False
        finally:
            await broker.stop()

    arun(main, timeout=60, loop=loop)


# --------------------------------------------------------------------------------------
# Idle timeout
# --------------------------------------------------------------------------------------
IDLE = 0.5


def test_idle_timeout_closes_a_silent_peer_after_its_open() -> None:
    async def main() -> None:
        broker = Broker(idle_timeout=IDLE)
        port = await broker.start()
        try:
            peer = await RawPeer.connect(port)
            assert peer.transport is not None
            peer.transport.write(AMQP_HEADER + _frame(Open(container_id="silent")))
            opened_at = time.monotonic()
            async with asyncio.timeout(4 * IDLE):
                await peer.closed
            elapsed = time.monotonic() - opened_at

            assert IDLE * 0.9 <= elapsed <= 2 * IDLE, f"closed after {elapsed:.3f} s"
            closes = [p for p in performatives(bytes(peer.data)) if isinstance(p, Close)]
            assert len(closes) == 1 and closes[0].error is not None
            assert closes[0].error.condition == Condition.RESOURCE_LIMIT_EXCEEDED
            await broker.wait_for(lambda: broker.closed, timeout=5)
            assert broker.closed[0].error.condition == Condition.RESOURCE_LIMIT_EXCEEDED
            assert broker.closed[0].by_peer is False
        finally:
            await broker.stop()

    arun(main, timeout=30)


def test_heartbeats_keep_a_quiet_peer_alive() -> None:
    """Empty frames every IDLE/3 for 3 x IDLE: still open; then silence closes it."""

    async def main() -> None:
        broker = Broker(idle_timeout=IDLE)
        port = await broker.start()
        try:
            peer = await RawPeer.connect(port)
            assert peer.transport is not None
            peer.transport.write(AMQP_HEADER + _frame(Open(container_id="beating")))
            for _ in range(9):
                await asyncio.sleep(IDLE / 3)  # the heartbeat interval is the input under test
                assert not peer.closed.done(), "closed although heartbeats arrived"
                peer.transport.write(b"\x00\x00\x00\x08\x02\x00\x00\x00")
            async with asyncio.timeout(4 * IDLE):
                await peer.closed
            assert any(isinstance(p, Close) for p in performatives(bytes(peer.data)))
        finally:
            await broker.stop()

    arun(main, timeout=30)


# --------------------------------------------------------------------------------------
# Closing means gone: a peer that stops reading cannot keep a closed connection
# --------------------------------------------------------------------------------------
GRACE = 0.5


class GraceBroker(SmallBufferBroker):
    """Small send buffers, and a short grace for connections it closes."""

    def connection_started(self, protocol: AmqpProtocol) -> None:
        protocol.close_grace = GRACE
        super().connection_started(protocol)


def _stalled_consumer_handshake(address: str, credit: int) -> bytes:
    """Everything a consumer says up to its credit, at once: it never reads an answer."""
    engine = Connection("stalled-consumer", idle_timeout=None)
    engine.open()
    session = engine.begin_session()
    session.receiver("stalled", credit=credit, source=Source(address=address), target=Target())
    return b"".join(bytes(chunk) for chunk in engine.data_to_send())


@LOOPS
@pytest.mark.parametrize("how", ["idle-timeout", "owner-closes"])
def test_a_closed_peer_that_stops_reading_is_dropped_after_the_grace(loop: str, how: str) -> None:
    """4 MiB wait for a consumer that reads nothing; the broker closes it (its idle timeout,
    or its owner's decision).  The close cannot reach the peer, and the socket is dropped
    once the grace has passed: the broker forgets the connection, and what the peer can
    still read ends without the close and short of the 4 MiB."""
    count, size = 64, 64 * 1024

    async def main() -> None:
        broker = GraceBroker(idle_timeout=IDLE if how == "idle-timeout" else None)
        port = await broker.start()
        broker.queues["big"] = deque(Message(os.urandom(size)).encode() for _ in range(count))
        try:
            peer = await RawPeer.connect(port)
            assert peer.transport is not None
            _shrink(peer.transport.get_extra_info("socket"), socket.SO_RCVBUF)
            peer.transport.pause_reading()
            peer.transport.write(_stalled_consumer_handshake("big", count))
            await broker.wait_for(lambda: True in broker.pauses, timeout=20)
            if how == "owner-closes":
                (protocol,) = broker.protocols
                protocol.close(Error(condition=Condition.CONNECTION_FORCED, description="closed by its owner"))
            await broker.wait_for(lambda: not broker.protocols, timeout=10 * GRACE + 5)

            peer.transport.resume_reading()
            async with asyncio.timeout(10):
                await peer.closed
            assert len(peer.data) < count * size
            assert not any(isinstance(p, Close) for p in performatives(bytes(peer.data)))
        finally:
            await broker.stop()

    arun(main, timeout=60, loop=loop)


# --------------------------------------------------------------------------------------
# Connection loss mid-transfer
# --------------------------------------------------------------------------------------
def test_connection_lost_mid_transfer_fails_every_pending_send() -> None:
    """The broker never settles and then drops the socket while an 8 MiB message is
    still on its way.  Every send in flight, and every send waiting for credit, fails
    with ``ClientError``; both engines report ``ConnectionClosed``."""
    credit = 10

    async def main() -> None:
        broker = Broker(credit_window=credit, settle_incoming=False, max_frame_size=512)
        port = await broker.start()
        try:
            client = await Client.connect(f"amqp://127.0.0.1:{port}", idle_timeout=None)
            sender = await client.sender("lossy")
            receiver = await client.receiver("elsewhere", credit=5)
            in_flight = [await sender.send(b"small", wait=False), await sender.send(os.urandom(8 << 20), wait=False)]
            in_flight += [await sender.send(b"small", wait=False) for _ in range(credit - 2)]
            waiting_for_credit = [asyncio.ensure_future(sender.send(b"later")) for _ in range(5)]
            pending_receive = asyncio.ensure_future(receiver.receive(timeout=30))

            await broker.wait_for(lambda: broker.received["lossy"] >= 1, timeout=10)
            assert broker.received["lossy"] < credit, "the 8 MiB message should still be in transfer"
            for protocol in list(broker.protocols):
                protocol.abort()

            async with asyncio.timeout(10):
                results = await asyncio.gather(*in_flight, *waiting_for_credit, pending_receive, return_exceptions=True)
            assert all(isinstance(result, ClientError) for result in results), results
            assert {result.condition for result in results} == {"amqp:connection:forced"}

            assert client.engine.closed and client.engine.error is not None
            assert client.engine.error.condition == Condition.CONNECTION_FORCED
            await broker.wait_for(lambda: broker.closed, timeout=5)
            assert broker.closed[0].error.condition == Condition.CONNECTION_FORCED
            assert broker.closed[0].by_peer is True

            with pytest.raises(ClientError):
                await sender.send(b"after the loss")
            await client.close()
        finally:
            await broker.stop()

    arun(main, timeout=60)
