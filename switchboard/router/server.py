"""The router process: listeners, the core, a once-a-second tick, and a clean shutdown.

Shutdown (SIGTERM or SIGINT): stop accepting; release every message still waiting in the
router; withhold credit so senders stop; give forwarded messages up to
``limits.shutdown_timeout`` to be settled by their consumers (their outcomes go back to
their senders); settle whatever is left as ``modified(delivery-failed)`` or ``released``;
close every connection with ``amqp:connection:forced``; exit 0.

Reload (SIGHUP): ``Router.reload()`` reads again what can change while connections stay
open.  Today that is each TLS listener's certificate, key and CA files: new connections
get the new ones, open connections keep theirs, and a file that cannot be used is logged
and the previous ones kept.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from typing import Callable

from .. import __version__
from ..amqp.connection import Connection
from ..amqp.sasl import SaslServer
from ..amqp.types import Symbol
from ..io.listener import listen
from ..io.protocol import AmqpProtocol
from ..io.tls import ServerTls, TlsFileError
from ..io.turns import ARRIVAL_BATCH, TurnScheduler
from .auth import Authenticator
from .config import ListenerConfig, RouterConfig
from .core import ANONYMOUS_RELAY, RouterCore

__all__ = ["Router", "run_router"]

log = logging.getLogger("switchboard.router")

TICK_SECONDS = 1.0


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        loop = asyncio.get_running_loop()
        self.core = RouterCore(config, loop.time, lambda: int(time.time() * 1000))
        credentials = config.authentication.credentials
        if credentials is not None:
            self.core.authenticator = Authenticator(credentials, config.authentication, self.core.counters, loop)
        self.turns = TurnScheduler(loop, config.limits.frames_per_turn)
        self.servers: list[asyncio.Server] = []
        self.bound: list[tuple[ListenerConfig, str, int]] = []
        self.tls: dict[int, ServerTls] = {}
        """Each TLS listener's files and current context, by index in ``config.listeners``."""
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
            engine.frame_budget = ARRIVAL_BATCH
            # Room for two largest messages arriving interleaved; more is one client
            # holding memory that the router's own bounds do not see.
            engine.max_partial_bytes = 2 * limits.max_message_size
            return engine

        return make

    async def start(self) -> None:
        # Every TLS context first: a bad file stops the router before any socket opens.
        for index, listener in enumerate(self.config.listeners):
            tls = _server_tls(index, listener)
            if tls is not None:
                self.tls[index] = tls
        handshake_timeout = self.config.limits.handshake_timeout or None
        for index, listener in enumerate(self.config.listeners):
            tls = self.tls.get(index)
            server = await listen(
                listener.host,
                listener.port,
                self._engine_factory(listener),
                self.core,
                (lambda tls=tls: tls.context) if tls is not None else None,
                role=listener.role,
                max_output=self.config.limits.max_connection_output,
                close_grace=self.config.limits.close_timeout,
                handshake_timeout=handshake_timeout,
                turns=self.turns,
            )
            self.servers.append(server)
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self.bound.append((listener, host, port))
                scheme = "amqps" if listener.tls else "amqp"
                # Tests and scripts read this line to find a port chosen by the kernel:
                # what follows the role is free-form.
                print(f"listening on {scheme}://{host}:{port} ({listener.role}) {listener.security()}", flush=True)
                log.info("listening on %s://%s:%d (%s) %s", scheme, host, port, listener.role, listener.security())
        self._schedule_tick()

    def reload(self) -> None:
        """Read again what can change without a restart (SIGHUP): the TLS listeners'
        certificate, key and CA files.  A file that cannot be used is logged, and that
        listener keeps serving the files it had."""
        log.info("reloading")
        for index, tls in self.tls.items():
            try:
                tls.reload()
            except TlsFileError as exc:
                log.error("listeners[%d].tls_%s: %s; keeping the previous TLS files", index, exc.which, exc)
            else:
                log.info("listeners[%d]: TLS files reloaded (%s); new connections use them", index, tls.certfile)

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


def _server_tls(index: int, listener: ListenerConfig) -> ServerTls | None:
    """The listener's TLS files, loaded; a file that cannot be used is named by its key."""
    if listener.tls_cert is None:  # no TLS on this listener (ListenerConfig.tls)
        return None
    try:
        return ServerTls(
            listener.tls_cert,
            listener.tls_key,
            listener.tls_ca,
            require_client_cert=listener.require_client_certificate,
            minimum_version=listener.tls_min_version,
        )
    except TlsFileError as exc:
        raise OSError(f"listeners[{index}].tls_{exc.which}: {exc}") from None


async def run_router(config: RouterConfig) -> None:
    router = Router(config)
    loop = asyncio.get_running_loop()
    # Before the listeners open: a signal that arrives once the listening line is out
    # must find its handler.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, router.stop)
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    await router.start()
    # Everything built so far lives as long as the process: keep the collector from
    # walking it again, and let it run less often (routed messages make no cycles).
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    await router.wait_stopped()
    await router.shutdown()


