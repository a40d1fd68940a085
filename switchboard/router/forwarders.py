"""One forwarder per distribution: which consumer (or consumers) gets a message.

``balanced`` picks, among consumers with credit, the one with the fewest deliveries it
has not yet settled, then the most credit, starting from a rotating position so equals
share the load: a consumer that settles slowly accumulates unsettled deliveries and is
passed over.  A consumer whose link announced a max-message-size smaller than the message
is never chosen (spec 2.7.3: it would have to detach with message-size-exceeded); if no
consumer at all could take it, the sender's delivery is rejected with that condition.  ``closest`` is ``balanced`` among the nearest consumers; on one router all
are equally near.  ``multicast`` settles on arrival and copies to every consumer.
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
"""Copies held per multicast consumer without credit; beyond it the oldest is dropped."""


class Forwarder:
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any, expires_at: float | None) -> None:
        raise NotImplementedError


def fits(out: Outbound, size: int) -> bool:
    """May a message of ``size`` bytes go to this consumer (its max-message-size)?"""
    limit = out.link.remote_max_message_size
    return limit is None or size <= limit


def pick_consumer(address: "Address", size: int) -> Outbound | None:
    consumers = address.consumers
    count = len(consumers)
    if count == 1:
        only = consumers[0]
        if only.link.credit > 0 and not only.connection.protocol.write_paused and fits(only, size):
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
        if credit <= 0 or out.connection.protocol.write_paused or not fits(out, size):
            continue
        unsettled = len(link.unsettled)
        if best is None or unsettled < best_unsettled or (unsettled == best_unsettled and credit > best_credit):
            best = out
            best_unsettled = unsettled
            best_credit = credit
    return best


class BalancedForwarder(Forwarder):
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any, expires_at: float | None) -> None:
        size = len(payload)
        consumer = pick_consumer(address, size)
        if consumer is not None:
            core.send_to(consumer, delivery, payload)
        elif not address.consumers:
            core._release(delivery)
        elif any(fits(out, size) for out in address.consumers):
            core.hold(address, delivery, payload, expires_at)
        else:
            core._reject(delivery, Condition.LINK_MESSAGE_SIZE_EXCEEDED,
                         f"a message of {size} bytes is larger than any consumer of {address.name!r} accepts")


class ClosestForwarder(BalancedForwarder):
    pass


class MulticastForwarder(Forwarder):
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any, expires_at: float | None) -> None:
        consumers = address.consumers
        if not consumers:
            core._release(delivery)
            return
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(ACCEPTED)
            core.counters.accepted_at_router += 1
        size = len(payload)
        for out in consumers:
            if not fits(out, size):
                core.counters.dropped += 1
                continue
            backlog = out.backlog
            if backlog is None:
                backlog = out.backlog = deque()
            if out.link.credit > 0 and not backlog and not out.connection.protocol.write_paused:
                core.send_to(out, None, payload)
            else:
                if len(backlog) >= MULTICAST_BACKLOG:
                    backlog.popleft()
                    core.counters.dropped += 1
                backlog.append(Pending(None, payload, expires_at))


_FORWARDERS = {
    "balanced": BalancedForwarder,
    "closest": ClosestForwarder,
    "multicast": MulticastForwarder,
}


def forwarder_for(distribution: str) -> Forwarder:
    return _FORWARDERS[distribution]()
