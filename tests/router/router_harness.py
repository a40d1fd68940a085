"""A router core in-process: real engines joined by in-memory pipes, on a simulated clock.

::

    client engine ──pipe──▶ router-side engine ──events──▶ RouterCore
                  ◀─pipe───  (PipePort: the core's port)  ◀──actions──

``RouterHarness`` owns one ``RouterCore`` and the clock.  ``connect()`` gives a ``Client``:
a client-role engine whose bytes reach a router-side engine through a ``PipePort``, the
same port interface the io layer's ``AmqpProtocol`` offers the core.  The pipe from the
router to a client holds what the client has not read yet; a client that stops reading
(``client.reading = False``) fills it, and past ``max_connection_output`` its port reports
``write_paused`` to the core as a socket's would.  ``run()`` moves bytes and events until
nothing moves (bounded); ``advance(seconds)`` moves the clock and ticks everything.

With ``store_path`` the core hosts queues in a real ``SqliteStore`` at that path.  The
store's writer thread hands its answers back through ``post``, which here only queues
them: they run on the test's thread when the test calls ``wait_store()`` (or ``settle()``),
so the core stays single-threaded and every run is deterministic.  The core's wall clock
follows the simulated clock, so message TTLs and queue expiry move with ``advance``.
``restart()`` stops the core (cleanly, or as if the process died), closes the store and
starts a new core on the same file, which recovers the queues from it.
"""

from __future__ import annotations

import queue
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.delivery import Delivery
from switchboard.amqp.link import ReceiverLink, SenderLink
from switchboard.amqp.message import Message
from switchboard.amqp.session import Session
from switchboard.amqp.spec import Error, Source, Target
from switchboard.router.config import Limits, RouterConfig
from switchboard.io.turns import ARRIVAL_BATCH
from switchboard.router.core import ANONYMOUS_RELAY, RouterCore
from switchboard.store.sqlite import SqliteStore

__all__ = ["RouterHarness", "Client", "PipePort", "TrackedStore", "message", "STORE_WAIT_SECONDS"]

STORE_WAIT_SECONDS = 10.0
"""Bound on one wait for the store's answers (generous: the machine is shared)."""
WALL_CLOCK_START_MS = 1_700_000_000_000


def message(body: bytes | str = b"x", **properties: Any) -> bytes:
    """An encoded message (``to=...`` and other properties as keyword arguments)."""
    from switchboard.amqp.spec import Properties

    data = body.encode() if isinstance(body, str) else body
    return Message(data, properties=Properties(**properties) if properties else None).encode()


class PipePort:
    """The router side of one in-memory connection: what ``AmqpProtocol`` is over TCP."""

    def __init__(self, harness: "RouterHarness", engine: Connection, host: str, role: str) -> None:
        self.harness = harness
        self.engine = engine
        self.peer = (host, 40000 + len(harness.ports))
        self.role = role
        self.write_paused = False
        self.unread = bytearray()
        """Bytes the router wrote that the client has not read yet."""
        self.flush_requested = False
        self.gone = False

    # -- the port --------------------------------------------------------------------
    def output_buffered(self) -> int:
        return len(self.unread)

    def request_flush(self) -> None:
        self.flush_requested = True

    def close(self, error: Error | None = None) -> None:
        self.engine.close(error)
        self._deliver_events()
        self.request_flush()

    def abort(self) -> None:
        self._lose()

    # -- what the io layer does --------------------------------------------------------
    def flush(self) -> None:
        self.flush_requested = False
        if self.gone:
            return
        engine = self.engine
        chunks = engine.data_to_send()
        engine.tick(self.harness.now)
        chunks += engine.data_to_send()
        for chunk in chunks:
            self.unread += chunk
        self._deliver_events()
        if not self.write_paused and len(self.unread) > self.harness.config.limits.max_connection_output:
            self.write_paused = True
            self.harness.core.writing_paused(self, True)
        if engine.transport_done:
            self._lose()

    def receive(self, data: bytes) -> None:
        """Bytes from the client, handled one frame budget at a time like the io layer."""
        if self.gone:
            return
        engine = self.engine
        engine.receive_data(data)
        self._deliver_events()
        turns = 0
        while engine.input_pending:
            turns += 1
            assert turns < 100_000, "input never drained"
            engine.continue_input()
            self._deliver_events()
        self.request_flush()

    def take_unread(self) -> bytes:
        data = bytes(self.unread)
        self.unread.clear()
        if self.write_paused:
            self.write_paused = False
            self.harness.core.writing_paused(self, False)
        return data

    def _deliver_events(self) -> None:
        events = self.engine.take_events()
        if events:
            self.harness.core.events_received(self, events)
            self.flush_requested = True

    def _lose(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.engine.connection_lost()
        self._deliver_events()
        self.harness.core.connection_ended(self)


class Client:
    """A client engine joined to the router by a pipe."""

    def __init__(self, harness: "RouterHarness", engine: Connection, port: PipePort) -> None:
        self.harness = harness
        self.engine = engine
        self.port = port
        self.reading = True
        """False: the client takes nothing more from its socket (its peer's writes pile up)."""
        self.events: list[ev.Event] = []
        self.session: Session | None = None

    def begin(self) -> Session:
        self.session = self.engine.begin_session()
        return self.session

    def sender(self, address: str | None, name: str | None = None, session: Session | None = None) -> SenderLink:
        session = session or self.session or self.begin()
        return session.sender(name or f"to-{address}-{id(session)}-{len(session.links)}", target=Target(address=address))

    def receiver(self, address: str, credit: int = 0, name: str | None = None, session: Session | None = None,
                 dynamic: bool = False) -> ReceiverLink:
        session = session or self.session or self.begin()
        source = Source(dynamic=True) if dynamic else Source(address=address)
        return session.receiver(name or f"from-{address}-{id(session)}-{len(session.links)}", source=source, credit=credit)

    def received(self, link: ReceiverLink | None = None) -> list[Delivery]:
        return [e.delivery for e in self.events if isinstance(e, ev.DeliveryReceived)
                and (link is None or e.delivery.link is link)]

    def take(self, cls: type) -> list[Any]:
        """Events of ``cls`` seen so far, forgotten once taken."""
        taken = [e for e in self.events if isinstance(e, cls)]
        self.events = [e for e in self.events if not isinstance(e, cls)]
        return taken

    @property
    def closed(self) -> bool:
        return self.engine.closed


class TrackedStore:
    """A store that counts the calls whose ``done`` has not been called back yet.

    Everything else is the wrapped store's: the calls reach it unchanged, in order."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.outstanding = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not callable(attribute) or name in ("open", "close"):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if "done" in kwargs and callable(kwargs["done"]):
                kwargs["done"] = self._counted(kwargs["done"])
            elif args and callable(args[-1]):
                args = (*args[:-1], self._counted(args[-1]))
            return attribute(*args, **kwargs)

        return call

    def _counted(self, done: Callable[[Any], None]) -> Callable[[Any], None]:
        self.outstanding += 1

        def counted(result: Any) -> None:
            self.outstanding -= 1
            done(result)

        return counted


class RouterHarness:
    def __init__(self, limits: Limits | None = None, config: RouterConfig | None = None,
                 store_path: Path | None = None, fsync: str = "batch") -> None:
        config = config or RouterConfig(router_id="harness")
        if limits is not None:
            config = replace(config, limits=limits)
        self.config = config
        self.fabric: Any = None
        """The ``network_harness.Fabric`` this router is part of (its clock, its run)."""
        self._now = 0.0
        self.store_path = store_path
        self.fsync = fsync
        self.store: TrackedStore | None = None
        self.posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        """What the store handed back, not yet run (run by ``wait_store``)."""
        self.ports: list[PipePort] = []
        self.clients: list[Client] = []
        self.core = self._start_core()

    def wall_clock_ms(self) -> int:
        """The core's wall clock: milliseconds since the epoch, moving with ``now``."""
        return WALL_CLOCK_START_MS + int(self.now * 1000)

    def _start_core(self) -> RouterCore:
        if self.store_path is None:
            return RouterCore(self.config, lambda: self.now, self.wall_clock_ms)
        self.store = TrackedStore(SqliteStore(self.store_path, self.posted.put, self.fsync))
        core = RouterCore(self.config, lambda: self.now, self.wall_clock_ms, store=self.store)  # type: ignore[arg-type]
        self.core = core
        core.queues.recover(self.store.open())
        self.wait_store()
        return core

    def wait_store(self, timeout: float = STORE_WAIT_SECONDS) -> None:
        """Run what the store hands back (and what that sets moving) until every call
        made to it has been answered and committed; fail after ``timeout`` seconds."""
        store = self.store
        if store is None:
            return
        deadline = time.monotonic() + timeout
        barrier: list[Any] = []
        while True:
            self.run()
            if store.outstanding == 0:
                if barrier:
                    return
                # Calls without a callback (a removal, a dead-letter move) are committed
                # with the next transaction: a read queued behind them answers after it.
                store.queue("", barrier.append)
                continue
            remaining = deadline - time.monotonic()
            try:
                callback = self.posted.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(f"the store left {store.outstanding} calls unanswered for {timeout} s") from None
            callback()

    def settle(self) -> None:
        """Move everything: bytes, events and the store's answers, until nothing moves."""
        self.run()
        self.wait_store()

    def restart(self, clean: bool = True) -> RouterCore:
        """Stop the core, close the store, and start a new core on the same store file.

        ``clean``: as the server stops -- senders told, connections closed (so deliveries
        out with consumers count as failed), the store's last writes committed.  Otherwise
        as if the process died after the store had committed what it was given: every
        connection is simply gone, the old core hears of nothing.  Clients of the old core
        have lost their connection (their events say so) and leave ``clients``."""
        assert self.store is not None, "restart() needs a harness with a store"
        core = self.core
        self.wait_store()
        if clean:
            core.begin_shutdown()
            self.run()
            core.finish_shutdown()
            self.run()
            for port in self.ports:
                port.abort()
            self.run()
            self.wait_store()
            core.queues.close()
        else:
            for port in self.ports:
                port.gone = True
        self.run()
        for client in self.clients:
            if not client.engine.closed:
                client.engine.connection_lost()
                client.events.extend(client.engine.take_events())
        self.store.close()
        self.ports = []
        self.clients = [client for client in self.clients if not client.port.gone]
        self.core = self._start_core()
        return self.core

    @property
    def now(self) -> float:
        return self.fabric.now if self.fabric is not None else self._now

    @now.setter
    def now(self, value: float) -> None:
        self._now = value

    def connect(self, container: str = "client", host: str = "10.0.0.1", role: str = "normal") -> Client:
        limits = self.config.limits
        server = Connection(
            self.config.router_id,
            server=True,
            max_frame_size=limits.max_frame_size,
            channel_max=limits.max_sessions_per_connection - 1,
            idle_timeout=limits.idle_timeout or None,
            handshake_timeout=limits.handshake_timeout or None,
            offered_capabilities=[ANONYMOUS_RELAY],
        )
        server.frame_budget = ARRIVAL_BATCH
        server.max_partial_bytes = 2 * limits.max_message_size
        port = PipePort(self, server, host, role)
        self.ports.append(port)
        self.core.connection_started(port)
        engine = Connection(container)
        engine.open()
        client = Client(self, engine, port)
        self.clients.append(client)
        self.run()
        return client

    def run(self, max_rounds: int = 10_000) -> None:
        """Move bytes and events until nothing moves."""
        if self.fabric is not None:
            self.fabric.run(max_rounds)
            return
        for _ in range(max_rounds):
            if not self.step():
                return
        raise AssertionError(f"still moving after {max_rounds} rounds")

    def step(self) -> bool:
        """Flush, and move what the clients have to move once; True if anything moved."""
        moved = False
        for port in self.ports:
            if port.flush_requested:
                port.flush()
        for client in self.clients:
            port = client.port
            engine = client.engine
            if client.reading and port.unread:
                engine.receive_data(port.take_unread())
                client.events.extend(engine.take_events())
                moved = True
            if port.gone and not engine.closed:
                engine.connection_lost()
                client.events.extend(engine.take_events())
            out = engine.data_to_send()
            if out and not port.gone:
                port.receive(b"".join(bytes(chunk) for chunk in out))
                moved = True
        return moved or any(p.flush_requested for p in self.ports)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Move the clock, ticking the engines (heartbeats, timeouts) and the core."""
        if self.fabric is not None:
            self.fabric.advance(seconds)
            return
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            self.tick()
            self.run()

    def tick(self) -> None:
        for client in self.clients:
            client.engine.tick(self.now)
        for port in self.ports:
            port.flush_requested = True
        self.core.tick(self.now)
        self.core.plane.tick(self.now)
