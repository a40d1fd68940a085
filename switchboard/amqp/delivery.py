"""Deliveries: one message's transfer on a link, its state on each side, its settlement.

Settlement follows spec part 2.6.12: a delivery is forgotten by an endpoint once it has
settled it.  ``settle()`` settles locally (telling the peer, unless the peer settled
first); ``update()`` reports a state without settling (receiver-settle-mode ``second``).
"""

from __future__ import annotations

from typing import Any, Final, TYPE_CHECKING

from .errors import LocalProtocolError
from .spec import Accepted, Modified, Rejected, Released

if TYPE_CHECKING:
    from .link import Link

__all__ = ["Delivery", "ACCEPTED", "RELEASED", "OUTCOME_TYPES"]

ACCEPTED: Final = Accepted()
RELEASED: Final = Released()
OUTCOME_TYPES: Final = (Accepted, Rejected, Released, Modified)


class Delivery:
    """A delivery on a link, outgoing (we are the sender) or incoming."""

    __slots__ = (
        "link",
        "delivery_id",
        "tag",
        "payload",
        "message_format",
        "settled",
        "remote_settled",
        "state",
        "remote_state",
        "aborted",
        "context",
        "_chunks",
        "_size",
    )

    def __init__(
        self,
        link: "Link",
        delivery_id: Any,
        tag: bytes | bytearray,
        payload: bytes | bytearray | memoryview | None = None,
        message_format: Any = 0,
        settled: bool = False,
        remote_settled: bool = False,
    ) -> None:
        self.link = link
        # ``Any``, not ``int``: the numbers keep the type they were decoded as (``UInt``),
        # which a compiled ``int`` attribute would turn into a plain ``int``.
        self.delivery_id = delivery_id
        self.tag = tag
        self.payload = payload
        self.message_format = message_format
        self.settled = settled
        self.remote_settled = remote_settled
        self.state: Any = None
        self.remote_state: Any = None
        self.aborted = False
        self.context: Any = None
        """Free for the owner: the router keeps the matching delivery on the other side here."""
        self._chunks: list[bytes] | None = None
        self._size = 0

    def settle(self, state: Any = None) -> None:
        """Settle with an optional outcome; the peer hears of it unless it settled first."""
        if self.settled:
            return
        self.settled = True
        if state is not None:
            self.state = state
        self.link._delivery_settled(self)

    def update(self, state: Any) -> None:
        """Tell the peer this delivery's state without settling it."""
        if self.settled:
            raise LocalProtocolError("cannot update a settled delivery")
        self.state = state
        self.link._delivery_updated(self)

    def __repr__(self) -> str:
        return (
            f"Delivery(id={self.delivery_id}, tag={self.tag!r}, settled={self.settled},"
            f" remote_settled={self.remote_settled}, state={self.state!r},"
            f" remote_state={self.remote_state!r})"
        )
