"""The router's records of connections, links and waiting messages.

The engine's ``Link`` and ``Delivery`` objects carry a free ``context`` slot; the router
keeps these records there, so the hot path goes from an engine event to the router's
state in one attribute read.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Final, TYPE_CHECKING

from ..amqp.delivery import Delivery
from ..amqp.link import ReceiverLink, SenderLink

if TYPE_CHECKING:
    from .addresses import Address
    from .interrouter import Neighbour
    from .port import ConnectionPort
    from .policy import Grant

__all__ = ["ClientConnection", "Inbound", "Outbound", "Pending", "INITIAL_SIZE_ESTIMATE", "peer_name", "tls_version", "connection_log", "link_log"]

connection_log = logging.getLogger("switchboard.router.connections")
link_log = logging.getLogger("switchboard.router.links")

INITIAL_SIZE_ESTIMATE: Final = 16 * 1024
"""Bytes assumed per message on a link that has sent none yet (sizes its first credit)."""
SEQUENCE_MASK: Final = 0xFFFFFFFF
"""Delivery-counts are sequence numbers: they wrap at 2**32."""


class ClientConnection:
    """A connection to the router (a client, for now; peer routers later)."""

    __slots__ = (
        "port", "host", "inbound", "outbound", "refused", "role", "container_id", "link_count", "counted", "grant",
        "neighbour", "opened_at", "id", "peer", "state", "close_error", "closed_by_peer", "deliveries_in",
        "deliveries_out",
    )

    def __init__(self, port: "ConnectionPort", host: str, role: str, connection_id: str = "") -> None:
        self.port = port
        self.host = host
        self.role = role
        self.id = connection_id
        """Short, unique within the process (``c17``): on every log line about it, and in the views."""
        self.peer = peer_name(port.peer)
        self.state = "new"
        """For the log: "new", "open" (its open was logged), "refused", "login failed"."""
        self.close_error: Any = None
        """Why it ended: the first close error seen, ours or the peer's."""
        self.closed_by_peer = False
        self.deliveries_in = 0
        self.deliveries_out = 0
        """Deliveries on its links already detached (the log's close line adds the others)."""
        self.inbound: set["Inbound"] = set()
        self.outbound: set["Outbound"] = set()
        self.refused: Any = None
        """The error to close with once the peer's open arrives (a limit was hit)."""
        self.container_id: str | None = None
        self.link_count = 0
        """Links attached now (refused ones are not counted), for max_links_per_connection."""
        self.counted = False
        """It holds a slot under max_connections and max_connections_per_host."""
        self.neighbour: "Neighbour | None" = None
        """The router at the other end, for an inter-router connection."""
        self.grant: "Grant | None" = None
        """What the policy allows this connection (``policy.Grant``); None without a policy."""
        self.opened_at = 0.0
        """When the transport came up (the core's clock), for the connections view."""


def peer_name(peer: Any) -> str:
    """``HOST:PORT`` of a transport's peer address (``[HOST]:PORT`` for IPv6)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return str(peer)


def tls_version(port: Any) -> str | None:
    """The TLS version of a connection's transport ("TLSv1.3"), or None without TLS."""
    transport = getattr(port, "transport", None)
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.version() if ssl_object is not None else None


class Inbound:
    """A link on which a client sends to us (our receiving end).

    ``address`` is None for the anonymous relay: each message names its own ``to``.
    """

    __slots__ = ("link", "connection", "address", "blocked", "held", "granted", "average_size", "routed", "neighbour", "first_count")

    def __init__(self, link: ReceiverLink, connection: ClientConnection, address: "Address | None") -> None:
        self.link = link
        self.connection = connection
        self.address = address
        self.blocked = False
        """Credit was withheld for want of room; top up when room returns."""
        self.held = 0
        """Its deliveries waiting in addresses' pending queues (bounds the anonymous relay)."""
        self.granted = 0
        """The credit last granted: it is topped up once half of that is used."""
        self.average_size = INITIAL_SIZE_ESTIMATE
        """A running average of its messages' sizes, to turn byte bounds into credit."""
        self.neighbour: "Neighbour | None" = connection.neighbour
        """Set when another router sends on it."""
        self.routed = link.delivery_count
        """The link's delivery-count as of the last delivery the core handled: the engine
        may have counted more (read in the same batch, not yet handed over)."""
        self.first_count = link.delivery_count
        """The delivery-count at attach: ``routed`` less this is what the link delivered."""

    @property
    def delivered(self) -> int:
        """Messages routed from this link since it attached."""
        return (self.routed - self.first_count) & SEQUENCE_MASK


class Outbound:
    """A link on which a client receives from us (our sending end): a consumer."""

    __slots__ = ("link", "connection", "address", "backlog", "backlog_bytes", "saturated", "max_size", "neighbour", "retiring", "first_count")

    def __init__(self, link: SenderLink, connection: ClientConnection, address: "Address") -> None:
        self.link = link
        self.connection = connection
        self.address = address
        self.backlog: deque["Pending"] | None = None
        """Multicast copies waiting for this consumer's credit (bounded)."""
        self.backlog_bytes = 0
        self.saturated = False
        """It reached max_link_unsettled; its next settlement makes it ready again."""
        self.max_size: int | None = link.remote_max_message_size
        """The largest message the consumer takes (its attach's max-message-size)."""
        self.neighbour: "Neighbour | None" = None
        """Set when the consumer is another router (our link to it)."""
        self.retiring = False
        """No longer chosen; detached once nothing it carried is unsettled."""
        self.first_count = link.delivery_count
        """The delivery-count at attach, so the link's own count tells what it delivered."""

    @property
    def delivered(self) -> int:
        """Messages sent on this link since it attached (a drain that spends credit counts
        too: AMQP 2.6.7)."""
        return (self.link.delivery_count - self.first_count) & SEQUENCE_MASK

    def usable_credit(self, max_unsettled: int) -> int:
        """Messages it can be sent now: its credit, unless its peer is not taking them."""
        link = self.link
        if self.connection.port.write_paused or link.session.output_blocked:
            return 0
        room = max_unsettled - len(link.unsettled)
        return min(link.credit, room) if room > 0 else 0


class Pending:
    """A message held until a consumer has credit: the inbound delivery and its bytes."""

    __slots__ = ("delivery", "payload", "expires_at", "size")

    def __init__(self, delivery: Delivery | None, payload: Any, expires_at: float | None) -> None:
        self.delivery = delivery
        self.payload = payload
        self.expires_at = expires_at
        self.size = len(payload)
