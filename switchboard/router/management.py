"""``$management``: ask a router about itself and its network, over AMQP.

A request is a message sent to ``$management`` with a ``reply-to`` address (a dynamic
one, usually) and the application properties ``operation`` and ``type``:

* ``QUERY network``: the routers, links, costs and next hops this router sees;
* ``QUERY queues``: the queues this router hosts (depth, bytes, consumers, age of the
  oldest message, ...);
* ``QUERY connections``, ``QUERY links``, ``QUERY addresses``: this router's
  connections, links and addresses (``views.py``; the admin listener answers the same);
* ``PURGE queue`` / ``DELETE queue`` with the application property ``name``: remove a
  queue's messages, or the queue and its messages;
* ``RELOAD config``: read the router's configuration file again and apply it (the
  answer's body says what changed; 400 names the key of a file that cannot be applied,
  and then nothing changed); ``QUERY reload``: how many reloads there were and the
  outcome of the last (also after a SIGHUP).

The router answers with a message to ``reply-to`` whose body is a map for ``QUERY
network`` and a list for the other views, whose ``correlation-id`` is the request's
``message-id``, and whose application property ``status-code`` is 200 (404 for an
unknown queue, 400 for an unknown request, each with ``status-description``).  Any AMQP client can ask any router;
``switchboard network`` and ``switchboard queues`` do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..amqp.delivery import ACCEPTED, Delivery
from ..amqp.errors import Condition, DecodeError
from ..amqp.message import Message, Routing
from ..amqp.spec import Properties
from .config import ConfigError
from .views import addresses_view, connections_view, links_view, network_view, queues_view

if TYPE_CHECKING:
    from .addresses import Address
    from .core import RouterCore
    from .interrouter import Neighbour

__all__ = ["MANAGEMENT_ADDRESS", "ManagementForwarder", "query"]

MANAGEMENT_ADDRESS = "$management"
REQUESTS = (
    "QUERY network", "QUERY queues", "QUERY connections", "QUERY links", "QUERY addresses",
    "PURGE queue", "DELETE queue", "RELOAD config", "QUERY reload",
)
_LISTS = {"QUERY connections": connections_view, "QUERY links": links_view, "QUERY addresses": addresses_view}


def query(operation: str = "QUERY", what: str = "network", reply_to: str | None = None,
          message_id: Any = None, name: str | None = None) -> Message:
    """A request for ``$management`` (what ``switchboard network`` and ``queues`` send)."""
    properties: dict[str, Any] = {"operation": operation, "type": what}
    if name is not None:
        properties["name"] = name
    return Message(
        None,
        properties=Properties(message_id=message_id, reply_to=reply_to, to=MANAGEMENT_ADDRESS),
        application_properties=properties,
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
        correlation_id = request.properties.message_id if request.properties else None
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(ACCEPTED)

        def answer(status: int, body: Any, description: str) -> None:
            reply = Message(
                body,
                properties=Properties(to=reply_to, correlation_id=correlation_id),
                application_properties={"status-code": status, "status-description": description},
            ).encode()
            core.send_generated(reply_to, reply)

        request_name = f"{operation} {what}"
        if request_name == "QUERY network":
            answer(200, network_view(core), "OK")
        elif request_name == "QUERY queues":
            queues_view(core, lambda rows: answer(200, rows, "OK"))
        elif request_name in _LISTS:
            answer(200, _LISTS[request_name](core), "OK")
        elif request_name in ("PURGE queue", "DELETE queue"):
            name = properties.get("name")
            if not isinstance(name, str) or not name:
                answer(400, None, f"{request_name} needs the application property 'name'")
                return
            removed = core.queues.purge(name) if operation == "PURGE" else core.queues.delete(name)
            if removed is None:
                answer(404, None, f"no queue {name!r} on router {core.router_id!r}")
            else:
                answer(200, {"name": name, "removed": removed}, "OK")
        elif request_name == "QUERY reload":
            answer(200, core.last_reload, "OK")
        elif request_name == "RELOAD config":
            if core.reload_config is None:
                answer(501, None, "this router cannot reload its configuration")
                return
            try:
                changed = core.reload_config()
            except ConfigError as exc:
                answer(400, None, f"configuration refused, the running one kept: {exc}")
            else:
                answer(200, changed, "OK")
        else:
            answer(400, None, f"unknown request: operation {operation!r}, type {what!r} (one of: {', '.join(REQUESTS)})")
