"""Errors of the AMQP engine, and the spec's error-condition symbols.

Two kinds of failure, kept apart on purpose:

* ``LocalProtocolError``: the caller used the API wrongly (sent on a detached link, encoded
  a value out of its type's range).  It raises, because the bug is in our own code.
* ``AmqpError``: the peer broke the protocol, or sent something we cannot accept.  It never
  escapes the engine's ``receive_data``: the engine turns it into close/end/detach frames
  carrying ``condition`` and reports an event.
"""

from __future__ import annotations

from typing import Any

from .types import Symbol

__all__ = [
    "AmqpError",
    "ConnectionError_",
    "DecodeError",
    "EncodeError",
    "FramingError",
    "LocalProtocolError",
    "Condition",
    "CONNECTION_ESTABLISHMENT_FAILED",
]


class Condition:
    """Error-condition symbols from the spec (amqp-error, connection-, session-, link-error)."""

    INTERNAL_ERROR = Symbol("amqp:internal-error")
    NOT_FOUND = Symbol("amqp:not-found")
    UNAUTHORIZED_ACCESS = Symbol("amqp:unauthorized-access")
    DECODE_ERROR = Symbol("amqp:decode-error")
    RESOURCE_LIMIT_EXCEEDED = Symbol("amqp:resource-limit-exceeded")
    NOT_ALLOWED = Symbol("amqp:not-allowed")
    INVALID_FIELD = Symbol("amqp:invalid-field")
    NOT_IMPLEMENTED = Symbol("amqp:not-implemented")
    RESOURCE_LOCKED = Symbol("amqp:resource-locked")
    PRECONDITION_FAILED = Symbol("amqp:precondition-failed")
    RESOURCE_DELETED = Symbol("amqp:resource-deleted")
    ILLEGAL_STATE = Symbol("amqp:illegal-state")
    FRAME_SIZE_TOO_SMALL = Symbol("amqp:frame-size-too-small")
    CONNECTION_FORCED = Symbol("amqp:connection:forced")
    CONNECTION_FRAMING_ERROR = Symbol("amqp:connection:framing-error")
    CONNECTION_REDIRECT = Symbol("amqp:connection:redirect")
    SESSION_WINDOW_VIOLATION = Symbol("amqp:session:window-violation")
    SESSION_ERRANT_LINK = Symbol("amqp:session:errant-link")
    SESSION_HANDLE_IN_USE = Symbol("amqp:session:handle-in-use")
    SESSION_UNATTACHED_HANDLE = Symbol("amqp:session:unattached-handle")
    LINK_DETACH_FORCED = Symbol("amqp:link:detach-forced")
    LINK_TRANSFER_LIMIT_EXCEEDED = Symbol("amqp:link:transfer-limit-exceeded")
    LINK_MESSAGE_SIZE_EXCEEDED = Symbol("amqp:link:message-size-exceeded")
    LINK_REDIRECT = Symbol("amqp:link:redirect")
    LINK_STOLEN = Symbol("amqp:link:stolen")


CONNECTION_ESTABLISHMENT_FAILED = Symbol("amqp:connection-establishment-failed")
"""Open property (spec 2.4.1) telling the peer that a close for a refusal follows at once."""


class LocalProtocolError(Exception):
    """The caller misused the engine's API; a bug on our side, never the peer's."""


class EncodeError(LocalProtocolError, ValueError):
    """A value cannot be encoded as the AMQP type asked for (wrong type or out of range)."""


class AmqpError(Exception):
    """The peer violated the protocol or sent what we refuse; carries the spec's condition."""

    condition: Symbol = Condition.INTERNAL_ERROR

    def __init__(
        self,
        description: str,
        condition: Symbol | None = None,
        info: dict[Any, Any] | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        if condition is not None:
            self.condition = condition
        self.info = info


class DecodeError(AmqpError):
    """Bytes that are not a valid AMQP encoding (truncated, bad constructor, bad UTF-8...)."""

    condition = Condition.DECODE_ERROR


class FramingError(AmqpError):
    """A frame that cannot be delimited or is larger than negotiated."""

    condition = Condition.CONNECTION_FRAMING_ERROR


class ConnectionError_(AmqpError):
    """A connection-level protocol violation (wrong state, bad channel)."""

    condition = Condition.NOT_ALLOWED
