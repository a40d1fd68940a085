"""Outbound connections: one attempt, and the back-off schedule for retrying a list."""

from __future__ import annotations

import asyncio
import random
import ssl
from typing import Iterator

from ..amqp.connection import Connection
from .protocol import CLOSE_GRACE_SECONDS, AmqpProtocol, ConnectionHandler
from .turns import TurnScheduler

__all__ = ["connect", "backoff_delays"]


async def connect(
    host: str,
    port: int,
    engine: Connection,
    handler: ConnectionHandler,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 10.0,
    *,
    role: str = "normal",
    turns: TurnScheduler | None = None,
    max_output: int | None = None,
    close_grace: float = CLOSE_GRACE_SECONDS,
) -> AmqpProtocol:
    """Open a TCP (or TLS) connection driving ``engine``; raise ``OSError`` on failure.

    ``role``, ``turns``, ``max_output`` and ``close_grace`` are as for ``listen``: a router
    connecting to a neighbour treats the connection like those it accepts.
    """
    loop = asyncio.get_running_loop()
    kwargs = {}
    if ssl_context is not None:
        kwargs["server_hostname"] = server_hostname or host

    def made() -> AmqpProtocol:
        protocol = AmqpProtocol(engine, handler, close_grace, max_output, turns)
        protocol.role = role
        return protocol

    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(made, host, port, ssl=ssl_context, **kwargs)
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
