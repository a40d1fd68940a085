"""The client for threaded programs: the asyncio client on a loop of its own.

``BlockingClient.connect(url)`` starts one thread that runs an asyncio event loop and
the ``Client`` on it.  Every method hands its work to that loop
(``asyncio.run_coroutine_threadsafe``) and waits for the answer, so any number of
threads may use one client, its senders, receivers and requester at once: all the state
is touched by the loop thread alone.  Nothing is monkey-patched; no eventlet.

Timeouts are applied on the loop, so an operation that times out is cancelled there
and leaves nothing running behind the caller's back.

Event listeners (``on_event``) run on the loop thread: they must not block, and must
not call the blocking client (that would wait for the very thread it runs on).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import threading
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from ..amqp.message import Message
from .connection import Client
from .errors import ClientError
from .events import Listener
from .failover import Reconnect
from .receiver import Received, Receiver
from .requester import DEFAULT_REQUEST_TIMEOUT, Requester
from .sender import Sender
from .urls import Router, Url

__all__ = ["BlockingClient", "BlockingSender", "BlockingReceiver", "BlockingReceived", "BlockingRequester"]

T = TypeVar("T")

STOP_WAIT_SECONDS = 10.0
"""How long ``close`` waits for the loop thread to finish once the client is closed."""


class _LoopThread:
    """An asyncio event loop running in a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._stopping = False
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name=name, daemon=True)
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        try:
            self.loop.run_forever()
        finally:
            # Work handed over just before the stop has not finished: end it, so that
            # no caller waits for an answer that cannot come.
            for _ in range(3):
                self.loop.run_until_complete(asyncio.sleep(0))
                tasks = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
                if not tasks:
                    break
                for task in tasks:
                    task.cancel()
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; its result (or exception) comes in the future."""
        with self._lock:
            problem: BaseException | None = None
            if threading.get_ident() == self.thread.ident:
                problem = RuntimeError(
                    "the blocking client was called from its own event loop thread (an event listener?):"
                    " it would wait for itself; use the asyncio client (BlockingClient.client) there"
                )
            elif self._stopping:
                problem = ClientError("client closed")
            if problem is None:
                return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        close = getattr(coro, "close", None)
        if close is not None:
            close()  # never started: no "never awaited" warning
        raise problem

    def run(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        try:
            return self.submit(coro).result()
        except concurrent.futures.CancelledError:
            if self._stopping:
                raise ClientError("client closed") from None
            raise

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the loop thread and wait for its result."""

        async def call() -> T:
            return function(*args)

        return self.run(call())

    def stop(self) -> None:
        """Stop the loop (what still runs on it is cancelled) and wait for the thread."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.get_ident() != self.thread.ident:
            self.thread.join(STOP_WAIT_SECONDS)


async def _bounded(coro: Awaitable[T], timeout: float | None) -> T:
    async with asyncio.timeout(timeout):
        return await coro


class BlockingClient:
    """A ``Client`` for threaded code: the same operations, as plain blocking calls.

    ``BlockingClient.connect(url, ...)`` takes the options of ``Client.connect``.  Use it
    as a context manager, or call ``close()``.  Safe to share between threads.
    """

    def __init__(self, client: Client, runner: _LoopThread) -> None:
        self.client = client
        """The asyncio client underneath (use it only on ``loop``)."""
        self._runner = runner
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        url: str | Url,
        *,
        container_id: str | None = None,
        idle_timeout: float | None = 10.0,
        max_frame_size: int = 65536,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        sasl_mechanism: str | None = None,
        reconnect: Reconnect | bool | None = None,
        on_event: Listener | None = None,
    ) -> "BlockingClient":
        """Start the loop thread and connect on it; see ``Client.connect``."""
        runner = _LoopThread("switchboard-client")
        try:
            client = runner.run(Client.connect(
                url,
                container_id=container_id,
                idle_timeout=idle_timeout,
                max_frame_size=max_frame_size,
                ssl_context=ssl_context,
                timeout=timeout,
                sasl_mechanism=sasl_mechanism,
                reconnect=reconnect,
                on_event=on_event,
            ))
        except BaseException:
            runner.stop()
            raise
        return cls(client, runner)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the client runs on (in its own thread)."""
        return self._runner.loop

    @property
    def router(self) -> Router | None:
        return self.client.router

    @property
    def connected(self) -> bool:
        return self.client.connected

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for each ``ClientEvent``, on the loop thread."""
        self._runner.call(self.client.add_listener, listener)

    def remove_listener(self, listener: Listener) -> None:
        self._runner.call(self.client.remove_listener, listener)

    def sender(self, address: str | None, *, presettled: bool = False, name: str | None = None) -> "BlockingSender":
        """Attach a sending link to ``address`` (None: the anonymous relay)."""
        sender = self._runner.run(self.client.sender(address, presettled=presettled, name=name))
        return BlockingSender(sender, self._runner)

    def receiver(
        self,
        address: str | None,
        *,
        credit: int = 100,
        dynamic: bool = False,
        name: str | None = None,
    ) -> "BlockingReceiver":
        """Attach a receiving link from ``address`` (or a dynamic address)."""
        receiver = self._runner.run(self.client.receiver(address, credit=credit, dynamic=dynamic, name=name))
        return BlockingReceiver(receiver, self._runner)

    def requester(self, *, credit: int = 200) -> "BlockingRequester":
        """A requester of its own (``Client.requester``)."""
        return BlockingRequester(self._runner.run(self.client.requester(credit=credit)), self._runner)

    def request(self, address: str, message: Message, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Message:
        """Send a request and return its reply (``Client.request``: one shared requester)."""
        return self._runner.run(self.client.request(address, message, timeout=timeout))

    def close(self) -> None:
        """Close the connection and stop the loop thread.  Waiting calls fail with
        ``ClientError``; calls after ``close`` raise it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._runner.run(self.client.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> "BlockingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class BlockingSender:
    """Sends messages; made by ``BlockingClient.sender``."""

    def __init__(self, sender: Sender, runner: _LoopThread) -> None:
        self.sender = sender
        self._runner = runner

    @property
    def address(self) -> str | None:
        return self.sender.target_address

    def send(self, message: Message | bytes, *, timeout: float | None = None) -> Any:
        """Send one message and return its outcome (None when presettled).

        Raises what ``Sender.send`` raises, and ``TimeoutError`` when there is no outcome
        within ``timeout`` seconds (the message may have been delivered).
        """
        return self._runner.run(_bounded(self.sender.send(message), timeout))

    def send_async(self, message: Message | bytes) -> concurrent.futures.Future[Any]:
        """Send without waiting: a ``concurrent.futures.Future`` of the outcome.

        Messages sent this way from one thread go out in the order of the calls.
        """
        return self._runner.submit(self.sender.send(message))

    def close(self) -> None:
        self._runner.run(self.sender.close())


class BlockingReceived:
    """A message taken from a ``BlockingReceiver``: settle it with accept/reject/release/modify."""

    def __init__(self, received: Received, runner: _LoopThread) -> None:
        self.received = received
        self._runner = runner

    @property
    def payload(self) -> bytes:
        return self.received.payload

    def message(self) -> Message:
        return self.received.message()

    def accept(self) -> None:
        self._runner.call(self.received.accept)

    def reject(self, condition: str = "amqp:internal-error", description: str | None = None) -> None:
        self._runner.call(self.received.reject, condition, description)

    def release(self) -> None:
        self._runner.call(self.received.release)

    def modify(self, delivery_failed: bool = True, undeliverable_here: bool = False) -> None:
        self._runner.call(self.received.modify, delivery_failed, undeliverable_here)


class BlockingReceiver:
    """Receives messages; made by ``BlockingClient.receiver``.  Several threads may call
    ``receive`` on one receiver: each message goes to one of them."""

    def __init__(self, receiver: Receiver, runner: _LoopThread) -> None:
        self.receiver = receiver
        self._runner = runner

    @property
    def address(self) -> str | None:
        return self.receiver.address

    def receive(self, timeout: float | None = None) -> BlockingReceived:
        """Wait for the next message; ``TimeoutError`` after ``timeout`` seconds,
        ``ClientError`` once the receiver has ended."""
        return BlockingReceived(self._runner.run(self.receiver.receive(timeout)), self._runner)

    def __iter__(self) -> Iterator[BlockingReceived]:
        """Messages until the receiver ends."""
        while True:
            try:
                yield self.receive()
            except ClientError:
                return

    def close(self) -> None:
        self._runner.run(self.receiver.close())


class BlockingRequester:
    """Sends requests and returns their replies; made by ``BlockingClient.requester``.
    Any number of threads may have requests in flight on one requester."""

    def __init__(self, requester: Requester, runner: _LoopThread) -> None:
        self.requester = requester
        self._runner = runner

    def request(self, address: str, message: Message, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Message:
        """See ``Requester.request``."""
        return self._runner.run(self.requester.request(address, message, timeout=timeout))

    def close(self) -> None:
        self._runner.run(self.requester.close())
