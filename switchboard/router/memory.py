"""The router-wide memory budget: what the router holds for messages, against ``max_memory``.

Held bytes are the messages waiting in addresses for a consumer and the multicast copies
waiting for slow consumers (payload plus a fixed cost per message); each forwarded
delivery still waiting for its consumer's outcome costs a fixed amount too (its payload
is not kept once written).  Above the high-water mark senders get no new credit; at the
limit a message that would have to be held is released to its sender instead.  Below the
low-water mark credit flows again.  The router never needs more than the limit plus one
turn's input, and is never killed for memory.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MemoryBudget", "MESSAGE_COST", "IN_FLIGHT_COST"]

MESSAGE_COST: Final = 200
"""Bytes a held message costs beyond its payload (its record and queue entry)."""
IN_FLIGHT_COST: Final = 600
"""Bytes a forwarded delivery awaiting its outcome costs (two deliveries, their entries)."""


class MemoryBudget:
    __slots__ = ("limit", "high_water", "low_water", "held", "in_flight")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.high_water = limit * 9 // 10
        self.low_water = limit * 3 // 4
        self.held = 0
        """Bytes of messages waiting in addresses and multicast backlogs."""
        self.in_flight = 0
        """Forwarded deliveries whose consumer has not settled them yet."""

    @property
    def used(self) -> int:
        return self.held + self.in_flight * IN_FLIGHT_COST

    def credit_room(self) -> int:
        """Bytes more that senders may be given credit for (negative: none)."""
        return self.high_water - self.used

    def can_hold(self, size: int) -> bool:
        return self.used + size + MESSAGE_COST <= self.limit

    @property
    def relieved(self) -> bool:
        """Below the low-water mark: credit withheld for memory may flow again."""
        return self.used <= self.low_water

    def resize(self, limit: int) -> None:
        """A reload changed ``max_memory``: what is held stays held; the marks move."""
        self.limit = limit
        self.high_water = limit * 9 // 10
        self.low_water = limit * 3 // 4
