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
unknown queue, 400 for an unknown request, each with ``status-description``).  Any AMQP
client can ask any router; ``switchboard stat``, ``network`` and ``queues`` do.

**Any router of the network.**  ``$management`` is answered by the router the client is
connected to; ``$management/ROUTER`` by router ``ROUTER`` of its network, wherever it
is.  A router answers its own id as ``$management``, and sends a request for another id
toward that router on the data links between routers (hop by hop, as replies to dynamic
addresses go: ``interrouter.owner_of``); the reply comes back to the requester's
``reply-to`` the same way.  A request for a router with no route from the router it
reaches (an unknown id, or a router not connected) is *rejected* at once with
``amqp:not-found`` and a description naming the router, so the requester need not wait
for a timeout.  Its acceptance says that the router named took the request.

``RouterRequests`` sends such requests from inside a router (the admin listener's
``/api/VIEW?router=ID``): its reply addresses are answered by the router itself
(``RouterCore.reply_handlers``) rather than by a client's link.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Callable

from ..amqp.delivery import ACCEPTED, Delivery
from ..amqp.errors import Condition, DecodeError
from ..amqp.message import Message, Routing
from ..amqp.spec import Properties
from .config import ConfigError
from .interrouter import DYNAMIC_PREFIX, MANAGEMENT_ADDRESS, MANAGEMENT_PREFIX
from .views import addresses_view, connections_view, links_view, network_view, queues_view

if TYPE_CHECKING:
    from .addresses import Address
    from .core import RouterCore
    from .interrouter import Neighbour

__all__ = ["MANAGEMENT_ADDRESS", "ManagementForwarder", "RouterRequests", "management_address", "query"]

REQUESTS = (
    "QUERY network", "QUERY queues", "QUERY connections", "QUERY links", "QUERY addresses",
    "PURGE queue", "DELETE queue", "RELOAD config", "QUERY reload",
)
_LISTS = {"QUERY connections": connections_view, "QUERY links": links_view, "QUERY addresses": addresses_view}


def management_address(router: str | None = None) -> str:
    """``$management`` (the router connected to), or ``$management/ROUTER``."""
    return MANAGEMENT_ADDRESS if router is None else MANAGEMENT_PREFIX + router


def query(operation: str = "QUERY", what: str = "network", reply_to: str | None = None,
          message_id: Any = None, name: str | None = None, router: str | None = None) -> Message:
    """A request for ``$management``, or for router ``router``'s (what ``switchboard
    stat``, ``network`` and ``queues`` send)."""
    properties: dict[str, Any] = {"operation": operation, "type": what}
    if name is not None:
        properties["name"] = name
    return Message(
        None,
        properties=Properties(message_id=message_id, reply_to=reply_to, to=management_address(router)),
        application_properties=properties,
    )


class RouterRequests:
    """``QUERY`` requests from inside this router to another router's management.

    ``send`` hands the request to the core, which sends it toward the router on the
    data links; the reply, addressed to a reply address of this router that only it
    knows (so no client can answer in the router's place), is given to ``done``.  The
    caller bounds the wait and calls ``cancel`` when it gives up."""

    def __init__(self, core: "RouterCore") -> None:
        self.core = core
        self._serial = 0

    def knows(self, router_id: str) -> bool:
        """``router_id`` is this router or one it has a route to."""
        return router_id == self.core.router_id or router_id in self.core.plane.next_hops

    def send(self, router_id: str, what: str, done: Callable[[Message], None]) -> str | None:
        """Send ``QUERY what`` to router ``router_id``; the reply address (for ``cancel``),
        or None if there is no route to it now."""
        core = self.core
        self._serial += 1
        reply_to = f"{DYNAMIC_PREFIX}{core.router_id}/management-{self._serial}-{secrets.token_hex(8)}"
        request = query("QUERY", what, reply_to=reply_to, message_id=f"{what}-{self._serial}", router=router_id)

        def answered(payload: bytes) -> None:
            try:
                reply = Message.decode(payload)
            except DecodeError as exc:
                reply = Message(None, application_properties={
                    "status-code": 502, "status-description": f"malformed reply from router {router_id!r}: {exc.description}"})
            done(reply)

        core.reply_handlers[reply_to] = answered
        if not core.send_generated(management_address(router_id), request.encode()):
            del core.reply_handlers[reply_to]
            return None
        return reply_to

    def cancel(self, reply_to: str) -> None:
        """No answer is awaited any more: one that comes later is dropped."""
        self.core.reply_handlers.pop(reply_to, None)


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
