"""Closing means gone: a connection the router closes frees its slot at once, and its
socket goes within ``limits.close_timeout`` whether or not the peer reads.

    stalled peer ──transfers──► router ──► the same peer's receiver, which reads nothing
                                  │  megabytes wait in the router's send buffer
                                  └─ the router closes it (idle timeout, framing error):
                                     slot freed now, socket dropped after the grace

The stalled peer sends to itself so that it is the only connection from its host, which
``max_connections_per_host = 1`` then proves: another client from the same host is let in
as soon as the router has decided to close the first.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from system_support import RawPeer, run_async, wait_socket_closed
from switchboard.amqp import events as ev
from switchboard.amqp.codec import decode_value
from switchboard.amqp.connection import Connection
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Close, Source, Target
from switchboard.client.connection import Client

MESSAGES, SIZE = 160, 64 * 1024
"""10 MiB for a consumer that reads nothing: more than the kernel's buffers both ways
(Linux lets a send buffer grow to 4 MiB by default), so some stays in the router's."""


def performatives(data: bytes) -> list[Any]:
    """The performatives in what a peer received, up to the first unfinished frame."""
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
        if body:
            found.append(decode_value(body, 0)[0])
    return found


def _stall(port: int, address: str) -> RawPeer:
    """A peer whose own receiver has credit for MESSAGES, sends them all to itself, then
    neither reads nor writes again (no heartbeats either)."""
    peer = RawPeer(port, Connection("stalled", idle_timeout=None))
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    engine = peer.engine
    engine.open()
    session = engine.begin_session()
    session.receiver("in", credit=MESSAGES, source=Source(address=address), target=Target())
    sender = session.sender("out", source=Source(), target=Target(address=address))
    assert peer.pump(lambda: sender.credit >= MESSAGES, timeout=10), "the router granted no credit"
    body = Message(b"x" * SIZE).encode()
    for _ in range(MESSAGES):
        sender.send(body)
    peer._write()  # the router keeps reading: every transfer goes in; nothing comes out
    return peer


async def _request_response(url: str) -> Accepted:
    """What a well-behaved client from the same host does: one message there and back."""
    async with await Client.connect(url) as client:
        receiver = await client.receiver("closing/other")
        sender = await client.sender("closing/other")
        outcome = await sender.send(Message("hello"), wait=False)
        item = await receiver.receive(timeout=10)
        item.accept()
        assert item.message().body == "hello"
        return await outcome


def test_slot_is_free_as_soon_as_the_router_closes(router) -> None:
    """The grace is long (30 s): the new client gets in while the old socket still waits."""
    r = router(
        "[limits]\nidle_timeout = 1.0\nclose_timeout = 30.0\nmax_connections_per_host = 1\n"
    )
    peer = _stall(r.port, "closing/slot")
    try:
        assert r.wait_log(r"closed: amqp:resource-limit-exceeded.*idle timeout", 15), r.output()
        assert isinstance(run_async(lambda: _request_response(r.url), timeout=30), Accepted)
        assert "max_connections_per_host" not in r.stderr.text()
    finally:
        peer.close()


# A frame header whose data offset (1) is impossible: a framing error.
BAD_FRAME = b"\x00\x00\x00\x08\x01\x00\x00\x00"


@pytest.mark.parametrize(
    "cause, limits, closed_by",
    [
        pytest.param("idle", "idle_timeout = 1.0", "amqp:resource-limit-exceeded", id="idle-timeout"),
        pytest.param("framing", "idle_timeout = 0", "amqp:connection:framing-error", id="framing-error"),
    ],
)
def test_closed_peer_that_reads_nothing_is_dropped_after_the_grace(router, cause: str, limits: str, closed_by: str) -> None:
    r = router(f"[limits]\n{limits}\nclose_timeout = 1.0\nmax_connections_per_host = 1\n")
    peer = _stall(r.port, f"closing/{cause}")
    try:
        if cause == "framing":
            peer.send_raw(BAD_FRAME)
        assert r.wait_log(f"closed: {closed_by}", 15), r.output()
        dropped = r.wait_log(r"dropping the connection from 127\.0\.0\.1:\d+: the peer did not take our close within 1 s", 15)
        assert dropped, r.output()
        # Reading now, the peer gets what the kernel still held, then the end: the rest,
        # and the close queued behind it, were dropped with the socket.
        data = wait_socket_closed(peer.sock, timeout=15)
        assert data is not None, "the router's end of the socket is still open"
        assert len(data) < MESSAGES * SIZE, len(data)
        assert not any(isinstance(p, Close) for p in performatives(data))
        assert isinstance(run_async(lambda: _request_response(r.url), timeout=30), Accepted)
    finally:
        peer.close()


def test_refused_peer_that_never_answers_the_close_is_dropped(router) -> None:
    """Refused by max_connections_per_host; the peer reads the refusal but never closes."""
    r = router("[limits]\nmax_connections_per_host = 1\nclose_timeout = 1.0\n")
    holder = RawPeer(r.port, Connection("holder", idle_timeout=None))
    refused = RawPeer(r.port, Connection("refused", idle_timeout=None))
    try:
        holder.engine.open()
        assert holder.pump(lambda: bool(holder.of_type(ev.ConnectionOpened)), timeout=5)
        refused.engine.open()
        refused._write()
        data = wait_socket_closed(refused.sock, timeout=15)  # reads, never writes
        assert data is not None, "the router kept a refused connection that never answered"
        closes = [p for p in performatives(data) if isinstance(p, Close)]
        assert len(closes) == 1
        assert str(closes[0].error.condition) == "amqp:resource-limit-exceeded"
        assert "max_connections_per_host (1)" in str(closes[0].error.description)
        assert r.wait_log("dropping the connection from", 5), r.output()
    finally:
        holder.close()
        refused.close()
