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
from typing import TYPE_CHECKING, Any

from ..amqp.delivery import ACCEPTED, Delivery
from ..amqp.errors import Condition
from .links import Outbound, Pending

if TYPE_CHECKING:
    from .addresses import Address
    from .core import RouterCore

__all__ = ["Forwarder", "BalancedForwarder", "ClosestForwarder", "MulticastForwarder", "forwarder_for", "MULTICAST_BACKLOG"]

MULTICAST_BACKLOG = 1000
"""Copies held per multicast consumer that is not taking them; beyond it the oldest goes."""


class Forwarder:
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any, expires_at: float | None) -> None:
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
            and not link.session.output_blocked
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
            or link.session.output_blocked
            or not fits(out, size)
        ):
            continue
        if best is None or unsettled < best_unsettled or (unsettled == best_unsettled and credit > best_credit):
            best = out
            best_unsettled = unsettled
            best_credit = credit
    return best


class BalancedForwarder(Forwarder):
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any, expires_at: float | None) -> None:
        size = len(payload)
        consumer = pick_consumer(address, size, core.max_link_unsettled)
        if consumer is not None:
            core.send_to(consumer, delivery, payload)
        elif not address.consumers:
            core.release(delivery)
        elif any(fits(out, size) for out in address.consumers):
            core.hold(address, delivery, payload, expires_at)
        else:
            core.reject(delivery, Condition.LINK_MESSAGE_SIZE_EXCEEDED,
                        f"a message of {size} bytes is larger than any consumer of {address.name!r} accepts")


class ClosestForwarder(BalancedForwarder):
    pass


class MulticastForwarder(Forwarder):
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any, expires_at: float | None) -> None:
        consumers = address.consumers
        if not consumers:
            core.release(delivery)
            return
        size = len(payload)
        if not core.memory.can_hold(size):
            # Copies for slow consumers could not be kept: the sender hears so before we
            # take responsibility for the message.
            core.release(delivery)
            return
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(ACCEPTED)
            core.counters.accepted_at_router += 1
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


_FORWARDERS = {
    "balanced": BalancedForwarder,
    "closest": ClosestForwarder,
    "multicast": MulticastForwarder,
}


def forwarder_for(distribution: str) -> Forwarder:
    return _FORWARDERS[distribution]()
