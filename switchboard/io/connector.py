"""Outbound connections: one attempt, and the back-off schedule for retrying a list."""

from __future__ import annotations

import asyncio
import random
import ssl
from typing import Iterator

from ..amqp.connection import Connection
from .protocol import AmqpProtocol, ConnectionHandler

__all__ = ["connect", "backoff_delays"]


async def connect(
    host: str,
    port: int,
    engine: Connection,
    handler: ConnectionHandler,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 10.0,
) -> AmqpProtocol:
    """Open a TCP (or TLS) connection driving ``engine``; raise ``OSError`` on failure."""
    loop = asyncio.get_running_loop()
    kwargs = {}
    if ssl_context is not None:
        kwargs["server_hostname"] = server_hostname or host
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(
            lambda: AmqpProtocol(engine, handler), host, port, ssl=ssl_context, **kwargs
        )
    return protocol


def backoff_delays(
    initial: float = 0.1, maximum: float = 10.0, factor: float = 2.0, jitter: float = 0.25
) -> Iterator[float]:
    """Endless delays between reconnect attempts: exponential, capped, jittered.

    Jitter spreads the reconnects of many clients after a router restart so they do not
    all arrive in the same instant.
    """
    delay = initial
    while True:
        yield delay * (1 + random.uniform(-jitter, jitter))
        delay = min(maximum, delay * factor)
