"""RouterCore: the sole owner of routing state.  Synchronous: it never awaits.

The io layer hands it each connection's engine events through the connection's port
(``port.py``); it answers by acting on engines (attach, send, settle, flow) and asking the
ports it touched to flush.  Rules it keeps:

* **Credit flows back from consumers.**  A sender on an anycast address gets credit only
  while some consumer there is taking messages (``credit.py``), so messages the router
  holds are bounded by the credit it granted.
* **Memory is bounded by the router, not by its peers.**  Consumers are sent messages
  only while they take them (``forwarders.py``); what waits is bounded per address and
  router-wide (``memory.py``); near a bound senders get no credit, and at a bound a
  message that would have to wait is released to its sender.  Nothing is dropped
  without its sender being told, except multicast copies for a consumer that fell
  behind (multicast is settled at the router; those drops are counted).
* **Settlement is end to end.**  An unsettled message is settled for its sender only with
  its consumer's outcome.  A consumer that goes away with messages outstanding turns each
  of them into ``modified(delivery-failed)`` for its sender; a message that never left the
  router is ``released``.
* **The body is never decoded.**  ``read_routing`` reads the few fields routing needs;
  the bytes received are the bytes sent on.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import deque
from typing import Any, Callable, ClassVar, Final

from ..amqp import events as ev
from ..amqp.delivery import ACCEPTED, OUTCOME_TYPES, RELEASED, Delivery
from ..amqp.errors import CONNECTION_ESTABLISHMENT_FAILED, Condition, DecodeError
from ..amqp.message import Routing, read_routing
from ..amqp.spec import Accepted, Coordinator, Error, Modified, Rejected, SaslCode, SenderSettleMode, Source
from ..amqp.types import Symbol
from .addresses import Address, AddressTable
from .config import RouterConfig
from .credit import SenderCredit
from .forwarders import MULTICAST_BACKLOG, fits, forwarder_for, pick_consumer
from .links import ClientConnection, Inbound, Outbound, Pending, connection_log, link_log, tls_version
from .logs import fields
from .memory import MESSAGE_COST, MemoryBudget
from .interrouter import (
    DATA_ADDRESS, DYNAMIC_PREFIX, MANAGEMENT_ADDRESS, MANAGEMENT_PREFIX, annotate, destination, first_hop_section,
    has_routing_annotations, looped, owner_of, strip_routing_annotations,
)
from .plane import ControlLink, InterRouterPlane
from .port import ConnectionPort
from .policy import Policy
from .queues import QueuedMessage, QueueForwarder, QueueManager
from .traffic import RPC_BUCKETS, PrefixTraffic, RpcSeries
from ..store.base import QueueStore, StoreError

__all__ = ["RouterCore", "EXPIRED", "Counters"]

# Hot-path names as constants: the compiled build reads these without a lookup.
_SETTLED: Final = 1  # SenderSettleMode.SETTLED
_UNSETTLED: Final = 0  # SenderSettleMode.UNSETTLED
_ACCEPTED_CLASS: Final = Accepted
_QUEUED_MESSAGE_CLASS: Final = QueuedMessage

log = logging.getLogger("switchboard.router")
auth_log = logging.getLogger("switchboard.router.auth")
queue_log = logging.getLogger("switchboard.router.queues")
_SEQ_MASK: Final = 0xFFFFFFFF

EXPIRED: Final = Symbol("switchboard:expired")
MODIFIED_FAILED: Final = Modified(delivery_failed=True)
ANONYMOUS_RELAY: Final = Symbol("ANONYMOUS-RELAY")


class _Orphan:
    """The context of a forwarded delivery whose sender's link is gone."""

    __slots__ = ()


ORPHAN: Final = _Orphan()

MAX_CALLS_TIMED: Final = 65536
"""RPC calls timed at once (their arrival times are kept until their outcome); beyond it
a call goes untimed rather than the router holding more."""


class Counters:
    """What the router has done, for metrics and tests."""

    # Each field is assigned in __init__ (not set through ``__slots__`` at run time) so that
    # the compiled build has them as fields.

    def __init__(self) -> None:
        self.received = 0
        self.accepted_at_router = 0
        self.released = 0
        self.rejected = 0
        self.modified = 0
        self.expired = 0
        self.dropped = 0
        self.connections_opened = 0
        self.connections_refused = 0
        self.released_for_memory = 0
        self.copies_dropped = 0
        self.looped = 0
        self.logins_failed = 0
        self.logins_throttled = 0
        self.logins_busy = 0
        self.policy_denied = 0
        self.credit_stalls = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "accepted_at_router": self.accepted_at_router,
            "released": self.released,
            "rejected": self.rejected,
            "modified": self.modified,
            "expired": self.expired,
            "dropped": self.dropped,
            "connections_opened": self.connections_opened,
            "connections_refused": self.connections_refused,
            "released_for_memory": self.released_for_memory,
            "copies_dropped": self.copies_dropped,
            "looped": self.looped,
            "logins_failed": self.logins_failed,
            "logins_throttled": self.logins_throttled,
            "logins_busy": self.logins_busy,
            "policy_denied": self.policy_denied,
            "credit_stalls": self.credit_stalls,
        }


class RouterCore:
    """Routes messages between the connections of one router."""

    raise_internal_errors: ClassVar[bool] = False
    """A bug met while handling a connection's events is raised instead of closing that
    connection with ``amqp:internal-error`` (the test suite turns this on)."""

    def __init__(
        self,
        config: RouterConfig,
        clock: Callable[[], float],
        wall_clock_ms: Callable[[], int],
        authenticator: Any = None,
        instance: int | None = None,
        store: QueueStore | None = None,
    ) -> None:
        self.config = config
        self.router_id = config.router_id
        self.instance = instance if instance is not None else wall_clock_ms()
        """Larger at each start: the network tells a restarted router from the one before."""
        self.clock = clock
        self.wall_clock_ms = wall_clock_ms
        limits = config.limits
        self.max_link_unsettled = limits.max_link_unsettled
        self.addresses = AddressTable(config.addresses, config.router_id)
        self.memory = MemoryBudget(limits.max_memory)
        self.credit = SenderCredit(limits, self.memory)
        self.counters = Counters()
        self.policy = Policy(config.policy, self.addresses.distribution_of, self.counters, clock)
        self.authenticator = authenticator
        """Judges SASL PLAIN credentials: ``verify(host, user, password, decided)``."""
        self.connections: set[ClientConnection] = set()
        """Connections holding a slot under the limits: admitted, and not yet closed."""
        self.closing = False
        self.last_reload: dict[str, Any] = {"reloads": 0, "outcome": None}
        """The last reload's outcome (``QUERY reload``, ``GET /api/reload``): replaced, never changed in place."""
        self._per_host: dict[str, int] = {}
        self._connection_serial = 0
        self._dynamic_serial = 0
        self._forwarders: dict[str, Any] = {}
        """By distribution: the forwarders here, and the queues' (``QueueForwarder``)."""
        self._after_batch: set[Inbound] = set()
        """Senders whose grant was cut by deliveries not yet routed: looked at again once
        the batch is."""
        self._starved: set[Inbound] = set()
        """Senders whose credit was withheld while memory was short."""
        self._warned: set[str] = set()
        self._calls: dict[Delivery, tuple[float, RpcSeries]] = {}
        """RPC calls from this router's clients awaiting their outcome: when each arrived,
        and the histogram it goes to (``traffic.py``)."""
        self.reply_handlers: dict[str, Callable[[bytes], None]] = {}
        """Reply addresses (``_dynamic/ROUTER/...``) answered inside this router: the
        admin listener's ``$management`` requests to other routers (``management.py``)."""
        self.plane = InterRouterPlane(self, self.instance, clock)
        self.queues = QueueManager(self, store, lambda: wall_clock_ms() / 1000.0)
        self._first_hop = first_hop_section(self.router_id)
        self._handlers: dict[type, Callable[[ClientConnection, Any], None]] = {
            ev.DeliveryReceived: self._on_delivery_received,
            ev.DeliveryUpdated: self._on_delivery_updated,
            ev.DeliveryAborted: self._on_delivery_aborted,
            ev.CreditGranted: self._on_credit_granted,
            ev.SessionWindowOpened: self._on_session_window_opened,
            ev.LinkAttached: self._on_link_attached,
            ev.LinkDetached: self._on_link_detached,
            ev.ConnectionOpened: self._on_connection_opened,
            ev.ConnectionClosed: self._on_connection_closed,
            ev.SessionBegun: self._on_session_begun,
            ev.CredentialsReceived: self._on_credentials_received,
        }

    # ================================================================================
    # ConnectionHandler: called by the io layer
    # ================================================================================
    def connection_started(self, port: ConnectionPort) -> None:
        peer = port.peer
        host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
        role = port.role
        self._connection_serial += 1
        conn = ClientConnection(port, host, role, f"c{self._connection_serial}")
        conn.opened_at = self.clock()
        port.engine.context = conn
        if not port.engine.server:
            port.engine.open()  # a connection to a neighbour: our open (with who we are) first
        limits = self.config.limits
        if self.closing:
            conn.refused = Error(condition=Condition.CONNECTION_FORCED, description="router is shutting down")
        elif len(self.connections) >= limits.max_connections:
            conn.refused = Error(condition=Condition.RESOURCE_LIMIT_EXCEEDED,
                                 description=f"router has reached max_connections ({limits.max_connections})")
        elif self._per_host.get(host, 0) >= limits.max_connections_per_host:
            conn.refused = Error(condition=Condition.RESOURCE_LIMIT_EXCEEDED,
                                 description=f"{host} has reached max_connections_per_host ({limits.max_connections_per_host})")
        if conn.refused is not None:
            self.counters.connections_refused += 1
            return
        self.connections.add(conn)
        self._per_host[host] = self._per_host.get(host, 0) + 1
        conn.counted = True
        self.counters.connections_opened += 1

    def events_received(self, port: ConnectionPort, events: list[ev.Event]) -> None:
        conn = port.engine.context
        handlers = self._handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                try:
                    handler(conn, event)
                except Exception:
                    if self.raise_internal_errors:
                        raise
                    # A bug met by one connection's input must not reach the others: log
                    # it, close that connection, and keep routing for everyone else.
                    log.exception("internal error handling %s on connection %s from %s; closing it",
                                  type(event).__name__, conn.id, conn.peer, extra=fields(conn=conn.id))
                    error = Error(condition=Condition.INTERNAL_ERROR, description="internal router error")
                    if conn.close_error is None:
                        conn.close_error = error
                    port.close(error)
                    self._free_slot(conn)
                    return
        if self._after_batch:
            waiting = self._after_batch
            self._after_batch = set()
            for inbound in waiting:
                if inbound.link.active:
                    self._grant(inbound)

    def connection_ended(self, port: ConnectionPort) -> None:
        conn = port.engine.context
        if conn is None:
            return
        self._free_slot(conn)

    def _free_slot(self, conn: ClientConnection) -> None:
        """Stop counting ``conn`` against the connection limits: the router has closed it
        (its socket may still wait ``limits.close_timeout`` for the peer), or it is gone."""
        if not conn.counted:
            return
        conn.counted = False
        self.connections.discard(conn)
        if conn.grant is not None:
            self.policy.release(conn.grant)
        count = self._per_host.get(conn.host, 0) - 1
        if count > 0:
            self._per_host[conn.host] = count
        else:
            self._per_host.pop(conn.host, None)

    def writing_paused(self, port: ConnectionPort, paused: bool) -> None:
        if paused:
            return
        # The peer took our output: messages waiting for this connection's consumers can go.
        conn = port.engine.context
        if conn is not None:
            for out in list(conn.outbound):
                self._consumer_ready(out)

    # ================================================================================
    # Connections and links
    # ================================================================================
    def _on_connection_opened(self, conn: ClientConnection, event: ev.ConnectionOpened) -> None:
        engine = conn.port.engine
        remote = engine.remote_open
        conn.container_id = remote.container_id if remote is not None else None
        refused_by_policy = False
        if conn.refused is None:
            conn.refused = self.plane.connection_opened(conn)
        if conn.refused is None and conn.neighbour is None:
            conn.grant, conn.refused = self.policy.admit(engine.user)
            refused_by_policy = conn.refused is not None  # the policy logs its own, rate limited
        if conn.refused is not None:
            # Spec 2.4.1: an open that is at once followed by a close for a refusal says
            # so, so the client can fail its connect instead of reporting success.
            engine.properties = {**(engine.properties or {}), CONNECTION_ESTABLISHMENT_FAILED: True}
        engine.open()
        if conn.refused is not None:
            conn.state = "refused"
            conn.close_error = conn.refused
            if refused_by_policy:
                self.counters.connections_refused += 1
                # The policy logs the cause once a minute; each refusal only at debug.
                if connection_log.isEnabledFor(logging.DEBUG):
                    connection_log.debug("refusing connection %s from %s (container %s): %s", conn.id, conn.peer,
                                         conn.container_id, conn.refused.description,
                                         extra=self._connection_fields(conn, conn.refused))
            else:
                connection_log.warning("refusing connection %s from %s (container %s): %s", conn.id, conn.peer,
                                       conn.container_id, conn.refused.description,
                                       extra=self._connection_fields(conn, conn.refused))
            engine.close(conn.refused)
            return
        conn.state = "open"
        tls = tls_version(conn.port)
        connection_log.info(
            "connection %s opened: peer %s, container %s, user %s, %s, role %s%s", conn.id, conn.peer,
            conn.container_id, engine.user, tls or "no TLS", conn.role,
            f", router {conn.neighbour.router_id}" if conn.neighbour is not None else "",
            extra=fields(conn=conn.id, peer=conn.peer, container=conn.container_id, user=engine.user, tls=tls,
                         role=conn.role, neighbour=conn.neighbour.router_id if conn.neighbour is not None else None),
        )

    def _on_connection_closed(self, conn: ClientConnection, event: ev.ConnectionClosed) -> None:
        self._free_slot(conn)
        if conn.close_error is None:
            conn.close_error = event.error
            conn.closed_by_peer = event.by_peer
        if conn.neighbour is not None:
            self.plane.connection_closed(conn)
        self._log_closed(conn)

    def _connection_fields(self, conn: ClientConnection, error: Error | None) -> dict[str, Any]:
        return fields(
            conn=conn.id, peer=conn.peer, container=conn.container_id, user=conn.port.engine.user, role=conn.role,
            condition=str(error.condition) if error is not None else None,
            description=error.description if error is not None else None,
        )

    def _log_closed(self, conn: ClientConnection) -> None:
        """The AMQP connection is over (its socket may wait out the close grace): one line
        for an open connection (how it ended, how long it lasted, what it carried); for one
        that never opened, a failed login or (at debug) a peer that went away."""
        error = conn.close_error
        if conn.state == "open":
            deliveries_in = conn.deliveries_in + sum((i.routed - i.first_count) & _SEQ_MASK for i in conn.inbound)
            deliveries_out = conn.deliveries_out + sum(
                (o.link.delivery_count - o.first_count) & _SEQ_MASK for o in conn.outbound)
            port = conn.port
            bytes_in = getattr(port, "bytes_in", None)
            bytes_out = getattr(port, "bytes_out", None)
            duration = self.clock() - conn.opened_at
            if error is not None and conn.closed_by_peer and error.condition == Condition.CONNECTION_FORCED:
                how = f"closed: {error.description}"  # the transport went (no close from the peer)
            elif error is not None:
                how = f"closed{' by peer' if conn.closed_by_peer else ''}: {error.condition} {error.description or ''}".rstrip()
            else:
                how = "closed by peer" if conn.closed_by_peer else "closed"
            extra = self._connection_fields(conn, error)
            extra["fields"].update(by_peer=conn.closed_by_peer, duration_seconds=round(duration, 3),
                                   bytes_in=bytes_in, bytes_out=bytes_out,
                                   deliveries_in=deliveries_in, deliveries_out=deliveries_out)
            connection_log.info("connection %s %s (peer %s, %.1f s, %s bytes in, %s out, %d deliveries in, %d out)",
                                conn.id, how, conn.peer, duration, bytes_in, bytes_out, deliveries_in, deliveries_out,
                                extra=extra)
        elif conn.state == "new":
            if error is not None and error.condition == Condition.UNAUTHORIZED_ACCESS:
                auth_log.warning("login failed: connection %s from %s: %s", conn.id, conn.peer, error.description,
                                 extra=self._connection_fields(conn, error))
            elif error is not None and error.condition != Condition.CONNECTION_FORCED:
                connection_log.info("connection %s from %s failed before its open: %s %s", conn.id, conn.peer,
                                    error.condition, error.description or "", extra=self._connection_fields(conn, error))
            elif connection_log.isEnabledFor(logging.DEBUG):
                connection_log.debug("connection %s from %s ended before its open", conn.id, conn.peer,
                                     extra=self._connection_fields(conn, error))

    def _on_credentials_received(self, conn: ClientConnection, event: ev.CredentialsReceived) -> None:
        port = conn.port

        def decided(code: int) -> None:
            if code != SaslCode.OK:
                conn.state = "login failed"  # logged by whoever decided, with the reason
            port.engine.sasl_decided(code)
            port.request_flush()

        if self.authenticator is None:
            auth_log.warning("login failed: connection %s from %s, user %r: no credentials file is configured",
                             conn.id, conn.peer, event.user, extra=fields(conn=conn.id, peer=conn.peer, user=event.user))
            decided(SaslCode.AUTH)  # no credentials: no password can be right
            return
        self.authenticator.verify(conn.host, event.user, event.password, decided, conn_id=conn.id, peer=conn.peer)

    def _on_session_begun(self, conn: ClientConnection, event: ev.SessionBegun) -> None:
        if conn.neighbour is not None:
            self.plane.session_begun(conn, event.session)

    def _on_link_attached(self, conn: ClientConnection, event: ev.LinkAttached) -> None:
        link = event.link
        if not link.remote_initiated:
            if conn.neighbour is not None:
                self.plane.our_link_attached(conn, link)
            return
        limits = self.config.limits
        if conn.refused is not None:
            link.refuse(conn.refused)
            return
        if conn.neighbour is not None:
            # Links between routers: the control link, the data link, one per address.
            if self.closing:
                link.refuse(Error(condition=Condition.CONNECTION_FORCED, description="router is shutting down"))
            elif not self.plane.attach_from_neighbour(conn, link):
                self._attach_producer(conn, link)
            return
        if conn.role == "inter-router":
            link.refuse(Error(condition=Condition.NOT_ALLOWED, description="the inter-router connection is not established"))
            return
        if conn.link_count >= limits.max_links_per_connection:
            link.refuse(Error(condition=Condition.RESOURCE_LIMIT_EXCEEDED,
                              description=f"connection has reached max_links_per_connection ({limits.max_links_per_connection})"))
            return
        if self.closing:
            link.refuse(Error(condition=Condition.CONNECTION_FORCED, description="router is shutting down"))
            return
        if link.is_sender:
            self._attach_consumer(conn, link)
        else:
            self._attach_producer(conn, link)
        if link.context is not None:
            conn.link_count += 1  # links attached now; _on_link_detached gives the slot back

    def _attach_consumer(self, conn: ClientConnection, link: Any) -> None:
        source = link.remote_source
        if not isinstance(source, Source):
            link.refuse(Error(condition=Condition.INVALID_FIELD, description="a receiving link needs a source"))
            return
        if conn.grant is not None:
            refusal = conn.grant.dynamic_refusal() if source.dynamic else conn.grant.receive_refusal(str(source.address or ""))
            if refusal is not None:
                link.refuse(refusal)
                return
        if source.dynamic:
            self._dynamic_serial += 1
            name = f"_dynamic/{self.config.router_id}/{self._dynamic_serial}"
            address = self.addresses.add_dynamic(name)
            link.source = Source(address=name, dynamic=True, expiry_policy=source.expiry_policy,
                                 durable=source.durable, timeout=source.timeout)
        elif not source.address:
            link.refuse(Error(condition=Condition.INVALID_FIELD, description="a receiving link needs a source address (or dynamic)"))
            return
        else:
            address = self.addresses.get(str(source.address))
            link.source = source
        link.target = link.remote_target
        link.attach()
        out = Outbound(link, conn, address)
        if address.distribution == "multicast":
            out.backlog = deque()
        link.context = out
        address.consumers.append(out)
        conn.outbound.add(out)
        if address.distribution == "queue" and address.owner is None:
            try:
                self.queues.consumer_attached(self.queues.host(address))
            except StoreError as exc:
                self._store_refusal(conn, out, exc)
                return
        if len(address.consumers) == 1:
            self.plane.local_consumers_changed(address)
        if link_log.isEnabledFor(logging.DEBUG):
            link_log.debug("connection %s: link %r attached, out to the peer from %s", conn.id, link.name, address.name,
                           extra=fields(conn=conn.id, link=link.name, direction="out", address=address.name))

    def _attach_producer(self, conn: ClientConnection, link: Any) -> None:
        target = link.remote_target
        if isinstance(target, Coordinator):
            link.refuse(Error(condition=Condition.NOT_IMPLEMENTED, description="transactions are not supported"))
            return
        if target is None:
            link.refuse(Error(condition=Condition.INVALID_FIELD, description="a sending link needs a target"))
            return
        if conn.grant is not None and getattr(target, "address", None):
            refusal = conn.grant.send_refusal(str(target.address))
            if refusal is not None:
                link.refuse(refusal)
                return
        address = None
        name = getattr(target, "address", None)
        if name and not (conn.neighbour is not None and name == DATA_ADDRESS):
            address = self.addresses.get(str(name))
        link.target = target
        link.source = link.remote_source
        link.max_message_size = self.config.limits.max_message_size
        link.attach()
        inbound = Inbound(link, conn, address)
        link.context = inbound
        conn.inbound.add(inbound)
        if address is not None and address.distribution == "queue" and address.owner is None:
            try:
                self.queues.host(address)
            except StoreError as exc:
                self._store_refusal(conn, inbound, exc)
                return
        if address is not None:
            address.senders.append(inbound)
            self.plane.refresh_links(address)
        self._grant(inbound)
        if link_log.isEnabledFor(logging.DEBUG):
            name = address.name if address is not None else None
            link_log.debug("connection %s: link %r attached, in from the peer to %s", conn.id, link.name,
                           name or "(anonymous relay)",
                           extra=fields(conn=conn.id, link=link.name, direction="in", address=name))

    def _store_refusal(self, conn: ClientConnection, record: Inbound | Outbound, exc: Exception) -> None:
        """The queue store cannot be made: the link just attached is detached, saying why."""
        queue_log.error("queue store: %s", exc, extra=fields(conn=conn.id, error=str(exc)))
        link = record.link
        link.detach(Error(condition=Condition.INTERNAL_ERROR, description=f"the queue store cannot be opened: {exc}"))
        conn.port.request_flush()

    def _on_link_detached(self, conn: ClientConnection, event: ev.LinkDetached) -> None:
        link = event.link
        record = link.context
        link.context = None
        if record is not None and conn.neighbour is None and link.remote_initiated:
            conn.link_count -= 1
        if isinstance(record, Outbound):
            conn.deliveries_out += (link.delivery_count - record.first_count) & _SEQ_MASK
            self._consumer_gone(record)
        elif isinstance(record, Inbound):
            conn.deliveries_in += (record.routed - record.first_count) & _SEQ_MASK
            self._producer_gone(record)
        if record is None:
            return
        error = event.error
        if error is not None and error.condition != Condition.CONNECTION_FORCED:
            link_log.info("connection %s: link %r detached: %s %s", conn.id, link.name, error.condition,
                          error.description or "", extra=fields(conn=conn.id, link=link.name,
                                                                condition=str(error.condition)))
        elif link_log.isEnabledFor(logging.DEBUG):
            link_log.debug("connection %s: link %r detached", conn.id, link.name, extra=fields(conn=conn.id, link=link.name))

    def _consumer_gone(self, out: Outbound) -> None:
        address = out.address
        out.connection.outbound.discard(out)
        if out.neighbour is not None:
            self.plane.link_gone(out)
        elif out in address.consumers:
            address.consumers.remove(out)
            if not address.consumers:
                self.plane.local_consumers_changed(address)
            if address.hosted is not None:
                self.queues.consumer_detached(address.hosted)
        # Deliveries it had not settled may or may not have reached the application.
        touched: set[ClientConnection] = set()
        for delivery in list(out.link.unsettled.values()):
            inbound_delivery = delivery.context
            delivery.context = None
            if inbound_delivery is None:
                continue
            if type(inbound_delivery) is _QUEUED_MESSAGE_CLASS:
                self.queues.settled(inbound_delivery, MODIFIED_FAILED)
                continue
            self.memory.in_flight -= 1
            if inbound_delivery is not ORPHAN and not inbound_delivery.settled:
                inbound_delivery.context = None
                inbound_delivery.settle(MODIFIED_FAILED)
                self.counters.modified += 1
                out.address.traffic.modified += 1
                inbound = inbound_delivery.link.context
                if inbound is not None:
                    touched.add(inbound.connection)
        out.link.unsettled.clear()
        if out.backlog:
            self._drop_backlog(out, touched)
        if not address.consumers and not address.remote and address.pending:
            self._release_pending(address, touched)
        for conn in touched:
            conn.port.request_flush()
        self.addresses.release_if_unused(address)
        self._relieve()

    def _producer_gone(self, inbound: Inbound) -> None:
        inbound.connection.inbound.discard(inbound)
        if inbound.neighbour is not None:
            self.plane.inbound_gone(inbound)
        self._starved.discard(inbound)
        address = inbound.address
        if address is not None:
            if inbound in address.senders:
                address.senders.remove(inbound)
            self.addresses.release_if_unused(address)
        # Forwarded deliveries still out with consumers: their outcome has nobody to go to.
        for delivery in inbound.link.unsettled.values():
            outbound_delivery = delivery.context
            if outbound_delivery is not None:
                outbound_delivery.context = ORPHAN
            delivery.context = None

    # ================================================================================
    # Messages
    # ================================================================================
    def _on_delivery_received(self, conn: ClientConnection, event: ev.DeliveryReceived) -> None:
        delivery = event.delivery
        inbound = delivery.link.context
        if type(inbound) is not Inbound:
            if type(inbound) is ControlLink:
                self.plane.control_received(inbound.neighbour, delivery)
            return
        self.counters.received += 1
        inbound.routed = (inbound.routed + 1) & 0xFFFFFFFF
        # bytes, or a view of the frame it came in: whatever the engine gave.
        payload: Any = delivery.payload
        delivery.payload = None  # the router keeps the bytes where it holds them, not here
        inbound.average_size += (len(payload) - inbound.average_size) >> 3
        try:
            routing = read_routing(payload)
        except DecodeError as exc:
            self.reject(delivery, Condition.DECODE_ERROR, f"malformed message: {exc.description}")
            self._replenish(inbound)
            return
        address = inbound.address
        neighbour = inbound.neighbour
        if neighbour is not None:
            if looped(routing, self.router_id):
                # A route changed under the message: it came back, or went round too long.
                self.counters.looped += 1
                self.release(delivery)
                self._replenish(inbound)
                return
        elif routing.message_annotations is not None and has_routing_annotations(routing):
            # Only routers set these: a client's (an echo of a request it received, say)
            # would mislead the routers downstream.
            payload = strip_routing_annotations(payload, routing)
            routing = read_routing(payload)
        if address is None:
            to = routing.to if neighbour is None else destination(routing)
            if not to:
                self.reject(delivery, Condition.INVALID_FIELD, "a message on the anonymous relay needs a 'to' address")
                self._replenish(inbound)
                return
            grant = conn.grant
            if grant is not None and not grant.may_send_to(to):
                traffic = self.addresses.traffic_of(to)
                traffic.received += 1
                self.reject(delivery, Condition.UNAUTHORIZED_ACCESS, grant.relay_refusal(to), traffic)
                self._replenish(inbound)
                return
            address = self.addresses.find(to)
            if address is None and self.addresses.queue_settings(to) is not None:
                address = self.addresses.get(to)  # a queue: here, or at its host
            if address is None or not (address.consumers or address.remote or address.owner or address.distribution == "queue"):
                owner = owner_of(to)
                if owner is not None and owner != self.router_id:
                    traffic = self.addresses.traffic.dynamic if to.startswith(DYNAMIC_PREFIX) else self.addresses.traffic_of(to)
                    traffic.received += 1
                    if not self.plane.route_to_router(owner, to, delivery, payload, routing, neighbour):
                        self._no_route(delivery, owner, to, traffic)
                    self._replenish(inbound)
                    return
                if owner is not None and to in self.reply_handlers:
                    self._reply_received(delivery, to, payload)
                    self._replenish(inbound)
                    return
                if (
                    to != MANAGEMENT_ADDRESS and not to.startswith(MANAGEMENT_PREFIX)  # this router's own
                    and not self.plane.has_remote_consumers(to)
                ):
                    traffic = address.traffic if address is not None else self.addresses.traffic_of(to)
                    traffic.received += 1
                    self.release(delivery, traffic)
                    self._replenish(inbound)
                    return
                address = self.addresses.get(to)
        address.messages_in += 1
        traffic = address.traffic
        traffic.received += 1
        if address.owner is not None and not (address.queue_proxy and neighbour is not None and inbound.address is not None):
            # Another router's address (a dynamic one, its management, or a queue it
            # hosts).  A queue's host sends what is for our consumers on a link for the
            # address: kept here.
            if not self.plane.route_to_router(address.owner, address.name, delivery, payload, routing, neighbour):
                self._no_route(delivery, address.owner, address.name, traffic)
            self._replenish(inbound)
            return
        expires_at = None
        if routing.absolute_expiry_time is not None and routing.absolute_expiry_time <= self.wall_clock_ms():
            self._expire(delivery, traffic)
            self._replenish(inbound)
            return
        if routing.ttl:  # None or 0: no time limit
            expires_at = self.clock() + routing.ttl / 1000.0
        if routing.absolute_expiry_time is not None:
            remaining = (routing.absolute_expiry_time - self.wall_clock_ms()) / 1000.0
            at = self.clock() + remaining
            expires_at = at if expires_at is None else min(expires_at, at)
        if address.remote:
            address.last_used = self.clock()
        rpc = address.rpc
        if (rpc is not None and neighbour is None and routing.reply_to is not None and not delivery.remote_settled
                and len(self._calls) < MAX_CALLS_TIMED):
            # A call from a client of this router: timed to its outcome, by method (the
            # request's subject; none counts as "(other)").
            subject = routing.subject
            series = rpc.methods.get(subject) if subject is not None else None
            if series is None:
                series = rpc.series(routing.subject)
            self._calls[delivery] = (self.clock(), series)
        self._forwarder(address).forward(self, address, delivery, payload, routing, expires_at, neighbour)
        self._replenish(inbound)

    def _on_delivery_aborted(self, conn: ClientConnection, event: ev.DeliveryAborted) -> None:
        inbound = event.delivery.link.context
        if inbound is not None:
            inbound.routed = (inbound.routed + 1) & 0xFFFFFFFF
            self._replenish(inbound)

    def _forwarder(self, address: Address) -> Any:
        # A queue of another router: what reaches us for it is for our consumers.
        distribution = address.distribution if not address.queue_proxy else "balanced"
        forwarder = self._forwarders.get(distribution)
        if forwarder is None:
            forwarder = QueueForwarder() if distribution == "queue" else forwarder_for(distribution)
            self._forwarders[distribution] = forwarder
        return forwarder

    def send_to(self, out: Outbound, delivery: Delivery | None, payload: Any, routing: Routing | None = None) -> None:
        """Send ``payload`` to consumer ``out``, linking outcomes back to ``delivery``
        (``routing``: the payload's, if read already)."""
        link = out.link
        if out.neighbour is not None and out.address is not self.plane.data_address:
            payload = annotate(payload, routing or read_routing(payload), self.router_id, first_hop=self._first_hop)
        mode = link.snd_settle_mode
        sender_waits = delivery is not None and not delivery.remote_settled and not delivery.settled
        presettle = mode == _SETTLED or (not sender_waits and mode != _UNSETTLED)
        sent = link.send(payload, settled=presettle)
        address = out.address
        address.messages_out += 1
        traffic = address.traffic
        traffic.forwarded += 1
        if sender_waits:
            if presettle:
                # The consumer asked for at-most-once: the router's acceptance is all there is.
                delivery.settle(ACCEPTED)  # type: ignore[union-attr]
                self.counters.accepted_at_router += 1
                traffic.router_accepted += 1
            else:
                sent.context = delivery
                delivery.context = sent  # type: ignore[union-attr]
                self.memory.in_flight += 1
        if not presettle and len(link.unsettled) >= self.max_link_unsettled:
            out.saturated = True
        out.connection.port.request_flush()

    def send_generated(self, to: str, payload: bytes) -> bool:
        """Send a message the router made itself (a ``$management`` request or reply)
        toward ``to``: at most once, to a consumer that can take it now or toward the
        router ``to`` belongs to; False if it was dropped (counted)."""
        address = self.addresses.find(to)
        if address is not None and address.consumers:
            consumer = pick_consumer(address, len(payload), self.max_link_unsettled)
            if consumer is not None:
                self.send_to(consumer, None, payload)
                return True
        else:
            owner = owner_of(to)
            if owner is not None and owner != self.router_id:
                if self.plane.route_to_router(owner, to, None, payload, read_routing(payload), None):
                    return True
        self.counters.dropped += 1
        return False

    def _no_route(self, delivery: Delivery, owner: str, to: str, traffic: PrefixTraffic | None = None) -> None:
        """No route to router ``owner`` for its address ``to``.  A request for its
        management is rejected, saying so: its sender waits for an answer that cannot
        come.  Other messages are released, to be sent again (a reply may find a route
        the network is still learning)."""
        if to.startswith(MANAGEMENT_PREFIX):
            self.reject(delivery, Condition.NOT_FOUND,
                        f"router {owner!r} is not in the network seen from router {self.router_id!r}"
                        " (no route to it: unknown id, or not connected)", traffic)
        else:
            self.release(delivery, traffic)

    def _reply_received(self, delivery: Delivery, to: str, payload: Any) -> None:
        """A reply for one of the router's own requests (``reply_handlers``)."""
        handler = self.reply_handlers.pop(to)
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(ACCEPTED)
        handler(payload)

    def hold(self, address: Address, delivery: Delivery | None, payload: Any, expires_at: float | None) -> None:
        """Keep a message for the address's consumers until one can take it."""
        if self.closing:
            # Shutting down: what cannot be placed now never will be (sent on credit
            # granted before the shutdown began).
            if delivery is not None:
                self.release(delivery)
                inbound = delivery.link.context
                if inbound is not None:
                    inbound.connection.port.request_flush()
            return
        pending = Pending(delivery, payload, expires_at)
        limits = self.config.limits
        cost = pending.size + MESSAGE_COST
        if (
            address.held_messages >= limits.max_address_messages
            or address.held_bytes + cost > limits.max_address_bytes
            or not self.memory.can_hold(pending.size)
        ):
            # Credit is sized to avoid this; a sender whose messages grew past what its
            # credit assumed meets it.  It is told, and may send again.
            if delivery is not None:
                self.release(delivery, address.traffic)
                self.counters.released_for_memory += 1
                self.warn_once("held", f"address {address.name!r} is at its bound for held messages;"
                                " releasing what would have to wait (see limits.max_address_bytes,"
                                " max_address_messages, max_memory)")
            return
        address.pending.append(pending)
        address.held_messages += 1
        address.held_bytes += cost
        self.memory.held += cost
        if delivery is not None:
            inbound = delivery.link.context
            if inbound is not None:
                inbound.held += 1

    def _unhold(self, address: Address, pending: Pending) -> None:
        """``pending`` left its address's queue: room for more, for its sender and others."""
        cost = pending.size + MESSAGE_COST
        address.held_messages -= 1
        address.held_bytes -= cost
        self.memory.held -= cost
        delivery = pending.delivery
        if delivery is None:
            return
        inbound = delivery.link.context
        if inbound is not None and inbound.held > 0:
            inbound.held -= 1
            if inbound.address is None and (inbound.blocked or inbound.link.credit <= inbound.granted // 2):
                self._grant(inbound)

    def queue_copy(self, out: Outbound, pending: Pending, bounded: bool = True) -> None:
        """Keep a copy for a consumer that is not taking them now: a multicast consumer's
        (``bounded``: its share of its address's bounds, past which it loses its oldest),
        or a neighbour's data link (bounded by its owner, ``plane.py``)."""
        backlog = out.backlog
        assert backlog is not None
        address = out.address
        cost = pending.size + MESSAGE_COST
        if bounded:
            limits = self.config.limits
            share = max(1, len(address.consumers))
            max_copies = max(1, min(MULTICAST_BACKLOG, limits.max_address_messages // share))
            max_bytes = limits.max_address_bytes // share
            while backlog and (len(backlog) >= max_copies or out.backlog_bytes + cost > max_bytes):
                self._pop_copy(out)
                self.counters.copies_dropped += 1
        backlog.append(pending)
        out.backlog_bytes += cost
        address.held_messages += 1
        address.held_bytes += cost
        self.memory.held += cost

    def _pop_copy(self, out: Outbound) -> Pending:
        pending = out.backlog.popleft()  # type: ignore[union-attr]
        self.unqueue_copy(out, pending)
        return pending

    def unqueue_copy(self, out: Outbound, pending: Pending) -> None:
        """``pending`` left ``out``'s backlog: give back what it counted."""
        cost = pending.size + MESSAGE_COST
        out.backlog_bytes -= cost
        address = out.address
        address.held_messages -= 1
        address.held_bytes -= cost
        self.memory.held -= cost

    def _drop_backlog(self, out: Outbound, touched: set[ClientConnection]) -> None:
        """The consumer went: its copies go; messages whose senders wait are released."""
        while out.backlog:
            pending = self._pop_copy(out)
            delivery = pending.delivery
            if delivery is None:
                self.counters.copies_dropped += 1
            elif not delivery.settled:
                self.release(delivery)
                if delivery.link.context is not None:
                    touched.add(delivery.link.context.connection)

    def _on_delivery_updated(self, conn: ClientConnection, event: ev.DeliveryUpdated) -> None:
        delivery = event.delivery
        link = delivery.link
        if not link.is_sender:
            return  # a sender's own update of its delivery: nothing to relay
        state = delivery.remote_state
        if type(state) not in OUTCOME_TYPES:
            if not delivery.remote_settled:
                return  # e.g. received(): not an outcome yet
            state = MODIFIED_FAILED  # settled without an outcome: the sender must assume failure
        if not delivery.settled:
            delivery.settle()
        out = link.context
        if type(out) is Outbound:
            traffic = out.address.traffic
            if type(state) is _ACCEPTED_CLASS:
                traffic.accepted += 1
            else:
                traffic.consumer_outcome(state)
            if out.saturated and len(link.unsettled) < self.max_link_unsettled:
                out.saturated = False
                self._consumer_ready(out)
            if out.retiring:
                self.plane.settled_on(out)
        inbound_delivery = delivery.context
        if inbound_delivery is None:
            return
        delivery.context = None
        if type(inbound_delivery) is _QUEUED_MESSAGE_CLASS:
            self.queues.settled(inbound_delivery, state)
            return
        self.memory.in_flight -= 1
        if inbound_delivery is ORPHAN:
            return
        inbound_delivery.context = None
        if self._calls:
            call = self._calls.pop(inbound_delivery, None)
            if call is not None and type(state) is _ACCEPTED_CLASS:
                started, series = call
                seconds = self.clock() - started
                series.buckets[bisect_left(RPC_BUCKETS, seconds)] += 1
                series.total += seconds
        if not inbound_delivery.settled:
            inbound_delivery.settle(state)
            inbound = inbound_delivery.link.context
            if inbound is not None:
                inbound.connection.port.request_flush()

    def _on_credit_granted(self, conn: ClientConnection, event: ev.CreditGranted) -> None:
        out = event.link.context
        if type(out) is Outbound:
            self._consumer_ready(out)
        elif type(out) is ControlLink:
            self.plane.control_credit(out.neighbour)

    def consumer_ready(self, out: Outbound) -> None:
        """``out`` may be able to take messages now (a neighbour answered our attach)."""
        self._consumer_ready(out)

    def _on_session_window_opened(self, conn: ClientConnection, event: ev.SessionWindowOpened) -> None:
        session = event.session
        for out in list(conn.outbound):
            if out.link.session is session:
                self._consumer_ready(out)

    def _consumer_ready(self, out: Outbound) -> None:
        """A consumer may take (more): give it what waits, then let senders go on."""
        link = out.link
        address = out.address
        max_unsettled = self.max_link_unsettled
        if address.hosted is not None:
            self.queues.pump(address.hosted)
        elif out.backlog:
            while out.backlog and out.usable_credit(max_unsettled) > 0:
                pending = self._pop_copy(out)
                delivery = pending.delivery
                if delivery is not None and (delivery.settled or not delivery.link.active):
                    continue  # its sender is gone
                self.send_to(out, delivery, pending.payload)
                if delivery is not None and delivery.link.context is not None:
                    delivery.link.context.connection.port.request_flush()
            self._relieve()
        elif address.pending:
            now = None
            too_big: list[Pending] = []
            while address.pending and out.usable_credit(max_unsettled) > 0:
                pending = address.pending.popleft()
                if not fits(out, pending.size):
                    too_big.append(pending)  # for another consumer; keeps its place
                    continue
                self._unhold(address, pending)
                delivery = pending.delivery
                if delivery is not None and (delivery.settled or not delivery.link.active):
                    continue  # its sender is gone, or it expired
                if pending.expires_at is not None:
                    now = now if now is not None else self.clock()
                    if pending.expires_at <= now:
                        if delivery is not None:
                            self._expire(delivery, address.traffic)
                        continue
                self.send_to(out, delivery, pending.payload)
                if delivery is not None and delivery.link.context is not None:
                    delivery.link.context.connection.port.request_flush()
            if too_big:
                address.pending.extendleft(reversed(too_big))
            self._relieve()
        # Credit left after the loops means nothing waiting can go to this consumer.
        if link.drain and link.credit > 0 and not out.backlog:
            link.drained()
            out.connection.port.request_flush()
        if address.senders:
            for inbound in address.senders:
                if inbound.blocked or inbound.link.credit <= inbound.granted // 2:
                    self._grant(inbound)

    # ================================================================================
    # Credit toward senders
    # ================================================================================
    def _grant(self, inbound: Inbound) -> None:
        credit = self.credit.credit_for(inbound, self.closing)
        link = inbound.link
        if credit is not None:
            # Deliveries the engine has read but the core not yet routed will take their
            # share of the room too; the new credit counts from after them.  Once they
            # are routed (at the end of this batch) the grant is looked at again.
            unseen = (link.delivery_count - inbound.routed) & 0xFFFFFFFF
            if unseen:
                self._after_batch.add(inbound)
                credit -= unseen
                if credit <= 0:
                    credit = None
        if credit is None:
            if not inbound.blocked and not self.closing:
                self.counters.credit_stalls += 1
            inbound.blocked = True
            if not self.closing and self.memory.credit_room() <= 0:
                self._starved.add(inbound)
            return
        inbound.blocked = False
        # Top up only by a worthwhile step (half the new grant), so a sender whose grant
        # is capped by a small consumer window does not get a flow frame per message.
        if link.active and (link.credit == 0 or credit - link.credit >= max(1, credit // 2)):
            link.flow(credit)
            inbound.granted = credit
            inbound.connection.port.request_flush()

    def grant(self, inbound: Inbound) -> None:
        """Give ``inbound`` the credit it may have now (the queues call this)."""
        self._grant(inbound)

    def _replenish(self, inbound: Inbound) -> None:
        # Once half the grant is used, look again every eighth message (and when it is
        # all used): often enough that a sender never runs dry while there is room,
        # rarely enough that a message does not pay for a look at every consumer.
        credit = inbound.link.credit
        if credit <= inbound.granted >> 1 and not credit & 7:
            self._grant(inbound)

    def _relieve(self) -> None:
        """Memory came back below the low-water mark: senders starved of credit go on."""
        if self._starved and self.memory.relieved:
            starved = self._starved
            self._starved = set()
            for inbound in starved:
                if inbound.link.active:
                    self._grant(inbound)

    # ================================================================================
    # Outcomes decided by the router
    # ================================================================================
    def release(self, delivery: Delivery, traffic: PrefixTraffic | None = None) -> None:
        """Settle ``delivery`` released (counted for ``traffic``, its address's prefix)."""
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(RELEASED)
            self.counters.released += 1
            if traffic is not None:
                traffic.router_released += 1
        elif delivery.remote_settled:
            self.counters.dropped += 1

    def reject(self, delivery: Delivery, condition: str, description: str, traffic: PrefixTraffic | None = None) -> None:
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(Rejected(error=Error(condition=Symbol(condition), description=description)))
            self.counters.rejected += 1
            if traffic is not None:
                traffic.router_rejected += 1
        else:
            self.counters.dropped += 1

    def _expire(self, delivery: Delivery, traffic: PrefixTraffic | None = None) -> None:
        self.counters.expired += 1
        if traffic is not None:
            traffic.router_expired += 1
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(Rejected(error=Error(condition=EXPIRED, description="message expired before it could be delivered")))
            inbound = delivery.link.context
            if inbound is not None:
                inbound.connection.port.request_flush()

    def _release_pending(self, address: Address, touched: set[ClientConnection]) -> None:
        while address.pending:
            pending = address.pending.popleft()
            self._unhold(address, pending)
            delivery = pending.delivery
            if delivery is not None and not delivery.settled:
                self.release(delivery, address.traffic)
                if delivery.link.context is not None:
                    touched.add(delivery.link.context.connection)

    def warn_once(self, key: str, message: str) -> None:
        """Log a condition the first time it happens (and again after each tick clears it)."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    # ================================================================================
    # Configuration reload
    # ================================================================================
    reload_config: Callable[[], dict[str, Any]] | None = None
    """Reload the router's configuration and say what changed (``Router.reload``); raises
    ``ConfigError``.  None: the core runs without a router process (tests, simulations)."""

    def reconfigure(self, config: RouterConfig) -> list[str]:
        """Put a reloaded configuration in place; ``reload.plan_reload`` has checked that
        only what may change under open connections differs.  Nothing is closed or
        detached: limits apply to new connections and links, the address table to
        addresses made from now on (``AddressTable.reconfigure``), queue settings to the
        hosted queues at once (``QueueManager.reconfigure``), and the policy to each
        open connection's next attach.  Returns a line for each thing kept as it was."""
        kept = self.addresses.reconfigure(config.addresses)
        kept += self.queues.reconfigure()
        policy = Policy(config.policy, self.addresses.distribution_of, self.counters, self.clock)
        for conn in self.connections:
            engine = conn.port.engine
            if conn.neighbour is None and conn.refused is None and engine.remote_open is not None:
                conn.grant = policy.carry_over(engine.user) if policy.enabled else None
        self.policy = policy
        limits = config.limits
        self.max_link_unsettled = limits.max_link_unsettled
        self.memory.resize(limits.max_memory)
        self.credit.limits = limits
        self.queues.window = limits.max_address_bytes
        credentials = config.authentication.credentials
        if self.authenticator is not None and credentials is not None:
            self.authenticator.credentials = credentials
        self.config = config
        # A consumer is looked at again on a settlement only while marked saturated, so
        # the marks follow max_link_unsettled; raised bounds may let consumers take more,
        # and senders waiting for credit have it.
        ready = []
        for conn in self.connections:
            for out in conn.outbound:
                saturated = len(out.link.unsettled) >= self.max_link_unsettled
                if out.saturated and not saturated:
                    ready.append(out)
                out.saturated = saturated
        for out in ready:
            self._consumer_ready(out)
        for conn in self.connections:
            for inbound in conn.inbound:
                if inbound.blocked and inbound.link.active:
                    self._grant(inbound)
        self._relieve()
        return kept

    # ================================================================================
    # Time and shutdown
    # ================================================================================
    def tick(self, now: float) -> None:
        """Expire waiting messages whose TTL has passed (called about once a second)."""
        for address in self.addresses:
            if address.pending and any(p.expires_at is not None and p.expires_at <= now for p in address.pending):
                kept = []
                for pending in address.pending:
                    if pending.expires_at is not None and pending.expires_at <= now:
                        self._unhold(address, pending)
                        if pending.delivery is not None:
                            self._expire(pending.delivery, address.traffic)
                    else:
                        kept.append(pending)
                address.pending.clear()
                address.pending.extend(kept)
            for out in address.consumers:
                backlog = out.backlog
                if backlog and any(p.expires_at is not None and p.expires_at <= now for p in backlog):
                    kept_copies = []
                    while backlog:
                        pending = self._pop_copy(out)
                        if pending.expires_at is not None and pending.expires_at <= now:
                            self.counters.expired += 1
                        else:
                            kept_copies.append(pending)
                    for pending in kept_copies:
                        self.queue_copy(out, pending)
            address.sample_rates(now)
            self.addresses.release_if_unused(address)
        if self._calls:
            # Calls the router settled itself (released, say), or whose caller left.
            self._calls = {
                delivery: call for delivery, call in self._calls.items()
                if not delivery.settled and delivery.link.context is not None
            }
        self.queues.tick()
        self._relieve()
        self._warned.clear()

    def begin_shutdown(self) -> None:
        """Stop taking new work: release what waits, withhold credit from every sender."""
        self.closing = True
        touched: set[ClientConnection] = set()
        for address in self.addresses:
            self._release_pending(address, touched)
        for conn in self.connections:
            for inbound in conn.inbound:
                if inbound.link.active and inbound.link.credit:
                    inbound.link.flow(0)
            conn.port.request_flush()
        for conn in touched:
            conn.port.request_flush()

    def in_flight(self) -> int:
        """Forwarded deliveries whose consumer has not yet answered, and messages the
        queue store has not yet confirmed (their senders wait for that too)."""
        return sum(queue.incoming for queue in self.queues.queues.values()) + sum(
            1
            for conn in self.connections
            for out in conn.outbound
            for delivery in out.link.unsettled.values()
            if delivery.context is not None
        )

    def finish_shutdown(self) -> tuple[int, int]:
        """Tell every sender still waiting that its delivery failed, then close everyone.
        Returns how many deliveries were settled as modified(delivery-failed) and released."""
        error = Error(condition=Condition.CONNECTION_FORCED, description="router is shutting down")
        modified = released = 0
        for conn in list(self.connections):
            for inbound in list(conn.inbound):
                for delivery in list(inbound.link.unsettled.values()):
                    if not delivery.settled:
                        if delivery.context is not None:
                            delivery.settle(MODIFIED_FAILED)
                            modified += 1
                        else:
                            delivery.settle(RELEASED)
                            released += 1
            if conn.close_error is None:
                conn.close_error = error
            conn.port.close(error)
            self._free_slot(conn)
        return modified, released
