"""How much credit the router gives a sender: the back-pressure policy and nothing else.

A sender on an anycast address may have at most as many messages in flight as the
address's consumers can take right now (their credit, less what already waits), capped
by a per-link window.  With no consumer capacity it gets nothing: the sender waits, the
router holds nothing.  The anonymous relay cannot know its addresses in advance, so it
gets the window less what of its own already waits in the router (a message to an
address with consumers but no credit waits for them; one nobody consumes is released):
what the router holds for one link never exceeds the window.  Multicast is settled on
arrival and copied, so it flows while any consumer exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .links import Inbound

__all__ = ["SenderCredit", "DEFAULT_WINDOW"]

DEFAULT_WINDOW = 250


class SenderCredit:
    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window

    def credit_for(self, inbound: "Inbound", closing: bool) -> int | None:
        """The credit ``inbound`` should have now, or None to withhold it (blocked)."""
        if closing:
            return None
        address = inbound.address
        if address is None:
            room = self.window - inbound.held
            return room if room > 0 else None
        if address.distribution == "multicast":
            return self.window if address.consumers else None
        capacity = address.capacity()
        if capacity <= 0:
            return None
        return min(self.window, capacity)
