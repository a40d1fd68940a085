"""One forwarder per distribution: which consumer (or consumers) gets a message.

``balanced`` picks, among consumers with credit, the one with the fewest deliveries it
has not yet settled, then the most credit, starting from a rotating position so equals
share the load: a consumer that settles slowly accumulates unsettled deliveries and is
passed over.  ``closest`` is ``balanced`` among the nearest consumers; on one router all
are equally near.  ``multicast`` settles on arrival and copies to every consumer.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..amqp.delivery import ACCEPTED, Delivery
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


def pick_consumer(address: "Address") -> Outbound | None:
    consumers = address.consumers
    count = len(consumers)
    if count == 1:
        only = consumers[0]
        if only.link.credit > 0 and not only.connection.protocol.write_paused:
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
        if credit <= 0 or out.connection.protocol.write_paused:
            continue
        unsettled = len(link.unsettled)
        if best is None or unsettled < best_unsettled or (unsettled == best_unsettled and credit > best_credit):
            best = out
            best_unsettled = unsettled
            best_credit = credit
    return best


class BalancedForwarder(Forwarder):
    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any, expires_at: float | None) -> None:
        consumer = pick_consumer(address)
        if consumer is not None:
            core.send_to(consumer, delivery, payload)
        elif address.consumers:
            core.hold(address, delivery, payload, expires_at)
        else:
            core._release(delivery)


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
        for out in consumers:
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
