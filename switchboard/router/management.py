"""``$management``: ask a router about itself and its network, over AMQP.

A request is a message sent to ``$management`` with a ``reply-to`` address (a dynamic
one, usually) and the application properties ``operation = "QUERY"`` and ``type`` (what
to show; ``"network"`` for now).  The router answers with a message to ``reply-to``
whose body is a map, whose ``correlation-id`` is the request's ``message-id``, and whose
application property ``status-code`` is 200 (or 400 with ``status-description``).  Any
AMQP client can ask any router; ``switchboard network`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..amqp.delivery import ACCEPTED, Delivery
from ..amqp.errors import Condition, DecodeError
from ..amqp.message import Message, Routing
from ..amqp.spec import Properties

if TYPE_CHECKING:
    from .addresses import Address
    from .core import RouterCore
    from .interrouter import Neighbour

__all__ = ["MANAGEMENT_ADDRESS", "ManagementForwarder", "query"]

MANAGEMENT_ADDRESS = "$management"
TYPES = ("network",)


def query(operation: str = "QUERY", what: str = "network", reply_to: str | None = None,
          message_id: Any = None) -> Message:
    """A request for ``$management`` (what ``switchboard network`` sends)."""
    return Message(
        None,
        properties=Properties(message_id=message_id, reply_to=reply_to, to=MANAGEMENT_ADDRESS),
        application_properties={"operation": operation, "type": what},
    )


class ManagementForwarder:
    """Answers requests instead of forwarding them."""

    def forward(self, core: "RouterCore", address: "Address", delivery: Delivery, payload: Any,
                routing: Routing, expires_at: float | None, source: "Neighbour | None") -> None:
        try:
            request = Message.decode(payload)
        except DecodeError as exc:
            core.reject(delivery, Condition.DECODE_ERROR, f"malformed request: {exc.description}")
            return
        reply_to = routing.reply_to
        if not reply_to:
            core.reject(delivery, Condition.INVALID_FIELD, "a $management request needs a reply-to address")
            return
        properties = request.application_properties or {}
        operation, what = properties.get("operation"), properties.get("type")
        if operation != "QUERY" or what not in TYPES:
            status, body, description = 400, None, f"unknown request: operation {operation!r}, type {what!r} (QUERY network)"
        else:
            status, body, description = 200, core.plane.view(), "OK"
        reply = Message(
            body,
            properties=Properties(to=reply_to, correlation_id=request.properties.message_id if request.properties else None),
            application_properties={"status-code": status, "status-description": description},
        ).encode()
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(ACCEPTED)
        core.send_generated(reply_to, reply)
