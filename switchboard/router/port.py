"""What the router core may do with a connection: the port it sees instead of the socket.

The core never touches asyncio objects.  Each connection reaches it as a ``ConnectionPort``:
the engine (the AMQP state, sans-IO), who the peer is, the listener's role, whether the
peer has stopped taking our output, and three requests: flush soon, close, abort.  The io
layer's ``AmqpProtocol`` is one implementation; the in-process test harness, which joins
cores and clients with in-memory engine pairs on a simulated clock, is another.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..amqp.connection import Connection
from ..amqp.spec import Error

__all__ = ["ConnectionPort"]


class ConnectionPort(Protocol):
    engine: Connection
    peer: Any
    """The peer's address as the transport reports it: ``(host, port, ...)`` for TCP."""
    role: str
    """The listener's role: ``"normal"`` or ``"inter-router"``."""
    write_paused: bool
    """The peer has not taken ``max_connection_output`` bytes of our output yet."""

    def output_buffered(self) -> int:
        """Bytes written to the connection that its peer has not taken yet."""

    def request_flush(self) -> None:
        """Write the engine's output soon (once per loop turn, however often asked)."""

    def close(self, error: Error | None = None) -> None:
        """Close the AMQP connection (the transport follows, bounded by a grace period)."""

    def abort(self) -> None:
        """Drop the transport at once."""
