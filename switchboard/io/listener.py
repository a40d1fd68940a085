"""TCP and TLS listeners: each accepted socket gets its own engine and protocol."""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable

from ..amqp.connection import Connection
from .protocol import CLOSE_GRACE_SECONDS, AmqpProtocol, ConnectionHandler

__all__ = ["listen"]


async def listen(
    host: str,
    port: int,
    engine_factory: Callable[[], Connection],
    handler: ConnectionHandler,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 1024,
    role: str = "normal",
    max_output: int | None = None,
    close_grace: float = CLOSE_GRACE_SECONDS,
) -> asyncio.Server:
    """Start accepting connections on ``host:port`` (port 0 picks a free one).

    The bound address is in ``server.sockets[0].getsockname()``.  ``role`` is kept on each
    protocol for the handler (``"normal"`` or ``"inter-router"``); ``max_output`` bounds each
    connection's unsent output before writing counts as paused; ``close_grace`` is the
    seconds a connection we close has to take the close before its socket is dropped.
    """
    loop = asyncio.get_running_loop()

    def accept() -> AmqpProtocol:
        protocol = AmqpProtocol(engine_factory(), handler, close_grace, max_output)
        protocol.role = role
        return protocol

    return await loop.create_server(
        accept,
        host,
        port,
        ssl=ssl_context,
        backlog=backlog,
        reuse_address=True,
    )
