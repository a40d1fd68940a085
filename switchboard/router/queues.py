"""Queues: addresses whose messages wait in the durable store until a consumer takes one.

An address under a ``distribution = "queue"`` prefix is hosted by one router, which keeps
its messages in the store (``switchboard.store``).  What the queue promises:

* **Accepted means stored.**  A sender's unsettled delivery is settled ``accepted`` only
  once the store says the message is durable (under its fsync policy).  If the store
  fails, the sender is told (``rejected``, ``amqp:internal-error``).
* **Removed only when taken.**  Consumers compete, with credit.  A message leaves the
  queue when a consumer accepts it (or took it presettled).  ``released`` puts it back
  at the head, unchanged.  ``modified(delivery-failed)``, a consumer lost with the message
  unsettled, or a consumer that settles without an outcome put it back at the head with
  its ``delivery-count`` one higher (``first-acquirer`` false when it is sent again).
  ``rejected``, or more failed deliveries than ``max_delivery_attempts``, dead-letter it.
* **Bounded.**  ``max_messages`` and ``max_bytes`` per queue, with ``reject-publish``
  (the sender is told ``amqp:resource-limit-exceeded``) or ``drop-head``; messages older
  than their TTL go; a queue with no consumer and no new message for ``expiry`` seconds
  goes with its messages.  Senders get credit from the queue's room, not from consumers.
* **Memory stays small.**  The router keeps a record per message (its id, size, expiry,
  delivery count) and the payloads of the messages next in line, up to a window; the
  rest stay on disk and are read back in pages as the head reaches them.
* **Restarts lose nothing.**  At start every queue and message comes back from the
  store; messages that were out with consumers when the router stopped are sent again.

Order is FIFO per queue, except that a message put back goes to the head.  Store times
are wall-clock seconds (expiry survives restarts); ``wall`` is passed in.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ..amqp.delivery import ACCEPTED, Delivery
from ..amqp.errors import Condition
from ..amqp.message import Routing, read_routing, with_redelivery
from ..amqp.spec import Accepted, Error, Modified, Rejected, Released, SenderSettleMode
from ..amqp.types import Symbol
from ..store.base import QueueRecord, QueueStore, Recovered, StoredMessage, StoreError
from .config import QueueSettings
from .forwarders import pick_consumer, pick_remote
from .interrouter import QUEUED, annotate, has_routing_annotations, strip_routing_annotations
from .logs import fields
from .memory import MESSAGE_COST

if TYPE_CHECKING:
    from .addresses import Address
    from .core import RouterCore
    from .interrouter import Neighbour
    from .links import Outbound

__all__ = ["QueueForwarder", "QueueManager", "HostedQueue", "QueuedMessage"]

log = logging.getLogger("switchboard.router.queues")

STORE_FAILED = Symbol("amqp:internal-error")
PAGE_MESSAGES = 1000
"""Messages read back from the store at a time (at start, and as the head reaches them)."""
PAGE_BYTES = 4 * 1024 * 1024
FULL_QUEUE_CREDIT = 16
"""Credit a sender still gets on a full ``reject-publish`` queue, so it hears ``rejected``
instead of waiting without knowing why."""


class QueuedMessage:
    """One message of a queue: its record, and its payload while it is in memory."""

    __slots__ = ("queue", "id", "payload", "size", "expires_at", "delivery_count", "out")

    def __init__(self, queue: "HostedQueue", message_id: int, payload: bytes | None, size: int,
                 expires_at: float | None, delivery_count: int) -> None:
        self.queue: HostedQueue | None = queue
        """None once the message left the queue while out with a consumer (purged, deleted)."""
        self.id = message_id
        self.payload = payload
        self.size = size
        self.expires_at = expires_at
        self.delivery_count = delivery_count
        self.out = False
        """Sent to a consumer, its outcome not yet known."""


class HostedQueue:
    """A queue this router serves."""

    __slots__ = (
        "name", "settings", "address", "entries", "ready", "bytes", "incoming", "incoming_bytes", "next_id",
        "resident", "fetching", "loading", "load_upto", "arrived", "created_at", "last_active", "next_expiry",
        "deleted", "delivered", "acknowledged", "claiming", "adopted", "unloaded",
        "expired", "dropped", "dead_lettered", "load_from", "parked", "purges",
    )

    def __init__(self, name: str, settings: QueueSettings, created_at: float, next_id: int = 1) -> None:
        self.name = name
        self.settings = settings
        self.address: "Address | None" = None
        self.entries: dict[int, QueuedMessage] = {}
        """Every stored message of the queue: waiting, or out with a consumer."""
        self.ready: deque[QueuedMessage] = deque()
        """Waiting messages in the order they go out (put-back ones first)."""
        self.bytes = 0
        self.incoming = 0
        """Messages being stored (not yet durable): they count against the bounds."""
        self.incoming_bytes = 0
        self.next_id = next_id
        self.resident = 0
        """Payload bytes of waiting messages held in memory."""
        self.fetching = False
        self.loading = False
        self.load_upto = 0
        self.arrived: list[QueuedMessage] = []
        """Messages stored while the queue was being read back at start: they follow."""
        self.created_at = created_at
        self.last_active = created_at
        self.next_expiry: float | None = None
        """No message expires before this (wall clock); None: none has a TTL."""
        self.deleted = False
        self.delivered = 0
        self.acknowledged = 0
        self.claiming = False
        """A shared store: the lease is asked for; nothing is stored or sent until it is ours."""
        self.expired = 0
        self.dropped = 0
        """Dropped at a bound (drop-head, a full dead-letter queue) or with nowhere to go."""
        self.dead_lettered = 0
        self.purges = 0
        """Purges so far: a message being stored when one happened was purged with it."""
        self.parked: list[QueuedMessage] = []
        """Messages for the dead-letter queue while it is not served here (its lease is
        asked for, or held by another router): kept, stored, until it is."""
        self.load_from: int | None = None
        """Reading back failed after this id: tried again at the next tick."""
        self.unloaded = 0
        """Messages still to be read back from the store (at start, or on taking a lease)."""
        self.adopted = False
        """Claimed because its router left the network, not because anyone here used it."""

    @property
    def depth(self) -> int:
        return len(self.entries) + self.unloaded

    @property
    def state(self) -> str:
        if self.claiming:
            return "claiming"
        return "loading" if self.loading else "ready"

    def room(self, message_size: int) -> int:
        """Messages that may still be added before a bound is reached."""
        settings = self.settings
        by_count = settings.max_messages - len(self.entries) - self.incoming
        by_bytes = (settings.max_bytes - self.bytes - self.incoming_bytes) // max(1, message_size)
        room = by_count if by_count < by_bytes else by_bytes
        return room if room > 0 else 0


class QueueForwarder:
    """``distribution = "queue"``: the message goes into the queue this router hosts."""

    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any,
                routing: Routing, expires_at: float | None, source: "Neighbour | None") -> None:
        queue = address.hosted
        if queue is None:
            try:
                queue = core.queues.host(address)
            except StoreError as exc:
                core.reject(delivery, STORE_FAILED, f"the queue store cannot be opened: {exc}")
                return
        annotations = routing.message_annotations
        if source is not None and annotations is not None and QUEUED in annotations:
            # From another router's queue of the same name (routers that each host one):
            # stored there already, it is for our consumers only, or goes back.
            consumer = pick_consumer(address, len(payload), core.max_link_unsettled) if address.consumers else None
            if consumer is None:
                core.release(delivery, address.traffic)
            else:
                core.send_to(consumer, delivery, payload, routing)
            return
        if source is not None and annotations is not None and has_routing_annotations(routing):
            # The route it took to get here is not part of the message: stored without it,
            # it goes out from here as if sent here (its trace starts again).
            payload = strip_routing_annotations(payload, routing)
            routing = read_routing(payload)
        core.queues.enqueue(queue, delivery, payload, routing)


class QueueManager:
    """Every queue this router hosts, and the store behind them."""

    def __init__(self, core: "RouterCore", store: QueueStore | None, wall: Callable[[], float]) -> None:
        self.core = core
        self.store = store
        self.wall = wall
        self.queues: dict[str, HostedQueue] = {}
        limits = core.config.limits
        self.window = limits.max_address_bytes
        """Payload bytes of a queue's waiting messages kept in memory."""
        self.expired = 0
        self.dropped = 0
        self.dead_lettered = 0
        self.store_errors = 0
        self.shared = store is not None and store.shared
        """Several routers use the store: a queue is served by the router holding its lease."""
        self.lease_seconds = core.config.store.lease_seconds
        self.leased_elsewhere: dict[str, str | None] = {}
        """Queues another router serves (holds the lease of, or advertises), by name: if
        that router leaves the network, this one asks for the lease."""
        self.holders: dict[str, str] = {}
        """The router last seen holding each such queue's lease (for the log)."""
        self.renewed_at = 0.0
        self.unopened = False
        """The store is opened when a queue is first used (there was nothing to recover)."""

    # ================================================================================
    # Queues
    # ================================================================================
    def open_on_first_use(self) -> None:
        self.unopened = True

    def _open_now(self) -> None:
        """Make the store now (a blocking call, once: a new SQLite file takes milliseconds).
        Raises ``StoreError``, which the caller turns into an answer for its client."""
        assert self.store is not None
        recovered = self.store.open()
        self.unopened = False
        log.info("queue store opened")
        self.recover(recovered)

    def host(self, address: "Address") -> HostedQueue:
        """The queue for ``address``, created (in the store too) on first use.  With a
        shared store the queue first waits for its lease (``claiming``); if another
        router holds it, the address becomes a proxy for that router's queue.  Raises
        ``StoreError`` if the store cannot be made."""
        if self.unopened:
            self._open_now()
        queue = self.queues.get(address.name)
        if queue is None:
            settings = self.core.addresses.queue_settings(address.name)
            if settings is None:
                # A reload took the prefix away from "queue" while this address was in
                # use: it stays a queue until its links detach, with default bounds.
                settings = QueueSettings()
            if self.store is None:
                raise RuntimeError("a queue address without a store")
            now = self.wall()
            queue = HostedQueue(address.name, settings, now)
            self.queues[address.name] = queue
            if self.shared:
                queue.claiming = queue.loading = True
                self._claim(queue)
            else:
                self.store.create_queue(address.name, now)
                log.info("queue %r created", address.name, extra=fields(queue=address.name, event="created"))
        if queue.address is not address:
            queue.address = address
            address.hosted = queue
            plane = self.core.plane
            plane.local_consumers_changed(address)
            plane.refresh_links(address)  # consumers on other routers may be waiting
        return queue

    # -- leases (a shared store) -------------------------------------------------------
    def _claim(self, queue: HostedQueue) -> None:
        """Ask for the queue's lease; serve it if granted, else proxy for its holder."""
        me = self.core.router_id

        def claimed(result: str | BaseException) -> None:
            if self.queues.get(queue.name) is not queue:
                return  # deleted meanwhile
            if isinstance(result, BaseException):
                self._store_failed(f"taking the lease of {queue.name!r}", result)
                self._leave(queue, None)  # asked again at the next tick
            elif result == me:
                self._take(queue)
            else:
                self._leave(queue, result)

        assert self.store is not None
        self.store.try_lease(queue.name, me, self.wall(), self.lease_seconds, claimed)

    def _take(self, queue: HostedQueue) -> None:
        """The lease is ours: continue the queue from what the store holds."""

        def got(record: QueueRecord | None | BaseException) -> None:
            if self.queues.get(queue.name) is not queue:
                return
            if isinstance(record, BaseException):
                self._store_failed(f"reading queue {queue.name!r}", record)
                self._leave(queue, None)
                return
            queue.claiming = False
            self.holders.pop(queue.name, None)
            dead = queue.settings.dead_letter_address
            if dead is not None and dead not in self.queues and dead not in self.leased_elsewhere:
                self.host(self.core.addresses.get(dead))  # its dead letters are best kept beside it
            if record is None and queue.adopted:
                # Its router deleted it before leaving: there is nothing to serve.
                self._forget(queue)
                address = queue.address
                queue.address = None
                if address is not None:
                    address.hosted = None
                    self.core.plane.local_consumers_changed(address)
                    self.core.addresses.release_if_unused(address)
                return
            if record is None:
                assert self.store is not None
                self.store.create_queue(queue.name, queue.created_at)
                log.info("queue %r created (lease taken)", queue.name, extra=fields(queue=queue.name, event="created"))
                self._finish_load(queue)
                return
            queue.created_at = record.created_at
            queue.last_active = max(record.last_active_at, self.wall())
            queue.next_id = max(queue.next_id, record.next_message_id)
            queue.load_upto = record.next_message_id
            log.info("queue %r recovered: %d messages, %d bytes (its lease taken)", queue.name, record.messages,
                     record.bytes)
            queue.unloaded = record.messages
            if record.messages:
                self._load(queue, 0)
            else:
                self._finish_load(queue)

        assert self.store is not None
        self.store.queue(queue.name, got)

    def _leave(self, queue: HostedQueue, holder: str | None) -> None:
        """Another router holds the queue's lease (``holder``; None: not known yet, the
        store failed): stop serving it, and send what arrives here for it there."""
        self._forget(queue)
        address = queue.address
        queue.address = None
        if address is None:
            return
        address.hosted = None
        if holder is not None and holder != self.core.router_id:
            if self.holders.get(queue.name) != holder:
                self.holders[queue.name] = holder
                log.info("queue %r is served by router %r (it holds the lease)", queue.name, holder)
            address.owner = holder
            address.queue_proxy = True
        self.leased_elsewhere[queue.name] = holder
        self.core.plane.local_consumers_changed(address)
        for inbound in list(address.senders):
            if inbound.link.active:
                self.core.grant(inbound)

    def _forget(self, queue: HostedQueue) -> None:
        """Drop the queue from memory (not from the store)."""
        if self.queues.get(queue.name) is queue:
            del self.queues[queue.name]
        queue.deleted = True
        self._empty(queue)

    def _empty(self, queue: HostedQueue) -> None:
        """Let go of every message of the queue in memory (those out with consumers too:
        their outcomes find no queue and change nothing)."""
        for entry in queue.entries.values():
            self._unkeep(entry, queue)
            entry.queue = None
        queue.entries.clear()
        queue.ready.clear()
        queue.arrived = []
        queue.parked = []
        queue.bytes = 0
        queue.next_expiry = None

    def _renew_leases(self, now: float) -> None:
        me = self.core.router_id
        assert self.store is not None
        for queue in list(self.queues.values()):
            if queue.claiming:
                continue

            def renewed(result: str | BaseException, queue: HostedQueue = queue) -> None:
                if self.queues.get(queue.name) is not queue or isinstance(result, BaseException):
                    return  # a failed renewal is tried again; the lease may still run
                if result != me:
                    log.warning("queue %r: lease lost to router %r; it serves the queue now", queue.name, result)
                    self._leave(queue, result)

            self.store.try_lease(queue.name, me, now, self.lease_seconds, renewed)

    def _reclaim_orphans(self) -> None:
        """Queues whose router is gone from the network (or not known): ask for their
        lease again; it is granted once that router's lease has run out."""
        reachable = self.core.plane.next_hops
        addresses = self.core.addresses
        for name, holder in list(self.leased_elsewhere.items()):
            if holder is not None and holder in reachable:
                continue
            del self.leased_elsewhere[name]
            address = addresses.get(name)
            if address.hosted is not None:
                continue
            address.owner = None
            address.queue_proxy = False
            queue = self.host(address)
            queue.adopted = not (address.consumers or address.senders)

    def advertised(self, name: str, router_id: str) -> None:
        """Router ``router_id`` advertises ``name``: if it is a queue of our shared store,
        it may be serving it; watch it, to take the queue over if that router goes."""
        if self.shared and name not in self.queues and name not in self.leased_elsewhere \
                and self.core.addresses.hosts_queue(name):
            self.leased_elsewhere[name] = router_id

    def recover(self, recovered: Recovered) -> None:
        """Take over the queues found in the store at start, and read their messages back."""
        for record in recovered.queues:
            settings = self.core.addresses.queue_settings(record.name)
            if self.shared and settings is not None and self.core.addresses.hosts_queue(record.name):
                self.host(self.core.addresses.get(record.name))  # served here if its lease is ours
                continue
            if settings is None or not self.core.addresses.hosts_queue(record.name):
                log.warning("queue %r (%d messages) is in the store, but its address is not a queue this router"
                            " hosts; it is kept, unserved, until the configuration says so again",
                            record.name, record.messages)
                continue
            queue = HostedQueue(record.name, settings, record.created_at, record.next_message_id)
            # The idle clock starts again now: while the router was down nobody could use it.
            queue.last_active = max(record.last_active_at, self.wall())
            self.queues[record.name] = queue
            self.host(self.core.addresses.get(record.name))
            if record.messages:
                queue.loading = True
                queue.load_upto = record.next_message_id
                queue.unloaded = record.messages
                self._load(queue, 0)
            log.info("queue %r recovered: %d messages, %d bytes", record.name, record.messages, record.bytes)

    def _load(self, queue: HostedQueue, after_id: int) -> None:
        def loaded(result: list[StoredMessage] | BaseException) -> None:
            if queue.deleted:
                return
            if isinstance(result, BaseException):
                self._store_failed(f"reading queue {queue.name!r} back", result)
                queue.load_from = after_id  # the queue waits; the next tick tries again
                return
            last = after_id
            for stored in result:
                if stored.message_id >= queue.load_upto:
                    break
                last = stored.message_id
                queue.unloaded = max(0, queue.unloaded - 1)
                self._add(queue, stored.message_id, stored.payload, len(stored.payload),
                          stored.expires_at, stored.delivery_count)
            if last != after_id and last < queue.load_upto - 1:
                self._load(queue, last)
            else:
                self._finish_load(queue)

        assert self.store is not None
        self.store.fetch(queue.name, after_id, PAGE_MESSAGES, PAGE_BYTES, loaded)

    def _finish_load(self, queue: HostedQueue) -> None:
        queue.loading = False
        queue.unloaded = 0
        for entry in queue.arrived:
            queue.ready.append(entry)
        queue.arrived = []
        self.pump(queue)
        self._grant_senders(queue)

    def _add(self, queue: HostedQueue, message_id: int, payload: bytes | None, size: int,
             expires_at: float | None, delivery_count: int) -> QueuedMessage:
        """A stored message joins the queue's waiting line (its payload kept if there is room)."""
        if payload is not None and not self._keep(queue, size):
            payload = None
        entry = QueuedMessage(queue, message_id, payload, size, expires_at, delivery_count)
        queue.entries[message_id] = entry
        queue.bytes += size
        if expires_at is not None and (queue.next_expiry is None or expires_at < queue.next_expiry):
            queue.next_expiry = expires_at
        if queue.loading and message_id >= queue.load_upto:
            queue.arrived.append(entry)
        else:
            queue.ready.append(entry)
        return entry

    def _keep(self, queue: HostedQueue, size: int) -> bool:
        """Take a payload into memory if the queue's window and the router's budget allow."""
        memory = self.core.memory
        if queue.resident + size > self.window or not memory.can_hold(size):
            return False
        queue.resident += size
        memory.held += size + MESSAGE_COST
        return True

    def _unkeep(self, entry: QueuedMessage, queue: HostedQueue) -> None:
        if entry.payload is not None:
            entry.payload = None
            queue.resident -= entry.size
            self.core.memory.held -= entry.size + MESSAGE_COST

    # ================================================================================
    # Messages in
    # ================================================================================
    def enqueue(self, queue: HostedQueue, delivery: Delivery, payload: bytes, routing: Routing) -> None:
        core = self.core
        size = len(payload)
        settings = queue.settings
        sender_waits = not delivery.settled and not delivery.remote_settled
        traffic = queue.address.traffic if queue.address is not None else None
        if core.closing or queue.claiming:
            core.release(delivery, traffic)
            return
        if size > settings.max_bytes:
            core.reject(delivery, Condition.RESOURCE_LIMIT_EXCEEDED,
                        f"a message of {size} bytes is larger than queue {queue.name!r} holds (max_bytes {settings.max_bytes})",
                        traffic)
            return
        if settings.overflow == "reject-publish" and queue.room(size) <= 0:
            self.dropped += int(not sender_waits)
            core.reject(delivery, Condition.RESOURCE_LIMIT_EXCEEDED,
                        f"queue {queue.name!r} is full ({len(queue.entries) + queue.incoming} messages,"
                        f" max_messages {settings.max_messages}, max_bytes {settings.max_bytes})", traffic)
            return
        now = self.wall()
        expires_at = self._expiry(routing, settings, now)
        message_id = queue.next_id
        queue.next_id += 1
        queue.incoming += 1
        queue.incoming_bytes += size
        queue.last_active = now
        memory = core.memory
        memory.held += size + MESSAGE_COST
        purges = queue.purges

        def stored(error: BaseException | None) -> None:
            queue.incoming -= 1
            queue.incoming_bytes -= size
            memory.held -= size + MESSAGE_COST
            if error is not None:
                self._store_failed(f"storing a message in {queue.name!r}", error)
                if sender_waits and not delivery.settled and delivery.link.active:
                    delivery.settle(Rejected(error=Error(
                        condition=STORE_FAILED, description=f"the message could not be stored: {error}")))
                    core.counters.rejected += 1
                    if traffic is not None:
                        traffic.router_rejected += 1
                    self._flush_sender(delivery)
                return
            if sender_waits and not delivery.settled and delivery.link.active:
                delivery.settle(ACCEPTED)
                core.counters.accepted_at_router += 1
                if traffic is not None:
                    traffic.router_accepted += 1
                self._flush_sender(delivery)
                inbound = delivery.link.context
                if inbound is not None and (inbound.blocked or inbound.link.credit <= inbound.granted >> 1):
                    core.grant(inbound)
            if queue.deleted or queue.purges != purges:
                return  # the store applied the purge (or deletion) after storing it
            self._add(queue, message_id, payload, size, expires_at, 0)
            if settings.overflow == "drop-head":
                self._drop_head(queue)
            if not queue.loading:
                self.pump(queue)

        assert self.store is not None
        self.store.enqueue(queue.name, StoredMessage(message_id, bytes(payload), expires_at, 0), now, stored)

    @staticmethod
    def _expiry(routing: Routing, settings: QueueSettings, now: float) -> float | None:
        expires_at = now + settings.message_ttl if settings.message_ttl is not None else None
        if routing.ttl:
            at = now + routing.ttl / 1000.0
            expires_at = at if expires_at is None or at < expires_at else expires_at
        if routing.absolute_expiry_time is not None:
            at = routing.absolute_expiry_time / 1000.0
            expires_at = at if expires_at is None or at < expires_at else expires_at
        return expires_at

    def _drop_head(self, queue: HostedQueue) -> None:
        """``drop-head``: discard the oldest waiting messages while the queue is over a bound."""
        settings = queue.settings
        ready = queue.ready
        while ready and (len(queue.entries) > settings.max_messages or queue.bytes > settings.max_bytes):
            self._remove(queue, ready.popleft())
            self.dropped += 1
            queue.dropped += 1

    def _flush_sender(self, delivery: Delivery) -> None:
        inbound = delivery.link.context
        if inbound is not None:
            inbound.connection.port.request_flush()

    # ================================================================================
    # Messages out
    # ================================================================================
    def pump(self, queue: HostedQueue) -> None:
        """Send waiting messages to consumers (here, and on other routers) with room."""
        address = queue.address
        if address is None or queue.loading or not queue.ready or not (address.consumers or address.remote):
            return
        core = self.core
        max_unsettled = core.max_link_unsettled
        ready = queue.ready
        now = 0.0
        while ready:
            entry = ready[0]
            if entry.expires_at is not None:
                now = now or self.wall()
                if entry.expires_at <= now:
                    ready.popleft()
                    self._remove(queue, entry)
                    self.expired += 1
                    queue.expired += 1
                    continue
            if entry.payload is None:
                self._fetch(queue)
                break
            size = entry.size
            out = pick_consumer(address, size, max_unsettled) if address.consumers else None
            if out is None and address.remote:
                out = pick_remote(address, size, max_unsettled, None)
            if out is None:
                break
            ready.popleft()
            self._send(queue, entry, out)

    def _send(self, queue: HostedQueue, entry: QueuedMessage, out: "Outbound") -> None:
        core = self.core
        payload = entry.payload
        assert payload is not None
        self._unkeep(entry, queue)
        if entry.delivery_count:
            payload = with_redelivery(payload, entry.delivery_count)
        if out.neighbour is not None:
            payload = annotate(payload, read_routing(payload), core.router_id, queued=True)
            address = queue.address
            if address is not None:
                address.last_used = core.clock()
        link = out.link
        presettle = link.snd_settle_mode == SenderSettleMode.SETTLED
        sent = link.send(payload, settled=presettle)
        address = out.address
        address.messages_out += 1
        address.traffic.forwarded += 1
        queue.delivered += 1
        if presettle:
            # The consumer asked for at-most-once: it has the message, the queue lets go.
            self._remove(queue, entry)
            queue.acknowledged += 1
        else:
            entry.out = True
            sent.context = entry
            if len(link.unsettled) >= core.max_link_unsettled:
                out.saturated = True
        out.connection.port.request_flush()

    def _fetch(self, queue: HostedQueue) -> None:
        """Read the payloads of the next waiting messages back from the store."""
        if queue.fetching or not queue.ready:
            return
        queue.fetching = True
        head = queue.ready[0]

        def fetched(result: list[StoredMessage] | BaseException) -> None:
            queue.fetching = False
            if queue.deleted:
                return
            if isinstance(result, BaseException):
                self._store_failed(f"reading messages of {queue.name!r}", result)
                return  # tried again at the next tick
            found_head = False
            for stored in result:
                entry = queue.entries.get(stored.message_id)
                if entry is None or entry.out or entry.payload is not None:
                    continue
                if entry is head:
                    # The head goes out next whatever the window says.
                    found_head = True
                    queue.resident += entry.size
                    self.core.memory.held += entry.size + MESSAGE_COST
                elif not self._keep(queue, entry.size):
                    break
                entry.payload = stored.payload
            if not found_head and queue.ready and queue.ready[0] is head and head.payload is None:
                # The store no longer has it: nothing can send it again.
                log.error("queue %r: message %d is missing from the store; dropping its record", queue.name, head.id)
                queue.ready.popleft()
                self._remove(queue, head, stored=False)
            self.pump(queue)

        assert self.store is not None
        self.store.fetch(queue.name, head.id - 1, PAGE_MESSAGES, PAGE_BYTES, fetched)

    # ================================================================================
    # Outcomes
    # ================================================================================
    def settled(self, entry: QueuedMessage, state: Any) -> None:
        """A consumer settled a message of the queue with ``state`` (an outcome)."""
        queue = entry.queue
        entry.out = False
        if queue is None or queue.deleted:
            return
        kind = type(state)
        if kind is Accepted:
            self._remove(queue, entry)
            queue.acknowledged += 1
            queue.last_active = self.wall()
            self._grant_senders(queue)
        elif kind is Released:
            self._put_back(queue, entry)
        elif kind is Rejected:
            self._dead_letter(queue, entry, "rejected by its consumer")
        else:
            failed = kind is not Modified or state.delivery_failed
            if failed:
                entry.delivery_count += 1
                assert self.store is not None
                # Recorded first, so a dead letter moved next has the same count on disk.
                self.store.set_delivery_count(queue.name, entry.id, entry.delivery_count)
                limit = queue.settings.max_delivery_attempts
                if limit and entry.delivery_count >= limit:
                    self._dead_letter(queue, entry, f"{entry.delivery_count} delivery attempts failed")
                    self.pump(queue)
                    return
            self._put_back(queue, entry)
        self.pump(queue)

    @staticmethod
    def _put_back(queue: HostedQueue, entry: QueuedMessage) -> None:
        """Back among the waiting, in id order: a put-back message is older than all but
        other put-back ones, so its place is near the head."""
        ready = queue.ready
        index = 0
        count = len(ready)
        while index < count and ready[index].id < entry.id:
            index += 1
        ready.insert(index, entry)

    def _remove(self, queue: HostedQueue, entry: QueuedMessage, stored: bool = True) -> None:
        """The message leaves the queue for good (taken, expired, dropped)."""
        self._unkeep(entry, queue)
        entry.queue = None
        if queue.entries.pop(entry.id, None) is not None:
            queue.bytes -= entry.size
        if stored:
            assert self.store is not None
            self.store.remove(queue.name, entry.id)

    def _dead_letter(self, queue: HostedQueue, entry: QueuedMessage, why: str) -> None:
        target_name = queue.settings.dead_letter_address
        if target_name is None or target_name == queue.name:
            queue.dropped += 1
            self.dropped += 1
            self.core.warn_once(f"dead:{queue.name}", f"queue {queue.name!r}: dropping a message ({why});"
                                 " set dead_letter_address to keep such messages")
            self._remove(queue, entry)
            return
        target = self.queues.get(target_name)
        if target is None and not (self.shared and target_name in self.leased_elsewhere):
            target = self.host(self.core.addresses.get(target_name))
        if target is None or target.claiming:
            # A shared store, and the dead-letter queue is not served here (yet): the
            # message waits, stored, until it is.
            entry.out = True
            queue.parked.append(entry)
            self.core.warn_once(f"dead-parked:{target_name}", f"dead-letter queue {target_name!r} is not served"
                                f" by this router; messages of {queue.name!r} wait for it ({why})")
            return
        settings = target.settings
        if settings.overflow == "reject-publish" and target.room(entry.size) <= 0:
            self.core.warn_once(f"dead-full:{target_name}", f"dead-letter queue {target_name!r} is full;"
                                f" dropping a message of {queue.name!r} ({why})")
            self.dropped += 1
            queue.dropped += 1
            self._remove(queue, entry)
            return
        self.dead_lettered += 1
        queue.dead_lettered += 1
        new_id = target.next_id
        target.next_id += 1
        payload = entry.payload
        self._unkeep(entry, queue)
        entry.queue = None
        if queue.entries.pop(entry.id, None) is not None:
            queue.bytes -= entry.size
        assert self.store is not None
        now = self.wall()
        # The store moves the message as it is (its expiry and delivery count with it).
        self.store.move(queue.name, entry.id, target_name, new_id, now)
        target.last_active = now
        self._add(target, new_id, payload, entry.size, entry.expires_at, entry.delivery_count)
        if settings.overflow == "drop-head":
            self._drop_head(target)
        self.pump(target)

    def _unpark(self, queue: HostedQueue) -> None:
        """Dead-letter the parked messages if their dead-letter queue is served here now."""
        target_name = queue.settings.dead_letter_address
        target = self.queues.get(target_name) if target_name is not None else None
        if target is None and target_name is not None and self.shared and target_name not in self.leased_elsewhere:
            self.host(self.core.addresses.get(target_name))  # ask for its lease again
            return
        if target is None or target.claiming:
            return
        parked, queue.parked = queue.parked, []
        for entry in parked:
            entry.out = False
            if entry.queue is queue:
                self._dead_letter(queue, entry, "waited for the dead-letter queue")

    def reconfigure(self) -> list[str]:
        """A reload changed the address table: each hosted queue takes its prefix's
        settings now.  Bounds apply to what is stored from now on (a queue over a lowered
        bound keeps its messages; ``reject-publish`` refuses new ones until it is under,
        ``drop-head`` drops the oldest when the next one arrives); ``message_ttl`` applies to
        messages stored from now on; ``expiry``, ``max_delivery_attempts`` and
        ``dead_letter_address`` at once.  Returns a line for each queue whose prefix is
        no longer a queue of this router (it keeps its settings until deleted)."""
        kept = []
        for queue in self.queues.values():
            settings = self.core.addresses.queue_settings(queue.name)
            if settings is None or not self.core.addresses.hosts_queue(queue.name):
                kept.append(f"queue {queue.name} keeps its settings: its prefix is no longer a queue this router hosts")
                continue
            if settings != queue.settings:
                queue.settings = settings
                if not queue.claiming and not queue.loading:
                    self._grant_senders(queue)  # a raised bound: blocked senders go on
        return kept

    def _grant_senders(self, queue: HostedQueue) -> None:
        address = queue.address
        if address is None:
            return
        for inbound in address.senders:
            if inbound.blocked or inbound.link.credit <= inbound.granted // 2:
                self.core.grant(inbound)

    # ================================================================================
    # Consumers
    # ================================================================================
    def consumer_attached(self, queue: HostedQueue) -> None:
        now = self.wall()
        queue.last_active = now
        assert self.store is not None
        self.store.touch_queue(queue.name, now)

    def consumer_detached(self, queue: HostedQueue) -> None:
        self.consumer_attached(queue)  # the idle clock starts when the last one goes

    # ================================================================================
    # Time
    # ================================================================================
    def tick(self) -> None:
        """Drop expired messages and idle queues; read back payloads a failed read left."""
        now = self.wall()
        if self.shared:
            if now - self.renewed_at >= self.lease_seconds / 3:
                self.renewed_at = now
                self._renew_leases(now)
            if self.leased_elsewhere:
                self._reclaim_orphans()
        for queue in list(self.queues.values()):
            if queue.claiming:
                continue
            if queue.load_from is not None:
                after_id, queue.load_from = queue.load_from, None
                self._load(queue, after_id)
                continue
            if queue.parked:
                self._unpark(queue)
            if queue.next_expiry is not None and queue.next_expiry <= now and not queue.loading:
                self._expire(queue, now)
            expiry = queue.settings.expiry
            address = queue.address
            if (
                expiry is not None
                and now - queue.last_active >= expiry
                and not queue.incoming
                and not queue.loading
                and not any(entry.out for entry in queue.entries.values())
                and (address is None or not (address.consumers or address.remote))
            ):
                log.info("queue %r expired after %.0f s with no consumer and no new message (%d messages)",
                         queue.name, now - queue.last_active, len(queue.entries),
                         extra=fields(queue=queue.name, event="expired", messages=len(queue.entries)))
                self.delete(queue.name)
                continue
            if queue.ready and queue.ready[0].payload is None and not queue.fetching:
                self.pump(queue)

    def _expire(self, queue: HostedQueue, now: float) -> None:
        kept: deque[QueuedMessage] = deque()
        next_expiry: float | None = None
        for entry in queue.ready:
            at = entry.expires_at
            if at is not None and at <= now:
                self._remove(queue, entry)
                self.expired += 1
                queue.expired += 1
                continue
            kept.append(entry)
        queue.ready = kept
        for entry in queue.entries.values():
            at = entry.expires_at
            if at is not None and (next_expiry is None or at < next_expiry):
                next_expiry = at
        queue.next_expiry = next_expiry
        self._grant_senders(queue)

    # ================================================================================
    # Operators
    # ================================================================================
    def view(self) -> list[dict[str, Any]]:
        now = self.wall()
        rows = []
        for queue in sorted(self.queues.values(), key=lambda q: q.name):
            address = queue.address
            oldest = min((e.id for e in queue.entries.values()), default=None)
            rows.append({
                "name": queue.name,
                "state": queue.state,
                "depth": queue.depth,
                "bytes": queue.bytes,
                "ready": len(queue.ready),
                "unacked": sum(1 for e in queue.entries.values() if e.out),
                "consumers": len(address.consumers) if address is not None else 0,
                "remote_consumers": len(address.remote) if address is not None else 0,
                "senders": len(address.senders) if address is not None else 0,
                "oldest_id": oldest,
                "idle_seconds": round(now - queue.last_active, 3),
                "delivered": queue.delivered,
                "acknowledged": queue.acknowledged,
                "expired": queue.expired,
                "dropped": queue.dropped,
                "dead_lettered": queue.dead_lettered,
                "parked": len(queue.parked),
            })
        return rows

    def oldest_ages(self, done: Callable[[dict[str, float | None]], None]) -> None:
        """How long each queue's oldest message has waited, from the store."""
        names = list(self.queues)
        ages: dict[str, float | None] = {}
        if not names or self.store is None:
            done(ages)
            return
        now = self.wall()
        remaining = [len(names)]

        def one(name: str) -> Callable[[QueueRecord | None | BaseException], None]:
            def got(record: QueueRecord | None | BaseException) -> None:
                if isinstance(record, QueueRecord) and record.oldest_at is not None and record.messages:
                    ages[name] = round(max(0.0, now - record.oldest_at), 3)
                else:
                    ages[name] = None
                remaining[0] -= 1
                if not remaining[0]:
                    done(ages)
            return got

        for name in names:
            self.store.queue(name, one(name))

    def purge(self, name: str, why: str = "purged") -> int | None:
        """Remove every waiting message of the queue; None if there is no such queue.
        Messages out with consumers go too (their outcomes are ignored)."""
        queue = self.queues.get(name)
        if queue is None:
            return None
        count = len(queue.entries)
        queue.purges += 1
        self._empty(queue)
        assert self.store is not None
        self.store.purge_queue(name)
        if why:
            log.info("queue %r %s: %d messages", name, why, count, extra=fields(queue=name, event=why, messages=count))
        self._grant_senders(queue)
        return count

    def delete(self, name: str) -> int | None:
        """Remove the queue and its messages; None if there is no such queue.  A later
        message or consumer for the address makes a new, empty queue."""
        count = self.purge(name, why="")
        if count is None:
            return None
        queue = self.queues.pop(name)
        queue.deleted = True
        assert self.store is not None
        self.store.delete_queue(name)
        address = queue.address
        queue.address = None
        if address is not None:
            address.hosted = None
            if address.consumers or address.senders:
                # Links still attached keep using the address: a fresh queue serves them.
                self.host(address)
            else:
                self.core.plane.local_consumers_changed(address)
                self.core.addresses.release_if_unused(address)
        log.info("queue %r deleted (%d messages)", name, count, extra=fields(queue=name, event="deleted", messages=count))
        return count

    def close(self) -> None:
        """The store is about to close (shutdown): from now on nothing more is written.
        Whatever was not yet removed stays stored and is delivered again after a restart.
        With a shared store the leases are given up, so other routers take the queues
        over at once instead of when the leases run out."""
        store = self.store
        if self.shared and store is not None:
            for name, queue in self.queues.items():
                if not queue.claiming:
                    store.release_lease(name, self.core.router_id)
        self.store = _ClosedStore()  # type: ignore[assignment]

    def _store_failed(self, what: str, error: BaseException) -> None:
        self.store_errors += 1
        self.core.warn_once(f"store:{what}", f"queue store: {what} failed: {error}")


class _ClosedStore:
    """Stands in for the store once it is closed: writes are dropped (the messages they
    concern stay stored: at least once), reads fail."""

    shared = False

    def __getattr__(self, name: str) -> Callable[..., None]:
        def refused(*args: Any, **kwargs: Any) -> None:
            done = kwargs.get("done") or (args[-1] if args and callable(args[-1]) else None)
            if done is not None:
                done(StoreError("the router is shutting down"))

        return refused
