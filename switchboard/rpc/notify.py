"""Notifications: ``Notifier`` sends, ``NotificationListener`` receives, in pools.

Every listener pool gets every notification, and the listeners of one pool compete for
them.  Each pool has its own durable queue per ``topic.priority``
(``wire.notification_address``); the default pool's queue has no pool suffix.  The
router cannot copy a message into several queues, so the notifier does: it sends each
notification to the default pool's queue and to the queue of every named pool it knows.

It knows a named pool because the pool's listeners say so: they announce their pool and
``(topic, priority)`` pairs on the multicast address ``wire.pools_address(exchange)`` when
they start, every ``announce_interval`` seconds, and whenever a notifier asks (a notifier
asks once when it starts, and waits ``discovery_wait`` seconds for the answers before its
first send).  A notifier keeps sending to a pool's queue for ``pool_memory`` seconds
after it last heard of it, so a pool whose listeners are all down (a restart, an
upgrade) keeps receiving into its queue and finds what it missed when it comes back.

``docs/rpc.md`` explains the design, its one gap (a notifier started while every
listener of a named pool is down does not know that pool until one comes back) and the
bounds on queues nobody reads.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
import uuid
import weakref
from typing import Any, Sequence

from ..amqp.spec import Accepted
from ..client import Client, ClientError, Received, Receiver
from .client import _caller
from .server import pause, release_prefetched
from .errors import MessageDeliveryFailure, MessagingTimeout
from .target import Target
from .wire import (
    PRIORITIES,
    Notification,
    PoolAnnouncement,
    WireError,
    decode_announcement,
    decode_notification,
    encode_announcement,
    encode_notification,
    notification_address,
    pools_address,
)

__all__ = ["Notifier", "NotificationListener", "NotificationResult"]

log = logging.getLogger("switchboard.rpc")

ANNOUNCE_INTERVAL = 30.0
POOL_MEMORY = 86400.0
DISCOVERY_WAIT = 0.2


class NotificationResult:
    """What a listener endpoint returns: ``HANDLED`` (or None) removes the notification
    from its queue; ``REQUEUE`` puts it back to be delivered again."""

    HANDLED = "handled"
    REQUEUE = "requeue"


class _PoolDirectory:
    """The named pools one exchange's listeners announced, as a notifier hears them."""

    def __init__(self, client: Client, exchange: str, discovery_wait: float, pool_memory: float) -> None:
        self.client = client
        self.exchange = exchange
        self.discovery_wait = discovery_wait
        self.pool_memory = pool_memory
        self.heard: dict[tuple[str, str], dict[str, float]] = {}
        self._started: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        address = pools_address(self.exchange)
        receiver = await self.client.receiver(address, credit=100)
        self._reader = asyncio.get_running_loop().create_task(self._read(receiver))
        async with _caller(self.client).sender(address) as sender:
            await sender.send(encode_announcement(PoolAnnouncement(self.exchange, None, query=True)))
        if self.discovery_wait > 0:
            await asyncio.sleep(self.discovery_wait)  # listeners' answers to the query

    async def _read(self, receiver: Receiver) -> None:
        loop = asyncio.get_running_loop()
        async for item in receiver:
            try:
                announcement = decode_announcement(item.message())
            except WireError as exc:
                log.warning("ignored a malformed pool announcement: %s", exc)
                continue
            finally:
                _settle(item.accept)
            if announcement.query or announcement.pool is None or announcement.exchange != self.exchange:
                continue
            for pair in announcement.targets:
                pools = self.heard.setdefault(pair, {})
                if announcement.pool not in pools:
                    log.info("notifications for %s.%s now also go to pool %r", pair[0], pair[1], announcement.pool)
                pools[announcement.pool] = loop.time()

    def pools(self, topic: str, priority: str) -> list[str]:
        pools = self.heard.get((topic, priority))
        if not pools:
            return []
        horizon = asyncio.get_running_loop().time() - self.pool_memory
        for pool in [p for p, seen in pools.items() if seen < horizon]:
            log.info("pool %r not heard of for %.0f s: notifications for %s.%s no longer go to it",
                     pool, self.pool_memory, topic, priority)
            del pools[pool]
        return sorted(pools)


_directories: "weakref.WeakKeyDictionary[Client, dict[str, _PoolDirectory]]" = weakref.WeakKeyDictionary()


class Notifier:
    """Sends notifications as ``publisher_id`` to ``topics`` (each to every pool).

    ``await notifier.info(ctxt, "compute.instance.create.end", payload)``, and likewise
    ``audit``, ``debug``, ``warn`` (``warning``), ``error``, ``critical``, ``sample``.
    Each returns once every pool's queue has stored the notification.  ``timeout``
    bounds that (None: no bound).
    """

    def __init__(self, client: Client, publisher_id: str, *, topics: Sequence[str] = ("notifications",),
                 exchange: str | None = None, timeout: float | None = 30.0,
                 discovery_wait: float = DISCOVERY_WAIT, pool_memory: float = POOL_MEMORY) -> None:
        self.client = client
        self.publisher_id = publisher_id
        self.topics = tuple(topics)
        self.exchange = Target(exchange=exchange).exchange_name
        self.timeout = timeout
        by_exchange = _directories.setdefault(client, {})
        directory = by_exchange.get(self.exchange)
        if directory is None:
            directory = by_exchange[self.exchange] = _PoolDirectory(client, self.exchange, discovery_wait, pool_memory)
        self._directory = directory

    def prepare(self, *, publisher_id: str | None = None, topics: Sequence[str] | None = None) -> "Notifier":
        notifier = Notifier.__new__(Notifier)
        notifier.__dict__.update(self.__dict__)
        if publisher_id is not None:
            notifier.publisher_id = publisher_id
        if topics is not None:
            notifier.topics = tuple(topics)
        return notifier

    async def start(self) -> None:
        """Ask the listeners of this exchange for their pools (the first send does it
        otherwise), and wait ``discovery_wait`` seconds for their answers."""
        await self._directory.ready()

    def pools(self, topic: str, priority: str) -> list[str]:
        """The named pools this notifier sends ``topic.priority`` notifications to."""
        return self._directory.pools(topic, priority)

    async def audit(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        await self.notify(ctxt, event_type, payload, "audit")

    async def debug(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        await self.notify(ctxt, event_type, payload, "debug")

    async def info(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        await self.notify(ctxt, event_type, payload, "info")

    async def warn(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        await self.notify(ctxt, event_type, payload, "warn")

    warning = warn

    async def error(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        await self.notify(ctxt, event_type, payload, "error")

    async def critical(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        await self.notify(ctxt, event_type, payload, "critical")

    async def sample(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any) -> None:
        await self.notify(ctxt, event_type, payload, "sample")

    async def notify(self, ctxt: dict[str, Any] | None, event_type: str, payload: Any, priority: str) -> None:
        """Send one notification at ``priority`` to every topic and every pool."""
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
        notification = Notification(
            publisher_id=self.publisher_id,
            event_type=event_type,
            priority=priority,
            payload=payload,
            context=dict(ctxt or {}),
            message_id=str(uuid.uuid4()),
            timestamp=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
        )
        body = encode_notification(notification).encode()
        try:
            async with asyncio.timeout(self.timeout):
                await self._directory.ready()
                addresses = []
                for topic in self.topics:
                    addresses.append(notification_address(self.exchange, topic, priority))
                    addresses += [notification_address(self.exchange, topic, priority, pool)
                                  for pool in self._directory.pools(topic, priority)]
                outcomes = await asyncio.gather(*(self._send(address, body) for address in addresses))
        except TimeoutError:
            raise MessagingTimeout(f"notification {event_type!r} was not stored within {self.timeout} s") from None
        except ClientError as exc:
            raise MessageDeliveryFailure(f"cannot send notification {event_type!r}: {exc}") from exc
        for address, outcome in zip(addresses, outcomes):
            if not isinstance(outcome, Accepted):
                raise MessageDeliveryFailure(f"notification {event_type!r} was not stored in {address}: {outcome!r}")

    async def _send(self, address: str, body: bytes) -> Any:
        async with _caller(self.client).sender(address) as sender:
            return await sender.send(body)


class NotificationListener:
    """Takes notifications for ``targets`` (their ``topic`` and ``exchange``) in ``pool``
    and hands them to ``endpoints``.

    An endpoint has a method per priority it wants (``info``, ``error``, ...).  With
    ``batch_size`` 1 it is called ``info(ctxt, publisher_id, event_type, payload,
    metadata)``; with a larger ``batch_size`` it is called ``info(messages)`` with a list
    of dicts (``ctxt``, ``publisher_id``, ``event_type``, ``payload``, ``metadata``) of up to
    ``batch_size`` notifications, or fewer once ``batch_timeout`` seconds passed since the
    first (None: wait for a full batch).  Coroutine functions are awaited; plain functions
    run in a thread.  A notification is removed from its queue once every endpoint has
    handled it; one that an endpoint answers ``NotificationResult.REQUEUE`` for, or
    raises on, goes back to its queue.
    """

    def __init__(self, client: Client, targets: Sequence[Target], endpoints: Sequence[Any], *,
                 pool: str | None = None, batch_size: int = 1, batch_timeout: float | None = None,
                 announce_interval: float = ANNOUNCE_INTERVAL) -> None:
        if not targets or any(not t.topic for t in targets):
            raise ValueError("a notification listener needs targets with a topic")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.client = client
        self.targets = list(targets)
        self.endpoints = list(endpoints)
        self.pool = pool
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.announce_interval = announce_interval
        self.priorities = [p for p in PRIORITIES if any(callable(getattr(e, p, None)) for e in self.endpoints)]
        if not self.priorities:
            raise ValueError(f"no endpoint has a method for a priority ({', '.join(PRIORITIES)})")
        self._receivers: list[tuple[str, Receiver]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[tuple[str, Received] | None] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._dispatcher is not None:
            return
        credit = max(10, 2 * self.batch_size)
        loop = asyncio.get_running_loop()
        for target in self.targets:
            for priority in self.priorities:
                address = notification_address(target.exchange_name, target.topic or "", priority, self.pool)
                receiver = await self.client.receiver(address, credit=credit)
                self._receivers.append((priority, receiver))
        self._tasks = [loop.create_task(self._read(priority, receiver)) for priority, receiver in self._receivers]
        if self.pool is not None:
            for exchange in sorted({t.exchange_name for t in self.targets}):
                self._tasks.append(loop.create_task(await self._announcer(exchange)))
        self._dispatcher = loop.create_task(self._dispatch_loop())

    async def stop(self) -> None:
        """Stop taking notifications; those taken and not handled go back to their queues."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, ClientError):
                pass
        self._tasks = []
        for _, receiver in self._receivers:
            pause(receiver)
        self._inbox.put_nowait(None)

    async def wait(self) -> None:
        """Wait for the batch being handled, then give back the rest and detach."""
        if self._dispatcher is not None:
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                pass
        while not self._inbox.empty():
            entry = self._inbox.get_nowait()
            if entry is not None:
                _settle(entry[1].release)
        for _, receiver in self._receivers:
            release_prefetched(receiver)
            try:
                await receiver.close()
            except ClientError:
                pass
        self._receivers = []

    # -- internals ---------------------------------------------------------------------
    async def _announcer(self, exchange: str) -> Any:
        address = pools_address(exchange)
        receiver = await self.client.receiver(address, credit=10)
        sender = await self.client.sender(address)  # its own: kept as long as the listener runs
        pairs = tuple((t.topic or "", p) for t in self.targets if t.exchange_name == exchange for p in self.priorities)
        announcement = encode_announcement(PoolAnnouncement(exchange, self.pool, pairs)).encode()
        await sender.send(announcement)

        async def run() -> None:
            try:
                while True:
                    try:
                        item = await receiver.receive(timeout=self.announce_interval)
                    except TimeoutError:
                        await sender.send(announcement)
                        continue
                    _settle(item.accept)
                    try:
                        query = decode_announcement(item.message()).query
                    except WireError:
                        continue
                    if query:
                        await sender.send(announcement)
            finally:
                for link in (receiver, sender):
                    try:
                        await link.close()
                    except ClientError:
                        pass

        return run()

    async def _read(self, priority: str, receiver: Receiver) -> None:
        while True:
            try:
                item = await receiver.receive()
            except ClientError as exc:
                log.warning("notification listener: receiver from %s ended: %s", receiver.source_address, exc)
                return
            self._inbox.put_nowait((priority, item))

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._inbox.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            deadline = loop.time() + self.batch_timeout if self.batch_timeout is not None else None
            while len(batch) < self.batch_size:
                try:
                    async with asyncio.timeout_at(deadline):
                        entry = await self._inbox.get()
                except TimeoutError:
                    break
                if entry is None:
                    stopping = True
                    break
                batch.append(entry)
            await self._dispatch(batch)
            if stopping:
                return

    async def _dispatch(self, batch: list[tuple[str, Received]]) -> None:
        by_priority: dict[str, list[tuple[Received, dict[str, Any]]]] = {}
        for priority, item in batch:
            try:
                notification = decode_notification(item.message())
            except WireError as exc:
                log.warning("notification listener: rejected a malformed notification: %s", exc)
                _settle(lambda error=str(exc): item.reject("amqp:decode-error", error))
                continue
            by_priority.setdefault(priority, []).append((item, {
                "ctxt": notification.context,
                "publisher_id": notification.publisher_id,
                "event_type": notification.event_type,
                "payload": notification.payload,
                "metadata": {"message_id": notification.message_id, "timestamp": notification.timestamp},
            }))
        for priority, entries in by_priority.items():
            requeue = False
            for endpoint in self.endpoints:
                method = getattr(endpoint, priority, None)
                if not callable(method):
                    continue
                try:
                    if self.batch_size > 1:
                        result = await _run(method, [m for _, m in entries])
                    else:
                        (_, m), = entries
                        result = await _run(method, m["ctxt"], m["publisher_id"], m["event_type"], m["payload"],
                                            m["metadata"])
                except Exception:
                    log.exception("notification endpoint %s.%s raised; the notification goes back to its queue",
                                  type(endpoint).__name__, priority)
                    result = NotificationResult.REQUEUE
                requeue = requeue or result == NotificationResult.REQUEUE
            for item, _ in entries:
                _settle((lambda i=item: i.modify(delivery_failed=True)) if requeue else item.accept)


async def _run(method: Any, *args: Any) -> Any:
    if inspect.iscoroutinefunction(method):
        return await method(*args)
    return await asyncio.to_thread(method, *args)


def _settle(settle: Any) -> None:
    try:
        settle()
    except ClientError as exc:  # its connection is gone: the queue delivers it again
        log.debug("cannot settle a notification: %s", exc)
