"""In-memory pairs of real AMQP engines, and tools to look at the bytes between them.

Two ``Connection`` objects talk through ``pump``, which moves whatever each has to send
to the other until neither has anything more to say (proton's
``tests/proton_tests/common.py`` ``pump``), optionally in chunks of ``buffer_size``
bytes so that every reader is exercised across arbitrary splits.  Every loop is bounded.

::

    client ──bytes──▶ server          c, s = open_pair()
           ◀─bytes──                  p = link_pair(credit=10)  # p.sender on c, p.receiver on s

``serve`` plays the application on a connection: it opens in answer to an open,
mirrors the termini of links the peer attaches and grants credit to receivers.  Tests
that need a peer misbehaving in a way our engine never would write frames with
``frame()`` and feed them straight to ``receive_data``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pytest

from switchboard.amqp import events as ev
from switchboard.amqp.codec import decode_value
from switchboard.amqp.connection import Connection
from switchboard.amqp.framing import AMQP_HEADER, SASL_HEADER
from switchboard.amqp.link import ReceiverLink, SenderLink
from switchboard.amqp.session import Session
from switchboard.amqp.spec import Source, Target

__all__ = [
    "pump",
    "Recorder",
    "FrameLog",
    "serve",
    "open_pair",
    "LinkPair",
    "link_pair",
    "pair",
    "of_type",
    "one",
    "names",
    "frame",
    "split_frames",
]

_HEADER = struct.Struct(">IBBH")


# ------------------------------------------------------------------------------------
# Moving bytes
# ------------------------------------------------------------------------------------
def _move(src: Connection, dst: Connection, buffer_size: int | None, tap: Callable[[bytes], None] | None) -> int:
    data = b"".join(bytes(chunk) for chunk in src.data_to_send())
    if not data:
        return 0
    if tap is not None:
        tap(data)
    if buffer_size is None:
        dst.receive_data(data)
    else:
        for start in range(0, len(data), buffer_size):
            dst.receive_data(data[start : start + buffer_size])
    return len(data)


def pump(
    a: Connection,
    b: Connection,
    buffer_size: int | None = None,
    max_rounds: int = 200,
    a_to_b: Callable[[bytes], None] | None = None,
    b_to_a: Callable[[bytes], None] | None = None,
) -> int:
    """Move bytes both ways until neither side has anything to send; return bytes moved.

    ``buffer_size`` feeds the receiver that many bytes per ``receive_data`` call.
    ``a_to_b`` and ``b_to_a`` see each batch of bytes before it is delivered.  Raises
    ``AssertionError`` if the two are still talking after ``max_rounds`` rounds.
    """
    total = 0
    for _ in range(max_rounds):
        moved = _move(a, b, buffer_size, a_to_b) + _move(b, a, buffer_size, b_to_a)
        if not moved:
            return total
        total += moved
    raise AssertionError(f"no quiescence after {max_rounds} rounds")


class Recorder:
    """A pump tap keeping every byte that went one way, in order."""

    def __init__(self) -> None:
        self.data = bytearray()

    def __call__(self, data: bytes) -> None:
        self.data += data


class FrameLog:
    """A ``trace=`` callback recording (direction, channel, performative, payload size)."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, int, Any, int]] = []

    def __call__(self, direction: str, channel: int, performative: Any, payload_size: int) -> None:
        self.frames.append((direction, channel, performative, payload_size))

    def received(self, cls: type | None = None) -> list[Any]:
        return [p for d, _, p, _ in self.frames if d == "<-" and (cls is None or type(p) is cls)]

    def sent(self, cls: type | None = None) -> list[Any]:
        return [p for d, _, p, _ in self.frames if d == "->" and (cls is None or type(p) is cls)]

    def clear(self) -> None:
        self.frames.clear()


# ------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------
def of_type(events: Iterable[ev.Event], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def one(events: Iterable[ev.Event], cls: type) -> Any:
    """The only event of type ``cls`` (fails if there are none or several)."""
    found = of_type(events, cls)
    assert len(found) == 1, f"expected one {cls.__name__}, got {names(events)}"
    return found[0]


def names(events: Iterable[ev.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def serve(conn: Connection, events: list[ev.Event], credit: int = 0) -> None:
    """Answer like a plain application: open back, accept links, grant ``credit``."""
    for event in events:
        if isinstance(event, ev.ConnectionOpened) and not conn._open_requested:
            conn.open()
        elif isinstance(event, ev.LinkAttached) and event.link.remote_initiated and event.link.state.value == "ATTACH_RCVD":
            link = event.link
            link.source = link.remote_source
            link.target = link.remote_target
            link.attach()
            if credit and isinstance(link, ReceiverLink):
                link.flow(credit)


# ------------------------------------------------------------------------------------
# Pairs
# ------------------------------------------------------------------------------------
def open_pair(
    client_kwargs: dict[str, Any] | None = None,
    server_kwargs: dict[str, Any] | None = None,
    buffer_size: int | None = None,
) -> tuple[Connection, Connection]:
    """A client and a server with the open handshake done and their events taken."""
    client = Connection("client", **(client_kwargs or {}))
    server = Connection("server", server=True, **(server_kwargs or {}))
    client.open()
    pump(client, server, buffer_size)
    serve(server, server.take_events())
    pump(client, server, buffer_size)
    client.take_events()
    server.take_events()
    assert client.state.value == "OPENED" and server.state.value == "OPENED"
    return client, server


@dataclass
class LinkPair:
    """An opened client and server, one session, one link; ``sender`` is on ``client``
    unless the pair was built with ``client_sends=False``."""

    client: Connection
    server: Connection
    client_session: Session
    server_session: Session
    sender: SenderLink
    receiver: ReceiverLink
    buffer_size: int | None = None
    client_events: list[ev.Event] = field(default_factory=list)
    server_events: list[ev.Event] = field(default_factory=list)

    def pump(self, **kwargs: Any) -> None:
        kwargs.setdefault("buffer_size", self.buffer_size)
        pump(self.client, self.server, **kwargs)

    @property
    def sender_conn(self) -> Connection:
        return self.sender.session.connection

    @property
    def receiver_conn(self) -> Connection:
        return self.receiver.session.connection

    def sender_events(self) -> list[ev.Event]:
        return self.sender_conn.take_events()

    def receiver_events(self) -> list[ev.Event]:
        return self.receiver_conn.take_events()

    def transfer(self, payloads: Iterable[bytes], **kwargs: Any) -> list[Any]:
        """Send each payload, pump, and return the receiver's deliveries in order."""
        for payload in payloads:
            self.sender.send(payload, **kwargs)
        self.pump()
        return [e.delivery for e in self.receiver_events() if isinstance(e, ev.DeliveryReceived)]


def link_pair(
    credit: int = 10,
    client_sends: bool = True,
    sender_kwargs: dict[str, Any] | None = None,
    receiver_kwargs: dict[str, Any] | None = None,
    client_kwargs: dict[str, Any] | None = None,
    server_kwargs: dict[str, Any] | None = None,
    buffer_size: int | None = None,
) -> LinkPair:
    """An opened pair with a session and an attached link holding ``credit``."""
    client, server = open_pair(client_kwargs, server_kwargs, buffer_size)
    session = client.begin_session()
    if client_sends:
        local = session.sender("link", source=Source(address="src"), target=Target(address="dst"),
                               **(sender_kwargs or {}))
    else:
        local = session.receiver("link", source=Source(address="src"), target=Target(address="dst"),
                                 **(receiver_kwargs or {}))
    pump(client, server, buffer_size)
    server_events = server.take_events()
    server_session = one(server_events, ev.SessionBegun).session
    remote = one(server_events, ev.LinkAttached).link
    remote.source = remote.remote_source
    remote.target = remote.remote_target
    if client_sends:
        for name, value in (receiver_kwargs or {}).items():
            setattr(remote, name, value)
    else:
        for name, value in (sender_kwargs or {}).items():
            setattr(remote, name, value)
    remote.attach()
    receiver = remote if client_sends else local
    if credit:
        receiver.flow(credit)
    pump(client, server, buffer_size)
    client_events = client.take_events()
    server_events = server.take_events()
    assert local.active and remote.active
    sender = local if client_sends else remote
    assert sender.credit == credit
    return LinkPair(client, server, session, server_session, sender, receiver, buffer_size,
                    client_events, server_events)


@pytest.fixture
def pair() -> LinkPair:
    """An opened client and server with a session and a client-to-server link holding
    10 credit (import it into a test module to use it)."""
    return link_pair()


# ------------------------------------------------------------------------------------
# Raw frames
# ------------------------------------------------------------------------------------
def frame(performative: Any, channel: int = 0, payload: bytes = b"", frame_type: int = 0) -> bytes:
    """Encode one frame as a peer would (data offset 2, no extended header)."""
    body = performative.encode() + payload if performative is not None else b""
    return _HEADER.pack(8 + len(body), 2, frame_type, channel) + body


def split_frames(data: bytes) -> list[tuple[int, int, Any, bytes]]:
    """Cut a byte stream (protocol headers allowed) into (type, channel, performative,
    payload) tuples; heartbeats come out with performative None."""
    frames: list[tuple[int, int, Any, bytes]] = []
    pos = 0
    data = bytes(data)
    while pos < len(data):
        if data[pos : pos + 4] == b"AMQP":
            assert data[pos : pos + 8] in (AMQP_HEADER, SASL_HEADER), data[pos : pos + 8]
            pos += 8
            continue
        size, doff, frame_type, channel = _HEADER.unpack_from(data, pos)
        body = data[pos + doff * 4 : pos + size]
        if body:
            performative, offset = decode_value(body, 0)
            frames.append((frame_type, channel, performative, body[offset:]))
        else:
            frames.append((frame_type, channel, None, b""))
        pos += size
    assert pos == len(data), "stream ends inside a frame"
    return frames


def frame_sizes(data: bytes) -> list[int]:
    """The size of every frame in a byte stream (protocol headers skipped)."""
    sizes = []
    pos = 0
    data = bytes(data)
    while pos < len(data):
        if data[pos : pos + 4] == b"AMQP":
            pos += 8
            continue
        (size,) = struct.unpack_from(">I", data, pos)
        sizes.append(size)
        pos += size
    return sizes
