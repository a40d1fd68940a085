"""How much credit the router gives a sender: the back-pressure policy and nothing else.

A sender on an anycast address may have at most as many messages in flight as the
address's consumers can take right now (their usable credit, less what already waits),
capped by a per-link window, by the room left under the address's bounds (messages and
bytes) and by the router's memory budget.  Byte bounds turn into messages with the size
the link's messages have had so far, so a link of large messages gets less credit.  With
no room it gets nothing: the sender waits, the router holds nothing more.  The anonymous
relay cannot know its addresses in advance, so it gets the window less what of its own
already waits in the router.  Multicast is settled on arrival and copied, so it flows
while any consumer exists and memory allows; slow consumers' copies are bounded apart.
"""

from __future__ import annotations

from typing import Final, TYPE_CHECKING

from .config import Limits
from .memory import MESSAGE_COST, MemoryBudget
from .queues import FULL_QUEUE_CREDIT

if TYPE_CHECKING:
    from .links import Inbound

__all__ = ["SenderCredit", "DEFAULT_WINDOW"]

DEFAULT_WINDOW: Final = 1000
NEIGHBOUR_WINDOW_FACTOR: Final = 4


class SenderCredit:
    def __init__(self, limits: Limits, memory: MemoryBudget, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self.limits = limits
        self.memory = memory

    def credit_for(self, inbound: "Inbound", closing: bool) -> int | None:
        """The credit ``inbound`` should have now, or None to withhold it (blocked)."""
        if closing:
            return None
        size = inbound.average_size + MESSAGE_COST
        # A link from another router carries many senders' messages: a wider window, so
        # a path of several routers still keeps enough in flight (the byte bounds hold).
        # A client's window never exceeds what one address may hold: a sender on the
        # anonymous relay cannot be sized by its address, only by this.
        window = (
            self.window * NEIGHBOUR_WINDOW_FACTOR if inbound.neighbour is not None
            else min(self.window, self.limits.max_address_messages)
        )
        credit = min(window, self.memory.credit_room() // size)
        address = inbound.address
        if (
            address is None
            or (address.owner is not None and not (address.queue_proxy and inbound.neighbour is not None))
            or address.distribution == "management"
        ):
            # The anonymous relay, an address of another router, or the router's own
            # $management: nothing to size by but what of this link's already waits here.
            # (A queue's host sending to our consumers is sized by them, below.)
            credit = min(credit, window - inbound.held)
        elif address.hosted is not None and inbound.neighbour is not None:
            # Another router's queue of the same name sending to our consumers: only they
            # count (what they cannot take goes back to that queue).
            max_unsettled = self.limits.max_link_unsettled
            credit = min(credit, sum(out.usable_credit(max_unsettled) for out in address.consumers))
        elif address.hosted is not None:
            # A queue: credit from its room, not from its consumers.
            queue = address.hosted
            if queue.loading:
                return None
            if queue.settings.overflow == "reject-publish":
                room = queue.room(size)
                credit = min(credit, room if room > 0 else FULL_QUEUE_CREDIT)
            # Messages not yet stored count against the window: a sender runs at the
            # store's pace, not ahead of it.
            credit = min(credit, window - len(inbound.link.unsettled))
        elif address.distribution == "multicast":
            if not address.consumers:
                return None
        else:
            limits = self.limits
            credit = min(
                credit,
                address.capacity(limits.max_link_unsettled),
                limits.max_address_messages - address.held_messages,
                (limits.max_address_bytes - address.held_bytes) // size,
            )
        return credit if credit > 0 else None
