"""The RPC and notification classes for threaded programs, over ``BlockingClient``.

Each class wraps its asyncio counterpart, which lives on the blocking client's loop
thread; every method hands its work to that loop and waits.  So any number of threads
may call one ``BlockingRPCClient`` at once, and endpoint methods (plain functions) run
in the server's worker threads, never on the loop.  Nothing is monkey-patched.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from ..client import BlockingClient, ClientError
from .client import DEFAULT_TIMEOUT, RPCClient
from .notify import NotificationListener, Notifier
from .server import RPCServer
from .target import Target

__all__ = ["BlockingRPCClient", "BlockingRPCServer", "BlockingNotifier", "BlockingNotificationListener"]

T = TypeVar("T")


def _run(blocking: BlockingClient, coro: Awaitable[T]) -> T:
    loop = blocking.loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    problem: Exception | None = None
    if running is loop:
        problem = RuntimeError("a blocking RPC call was made on the client's own loop thread: it would wait for itself")
    elif loop.is_closed() or not loop.is_running():
        problem = ClientError("client closed")
    if problem is not None:
        close = getattr(coro, "close", None)
        if close is not None:
            close()
        raise problem
    return asyncio.run_coroutine_threadsafe(coro, loop).result()  # type: ignore[arg-type]


def _make(blocking: BlockingClient, factory: Callable[[], T]) -> T:
    async def make() -> T:
        return factory()

    return _run(blocking, make())


class BlockingRPCClient:
    """``RPCClient`` for threads: ``call`` and ``cast`` block until done."""

    def __init__(self, client: BlockingClient, target: Target, *, timeout: float | None = DEFAULT_TIMEOUT,
                 version_cap: str | None = None, _inner: RPCClient | None = None) -> None:
        self.blocking = client
        self.rpc = _inner or _make(client, lambda: RPCClient(client.client, target, timeout=timeout,
                                                             version_cap=version_cap))

    @property
    def target(self) -> Target:
        return self.rpc.target

    def prepare(self, **overrides: Any) -> "BlockingRPCClient":
        return BlockingRPCClient(self.blocking, self.rpc.target, _inner=self.rpc.prepare(**overrides))

    def can_send_version(self, version: str) -> bool:
        return self.rpc.can_send_version(version)

    def call(self, ctxt: dict[str, Any] | None, method: str, **kwargs: Any) -> Any:
        return _run(self.blocking, self.rpc.call(ctxt, method, **kwargs))

    def cast(self, ctxt: dict[str, Any] | None, method: str, **kwargs: Any) -> None:
        _run(self.blocking, self.rpc.cast(ctxt, method, **kwargs))


class BlockingRPCServer:
    """``RPCServer`` for threads: plain endpoint methods run in ``workers`` threads."""

    def __init__(self, client: BlockingClient, target: Target, endpoints: Sequence[Any], *, workers: int = 8) -> None:
        self.blocking = client
        self.server = _make(client, lambda: RPCServer(client.client, target, endpoints, workers=workers))

    def start(self) -> None:
        _run(self.blocking, self.server.start())

    def stop(self) -> None:
        _run(self.blocking, self.server.stop())

    def wait(self) -> None:
        _run(self.blocking, self.server.wait())


class BlockingNotifier:
    """``Notifier`` for threads: each priority's method blocks until the notification is stored."""

    def __init__(self, client: BlockingClient, publisher_id: str, *, topics: Sequence[str] = ("notifications",),
                 exchange: str | None = None, timeout: float | None = 30.0, _inner: Notifier | None = None) -> None:
        self.blocking = client
        self.notifier = _inner or _make(client, lambda: Notifier(client.client, publisher_id, topics=topics,
                                                                 exchange=exchange, timeout=timeout))

    def prepare(self, **overrides: Any) -> "BlockingNotifier":
        return BlockingNotifier(self.blocking, "", _inner=self.notifier.prepare(**overrides))

    def start(self) -> None:
        _run(self.blocking, self.notifier.start())

    def pools(self, topic: str, priority: str) -> list[str]:
        return _make(self.blocking, lambda: self.notifier.pools(topic, priority))

    def notify(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any, priority: str) -> None:
        _run(self.blocking, self.notifier.notify(ctxt, event_type, payload, priority))

    def audit(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        self.notify(ctxt, event_type, payload, "audit")

    def debug(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        self.notify(ctxt, event_type, payload, "debug")

    def info(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        self.notify(ctxt, event_type, payload, "info")

    def warn(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        self.notify(ctxt, event_type, payload, "warn")

    warning = warn

    def error(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        self.notify(ctxt, event_type, payload, "error")

    def critical(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        self.notify(ctxt, event_type, payload, "critical")

    def sample(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        self.notify(ctxt, event_type, payload, "sample")


class BlockingNotificationListener:
    """``NotificationListener`` for threads: plain endpoint methods run in a thread."""

    def __init__(self, client: BlockingClient, targets: Sequence[Target], endpoints: Sequence[Any], *,
                 pool: str | None = None, batch_size: int = 1, batch_timeout: float | None = None) -> None:
        self.blocking = client
        self.listener = _make(client, lambda: NotificationListener(
            client.client, targets, endpoints, pool=pool, batch_size=batch_size, batch_timeout=batch_timeout))

    def start(self) -> None:
        _run(self.blocking, self.listener.start())

    def stop(self) -> None:
        _run(self.blocking, self.listener.stop())

    def wait(self) -> None:
        _run(self.blocking, self.listener.wait())
