"""The router's side of the network: neighbours, routes, and links to other routers.

``InterRouterPlane`` belongs to the ``RouterCore`` (one owner of routing state): the core
hands it what happens on inter-router connections, and asks it where a message for an
address or a router goes.  It runs the routing protocol (``network.RouterNetwork``, sans
I/O) as that engine's adapter: control messages go out on the neighbours' control links,
and the engine's findings (next hops, which routers have consumers for which addresses)
come back here.  From them it keeps, for every anycast address in use, one link to each
neighbour that is the next hop toward a router with consumers for it (``interrouter.py``
says why one per address); those links are consumers of the address like local ones,
so the core's forwarding, credit, settlement and memory bounds apply to them unchanged.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, cast

from ..amqp.message import Message, Routing, read_routing
from ..amqp.spec import Error, SenderSettleMode, Source, Target
from ..amqp.errors import Condition, DecodeError
from .addresses import Address
from .interrouter import (
    CONTROL_ADDRESS, DATA_ADDRESS,
    Neighbour, annotate, identity, peer_identity,
)
from ..store.base import StoreError
from .links import ClientConnection, Inbound, Outbound, Pending
from .logs import fields
from .network.engine import RouterNetwork

if TYPE_CHECKING:
    from ..amqp.link import Link, ReceiverLink, SenderLink
    from ..amqp.session import Session
    from .core import RouterCore

__all__ = ["InterRouterPlane", "ControlLink", "LINK_IDLE_SECONDS"]

log = logging.getLogger("switchboard.router.network")

CONTROL_CREDIT = 1000
"""Control messages a router lets a neighbour send ahead (they are small and few)."""
CONTROL_QUEUE = 1000
"""Control messages kept for a neighbour whose control link has no credit; the routing
protocol repeats what matters, so past this the oldest are dropped."""
LINK_IDLE_SECONDS = 60.0
"""An address's links to other routers are detached after this long without a sender or
a message, so a router does not keep a link per address it once sent to."""
DATA_BACKLOG = 1000
"""Messages waiting for a neighbour's data link's credit."""


class ControlLink:
    """The ``context`` of a control link, ours or the peer's."""

    __slots__ = ("neighbour", "outgoing")

    def __init__(self, neighbour: Neighbour, outgoing: bool) -> None:
        self.neighbour = neighbour
        self.outgoing = outgoing


class InterRouterPlane:
    def __init__(self, core: "RouterCore", instance: int, clock: Callable[[], float]) -> None:
        self.core = core
        self.router_id = core.config.router_id
        self.instance = instance
        self.clock = clock
        self.network = RouterNetwork(self.router_id, instance, self)
        self.neighbours: dict[str, Neighbour] = {}
        self.next_hops: dict[str, str] = {}
        self.costs: dict[str, int] = {}
        self.remote: dict[str, set[str]] = {}
        """Address -> the other routers with consumers for it."""
        self.data_address = Address(DATA_ADDRESS, "balanced", core.addresses.traffic.to_owner)
        """A record the data links point at; no address of that name is ever routed."""
        self.deadline: float | None = None
        """When ``tick`` wants to run next (the server arms one timer for it)."""
        self.linked: set[Address] = set()
        """Addresses with links to other routers (looked at for idleness once a second)."""
        self._reaped_at = 0.0
        self._refused: str | None = None
        """Set while ``neighbour_connected`` runs if the engine found the id a duplicate."""
        self.wake: Callable[[], None] = lambda: None
        """Asks for ``tick`` soon (the server runs it once per loop turn when asked)."""

    # ================================================================================
    # Connections
    # ================================================================================
    def connection_opened(self, conn: ClientConnection) -> Error | None:
        """Check the peer of a new connection; an error to refuse it with, or None."""
        engine = conn.port.engine
        remote = engine.remote_open
        try:
            claimed = peer_identity(remote.properties if remote is not None else None)
        except ValueError as exc:
            return Error(condition=Condition.INVALID_FIELD, description=str(exc))
        if conn.role != "inter-router":
            if claimed is not None:
                return Error(condition=Condition.NOT_ALLOWED, description=(
                    f"router {claimed[0]!r} connected to a client listener; inter-router connections"
                    " go to a listener with role = \"inter-router\""))
            return None
        if claimed is None:
            return Error(condition=Condition.NOT_ALLOWED, description=(
                "this listener is for routers (role = \"inter-router\"); clients connect to a listener"
                " with role = \"normal\""))
        router_id, instance, cost = claimed
        if router_id == self.router_id:
            return Error(condition=Condition.NOT_ALLOWED, description=(
                f"router id {router_id!r} is this router's own: every router in a network needs an id"
                " of its own ([router] id)"))
        existing = self.neighbours.get(router_id)
        if existing is not None:
            return Error(condition=Condition.NOT_ALLOWED, description=(
                f"router {router_id!r} is already connected to router {self.router_id!r} (from"
                f" {existing.connection.host}); two routers with one id, or two connections"
                " between the same routers"))
        if engine.server:
            engine.properties = {**(engine.properties or {}), **identity(self.router_id, self.instance)}
            cost = cost or 1
        else:
            cost = _own_cost(engine.properties)
        neighbour = Neighbour(router_id, instance, cost, conn)
        conn.neighbour = neighbour
        self.neighbours[router_id] = neighbour
        log.debug("router %s (instance %d) connected on connection %s from %s, link cost %d", router_id, instance,
                  conn.id, conn.peer, cost)
        if not engine.server:
            self._attach_links(neighbour, engine.begin_session())
        return None

    def session_begun(self, conn: ClientConnection, session: "Session") -> None:
        neighbour = conn.neighbour
        if neighbour is not None and neighbour.session is None and session.remote_channel is not None:
            self._attach_links(neighbour, session)

    def _attach_links(self, neighbour: Neighbour, session: "Session") -> None:
        neighbour.session = session
        prefix = f"{self.router_id}->{neighbour.router_id}"
        control = session.sender(f"{prefix}/control", target=Target(address=CONTROL_ADDRESS),
                                 snd_settle_mode=SenderSettleMode.SETTLED)
        control.context = ControlLink(neighbour, outgoing=True)
        neighbour.control = control
        data = session.sender(f"{prefix}/data", target=Target(address=DATA_ADDRESS))
        out = Outbound(data, neighbour.connection, self.data_address)
        out.neighbour = neighbour
        out.backlog = deque()
        data.context = out
        neighbour.data = out
        neighbour.connection.outbound.add(out)
        neighbour.connection.port.request_flush()

    def our_link_attached(self, conn: ClientConnection, link: "Link") -> None:
        """The neighbour answered the attach of one of our links."""
        record = link.context
        if isinstance(record, ControlLink):
            record.neighbour.control_attached = True
            self._maybe_up(record.neighbour)
        elif isinstance(record, Outbound):
            record.max_size = link.remote_max_message_size
            if record.address is not self.data_address and record in record.address.remote:
                self.core.consumer_ready(record)

    def attach_from_neighbour(self, conn: ClientConnection, link: "Link") -> bool:
        """A link the neighbour attached to us; True if handled here (control, data)."""
        neighbour = conn.neighbour
        if neighbour is None or link.is_sender:
            link.refuse(Error(condition=Condition.NOT_ALLOWED,
                              description="routers send to each other on links they attach themselves"))
            return True
        target = link.remote_target
        address = getattr(target, "address", None)
        if address == CONTROL_ADDRESS:
            link.target = target
            link.source = link.remote_source
            link.attach()
            link.context = ControlLink(neighbour, outgoing=False)
            cast("ReceiverLink", link).flow(CONTROL_CREDIT)  # not a sender: refused above
            neighbour.peer_control_attached = True
            self._maybe_up(neighbour)
            return True
        return False

    def _maybe_up(self, neighbour: Neighbour) -> None:
        if neighbour.up or not (neighbour.control_attached and neighbour.peer_control_attached):
            return
        if self.neighbours.get(neighbour.router_id) is not neighbour:
            return
        self._refused = None
        self.network.neighbour_connected(neighbour.router_id, neighbour.instance, neighbour.cost, self.clock())
        if self._refused == neighbour.router_id:
            # Another router of that id is in the network (reached elsewhere, or a restart
            # not yet noticed): the one already there keeps its place.
            self._refused = None
            del self.neighbours[neighbour.router_id]
            error = Error(condition=Condition.NOT_ALLOWED, description=(
                f"router {neighbour.router_id!r} is already in the network (instance other than"
                f" {neighbour.instance}); two routers with one id, or a restart not yet noticed"))
            neighbour.connection.close_error = error
            neighbour.connection.port.close(error)
            return
        neighbour.up = True
        conn = neighbour.connection
        log.info("neighbour router %r up: connection %s %s %s, instance %d, link cost %d", neighbour.router_id,
                 conn.id, "from" if conn.port.engine.server else "to", conn.peer,
                 neighbour.instance, neighbour.cost,
                 extra=fields(event="neighbour up", neighbour=neighbour.router_id, conn=conn.id, peer=conn.peer,
                              instance=neighbour.instance, cost=neighbour.cost))
        self._send_queued_control(neighbour)
        self._schedule()

    def connection_closed(self, conn: ClientConnection) -> None:
        neighbour = conn.neighbour
        if neighbour is None or self.neighbours.get(neighbour.router_id) is not neighbour:
            return
        del self.neighbours[neighbour.router_id]
        error = conn.close_error
        why = f"{error.condition} {error.description or ''}".rstrip() if error is not None else "closed"
        log.info("neighbour router %r %s: connection %s %s", neighbour.router_id,
                 "down" if neighbour.up else "gone before it was up", conn.id, why,
                 extra=fields(event="neighbour down", neighbour=neighbour.router_id, conn=conn.id, peer=conn.peer,
                              condition=str(error.condition) if error is not None else None,
                              description=error.description if error is not None else None))
        if neighbour.up:
            neighbour.up = False
            self.network.neighbour_lost(neighbour.router_id, self.clock(), neighbour.instance)
            self._schedule()

    def link_gone(self, out: Outbound) -> None:
        """One of our links to a neighbour ended (detached, or its connection went)."""
        neighbour = out.neighbour
        if neighbour is None:
            return
        neighbour.sent_on_ended_links += out.delivered
        if neighbour.data is out:
            neighbour.data = None
        elif neighbour.address_links.get(out.address.name) is out:
            del neighbour.address_links[out.address.name]
        if out in out.address.remote:
            out.address.remote.remove(out)
        session = neighbour.session
        if (out.retiring and neighbour.up and self.neighbours.get(neighbour.router_id) is neighbour
                and session is not None and session.active):
            # While it detached, no other link to the neighbour could be made for the
            # address (one each): what came for it since waits for one (held, or named
            # senders).  The record may be a new one, the old one having gone unused.  (A
            # link ended by its connection's loss has no session left to attach another.)
            record = self.core.addresses.find(out.address.name)
            if record is not None:
                self.refresh_links(record)

    def inbound_gone(self, inbound: Inbound) -> None:
        """One of a neighbour's links to us ended."""
        if inbound.neighbour is not None:
            inbound.neighbour.received_on_ended_links += inbound.delivered

    # ================================================================================
    # The routing protocol
    # ================================================================================
    def control_received(self, neighbour: Neighbour, delivery: Any) -> None:
        link = delivery.link
        if link.credit < CONTROL_CREDIT // 2:
            link.flow(CONTROL_CREDIT)
        try:
            message = Message.decode(delivery.payload).body
        except DecodeError:
            message = None
        if not isinstance(message, dict):
            log.warning("router %s sent a control message that is not a map; ignored", neighbour.router_id)
            return
        self.network.handle(neighbour.router_id, _plain(message), self.clock())
        self._schedule()

    def control_credit(self, neighbour: Neighbour) -> None:
        self._send_queued_control(neighbour)

    def tick(self, now: float) -> None:
        self.deadline = self.network.tick(now)
        if now - self._reaped_at >= 1.0:
            self._reaped_at = now
            self._reap_idle_links(now)

    def _schedule(self) -> None:
        """The engine has work marked (inputs only mark it): run ``tick`` soon."""
        self.deadline = self.clock()
        self.wake()

    # -- NetworkAdapter ------------------------------------------------------------------
    def send_control(self, neighbour_id: str, message: dict) -> None:
        neighbour = self.neighbours.get(neighbour_id)
        if neighbour is None:
            return
        payload = Message(message).encode()
        link = neighbour.control
        if neighbour.up and link is not None and link.active and link.credit > 0 and not neighbour.control_queue:
            link.send(payload, settled=True)
            neighbour.connection.port.request_flush()
            return
        queue = neighbour.control_queue
        queue.append(payload)
        if len(queue) > CONTROL_QUEUE:
            del queue[0]

    def _send_queued_control(self, neighbour: Neighbour) -> None:
        link = neighbour.control
        queue = neighbour.control_queue
        if link is None or not link.active or not neighbour.up:
            return
        sent = 0
        while queue and link.credit > 0:
            link.send(queue.pop(0), settled=True)
            sent += 1
        if sent:
            neighbour.connection.port.request_flush()

    def routes_changed(self, next_hops: dict[str, str], costs: dict[str, int]) -> None:
        self.next_hops = dict(next_hops)
        self.costs = dict(costs)
        for address in list(self.core.addresses):
            self.refresh_links(address)

    def address_added(self, address: str, router_id: str) -> None:
        self.remote.setdefault(address, set()).add(router_id)
        queues = self.core.queues
        queues.advertised(address, router_id)
        record = self.core.addresses.find(address)
        if record is None and not queues.shared and self.core.addresses.hosts_queue(address):
            # A consumer elsewhere for a queue this router hosts: serve it now.
            record = self.core.addresses.get(address)
            try:
                queues.host(record)
            except StoreError as exc:
                log.error("queue store: %s", exc)
        elif record is not None:
            self.refresh_links(record)

    def address_removed(self, address: str, router_id: str) -> None:
        routers = self.remote.get(address)
        if routers is not None:
            routers.discard(router_id)
            if not routers:
                del self.remote[address]
        record = self.core.addresses.find(address)
        if record is not None:
            self.refresh_links(record)

    def duplicate_router(self, router_id: str) -> None:
        self._refused = router_id
        if router_id == self.router_id:
            log.error("another router announces this router's own id %r: every router in a network needs an"
                      " id of its own ([router] id)", router_id)
        else:
            log.error("router %r connected, but a router of that id is already in the network; refusing it",
                      router_id)

    # ================================================================================
    # Addresses and their links to other routers
    # ================================================================================
    def has_remote_consumers(self, name: str) -> bool:
        routers = self.remote.get(name)
        return routers is not None and any(r in self.next_hops for r in routers)

    def local_consumers_changed(self, address: Address) -> None:
        """The address's local consumers came or went: advertise it, or stop."""
        if address.dynamic or (address.owner is not None and not address.queue_proxy):
            return
        # A queue hosted here is a consumer of its address for the network.
        wanted = bool(address.consumers) or address.hosted is not None
        if wanted and not address.advertised:
            address.advertised = True
            self.network.add_local_address(address.name, self.clock())
            self._schedule()
        elif not wanted and address.advertised:
            address.advertised = False
            self.network.remove_local_address(address.name, self.clock())
            self._schedule()

    def refresh_links(self, address: Address) -> None:
        """Keep one link to each next hop toward the address's remote consumers, while
        the address is in use here (senders, waiting messages, recent traffic)."""
        if address.distribution == "multicast" or address.dynamic or (address.owner is not None and not address.queue_proxy):
            return
        wanted: set[str] = set()
        if address.senders or address.pending or address.remote or address.hosted is not None:
            routers = self.remote.get(address.name, ())
            wanted = {self.next_hops[r] for r in routers if r in self.next_hops}
        for out in list(address.remote):
            if out.neighbour is None or out.neighbour.router_id not in wanted:
                self._retire(out)
        for neighbour_id in wanted:
            neighbour = self.neighbours.get(neighbour_id)
            if neighbour is None or not neighbour.up or neighbour.session is None:
                continue
            if address.name in neighbour.address_links:
                continue
            self._link_address(neighbour, address)

    def _link_address(self, neighbour: Neighbour, address: Address) -> None:
        session = neighbour.session
        assert session is not None
        link = session.sender(f"{self.router_id}->{neighbour.router_id}/{address.name}",
                              target=Target(address=address.name), source=Source(address=address.name))
        out = Outbound(link, neighbour.connection, address)
        out.neighbour = neighbour
        link.context = out
        neighbour.address_links[address.name] = out
        neighbour.connection.outbound.add(out)
        address.remote.append(out)
        self.linked.add(address)
        # In use from now: the message that asked for the link was held for it, and held
        # messages do not count as use.
        address.last_used = self.clock()
        address.remote.sort(key=lambda o: self.costs.get(o.neighbour.router_id, 0))  # type: ignore[union-attr]
        neighbour.connection.port.request_flush()

    def _retire(self, out: Outbound) -> None:
        """Stop sending on a link; detach it once nothing it carried is unsettled."""
        if out in out.address.remote:
            out.address.remote.remove(out)
        out.retiring = True
        if not out.link.unsettled:
            out.link.detach()
            out.connection.port.request_flush()

    def settled_on(self, out: Outbound) -> None:
        if out.retiring and not out.link.unsettled:
            out.link.detach()
            out.connection.port.request_flush()

    def _reap_idle_links(self, now: float) -> None:
        for address in list(self.linked):
            if not address.remote:
                self.linked.discard(address)
            elif (
                not address.senders and not address.pending and address.hosted is None
                and now - address.last_used > LINK_IDLE_SECONDS
            ):
                for out in list(address.remote):
                    self._retire(out)
                self.linked.discard(address)
                self.core.addresses.release_if_unused(address)

    # ================================================================================
    # Messages routed by router: dynamic replies, multicast copies
    # ================================================================================
    def route_to_router(self, owner: str, to: str, delivery: Any, payload: Any, routing: Routing,
                        from_neighbour: Neighbour | None) -> bool:
        """Send a message for ``to`` (an address of router ``owner``) toward that router;
        False if no route (the caller tells the sender)."""
        hop = self.next_hops.get(owner)
        neighbour = self.neighbours.get(hop) if hop is not None else None
        if neighbour is None or neighbour.data is None or neighbour is from_neighbour:
            return False
        out = neighbour.data
        copy = annotate(payload, routing, self.router_id, to=to)
        if not out.backlog and out.usable_credit(self.core.max_link_unsettled) > 0:
            self.core.send_to(out, delivery, copy)
        else:
            self._queue_data(out, Pending(delivery, copy, None))
        return True

    def multicast(self, address: Address, payload: Any, routing: Routing, dests: frozenset[str] | list[str] | None,
                  from_neighbour: Neighbour | None) -> None:
        """Copies of a multicast message to the routers with consumers for it, one per next
        hop, each listing the routers it is for; every router gets exactly one."""
        routers = set(self.remote.get(address.name, ())) if dests is None else {d for d in dests if d != self.router_id}
        groups: dict[str, list[str]] = {}
        for router in routers:
            hop = self.next_hops.get(router)
            if hop is not None:
                groups.setdefault(hop, []).append(router)
        for hop, group in groups.items():
            neighbour = self.neighbours.get(hop)
            if neighbour is None or neighbour.data is None or neighbour is from_neighbour:
                self.core.counters.copies_dropped += 1
                continue
            out = neighbour.data
            copy = annotate(payload, routing, self.router_id, to=address.name, dests=sorted(group))
            if not out.backlog and out.usable_credit(self.core.max_link_unsettled) > 0:
                self.core.send_to(out, None, copy)
            else:
                self._queue_data(out, Pending(None, copy, None))

    def _queue_data(self, out: Outbound, pending: Pending) -> None:
        backlog = out.backlog
        assert backlog is not None
        if len(backlog) >= DATA_BACKLOG:
            oldest = backlog.popleft()
            self.core.unqueue_copy(out, oldest)
            if oldest.delivery is not None:
                self.core.release(oldest.delivery)
            else:
                self.core.counters.copies_dropped += 1
        self.core.queue_copy(out, pending, bounded=False)

    # ================================================================================
    # Messages arriving from neighbours
    # ================================================================================
    # ================================================================================
    # The network, for `switchboard network`
    # ================================================================================
    def view(self) -> dict[str, Any]:
        view = self.network.view()
        view["router"] = self.router_id
        view["instance"] = self.instance
        view["neighbours"] = [
            {"router": n.router_id, "instance": n.instance, "cost": n.cost, "host": n.connection.host,
             "up": n.up, "address_links": len(n.address_links),
             "delivered_out": n.sent_on_ended_links + sum(out.delivered for out in n.connection.outbound),
             "delivered_in": n.received_on_ended_links + sum(inbound.delivered for inbound in n.connection.inbound)}
            for n in sorted(self.neighbours.values(), key=lambda n: n.router_id)
        ]
        view["next_hops"] = dict(sorted(self.next_hops.items()))
        view["costs"] = dict(sorted(self.costs.items()))
        return view


def _own_cost(properties: dict[Any, Any] | None) -> int:
    from .interrouter import LINK_COST

    cost = (properties or {}).get(LINK_COST)
    return int(cost) if isinstance(cost, int) else 1


def _plain(value: Any) -> Any:
    """AMQP-typed values as plain Python ones (the routing protocol's maps)."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, str) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value
