"""The admin listener: the router's views as JSON, Prometheus metrics, health, over HTTP.

It runs on the router's own event loop (aiohttp), so every answer reads the core's state
between two events, as ``$management`` does, from the same functions (``views.py``)::

    GET /api/network | /api/queues | /api/connections | /api/links | /api/addresses
    GET /api/VIEW?router=ROUTER_ID[&timeout=SECONDS]
                      the same view of router ROUTER_ID of the network, which this router
                      asks with a ``$management/ROUTER_ID`` request (``management.py``):
                      404 if it has no route to that router, 504 if no answer comes
                      within ``timeout`` seconds (``REMOTE_TIMEOUT``, at most
                      ``MAX_REMOTE_TIMEOUT``); errors are JSON
                      ``{"error": ..., "description": ...}``
    GET /metrics      Prometheus text format (metrics.py)
    GET /  /ui/...    the topology page (``webui/``: static files shipped in the package)
    GET /healthz      200 while the process runs
    GET /readyz       200 once listeners are open and queues recovered, 503 (with the
                      reason) before that and from the start of a shutdown
    POST /api/reload  read the configuration file again and apply it (docs/operations.md):
                      200 with what changed, 400 with the key that is wrong (nothing changed)
    GET /api/reload   how many reloads there were and the last one's outcome

With ``admin.token_file`` every path but ``/healthz`` and ``/readyz`` needs the token:
``Authorization: Bearer TOKEN``, or HTTP Basic with any user name and the token as the
password (so that a browser's login prompt works).  Without it the listener must be on
loopback (``config.check_admin``).
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import BasicAuth, hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .config import AdminConfig, ConfigError
from .management import RouterRequests
from .metrics import router_registry
from .views import addresses_view, connections_view, links_view, network_view, queues_view

if TYPE_CHECKING:
    from .core import RouterCore

__all__ = ["AdminServer"]

log = logging.getLogger("switchboard.router.admin")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered without the token: orchestrators' probes rarely carry one, and they tell nothing."""

WEBUI = Path(__file__).with_name("webui")
UI_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The topology page's files: only these are served, from ``WEBUI``."""
UI_HEADERS = {
    # Everything comes from this listener: no inline script, no other origin.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # A router upgraded in place serves its new page at the next load.
    hdrs.CACHE_CONTROL: "no-cache",
}

_dumps = partial(json.dumps, indent=1, default=str)
REMOTE_TIMEOUT = 5.0
"""Seconds ``/api/VIEW?router=ID`` waits for the other router's answer by default."""
MAX_REMOTE_TIMEOUT = 60.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminServer:
    """The HTTP side of one router.  ``not_ready()`` says why the router is not ready
    (None: it is)."""

    def __init__(self, core: "RouterCore", config: AdminConfig, not_ready: Callable[[], str | None]) -> None:
        self.core = core
        self.config = config
        self.not_ready = not_ready
        self._token = config.token.encode() if config.token is not None else None
        self._registry = router_registry(core, not_ready)
        self._requests = RouterRequests(core)
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/network", self._json("network", lambda: network_view(self.core)))
        app.router.add_get("/api/connections", self._json("connections", lambda: connections_view(self.core)))
        app.router.add_get("/api/links", self._json("links", lambda: links_view(self.core)))
        app.router.add_get("/api/addresses", self._json("addresses", lambda: addresses_view(self.core)))
        app.router.add_get("/api/queues", self._queues)
        app.router.add_post("/api/reload", self._reload)
        app.router.add_get("/api/reload", self._json("reload", lambda: self.core.last_reload))
        self._add_ui_routes(app)
        return app

    # -- the topology page ---------------------------------------------------------------
    def _add_ui_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._ui_index)
        app.router.add_get("/ui/{name}", self._ui_asset)

    async def _ui_index(self, request: web.Request) -> web.Response:
        return self._ui_file("index.html")

    async def _ui_asset(self, request: web.Request) -> web.Response:
        return self._ui_file(request.match_info["name"])

    def _ui_file(self, name: str) -> web.Response:
        content_type = UI_ASSETS.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        body = (WEBUI / name).read_bytes()
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type, **UI_HEADERS})

    async def start(self) -> tuple[str, int] | None:
        """Listen; the bound address, or None if the default port was taken (logged:
        another router on this host has it).  A configured port that cannot be had
        raises ``OSError``."""
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE and not self.config.port_configured:
                log.warning("admin listener not started: %s is in use (set [admin] port, or --admin HOST:PORT)",
                            self.config.address)
                return None
            raise OSError(f"admin.port: cannot listen on {self.config.address}: {exc.strerror or exc}") from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.address = (host, port)
        return self.address

    def set_token(self, token: str | None) -> None:
        """A reload read ``admin.token_file`` again: requests from now on need this token
        (a listener started without a token stays without: that needs a restart)."""
        if self._token is not None and token is not None:
            self._token = token.encode()

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- requests ------------------------------------------------------------------------
    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is None or request.path in OPEN_PATHS or self._authorized(request):
            return await handler(request)
        return web.json_response(
            {"error": "unauthorized", "description": "this admin listener needs its token"},
            status=401,
            headers={hdrs.WWW_AUTHENTICATE: 'Basic realm="switchboard admin"'},
            dumps=_dumps,
        )

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            offered = value.strip()
        elif scheme.lower() == "basic":
            try:
                offered = BasicAuth.decode(header).password
            except ValueError:
                return False
        else:
            return False
        return hmac.compare_digest(offered.encode(), self._token)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "router": self.core.router_id}, dumps=_dumps)

    async def _readyz(self, request: web.Request) -> web.Response:
        reason = self.not_ready()
        if reason is None:
            return web.json_response({"status": "ready", "router": self.core.router_id}, dumps=_dumps)
        return web.json_response({"status": "not ready", "reason": reason, "router": self.core.router_id},
                                 status=503, dumps=_dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self._registry))
        response.headers[hdrs.CONTENT_TYPE] = CONTENT_TYPE_LATEST
        return response

    def _json(self, what: str, view: Callable[[], Any]) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            router_id = request.query.get("router")
            if router_id is not None and router_id != self.core.router_id:
                return await self._remote(request, router_id, what)
            return web.json_response(view(), dumps=_dumps)
        return handle

    async def _remote(self, request: web.Request, router_id: str, what: str) -> web.Response:
        """View ``what`` of router ``router_id`` of the network, asked over the data links."""
        try:
            timeout = float(request.query.get("timeout", REMOTE_TIMEOUT))
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= MAX_REMOTE_TIMEOUT:
            return _error(400, "bad timeout", f"timeout must be a number of seconds above 0, at most {MAX_REMOTE_TIMEOUT:g}")
        description = f"router {router_id!r} is not in the network seen from router {self.core.router_id!r}"
        if not self._requests.knows(router_id):
            return _error(404, "unknown router", description)
        answer: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()

        def done(reply: Any) -> None:
            if not answer.done():
                answer.set_result(reply)

        reply_to = self._requests.send(router_id, what, done)
        if reply_to is None:
            return _error(404, "unknown router", description)
        try:
            async with asyncio.timeout(timeout):
                reply = await answer
        except TimeoutError:
            return _error(504, "no answer", f"router {router_id!r} did not answer within {timeout:g} s")
        finally:
            self._requests.cancel(reply_to)
        properties = reply.application_properties or {}
        status = properties.get("status-code")
        if status != 200:
            return _error(status if isinstance(status, int) and 400 <= status < 600 else 502,
                          f"router {router_id!r} answered {status}", str(properties.get("status-description")))
        return web.json_response(reply.body, dumps=_dumps)

    async def _queues(self, request: web.Request) -> web.Response:
        router_id = request.query.get("router")
        if router_id is not None and router_id != self.core.router_id:
            return await self._remote(request, router_id, "queues")
        answer: "asyncio.Future[list[dict[str, Any]]]" = asyncio.get_running_loop().create_future()

        def done(rows: list[dict[str, Any]]) -> None:
            if not answer.done():
                answer.set_result(rows)

        queues_view(self.core, done)
        return web.json_response(await answer, dumps=_dumps)

    async def _reload(self, request: web.Request) -> web.Response:
        reload = self.core.reload_config
        if reload is None:
            return _error(501, "not available", "this router cannot reload")
        try:
            answer = reload()
        except ConfigError as exc:
            return _error(400, "configuration refused, the running one kept", str(exc))
        return web.json_response(answer, dumps=_dumps)

def _error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "description": description}, status=status, dumps=_dumps)
