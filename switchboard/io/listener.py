"""TCP and TLS listeners: each accepted socket gets its own engine and protocol."""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable

from ..amqp.connection import Connection
from .protocol import CLOSE_GRACE_SECONDS, AmqpProtocol, ConnectionHandler
from .tls_transport import TlsServerProtocol
from .turns import TurnScheduler

__all__ = ["listen"]


async def listen(
    host: str,
    port: int,
    engine_factory: Callable[[], Connection],
    handler: ConnectionHandler,
    ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
    backlog: int = 1024,
    role: str = "normal",
    max_output: int | None = None,
    close_grace: float = CLOSE_GRACE_SECONDS,
    turns: TurnScheduler | None = None,
    handshake_timeout: float | None = None,
) -> asyncio.Server:
    """Start accepting connections on ``host:port`` (port 0 picks a free one).

    The bound address is in ``server.sockets[0].getsockname()``.  ``role`` is kept on each
    protocol for the handler (``"normal"`` or ``"inter-router"``); ``max_output`` bounds each
    connection's unsent output before writing counts as paused; ``close_grace`` is the
    seconds a connection we close has to take the close before its socket is dropped.
    ``ssl_context`` is a context, or a function returning the one to use for the next
    connection (so that reloaded certificates reach new connections); a TLS handshake not
    complete within ``handshake_timeout`` seconds is cut.  Connections given the same
    ``turns`` share each loop turn fairly (``turns.py``).
    """
    loop = asyncio.get_running_loop()
    if isinstance(ssl_context, ssl.SSLContext):
        fixed = ssl_context
        current_context: Callable[[], ssl.SSLContext] | None = lambda: fixed  # noqa: E731
    else:
        current_context = ssl_context

    def accept() -> asyncio.Protocol:
        protocol = AmqpProtocol(engine_factory(), handler, close_grace, max_output, turns)
        protocol.role = role
        if current_context is None:
            return protocol
        return TlsServerProtocol(current_context(), protocol, handshake_timeout)

    return await loop.create_server(accept, host, port, backlog=backlog, reuse_address=True)
