"""One forwarder per distribution: which consumer (or consumers) gets a message.

A consumer can be sent a message only while it is taking what it is sent: it has credit,
fewer than ``max_link_unsettled`` deliveries outstanding, room in its session's incoming
window, and its connection's unsent output is under ``max_connection_output``.

``balanced`` picks, among such consumers, the one with the fewest deliveries it has not
yet settled, then the most credit, starting from a rotating position so equals share
the load: a consumer that settles slowly accumulates unsettled deliveries and is passed
over.  A consumer whose link announced a max-message-size smaller than the message is
never chosen (spec 2.7.3: it would have to detach with message-size-exceeded); if no
consumer at all could take it, the sender's delivery is rejected with that condition.
``closest`` is ``balanced`` among the nearest consumers; on one router all are equally
near.  ``multicast`` settles on arrival and copies to every consumer; a consumer that is
not taking its copies gets them queued in its own bounded backlog, so a slow consumer
holds back only its own copies (past the bound it loses its oldest, counted).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final, TYPE_CHECKING

from ..amqp.delivery import ACCEPTED, Delivery
from ..amqp.errors import Condition
from ..amqp.message import Routing
from .interrouter import multicast_dests
from .links import Outbound, Pending

if TYPE_CHECKING:
    from .addresses import Address
    from .interrouter import Neighbour
    from .core import RouterCore

__all__ = ["Forwarder", "BalancedForwarder", "ClosestForwarder", "MulticastForwarder", "forwarder_for", "MULTICAST_BACKLOG"]

MULTICAST_BACKLOG: Final = 1000
"""Copies held per multicast consumer that is not taking them; beyond it the oldest goes."""


class Forwarder:
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any,
                routing: Routing, expires_at: float | None, source: "Neighbour | None") -> None:
        """Send (or hold) a message for ``address``; ``source`` is the router it came
        from (never sent back there), None when a client sent it."""
        raise NotImplementedError


def fits(out: Outbound, size: int) -> bool:
    """May a message of ``size`` bytes go to this consumer (its max-message-size)?"""
    limit = out.max_size
    return limit is None or size <= limit


def pick_consumer(address: "Address", size: int, max_unsettled: int) -> Outbound | None:
    consumers = address.consumers
    count = len(consumers)
    if count == 1:
        only = consumers[0]
        link = only.link
        limit = only.max_size
        if (
            link.credit > 0
            and len(link.unsettled) < max_unsettled
            and not only.connection.port.write_paused
            and link.session.remote_incoming_window > 0
            and not link.session.blocked_transfers
            and (limit is None or size <= limit)
        ):
            return only
        return None
    best = None
    best_unsettled = 0
    best_credit = 0
    start = address.next_rotation() % count if count else 0
    for index in range(count):
        out = consumers[(start + index) % count]
        link = out.link
        credit = link.credit
        unsettled = len(link.unsettled)
        if (
            credit <= 0
            or unsettled >= max_unsettled
            or out.connection.port.write_paused
            or link.session.remote_incoming_window <= 0
            or link.session.blocked_transfers
            or not fits(out, size)
        ):
            continue
        if best is None or unsettled < best_unsettled or (unsettled == best_unsettled and credit > best_credit):
            best = out
            best_unsettled = unsettled
            best_credit = credit
    return best


def pick_remote(address: "Address", size: int, max_unsettled: int, source: "Neighbour | None",
                cheapest_only: bool = False) -> Outbound | None:
    """Among our links to other routers for the address (cheapest path first), the one to
    send on: the cheapest with room, then the fewest unsettled; ``cheapest_only`` keeps to
    the cheapest paths (``closest``)."""
    best = None
    best_key: tuple[int, int] | None = None
    cheapest = None
    for out in address.remote:
        neighbour = out.neighbour
        if neighbour is source:
            continue
        cost = neighbour.cost if neighbour is not None else 0
        if cheapest is None:
            cheapest = cost
        elif cheapest_only and cost > cheapest:
            break
        link = out.link
        unsettled = len(link.unsettled)
        if (
            link.credit <= 0
            or unsettled >= max_unsettled
            or out.connection.port.write_paused
            or link.session.output_blocked
            or not fits(out, size)
        ):
            continue
        key = (cost, unsettled)
        if best_key is None or key < best_key:
            best, best_key = out, key
    return best


class BalancedForwarder(Forwarder):
    """Local consumers with room first; then the other routers, by path cost and load."""

    cheapest_only = False

    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any,
                routing: Routing, expires_at: float | None, source: "Neighbour | None") -> None:
        size = len(payload)
        max_unsettled = core.max_link_unsettled
        consumer = pick_consumer(address, size, max_unsettled) if address.consumers else None
        if consumer is None and address.remote and not (self.cheapest_only and address.consumers):
            consumer = pick_remote(address, size, max_unsettled, source, self.cheapest_only)
        if consumer is not None:
            core.send_to(consumer, delivery, payload, routing)
            return
        remote_known = bool(address.remote) or core.plane.has_remote_consumers(address.name)
        if not address.consumers and not remote_known:
            core.release(delivery, address.traffic)
        elif remote_known or any(fits(out, size) for out in address.consumers):
            core.hold(address, delivery, payload, expires_at)
            if not address.remote:
                core.plane.refresh_links(address)
        else:
            core.reject(delivery, Condition.LINK_MESSAGE_SIZE_EXCEEDED,
                        f"a message of {size} bytes is larger than any consumer of {address.name!r} accepts",
                        address.traffic)


class ClosestForwarder(BalancedForwarder):
    """Local consumers if there are any; otherwise the nearest routers with consumers."""

    cheapest_only = True


class MulticastForwarder(Forwarder):
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any,
                routing: Routing, expires_at: float | None, source: "Neighbour | None") -> None:
        dests = multicast_dests(routing) if source is not None else None
        local = dests is None or core.router_id in dests
        consumers = address.consumers if local else []
        remote = core.plane.has_remote_consumers(address.name) if dests is None else len(dests) > int(local)
        if not consumers and not remote:
            core.release(delivery, address.traffic)
            return
        size = len(payload)
        if not core.memory.can_hold(size):
            # Copies for slow consumers could not be kept: the sender hears so before we
            # take responsibility for the message.
            core.release(delivery, address.traffic)
            return
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(ACCEPTED)
            core.counters.accepted_at_router += 1
            address.traffic.router_accepted += 1
        if remote:
            core.plane.multicast(address, payload, routing, dests, source)
        max_unsettled = core.max_link_unsettled
        for out in consumers:
            if not fits(out, size):
                core.counters.dropped += 1
                continue
            backlog = out.backlog
            if backlog is None:
                backlog = out.backlog = deque()
            link = out.link
            if (
                not backlog
                and link.credit > 0
                and len(link.unsettled) < max_unsettled
                and not out.connection.port.write_paused
                and not link.session.output_blocked
            ):
                core.send_to(out, None, payload)
            else:
                core.queue_copy(out, Pending(None, payload, expires_at))


_FORWARDERS: Final = {
    "balanced": BalancedForwarder,
    "closest": ClosestForwarder,
    "multicast": MulticastForwarder,
}


def forwarder_for(distribution: str) -> Any:
    """A forwarder for ``distribution``: one of these, or management's (which is not one)."""
    if distribution == "management":
        from .management import ManagementForwarder

        return ManagementForwarder()
    return _FORWARDERS[distribution]()
