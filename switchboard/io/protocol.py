"""``AmqpProtocol``: an asyncio Protocol that drives one engine ``Connection``.

Input: every ``data_received`` feeds the engine and hands all resulting events to the
owner (``ConnectionHandler``) in one call.  Output: anything that may have produced
frames calls ``request_flush()``, which schedules one flush per loop turn, so a batch of
received frames, or a router forwarding to this connection from several others, becomes
one ``writelines``.  Back-pressure: when the socket's buffer is full asyncio calls
``pause_writing``; the owner is told, and stops forwarding to this connection until
``resume_writing``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Protocol as TypingProtocol

from ..amqp.connection import Connection
from ..amqp.events import Event
from ..amqp.sasl import SaslServer
from .timers import DeadlineTimer
from .tls import certificate_user

__all__ = ["AmqpProtocol", "ConnectionHandler"]

log = logging.getLogger(__name__)

CLOSE_GRACE_SECONDS = 5.0
"""How long a connection we closed waits for the peer's close before dropping the socket."""


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
    def __init__(self, engine: Connection, handler: ConnectionHandler) -> None:
        self.engine = engine
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.role = "normal"
        self.write_paused = False
        self.closed: asyncio.Event | None = None  # made in connection_made, inside the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._timer: DeadlineTimer | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self._loop = asyncio.get_running_loop()
        self.closed = asyncio.Event()
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
        engine = self.engine
        engine.receive_data(data)
        events = engine.take_events()
        if events:
            self.handler.events_received(self, events)
        self.request_flush()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._close_timer is not None:
            self._close_timer.cancel()
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
    def request_flush(self) -> None:
        """Write the engine's output at the end of this loop turn (once per turn)."""
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
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
        deadline = engine.tick(self._loop.time())  # type: ignore[union-attr]
        extra = engine.data_to_send()
        if extra:
            chunks += extra
        if chunks:
            if len(chunks) == 1:
                transport.write(chunks[0])
            else:
                transport.writelines(chunks)
        self._deliver_events()
        if engine.transport_done:
            leftover = engine.data_to_send()
            if leftover:
                transport.writelines(leftover)
            transport.close()
            return
        self._timer.arm(deadline)  # type: ignore[union-attr]
        if not engine.closed and engine.machine.state.name in ("CLOSE_SENT", "CLOSE_PIPE", "OC_PIPE"):
            self._arm_close_grace()

    def _deliver_events(self) -> None:
        events = self.engine.take_events()
        if events:
            self.handler.events_received(self, events)
            self.request_flush()

    def _on_timer(self) -> None:
        self.flush()

    def _arm_close_grace(self) -> None:
        if self._close_timer is None and self._loop is not None:
            self._close_timer = self._loop.call_later(CLOSE_GRACE_SECONDS, self.abort)

    def abort(self) -> None:
        """Drop the transport at once (a peer that never answers our close)."""
        if self.transport is not None:
            self.transport.abort()

    def close(self, error: Any = None) -> None:
        """Close the AMQP connection (with an optional error) and then the transport."""
        self.engine.close(error)
        self._deliver_events()
        self.request_flush()
