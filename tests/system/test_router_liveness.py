"""Liveness is judged on frames, and heartbeats have a floor the router chooses.

    trickler ──1 byte / 0.2 s of a frame──► router    closed: the bytes are not frames
    300 peers ──"idle-time-out: 1 ms"──────► router    a heartbeat each 0.5 s, not 0.5 ms
    client ──request/response──────────────► router    still served beside them
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import time
from typing import Any

from system_support import HOST, RawPeer, run_async
from switchboard.amqp import events as ev
from switchboard.amqp.codec import decode_value
from switchboard.amqp.connection import MIN_HEARTBEAT_INTERVAL, Connection
from switchboard.amqp.framing import AMQP_HEADER
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Close, Open
from switchboard.client.connection import Client

# The first bytes of a 256-byte frame (a begin would follow): what a trickler sends.
UNFINISHED_FRAME = b"\x00\x00\x01\x00\x02\x00\x00\x00\x00\x53\x11\xc0" + bytes(244)
TRICKLE_PAUSE = 0.2


def _frame(performative: Any) -> bytes:
    body = performative.encode()
    return struct.pack(">IBBH", 8 + len(body), 2, 0, 0) + body


def _trickle_until_closed(sock: socket.socket, data: bytes) -> bytes | None:
    """Send ``data`` a byte at a time, one every TRICKLE_PAUSE, reading what comes back;
    return everything read once the router closes, or None if all was sent first."""
    received = bytearray()
    sock.setblocking(False)
    for byte in data:
        try:
            sock.send(bytes([byte]))
        except (BlockingIOError, ConnectionError):
            pass
        deadline = time.monotonic() + TRICKLE_PAUSE
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                break
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                return bytes(received)
            if not chunk:
                return bytes(received)
            received += chunk
    return None


def _close_told(peer: RawPeer, data: bytes) -> Any:
    peer.engine.receive_data(data)
    closed = [e for e in peer.engine.take_events() if isinstance(e, ev.ConnectionClosed)]
    assert closed and closed[0].by_peer, "the router closed without a close frame"
    return closed[0].error


def _opened_peer(port: int) -> RawPeer:
    peer = RawPeer(port, Connection("trickler", idle_timeout=None))
    peer.engine.open()
    assert peer.pump(lambda: bool(peer.of_type(ev.ConnectionOpened)), timeout=10)
    return peer


def test_a_peer_trickling_a_frame_is_closed_by_the_idle_timeout(router) -> None:
    r = router("[limits]\nidle_timeout = 1.0\n")
    peer = _opened_peer(r.port)
    try:
        data = _trickle_until_closed(peer.sock, UNFINISHED_FRAME)
        assert data is not None, "a byte every 0.2 s kept an unfinished frame alive"
        error = _close_told(peer, data)
        assert str(error.condition) == "amqp:resource-limit-exceeded"
        assert "no frame from the peer for 1 s (idle timeout;" in error.description
        assert "bytes of an unfinished frame received" in error.description
    finally:
        peer.close()


def test_without_an_idle_timeout_frame_timeout_closes_a_trickling_peer(router) -> None:
    r = router("[limits]\nidle_timeout = 0\nframe_timeout = 1.0\n")
    peer = _opened_peer(r.port)
    try:
        assert peer.engine.remote_idle_timeout is None  # the router has no idle timeout
        data = _trickle_until_closed(peer.sock, UNFINISHED_FRAME)
        assert data is not None, "a byte every 0.2 s kept an unfinished frame alive"
        error = _close_told(peer, data)
        assert str(error.condition) == "amqp:resource-limit-exceeded"
        assert "a frame stayed unfinished for 1 s (frame timeout;" in error.description
    finally:
        peer.close()


def test_a_peer_trickling_its_open_is_cut_at_the_handshake_timeout(router) -> None:
    """Every byte is progress, yet the open must be complete within handshake_timeout."""
    r = router("[limits]\nhandshake_timeout = 1.0\nidle_timeout = 0\nframe_timeout = 60.0\n")
    peer = RawPeer(r.port, Connection("slow-opener", idle_timeout=None))
    try:
        peer.send_raw(AMQP_HEADER)
        data = _trickle_until_closed(peer.sock, _frame(Open(container_id="slow-opener-" + "x" * 40)))
        assert data is not None, "an open trickled for ever was let through"
        closes = [p for p in _performatives(data) if isinstance(p, Close)]
        assert len(closes) == 1, _performatives(data)
        assert str(closes[0].error.condition) == "amqp:resource-limit-exceeded"
        assert "no open from the peer within 1 s" in closes[0].error.description
    finally:
        peer.close()


def _performatives(data: bytes) -> list[Any]:
    found, offset = [], 0
    while offset + 8 <= len(data):
        if data[offset : offset + 4] == b"AMQP":
            offset += 8
            continue
        size, doff = struct.unpack_from(">IB", data, offset)
        if size < 8 or offset + size > len(data):
            break
        body = data[offset + doff * 4 : offset + size]
        offset += size
        found.append(decode_value(body, 0)[0] if body else None)  # None: a heartbeat
    return found


# ======================================================================================
# The heartbeat floor
# ======================================================================================
DEMANDING = 300
WINDOW = 3.0
FLOOR = 0.5


def test_peers_asking_for_1ms_heartbeats_get_them_at_the_floor(router) -> None:
    """300 connections advertise an idle-time-out of 1 ms.  One of them, watched for
    3 s, gets a heartbeat at most every 0.5 s (a few extra allowed for scheduling), and
    a client beside them still gets its request/response answered."""
    r = router(f"[limits]\nmin_heartbeat_interval = {FLOOR}\nmax_connections_per_host = 1000\n")
    demand = AMQP_HEADER + _frame(Open(container_id="demanding", idle_time_out=1))

    async def scenario() -> tuple[list[Any], int]:
        streams = [await asyncio.open_connection(HOST, r.port) for _ in range(DEMANDING)]
        try:
            for _, writer in streams:
                writer.write(demand)
            watched, _ = streams[0]
            received = bytearray(await watched.readexactly(8))  # the router's header
            head = await watched.readexactly(4)
            received += head + await watched.readexactly(struct.unpack(">I", head)[0] - 4)
            opened = _performatives(bytes(received))

            async def watch() -> bytearray:
                window = bytearray()
                loop = asyncio.get_running_loop()
                end = loop.time() + WINDOW
                while (remaining := end - loop.time()) > 0:
                    try:
                        async with asyncio.timeout(remaining):
                            window += await watched.read(65536)
                    except TimeoutError:
                        break
                return window

            async def request_response() -> Any:
                async with await Client.connect(r.url) as client:
                    receiver = await client.receiver("liveness/rr")
                    sender = await client.sender("liveness/rr")
                    outcomes = []
                    for n in range(20):
                        outcome = await sender.send(Message(f"request {n}"), wait=False)
                        item = await receiver.receive(timeout=20)
                        item.accept()
                        outcomes.append(await outcome)
                    return outcomes

            window, outcomes = await asyncio.gather(watch(), request_response())
            assert all(isinstance(o, Accepted) for o in outcomes), outcomes
            beats = _performatives(bytes(window))
            assert all(p is None for p in beats), beats
            return opened, len(beats)
        finally:
            for _, writer in streams:
                writer.close()

    opened, beats = run_async(scenario, timeout=90)
    assert isinstance(opened[-1], Open)
    assert opened[-1].properties[MIN_HEARTBEAT_INTERVAL] == int(FLOOR * 1000)
    assert 1 <= beats <= WINDOW / FLOOR + 3, f"{beats} heartbeats in {WINDOW} s"
