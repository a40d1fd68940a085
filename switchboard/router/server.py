"""The router process: listeners, the core, a once-a-second tick, and a clean shutdown.

Shutdown (SIGTERM or SIGINT): stop accepting; release every message still waiting in the
router; withhold credit so senders stop; give forwarded messages up to
``limits.shutdown_timeout`` to be settled by their consumers (their outcomes go back to
their senders); settle whatever is left as ``modified(delivery-failed)`` or ``released``;
close every connection with ``amqp:connection:forced``; exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import time
from typing import Callable

from .. import __version__
from ..amqp.connection import Connection
from ..amqp.sasl import SaslServer
from ..amqp.types import Symbol
from ..io.listener import listen
from ..io.protocol import AmqpProtocol
from ..io.tls import server_context
from .auth import Authenticator
from .config import ListenerConfig, RouterConfig
from .core import ANONYMOUS_RELAY, RouterCore

__all__ = ["Router", "run_router"]

log = logging.getLogger("switchboard.router")

TICK_SECONDS = 1.0
FRAMES_PER_TURN = 64
"""Frames one connection may have handled per loop turn before the others get theirs.

About half a millisecond of routing work: a flood on one connection delays another
connection's request by at most that much per flooding connection."""


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        loop = asyncio.get_running_loop()
        self.core = RouterCore(config, loop.time, lambda: int(time.time() * 1000))
        credentials = config.authentication.credentials
        if credentials is not None:
            self.core.authenticator = Authenticator(credentials, config.authentication, self.core.counters, loop)
        self.servers: list[asyncio.Server] = []
        self.bound: list[tuple[ListenerConfig, str, int]] = []
        self._stopping = asyncio.Event()
        self._tick_handle: asyncio.TimerHandle | None = None

    def _engine_factory(self, listener: ListenerConfig) -> Callable[[], Connection]:
        limits = self.config.limits

        def make() -> Connection:
            engine = Connection(
                self.config.router_id,
                server=True,
                max_frame_size=limits.max_frame_size,
                channel_max=limits.max_sessions_per_connection - 1,
                idle_timeout=limits.idle_timeout or None,
                handshake_timeout=limits.handshake_timeout or None,
                frame_timeout=limits.frame_timeout,
                min_heartbeat_interval=limits.min_heartbeat_interval,
                # PLAIN passwords are checked by the core's authenticator, off the loop.
                sasl=SaslServer(listener.sasl_mechanisms, decide_later=True),
                offered_capabilities=[ANONYMOUS_RELAY],
                properties={Symbol("product"): "switchboard", Symbol("version"): __version__},
            )
            engine.frame_budget = FRAMES_PER_TURN
            # Room for two largest messages arriving interleaved; more is one client
            # holding memory that the router's own bounds do not see.
            engine.max_partial_bytes = 2 * limits.max_message_size
            return engine

        return make

    async def start(self) -> None:
        # Every TLS context first: a bad file stops the router before any socket opens.
        contexts = [_tls_context(i, listener) for i, listener in enumerate(self.config.listeners)]
        for listener, ssl_context in zip(self.config.listeners, contexts, strict=True):
            server = await listen(
                listener.host,
                listener.port,
                self._engine_factory(listener),
                self.core,
                ssl_context,
                role=listener.role,
                max_output=self.config.limits.max_connection_output,
                close_grace=self.config.limits.close_timeout,
            )
            self.servers.append(server)
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self.bound.append((listener, host, port))
                scheme = "amqps" if listener.tls else "amqp"
                # Tests and scripts read this line to find a port chosen by the kernel.
                print(f"listening on {scheme}://{host}:{port} ({listener.role})", flush=True)
                log.info("listening on %s://%s:%d (%s)", scheme, host, port, listener.role)
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._tick_handle = loop.call_later(TICK_SECONDS, self._tick)

    def _tick(self) -> None:
        self.core.tick(asyncio.get_running_loop().time())
        self._schedule_tick()

    def stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def shutdown(self) -> None:
        log.info("shutting down")
        for server in self.servers:
            server.close()
        self.core.begin_shutdown()
        deadline = asyncio.get_running_loop().time() + self.config.limits.shutdown_timeout
        while self.core.in_flight() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        # Taken first: closing a connection frees its slot, and the core forgets it.
        protocols: list[AmqpProtocol] = [conn.port for conn in self.core.connections]  # type: ignore[misc]
        self.core.finish_shutdown()
        closing = [p.closed.wait() for p in protocols if p.closed is not None]
        if closing:
            try:
                async with asyncio.timeout(2.0):
                    await asyncio.gather(*closing)
            except TimeoutError:
                for protocol in protocols:
                    protocol.abort()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self.core.authenticator is not None:
            self.core.authenticator.close()
        log.info("stopped")


def _tls_context(index: int, listener: ListenerConfig) -> ssl.SSLContext | None:
    """The listener's TLS context; a file that cannot be loaded is named by its key."""
    cert, key, ca = listener.tls_cert, listener.tls_key, listener.tls_ca
    if cert is None:  # no TLS on this listener (ListenerConfig.tls)
        return None
    where = f"listeners[{index}]."
    try:
        ssl.create_default_context(cafile=str(cert))
    except (ssl.SSLError, OSError) as exc:
        raise OSError(f"{where}tls_cert: {cert} holds no PEM certificate ({exc})") from None
    if ca is not None:
        try:
            ssl.create_default_context(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise OSError(f"{where}tls_ca: {ca} holds no PEM CA certificate ({exc})") from None
    try:
        return server_context(cert, key, ca)
    except (ssl.SSLError, OSError) as exc:
        if key is None:
            raise OSError(f"{where}tls_cert: {cert} holds no private key and tls_key is not set ({exc})") from None
        raise OSError(f"{where}tls_key: {key} is not the private key of {cert} ({exc})") from None


async def run_router(config: RouterConfig) -> None:
    router = Router(config)
    await router.start()
    # Everything built so far lives as long as the process: keep the collector from
    # walking it again, and let it run less often (routed messages make no cycles).
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, router.stop)
    await router.wait_stopped()
    await router.shutdown()


