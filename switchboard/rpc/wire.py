"""The RPC and notification wire format: addresses and message envelopes.

Everything another implementation needs to interoperate with ``switchboard.rpc`` (the
oslo.messaging driver, a client in another language) is here and in ``docs/rpc.md``;
nothing in this module does I/O.

Addresses (``docs/rpc.md`` has the table and the reasoning)::

    rpc/<exchange>/<topic>                       balanced: call and cast to a topic
    rpc/<exchange>/<topic>/<server>              balanced: call and cast to one server
    rpc-fanout/<exchange>/<topic>                multicast: fanout cast
    notify/<exchange>/<topic>.<priority>         queue: notifications, the default pool
    notify/<exchange>/<topic>.<priority>/<pool>  queue: notifications, a named pool
    notify-pools/<exchange>                      multicast: listeners announce their pools

Each name part is percent-encoded (``/`` and ``%``), so a topic holding a ``/`` cannot
be mistaken for a topic and a server.

Bodies are JSON (UTF-8) in one ``data`` section with ``content-type`` ``application/json``:
the values RPC carries are the JSON-shaped primitives oslo.messaging's serializers
produce, Python's C JSON codec is faster than a pure-Python AMQP map codec, and every
AMQP 1.0 client can still read the message.  What routing and correlation need lives in
the AMQP properties, where routers and other clients expect it: ``message-id``,
``correlation-id``, ``reply-to``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..amqp.message import Message
from ..amqp.spec import Properties, Symbol

__all__ = [
    "RPC_PREFIX",
    "FANOUT_PREFIX",
    "NOTIFY_PREFIX",
    "POOLS_PREFIX",
    "DEFAULT_EXCHANGE",
    "PRIORITIES",
    "CONTENT_TYPE",
    "WIRE_VERSION",
    "WireError",
    "rpc_address",
    "fanout_address",
    "notification_address",
    "pools_address",
    "Request",
    "Reply",
    "Failure",
    "Notification",
    "PoolAnnouncement",
    "encode_request",
    "decode_request",
    "encode_reply",
    "decode_reply",
    "encode_notification",
    "decode_notification",
    "encode_announcement",
    "decode_announcement",
]

RPC_PREFIX = "rpc/"
FANOUT_PREFIX = "rpc-fanout/"
NOTIFY_PREFIX = "notify/"
POOLS_PREFIX = "notify-pools/"

DEFAULT_EXCHANGE = "default"
"""The exchange of a Target that names none."""

PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")
"""Notification priorities, lowest to highest (``sample`` is for metering samples)."""

CONTENT_TYPE = Symbol("application/json")
WIRE_VERSION = 1
"""``"v"`` in every body; a receiver refuses a body with a version it does not know."""


class WireError(ValueError):
    """A message that is not a valid request, reply, notification or announcement."""


# -- addresses -------------------------------------------------------------------------
def _part(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    return quote(value, safe="")


def rpc_address(exchange: str, topic: str, server: str | None = None) -> str:
    """The balanced address of a topic's servers, or of one server of the topic."""
    address = f"{RPC_PREFIX}{_part(exchange, 'exchange')}/{_part(topic, 'topic')}"
    return address if server is None else f"{address}/{_part(server, 'server')}"


def fanout_address(exchange: str, topic: str) -> str:
    """The multicast address every server of a topic listens on."""
    return f"{FANOUT_PREFIX}{_part(exchange, 'exchange')}/{_part(topic, 'topic')}"


def notification_address(exchange: str, topic: str, priority: str, pool: str | None = None) -> str:
    """The queue a pool's listeners take ``topic.priority`` notifications from
    (``pool`` None: the default pool)."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    address = f"{NOTIFY_PREFIX}{_part(exchange, 'exchange')}/{_part(topic + '.' + priority, 'topic')}"
    return address if pool is None else f"{address}/{_part(pool, 'pool')}"


def pools_address(exchange: str) -> str:
    """The multicast address on which listeners announce their pools to notifiers."""
    return f"{POOLS_PREFIX}{_part(exchange, 'exchange')}"


# -- bodies ----------------------------------------------------------------------------
def _encode_body(body: dict[str, Any], what: str) -> bytes:
    body["v"] = WIRE_VERSION
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot send this {what}: {exc} (send JSON types: dict with str keys, list, str, "
                        "int, float, bool, None)") from None


def _decode_body(message: Message, what: str) -> dict[str, Any]:
    payload = message.body
    if isinstance(payload, list):  # several data sections
        payload = b"".join(payload)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise WireError(f"a {what} has a JSON data section, not a {message.body_type} body")
    try:
        body = json.loads(bytes(payload))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"a {what} body must be JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError(f"a {what} body must be a JSON object, not {type(body).__name__}")
    if body.get("v") != WIRE_VERSION:
        raise WireError(f"{what} wire version {body.get('v')!r} is not supported (this end speaks {WIRE_VERSION})")
    return body


def _string_or_none(body: dict[str, Any], key: str, what: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise WireError(f"a {what}'s {key!r} must be a string or null, not {type(value).__name__}")
    return value


def _dict(body: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireError(f"a {what}'s {key!r} must be an object, not {type(value).__name__}")
    return value


@dataclass
class Request:
    """A call (``reply_to`` set: the caller waits for a ``Reply``) or a cast (no reply)."""

    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    version: str | None = None
    msg_id: str | None = None
    """The message-id; a reply's correlation-id is this."""
    reply_to: str | None = None

    @property
    def is_call(self) -> bool:
        return self.reply_to is not None


def encode_request(request: Request) -> Message:
    body = _encode_body({
        "method": request.method,
        "args": request.kwargs,
        "context": request.context,
        "namespace": request.namespace,
        "version": request.version,
    }, "request")
    # The subject repeats the method where a router reads it without the body (to label
    # its RPC latency metrics); receivers take the body's.
    properties = Properties(message_id=request.msg_id, subject=request.method, reply_to=request.reply_to,
                            content_type=CONTENT_TYPE)
    return Message(body, properties=properties)


def decode_request(message: Message) -> Request:
    body = _decode_body(message, "request")
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise WireError("a request needs a 'method' string")
    properties = message.properties
    msg_id = properties.message_id if properties is not None else None
    reply_to = properties.reply_to if properties is not None else None
    return Request(
        method=method,
        kwargs=_dict(body, "args", "request"),
        context=_dict(body, "context", "request"),
        namespace=_string_or_none(body, "namespace", "request"),
        version=_string_or_none(body, "version", "request"),
        msg_id=str(msg_id) if msg_id is not None else None,
        reply_to=str(reply_to) if reply_to is not None else None,
    )


@dataclass
class Failure:
    """An exception raised by the remote method, as the caller is told of it."""

    exc_type: str
    """The exception's class name (``ValueError``)."""
    module: str
    """The module that defines the class (``builtins``)."""
    message: str
    args: list[Any] = field(default_factory=list)
    """The exception's JSON-encodable arguments (others are given as their ``str``)."""
    traceback: list[str] = field(default_factory=list)
    """The remote traceback's lines."""

    def to_json(self) -> dict[str, Any]:
        return {"class": self.exc_type, "module": self.module, "message": self.message,
                "args": self.args, "traceback": self.traceback}

    @classmethod
    def from_json(cls, value: Any) -> "Failure":
        if not isinstance(value, dict) or not isinstance(value.get("class"), str):
            raise WireError("a reply's 'failure' must be an object with a 'class' string")
        args = value.get("args")
        traceback = value.get("traceback")
        return cls(
            exc_type=value["class"],
            module=str(value.get("module") or ""),
            message=str(value.get("message") or ""),
            args=args if isinstance(args, list) else [],
            traceback=[str(line) for line in traceback] if isinstance(traceback, list) else [],
        )


@dataclass
class Reply:
    """The answer to a call: its result, or the remote method's failure."""

    correlation_id: str | None
    result: Any = None
    failure: Failure | None = None


def encode_reply(reply: Reply, to: str) -> Message:
    body: dict[str, Any] = {"result": reply.result} if reply.failure is None else {"failure": reply.failure.to_json()}
    properties = Properties(to=to, correlation_id=reply.correlation_id, content_type=CONTENT_TYPE)
    return Message(_encode_body(body, "reply"), properties=properties)


def decode_reply(message: Message) -> Reply:
    body = _decode_body(message, "reply")
    properties = message.properties
    correlation_id = properties.correlation_id if properties is not None else None
    failure = Failure.from_json(body["failure"]) if body.get("failure") is not None else None
    return Reply(str(correlation_id) if correlation_id is not None else None, body.get("result"), failure)


@dataclass
class Notification:
    """One notification, with oslo.messaging's fields."""

    publisher_id: str
    event_type: str
    priority: str
    payload: Any
    context: dict[str, Any] = field(default_factory=dict)
    message_id: str = ""
    timestamp: str = ""
    """When it was sent: ISO 8601, UTC (``2026-12-03 13:30:24.123456``, oslo's format)."""


def encode_notification(notification: Notification) -> Message:
    body = _encode_body({
        "publisher_id": notification.publisher_id,
        "event_type": notification.event_type,
        "priority": notification.priority,
        "payload": notification.payload,
        "context": notification.context,
        "message_id": notification.message_id,
        "timestamp": notification.timestamp,
    }, "notification")
    return Message(body, properties=Properties(message_id=notification.message_id or None, content_type=CONTENT_TYPE))


def decode_notification(message: Message) -> Notification:
    body = _decode_body(message, "notification")
    priority = body.get("priority")
    if priority not in PRIORITIES:
        raise WireError(f"a notification's priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    return Notification(
        publisher_id=str(body.get("publisher_id") or ""),
        event_type=str(body.get("event_type") or ""),
        priority=priority,
        payload=body.get("payload"),
        context=_dict(body, "context", "notification"),
        message_id=str(body.get("message_id") or ""),
        timestamp=str(body.get("timestamp") or ""),
    )


@dataclass(frozen=True)
class PoolAnnouncement:
    """A listener pool, as its listeners announce it on ``pools_address(exchange)``.

    ``targets`` are the ``(topic, priority)`` pairs the pool listens to.  A message with
    ``query`` set (and no pool) is a notifier asking every listener to announce now.
    """

    exchange: str
    pool: str | None
    targets: tuple[tuple[str, str], ...] = ()
    query: bool = False


def encode_announcement(announcement: PoolAnnouncement) -> Message:
    body = _encode_body({
        "exchange": announcement.exchange,
        "pool": announcement.pool,
        "targets": [list(pair) for pair in announcement.targets],
        "query": announcement.query,
    }, "pool announcement")
    return Message(body, properties=Properties(content_type=CONTENT_TYPE))


def decode_announcement(message: Message) -> PoolAnnouncement:
    body = _decode_body(message, "pool announcement")
    exchange = body.get("exchange")
    if not isinstance(exchange, str):
        raise WireError("a pool announcement needs an 'exchange' string")
    targets = []
    for pair in body.get("targets") or []:
        if (not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str)
                or pair[1] not in PRIORITIES):
            raise WireError(f"a pool announcement's targets are [topic, priority] pairs, not {pair!r}")
        targets.append((pair[0], pair[1]))
    return PoolAnnouncement(exchange, _string_or_none(body, "pool", "pool announcement"), tuple(targets),
                            bool(body.get("query")))
