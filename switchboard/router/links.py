"""The router's records of connections, links and waiting messages.

The engine's ``Link`` and ``Delivery`` objects carry a free ``context`` slot; the router
keeps these records there, so the hot path goes from an engine event to the router's
state in one attribute read.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from ..amqp.delivery import Delivery
from ..amqp.link import ReceiverLink, SenderLink

if TYPE_CHECKING:
    from ..io.protocol import AmqpProtocol
    from .addresses import Address
    from .policy import Grant

__all__ = ["ClientConnection", "Inbound", "Outbound", "Pending"]


class ClientConnection:
    """A connection to the router (a client, for now; peer routers later)."""

    __slots__ = ("protocol", "host", "inbound", "outbound", "refused", "role", "container_id", "link_count", "grant")

    def __init__(self, protocol: "AmqpProtocol", host: str, role: str) -> None:
        self.protocol = protocol
        self.host = host
        self.role = role
        self.inbound: set["Inbound"] = set()
        self.outbound: set["Outbound"] = set()
        self.refused: Any = None
        """The error to close with once the peer's open arrives (a limit was hit)."""
        self.container_id: str | None = None
        self.link_count = 0
        """Links attached now (refused ones are not counted), for max_links_per_connection."""
        self.grant: "Grant | None" = None
        """What the policy allows this connection (``policy.Grant``); None without a policy."""


class Inbound:
    """A link on which a client sends to us (our receiving end).

    ``address`` is None for the anonymous relay: each message names its own ``to``.
    """

    __slots__ = ("link", "connection", "address", "blocked", "held", "granted")

    def __init__(self, link: ReceiverLink, connection: ClientConnection, address: "Address | None") -> None:
        self.link = link
        self.connection = connection
        self.address = address
        self.blocked = False
        """Credit was withheld for want of consumer capacity; top up when it returns."""
        self.held = 0
        """Its deliveries waiting in addresses' pending queues (bounds the anonymous relay)."""
        self.granted = 0
        """The credit last granted: it is topped up once half of that is used."""


class Outbound:
    """A link on which a client receives from us (our sending end): a consumer."""

    __slots__ = ("link", "connection", "address", "backlog")

    def __init__(self, link: SenderLink, connection: ClientConnection, address: "Address") -> None:
        self.link = link
        self.connection = connection
        self.address = address
        self.backlog: deque["Pending"] | None = None
        """Multicast copies waiting for this consumer's credit (bounded)."""


class Pending:
    """A message held until a consumer has credit: the inbound delivery and its bytes."""

    __slots__ = ("delivery", "payload", "expires_at")

    def __init__(self, delivery: Delivery | None, payload: Any, expires_at: float | None) -> None:
        self.delivery = delivery
        self.payload = payload
        self.expires_at = expires_at
