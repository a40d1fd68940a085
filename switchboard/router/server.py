"""The router process: listeners, the core, a once-a-second tick, and a clean shutdown.

Shutdown (SIGTERM or SIGINT): stop accepting; release every message still waiting in the
router; withhold credit so senders stop; give forwarded messages up to
``limits.shutdown_timeout`` to be settled by their consumers (their outcomes go back to
their senders); settle whatever is left as ``modified(delivery-failed)`` or ``released``;
close every connection with ``amqp:connection:forced``; exit 0.

Reload (SIGHUP, ``RELOAD config`` on ``$management``, ``POST /api/reload``):
``Router.reload()`` reads the configuration file again and, if all of it is valid and
changes only what may change while connections stay open (``reload.py``), puts it in
place at once; otherwise nothing changes and the error names the key.  Each TLS
listener's certificate, key and CA files are read again too: new connections get the new
ones, open connections keep theirs, and a file that cannot be used is logged and the
previous ones kept.  Each reload is logged in one line: what changed, or why it was refused.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .. import __version__
from ..amqp.connection import Connection
from ..amqp.sasl import SaslServer
from ..amqp.types import Symbol
from ..amqp.sasl import SaslClient
from ..io.connector import backoff_delays, connect
from ..io.listener import listen
from ..io.protocol import AmqpProtocol
from ..io.tls import ServerTls, TlsFileError, client_context
from ..io.turns import ARRIVAL_BATCH, TurnScheduler
from ..store.base import QueueStore, StoreError
from ..store.open import make_store, store_exists
from .auth import Authenticator
from .config import ConfigError, ConnectorConfig, ListenerConfig, RouterConfig
from .reload import plan_reload
from .interrouter import identity
from .logs import configure_logging, fields
from .core import ANONYMOUS_RELAY, RouterCore

if TYPE_CHECKING:
    from .admin import AdminServer

__all__ = ["Router", "run_router"]

log = logging.getLogger("switchboard.router")
reload_log = logging.getLogger("switchboard.router.config")

TICK_SECONDS = 1.0
NETWORK_TICK_SECONDS = 0.1
"""How often the routing protocol's timers are looked at (it converges in about a second)."""
MAX_KEPT_LINES = 20
"""Addresses and queues a reload's answer and log line name as kept as they were (the rest are counted)."""
INTER_ROUTER_HANDLE_MAX = 65535
"""Links one inter-router session may hold: one per anycast address in use between two routers."""


class Router:
    def __init__(self, config: RouterConfig, source: Callable[[], RouterConfig] | None = None) -> None:
        self.config = config
        self.source = source
        """Reads the configuration again for a reload (the file, with the command line's
        overrides); None: the router was started without a file, nothing to read again."""
        loop = asyncio.get_running_loop()
        self.store: QueueStore | None = None
        if config.has_queues:
            store = config.store
            self.store = make_store(store.backend, config.data_dir, store.dsn, store.fsync,
                                    loop.call_soon_threadsafe, config.router_id)
        self.core = RouterCore(config, loop.time, lambda: int(time.time() * 1000), store=self.store)
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
        self._network_handle: asyncio.TimerHandle | None = None
        self._network_woken = False
        self.core.plane.wake = self._wake_network
        self._connectors: list[asyncio.Task[None]] = []
        self.phase: str | None = "starting"
        """Why the router is not ready (``/readyz``), or None once it is."""
        self.admin: "AdminServer | None" = None
        if config.admin.enabled:
            # Imported only when used: aiohttp and prometheus-client are about 15 MiB.
            from .admin import AdminServer

            self.admin = AdminServer(self.core, config.admin, lambda: self.phase)
        self.core.reload_config = self.reload

    def _engine_factory(self, listener: ListenerConfig) -> Callable[[], Connection]:
        inter_router = listener.role == "inter-router"

        def make() -> Connection:
            limits = self.config.limits  # as last reloaded
            engine = Connection(
                self.config.router_id,
                server=True,
                max_frame_size=limits.max_frame_size,
                channel_max=limits.max_sessions_per_connection - 1,
                handle_max=INTER_ROUTER_HANDLE_MAX if inter_router else 1023,
                idle_timeout=(limits.inter_router_idle_timeout if inter_router else limits.idle_timeout) or None,
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
        try:
            await self._start()
        except BaseException:
            if self.admin is not None:
                await self.admin.close()
            raise

    async def _start(self) -> None:
        # The admin listener first: /healthz answers, and /readyz says what is awaited,
        # while queues are recovered.
        admin_url = None
        if self.admin is not None and await self.admin.start() is not None:
            host, port = self.admin.address  # type: ignore[misc]
            admin_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            log.info("admin on %s%s", admin_url, " (token required)" if self.config.admin.token else "")
        if self.store is not None and not store_exists(self.config.store.backend, self.config.data_dir):
            # Nothing to recover: the store is made when a queue is first used, so routers
            # that never use one (several started from one directory, say) share nothing.
            self.core.queues.open_on_first_use()
            log.info("queue store: sqlite at %s (fsync %s), made when a queue is first used",
                     self.config.data_dir.resolve(), self.config.store.fsync)
        elif self.store is not None:
            self.phase = "recovering queues from the store"
            # Queues come back before anyone can connect (the only blocking call of a store).
            try:
                recovered = await asyncio.get_running_loop().run_in_executor(None, self.store.open)
            except StoreError as exc:
                raise OSError(f"store: {exc}") from None
            self.core.queues.recover(recovered)
            where = self.config.store.dsn if self.config.store.backend == "postgres" else self.config.data_dir
            log.info("queue store: %s at %s (fsync %s), %d queues", self.config.store.backend,
                     where.resolve() if isinstance(where, Path) else _hide_password(str(where)),
                     self.config.store.fsync, len(recovered.queues))
        self.phase = "opening listeners"
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
        if admin_url is not None:
            # Read by tests and scripts, like the listening lines (which come first).
            print(f"admin on {admin_url}", flush=True)
        self._schedule_tick()
        self._start_connectors()
        self.phase = None

    def on_sighup(self) -> None:
        try:
            self.reload()
        except ConfigError:
            pass  # logged, and the running configuration kept

    def reload(self) -> dict[str, Any]:
        """Read the configuration again and apply it, all or nothing; read the TLS files
        again.  Returns what changed (``changes``) and what was kept as it was until its
        links detach (``kept``); raises ``ConfigError`` (logged) if the file cannot be
        used, and then nothing has changed."""
        tls = self._reload_tls()
        count = self.core.last_reload["reloads"] + 1
        if self.source is None:
            reload_log.info("reload: no configuration file (started without --config); TLS files %s", tls or "none")
            answer: dict[str, Any] = {"changes": [], "kept": [], "tls": tls,
                                      "note": "started without --config: the embedded defaults do not change"}
        else:
            try:
                config = self.source()
                changes = plan_reload(self.config, config)
            except ConfigError as exc:
                reload_log.error("reload refused, configuration kept: %s", exc)
                self.core.last_reload = {"reloads": count, "outcome": "refused", "at": time.time(), "error": str(exc)}
                raise
            logging_changes = _logging_changes(self.config, config)
            kept = self.core.reconfigure(config) if changes else []
            if len(kept) > MAX_KEPT_LINES:
                kept = kept[:MAX_KEPT_LINES] + [f"and {len(kept) - MAX_KEPT_LINES} more"]
            self.config = config
            if self.admin is not None:
                self.admin.set_token(config.admin.token)
            if logging_changes:
                configure_logging(config.log_level, config.log_format, config.log_levels, config.router_id)
                changes = changes + logging_changes
            reload_log.info("reload: %s%s", "; ".join(changes) or "no changes",
                     f"; kept until their links detach: {'; '.join(kept)}" if kept else "")
            answer = {"changes": changes, "kept": kept, "tls": tls}
        self.core.last_reload = {"reloads": count, "outcome": "applied", "at": time.time(), **answer}
        return answer

    def _reload_tls(self) -> list[str]:
        """The TLS listeners' certificate, key and CA files, read again.  A file that
        cannot be used is logged, and that listener keeps serving the files it had."""
        done = []
        for index, tls in self.tls.items():
            try:
                tls.reload()
            except TlsFileError as exc:
                log.error("listeners[%d].tls_%s: %s; keeping the previous TLS files", index, exc.which, exc)
                done.append(f"listeners[{index}]: kept the previous files ({exc.which}: {exc})")
            else:
                log.info("listeners[%d]: TLS files reloaded (%s); new connections use them", index, tls.certfile)
                done.append(f"listeners[{index}]: reloaded")
        return done

    def _schedule_tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._tick_handle = loop.call_later(TICK_SECONDS, self._tick)
        self._network_handle = loop.call_later(NETWORK_TICK_SECONDS, self._network_tick)

    def _tick(self) -> None:
        self.core.tick(asyncio.get_running_loop().time())
        self._tick_handle = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def _network_tick(self) -> None:
        loop = asyncio.get_running_loop()
        self.core.plane.tick(loop.time())
        self._network_handle = loop.call_later(NETWORK_TICK_SECONDS, self._network_tick)

    def _wake_network(self) -> None:
        """The routing protocol has work (a control message, a neighbour, an address):
        run its tick at the end of this loop turn, once however often asked."""
        if not self._network_woken:
            self._network_woken = True
            asyncio.get_running_loop().call_soon(self._network_tick_soon)

    def _network_tick_soon(self) -> None:
        self._network_woken = False
        self.core.plane.tick(asyncio.get_running_loop().time())

    # -- connectors ----------------------------------------------------------------------
    def _start_connectors(self) -> None:
        for index, connector in enumerate(self.config.connectors):
            self._connectors.append(asyncio.ensure_future(self._keep_connected(index, connector)))

    async def _keep_connected(self, index: int, connector: ConnectorConfig) -> None:
        """Connect to a neighbour and stay connected: retry with back-off and jitter, for
        as long as the router runs."""
        where = f"connectors[{index}] {connector.address}"
        ssl_context = _connector_tls(index, connector)
        delays = backoff_delays(initial=0.2, maximum=10.0)
        failures = 0
        while not self._stopping.is_set():
            engine = self._connector_engine(connector)
            try:
                protocol = await connect(
                    connector.host, connector.port, engine, self.core, ssl_context,
                    server_hostname=connector.server_hostname, timeout=self.config.limits.handshake_timeout or 10.0,
                    role="inter-router", turns=self.turns,
                    max_output=self.config.limits.max_connection_output,
                    close_grace=self.config.limits.close_timeout,
                )
            except (OSError, TimeoutError) as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("%s: cannot connect (%s); retrying with back-off", where, exc or type(exc).__name__)
            else:
                if failures:
                    log.info("%s: connected after %d failed attempts", where, failures)
                failures = 0
                opened_at = asyncio.get_running_loop().time()
                assert protocol.closed is not None
                await protocol.closed.wait()
                error = engine.error
                log.warning("%s: connection ended%s; reconnecting", where,
                            f" ({error.condition}: {error.description})" if error is not None else "")
                if asyncio.get_running_loop().time() - opened_at > 30.0:
                    delays = backoff_delays(initial=0.2, maximum=10.0)
            try:
                async with asyncio.timeout(next(delays)):
                    await self._stopping.wait()
            except TimeoutError:
                pass

    def _connector_engine(self, connector: ConnectorConfig) -> Connection:
        limits = self.config.limits
        password = None
        if connector.sasl_password_file is not None:
            password = connector.sasl_password_file.read_text(encoding="utf-8").splitlines()[0] if \
                connector.sasl_password_file.stat().st_size else ""
        engine = Connection(
            self.config.router_id,
            hostname=connector.server_hostname or connector.host,
            max_frame_size=limits.max_frame_size,
            channel_max=limits.max_sessions_per_connection - 1,
            handle_max=INTER_ROUTER_HANDLE_MAX,
            idle_timeout=limits.inter_router_idle_timeout or None,
            handshake_timeout=limits.handshake_timeout or None,
            frame_timeout=limits.frame_timeout,
            min_heartbeat_interval=limits.min_heartbeat_interval,
            sasl=SaslClient(connector.sasl_username, password, connector.sasl_mechanism),
            offered_capabilities=[ANONYMOUS_RELAY],
            properties={
                Symbol("product"): "switchboard", Symbol("version"): __version__,
                **identity(self.config.router_id, self.core.instance, connector.cost),
            },
        )
        engine.frame_budget = ARRIVAL_BATCH
        engine.max_partial_bytes = 2 * limits.max_message_size
        return engine

    def stop(self) -> None:
        self.phase = "shutting down"
        self._stopping.set()
        for task in self._connectors:
            task.cancel()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        connections = self.core.connections
        in_flight = self.core.in_flight()
        log.info("shutting down: %d connections (%d to other routers), %d deliveries in flight",
                 len(connections), sum(1 for conn in connections if conn.neighbour is not None), in_flight,
                 extra=fields(event="shutdown", connections=len(connections), in_flight=in_flight))
        self.phase = "shutting down"
        for server in self.servers:
            server.close()
        self.core.begin_shutdown()
        deadline = loop.time() + self.config.limits.shutdown_timeout
        while self.core.in_flight() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        # Taken first: closing a connection frees its slot, and the core forgets it.
        protocols: list[AmqpProtocol] = [conn.port for conn in self.core.connections]  # type: ignore[misc]
        modified, released = self.core.finish_shutdown()
        closing = [p.closed.wait() for p in protocols if p.closed is not None]
        if closing:
            try:
                async with asyncio.timeout(2.0):
                    await asyncio.gather(*closing)
            except TimeoutError:
                for protocol in protocols:
                    protocol.abort()
                await asyncio.sleep(0)  # the transports report their loss (and the log its lines)
        for handle in (self._tick_handle, self._network_handle):
            if handle is not None:
                handle.cancel()
        if self.core.authenticator is not None:
            self.core.authenticator.close()
        if self.store is not None:
            self.core.queues.close()
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)
        if self.admin is not None:
            await self.admin.close()
        log.info("stopped after %.1f s: %d connections closed, %d deliveries failed (modified), %d released",
                 loop.time() - began, len(protocols), modified, released,
                 extra=fields(event="stopped", connections=len(protocols), modified=modified, released=released))


def _hide_password(dsn: str) -> str:
    """A DSN fit for a log line: ``postgresql://user:***@host/db``."""
    scheme, sep, rest = dsn.partition("://")
    credentials, at, host = rest.rpartition("@")
    if sep and at and ":" in credentials:
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return dsn


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


def _connector_tls(index: int, connector: ConnectorConfig) -> ssl.SSLContext | None:
    """The connector's TLS context (verifying the neighbour), or None without TLS."""
    if not connector.tls:
        return None
    try:
        return client_context(cafile=connector.tls_ca, certfile=connector.tls_cert, keyfile=connector.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise OSError(f"connectors[{index}]: cannot use its TLS files: {exc}") from None


async def run_router(config: RouterConfig, source: Callable[[], RouterConfig] | None = None) -> None:
    """Run a router until SIGTERM or SIGINT; SIGHUP reloads (``source`` reads the
    configuration again: None for a router started without a file)."""
    router = Router(config, source)
    loop = asyncio.get_running_loop()
    # Before the listeners open: a signal that arrives once the listening line is out
    # must find its handler.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, router.stop)
    loop.add_signal_handler(signal.SIGHUP, router.on_sighup)
    await router.start()
    # Everything built so far lives as long as the process: keep the collector from
    # walking it again, and let it run less often (routed messages make no cycles).
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    await router.wait_stopped()
    await router.shutdown()


def _logging_changes(old: RouterConfig, new: RouterConfig) -> list[str]:
    """``[logging]`` changes a reload applies (the command line's ``--log-level`` and
    ``--log-format`` still win: they are applied to the file read again)."""
    changes = []
    if new.log_level != old.log_level:
        changes.append(f"logging.level: {old.log_level} -> {new.log_level}")
    if new.log_format != old.log_format:
        changes.append(f"logging.format: {old.log_format} -> {new.log_format}")
    if new.log_levels != old.log_levels:
        changes.append(f"logging.levels: {dict(old.log_levels)} -> {dict(new.log_levels)}")
    return changes
