"""Inter-router connections: who the neighbour is, and the links between two routers.

A connector opens an AMQP connection to a neighbour's inter-router listener.  Both opens
carry the router's identity as connection properties: ``switchboard:inter-router`` (true),
``switchboard:router-id``, ``switchboard:router-instance`` (chosen at each start, so a
restarted router is told from the old one) and, from the connector's side, the link's
``switchboard:link-cost``.  A client listener refuses an open that claims to be a router,
an inter-router listener one that does not; a router refuses a neighbour that has its
own id or the id of a neighbour already connected.

On the one session of the connection each router attaches its sending links to the
other (each router's receiving ends are the peer's):

* ``_sb/control``: presettled control messages of the routing protocol
  (``network/messages.py``), one AMQP map each;
* ``_sb/data``: messages routed by router rather than by address: replies to dynamic
  addresses (``_dynamic/ROUTER/N``), requests to a router's management
  (``$management/ROUTER``) and multicast copies; the address is in the
  ``x-opt-sb-to`` annotation, multicast copies list the routers they are for in
  ``x-opt-sb-dests``;
* one link per anycast address in use, its target the address itself: the receiving
  router treats it as a sender on that address, so the credit it grants is its own
  consumers' capacity, and capacity propagates hop by hop back to the first sender.

Every message that crosses a router carries ``x-opt-sb-ingress`` (the router it entered
the network at) and ``x-opt-sb-trace`` (the routers it has passed); a router that finds
itself in the trace, or a trace of ``MAX_HOPS``, releases the message: it never loops.
"""

from __future__ import annotations

from typing import Any, Final, TYPE_CHECKING

from ..amqp.message import Routing, message_annotations_section, with_message_annotations
from ..amqp.types import Symbol, ULong, UInt

if TYPE_CHECKING:
    from ..amqp.link import SenderLink
    from ..amqp.session import Session
    from .links import ClientConnection, Outbound

__all__ = [
    "QUEUED",
    "Neighbour", "identity", "peer_identity", "annotate", "first_hop_section",
    "INTER_ROUTER", "ROUTER_ID", "ROUTER_INSTANCE", "LINK_COST",
    "CONTROL_ADDRESS", "DATA_ADDRESS", "TO", "DESTS", "TRACE", "INGRESS", "MAX_HOPS",
    "DYNAMIC_PREFIX", "MANAGEMENT_ADDRESS", "MANAGEMENT_PREFIX", "owner_of", "has_routing_annotations", "strip_routing_annotations",
    "looped", "destination", "multicast_dests",
]

INTER_ROUTER: Final = Symbol("switchboard:inter-router")
ROUTER_ID: Final = Symbol("switchboard:router-id")
ROUTER_INSTANCE: Final = Symbol("switchboard:router-instance")
LINK_COST: Final = Symbol("switchboard:link-cost")

CONTROL_ADDRESS: Final = "_sb/control"
DATA_ADDRESS: Final = "_sb/data"

INGRESS: Final = Symbol("x-opt-sb-ingress")
TRACE: Final = Symbol("x-opt-sb-trace")
TO: Final = Symbol("x-opt-sb-to")
DESTS: Final = Symbol("x-opt-sb-dests")
QUEUED: Final = Symbol("x-opt-sb-queued")
"""Set by a router sending from a queue it hosts: the message is stored there already."""
MAX_HOPS: Final = 16

DYNAMIC_PREFIX: Final = "_dynamic/"
MANAGEMENT_ADDRESS: Final = "$management"
"""Answered by the router a client is connected to (``management.py``)."""
MANAGEMENT_PREFIX: Final = "$management/"
"""``$management/ROUTER``: answered by router ``ROUTER`` of the network."""


def owner_of(address: str) -> str | None:
    """The router an address belongs to: a dynamic address (``_dynamic/ROUTER/N``) or a
    router's management (``$management/ROUTER``); None for every other address.  A
    message for another router's address goes toward that router on the data links."""
    if address.startswith(DYNAMIC_PREFIX):
        router, sep, _ = address[len(DYNAMIC_PREFIX):].rpartition("/")
        return router if sep and router else None
    if address.startswith(MANAGEMENT_PREFIX):
        return address[len(MANAGEMENT_PREFIX):] or None
    return None


def identity(router_id: str, instance: int, cost: int | None = None) -> dict[Any, Any]:
    """The open properties that say "this is router ``router_id``"."""
    properties: dict[Any, Any] = {INTER_ROUTER: True, ROUTER_ID: router_id, ROUTER_INSTANCE: ULong(instance)}
    if cost is not None:
        properties[LINK_COST] = UInt(cost)
    return properties


def peer_identity(properties: dict[Any, Any] | None) -> tuple[str, int, int | None] | None:
    """(router id, instance, link cost) from a peer's open properties, or None when the
    peer does not claim to be a router; ``ValueError`` when it claims it badly."""
    if not properties or not properties.get(INTER_ROUTER):
        return None
    router_id = properties.get(ROUTER_ID)
    instance = properties.get(ROUTER_INSTANCE)
    cost = properties.get(LINK_COST)
    if not isinstance(router_id, str) or not router_id:
        raise ValueError("an inter-router open needs a switchboard:router-id string")
    if not isinstance(instance, int) or isinstance(instance, bool):
        raise ValueError("an inter-router open needs a switchboard:router-instance number")
    if cost is not None and (not isinstance(cost, int) or isinstance(cost, bool) or not 1 <= cost <= 1_000_000):
        raise ValueError("switchboard:link-cost must be a number from 1 to 1000000")
    return router_id, int(instance), None if cost is None else int(cost)


def first_hop_section(router_id: str) -> bytes:
    """The message-annotations section of a message that enters the network here and has
    no annotations of its own: the same bytes for every such message."""
    empty = with_message_annotations(b"", _NO_ANNOTATIONS, {INGRESS: router_id, TRACE: [router_id]})
    return empty


_SECTIONS: Final[dict[tuple[bytes, str, str | None], bytes]] = {}
"""Annotation sections made by ``annotate``, by (section before, router, destination);
bounded in count and in the size of what is kept."""
_SECTIONS_MAX: Final = 256
_SECTIONS_MAX_SIZE: Final = 256


def annotate(payload: Any, routing: Routing, router_id: str, to: str | None = None,
             dests: list[str] | None = None, first_hop: bytes | None = None, queued: bool = False) -> bytes:
    """``payload`` as it leaves this router for a neighbour: the trace extended, the
    ingress set if this is where it entered, and the destination address (``to``) and
    the routers a multicast copy is for (``dests``) where the link does not say.
    ``first_hop`` is ``first_hop_section(router_id)``: the common case, a message from a
    client with no annotations, is then one splice."""
    if first_hop is not None and routing.message_annotations is None and to is None and dests is None:
        start = routing.annotations_start
        return b"".join((payload[:start], first_hop, payload[start:]))
    if dests is None and not queued:
        # A reply or a request routed by router: each client's messages come with the same
        # annotations (often none) and the same destination, so the new section is made
        # once per distinct case and spliced in.
        start = routing.annotations_start
        end = routing.annotations_end
        if end - start <= _SECTIONS_MAX_SIZE:
            key = (bytes(payload[start:end]), router_id, to)
            section = _SECTIONS.get(key)
            if section is None:
                section = message_annotations_section(
                    _annotated(routing.message_annotations, router_id, to, dests, queued))
                if len(_SECTIONS) >= _SECTIONS_MAX:
                    _SECTIONS.clear()
                _SECTIONS[key] = section
            return b"".join((payload[:start], section, payload[end:]))
    return with_message_annotations(payload, routing, _annotated(routing.message_annotations, router_id, to, dests, queued))


def _annotated(message_annotations: dict[Any, Any] | None, router_id: str, to: str | None,
               dests: list[str] | None, queued: bool) -> dict[Any, Any]:
    annotations = dict(message_annotations or {})
    trace = annotations.get(TRACE)
    annotations[TRACE] = [*trace, router_id] if isinstance(trace, list) else [router_id]
    if INGRESS not in annotations:
        annotations[INGRESS] = router_id
    if to is not None:
        annotations[TO] = to
    if dests is not None:
        annotations[DESTS] = dests
    elif DESTS in annotations:
        del annotations[DESTS]
    if queued:
        annotations[QUEUED] = router_id
    return annotations


def looped(routing: Routing, router_id: str) -> bool:
    """Whether a message from a neighbour has passed this router already, or too many."""
    annotations = routing.message_annotations
    if not annotations:
        return False
    trace = annotations.get(TRACE)
    return isinstance(trace, list) and (router_id in trace or len(trace) >= MAX_HOPS)


def destination(routing: Routing) -> str | None:
    """The address a message from a neighbour is for: its ``x-opt-sb-to``, else its ``to``."""
    annotations = routing.message_annotations
    to = annotations.get(TO) if annotations else None
    return to if isinstance(to, str) else routing.to


def multicast_dests(routing: Routing) -> list[str] | None:
    """The routers a multicast copy from a neighbour is for, if it names them."""
    annotations = routing.message_annotations
    dests = annotations.get(DESTS) if annotations else None
    return dests if isinstance(dests, list) else None


_NO_ANNOTATIONS: Final = Routing(None, None, None, None, None, None, None, 0, 0, 0, 0)

ROUTING_ANNOTATIONS: Final = (INGRESS, TRACE, TO, DESTS, QUEUED)


def has_routing_annotations(routing: Routing) -> bool:
    annotations = routing.message_annotations
    return bool(annotations) and any(key in annotations for key in ROUTING_ANNOTATIONS)  # type: ignore[operator]


def strip_routing_annotations(payload: Any, routing: Routing) -> bytes:
    """``payload`` without the annotations only routers may set."""
    annotations = {k: v for k, v in (routing.message_annotations or {}).items() if k not in ROUTING_ANNOTATIONS}
    return with_message_annotations(payload, routing, annotations)


class Neighbour:
    """A router this one has an inter-router connection to."""

    __slots__ = (
        "router_id", "instance", "cost", "connection", "session", "control", "data",
        "address_links", "control_attached", "peer_control_attached", "up", "control_queue",
        "sent_on_ended_links", "received_on_ended_links",
    )

    def __init__(self, router_id: str, instance: int, cost: int, connection: "ClientConnection") -> None:
        self.router_id = router_id
        self.instance = instance
        self.cost = cost
        self.connection = connection
        self.session: "Session | None" = None
        self.control: "SenderLink | None" = None
        self.data: "Outbound | None" = None
        """Our link for messages routed by router (dynamic replies, multicast copies)."""
        self.address_links: dict[str, "Outbound"] = {}
        """Our link per anycast address we send to it."""
        self.control_attached = False
        self.peer_control_attached = False
        self.up = False
        """Both control links are attached: the routing protocol runs over it."""
        self.control_queue: list[bytes] = []
        """Control messages waiting for the control link's credit (bounded by the caller)."""
        self.sent_on_ended_links = 0
        self.received_on_ended_links = 0
        """Messages carried by links to and from it that have ended: with the open links'
        counts, what went each way since the connection opened (the network view)."""

    def __repr__(self) -> str:
        return f"Neighbour({self.router_id!r}, instance={self.instance}, cost={self.cost}, up={self.up})"
