"""``AmqpProtocol``: an asyncio Protocol that drives one engine ``Connection``.

Input: every ``data_received`` feeds the engine and hands all resulting events to the
owner (``ConnectionHandler``) in one call.  Output: anything that may have produced
frames calls ``request_flush()``, which schedules one flush per loop turn, so a batch of
received frames, or a router forwarding to this connection from several others, becomes
one ``writelines``.  Back-pressure: when the socket's buffer holds more than
``max_output`` bytes asyncio calls ``pause_writing``; the owner is told, and stops
forwarding to this connection until ``resume_writing``.

Fairness: an engine with a ``frame_budget`` handles at most that many frames per call.
When more are buffered, reading pauses and the rest is handled one budget per loop turn,
so a connection that floods cannot keep the loop from everyone else's input.

Closing means gone: once the engine is closing (our close sent, or nothing left to do
but write its last bytes), the socket is aborted ``close_grace`` seconds later if it is
still there, whether the peer stopped reading (asyncio would wait for the write buffer
to drain for ever) or reads but never answers our close.  The grace shares the
connection's one timer with the engine's deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Protocol as TypingProtocol

from ..amqp.connection import Connection
from ..amqp.events import DeliveryReceived, Event
from ..amqp.states import ConnectionState
from ..amqp.sasl import SaslServer
from .timers import DeadlineTimer
from .turns import TurnScheduler
from .tls import certificate_user

__all__ = ["AmqpProtocol", "ConnectionHandler"]

log = logging.getLogger(__name__)

CLOSE_GRACE_SECONDS = 5.0
"""How long a connection we closed waits for the peer to take the close before the
socket is dropped (the default; the router sets ``limits.close_timeout``)."""

# Our close is out and the peer's is awaited: the grace runs.  A tuple, not a set: every
# flush looks, and hashing an enum member calls Python code.
_AWAITING_CLOSE = (
    ConnectionState.CLOSE_SENT, ConnectionState.CLOSE_PIPE, ConnectionState.OC_PIPE, ConnectionState.DISCARDING,
)


INPUT_HIGH_WATER = 512 * 1024
"""Bytes received and not yet handled past which a connection stops reading its socket."""
INPUT_LOW_WATER = 128 * 1024
"""... and below which it reads again."""


class ConnectionHandler(TypingProtocol):
    """The owner of a connection: a router, or a client."""

    def connection_started(self, protocol: "AmqpProtocol") -> None:
        """The transport is up and the engine exists (``protocol.engine``)."""

    def events_received(self, protocol: "AmqpProtocol", events: list[Event]) -> None:
        """The engine reported ``events``; act on them (the flush follows)."""

    def connection_ended(self, protocol: "AmqpProtocol") -> None:
        """The transport is gone; the final events were already delivered."""

    def writing_paused(self, protocol: "AmqpProtocol", paused: bool) -> None:
        """The socket's send buffer filled up (``True``) or drained (``False``)."""


class AmqpProtocol(asyncio.Protocol):
    def __init__(
        self,
        engine: Connection,
        handler: ConnectionHandler,
        close_grace: float = CLOSE_GRACE_SECONDS,
        max_output: int | None = None,
        turns: TurnScheduler | None = None,
    ) -> None:
        self.engine = engine
        self.handler = handler
        self.turns = turns
        """The loop's turn, shared with other connections (None: this connection's own)."""
        self.close_grace = close_grace
        self.max_output = max_output
        """Bytes of unsent output past which writing counts as paused (None: asyncio's default)."""
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.role = "normal"
        self.write_paused = False
        self._reading_paused = False
        self._input_scheduled = False
        self.closed: asyncio.Event | None = None  # made in connection_made, inside the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._timer: DeadlineTimer | None = None
        self._abort_at: float | None = None
        """When the socket is dropped if still open (set once the engine is closing)."""
        self.bytes_in = 0
        self.bytes_out = 0
        """AMQP bytes read and written (inside TLS), counted per read and per write, not per frame."""

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self._loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()
        if self.max_output is not None:
            transport.set_write_buffer_limits(high=self.max_output)  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        sasl = self.engine.sasl
        if isinstance(sasl, SaslServer):
            # The TLS layer verified the client's certificate (if any): who it names is
            # what SASL EXTERNAL may authenticate.
            sasl.certificate_user = certificate_user(transport.get_extra_info("peercert"))
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self.handler.connection_started(self)
        self._deliver_events()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        engine = self.engine
        engine.receive_data(data)
        events = engine.take_events()
        if events:
            self.handler.events_received(self, events)
        if engine.input_pending:
            self._defer_input()
        elif (
            self.turns is not None
            and self.turns.input_is_waiting
            and any(type(event) is DeliveryReceived for event in events)
        ):
            self.turns.message_arrived()
        self.request_flush()

    def _defer_input(self) -> None:
        """More frames wait than the budget: go on in a later turn, and stop reading while
        much is waiting (the peer then waits on TCP)."""
        if (
            not self._reading_paused
            and self.transport is not None
            and self.engine.buffered_input > INPUT_HIGH_WATER
        ):
            self._reading_paused = True
            self.transport.pause_reading()
        if not self._input_scheduled:
            self._input_scheduled = True
            if self.turns is not None:
                self.turns.input_waiting(self)
            else:
                self._loop.call_soon(self._continue_scheduled)  # type: ignore[union-attr]

    def _continue_scheduled(self) -> None:
        if self.continue_input(None):
            self._loop.call_soon(self._continue_scheduled)  # type: ignore[union-attr]

    def continue_input(self, max_frames: int | None) -> bool:
        """Handle up to ``max_frames`` (None: the engine's budget) of the waiting input;
        True if more still waits (the caller comes back in a later turn)."""
        self._input_scheduled = False
        transport = self.transport
        if transport is None:
            return False
        engine = self.engine
        engine.continue_input(max_frames)
        events = engine.take_events()
        if events:
            self.handler.events_received(self, events)
        self.request_flush()
        more = engine.input_pending and self.transport is not None
        if self._reading_paused and not engine.transport_done and engine.buffered_input <= INPUT_LOW_WATER:
            self._reading_paused = False
            transport.resume_reading()
        if more:
            self._input_scheduled = True
        return more

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.engine.connection_lost(str(exc) if exc is not None else None)
        self._deliver_events()
        self.transport = None
        self.handler.connection_ended(self)
        if self.closed is not None:
            self.closed.set()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.handler.writing_paused(self, True)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.handler.writing_paused(self, False)

    # -- output ------------------------------------------------------------------------
    def output_buffered(self) -> int:
        """Bytes written to the socket that its peer has not taken yet."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def request_flush(self) -> None:
        """Write the engine's output at the end of this loop turn (once per turn)."""
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            if self.turns is not None:
                self.turns.flush_soon(self)
            else:
                self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the engine's output now, re-arm its timer, close if it is done."""
        self._flush_scheduled = False
        transport = self.transport
        if transport is None:
            return
        engine = self.engine
        chunks = engine.data_to_send()
        # tick() after taking the output (it learns when we last wrote) and before
        # writing (a heartbeat or idle-timeout close it produces goes out now, not one
        # interval later).
        now = self._loop.time()  # type: ignore[union-attr]
        deadline = engine.tick(now)
        extra = engine.data_to_send()
        if extra:
            chunks += extra
        if chunks:
            if len(chunks) == 1:
                transport.write(chunks[0])
                self.bytes_out += len(chunks[0])
            else:
                transport.writelines(chunks)
                self.bytes_out += sum(map(len, chunks))
        self._deliver_events()
        if engine.transport_done:
            leftover = engine.data_to_send()
            if leftover:
                transport.writelines(leftover)
            # close() waits for the write buffer to drain: a peer that reads nothing
            # would keep the socket for ever without the grace.
            transport.close()
            self._timer.arm(self._grace_deadline(now))  # type: ignore[union-attr]
            return
        if engine.machine.state in _AWAITING_CLOSE:
            abort_at = self._grace_deadline(now)
            deadline = abort_at if deadline is None else min(deadline, abort_at)
        self._timer.arm(deadline)  # type: ignore[union-attr]

    def _deliver_events(self) -> None:
        events = self.engine.take_events()
        if events:
            self.handler.events_received(self, events)
            self.request_flush()
        if self.engine.input_pending:
            self._defer_input()  # input held back (a budget, a SASL decision) is ready now

    def _on_timer(self) -> None:
        if self._abort_at is not None and self._loop is not None and self._loop.time() >= self._abort_at:
            if self.transport is not None:
                log.info("dropping the connection from %s: the peer did not take our close within %g s",
                         _describe(self.peer), self.close_grace)
            self.abort()
            return
        self.flush()

    def _grace_deadline(self, now: float) -> float:
        """When the closing connection is dropped; the grace starts the first time."""
        if self._abort_at is None:
            self._abort_at = now + self.close_grace
        return self._abort_at

    def abort(self) -> None:
        """Drop the transport at once (a peer that never answers our close)."""
        if self.transport is not None:
            self.transport.abort()

    def close(self, error: Any = None) -> None:
        """Close the AMQP connection (with an optional error) and then the transport."""
        self.engine.close(error)
        self._deliver_events()
        self.request_flush()


def _describe(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
