"""What the client raises when an operation cannot complete."""

from __future__ import annotations

from ..amqp.spec import Error

__all__ = [
    "ClientError",
    "OutcomeUnknown",
    "NotSent",
    "NotDelivered",
    "RequestRejected",
    "RequestTimeout",
    "describe",
]


class ClientError(Exception):
    """The peer refused, or the connection was lost, before an operation completed."""

    def __init__(self, message: str, error: Error | None = None) -> None:
        super().__init__(message)
        self.error = error

    @property
    def condition(self) -> str | None:
        return str(self.error.condition) if self.error is not None else None


class OutcomeUnknown(ClientError):
    """A message was written to a router that was lost before it said what became of it.

    The message may have been delivered (and accepted) or not: nobody can tell.  The
    client never sends it again by itself, since that could deliver it twice; whether to
    resend is the application's choice.
    """


class NotSent(ClientError):
    """The connection was lost before the message was written to it: the router never saw
    it, so it was not delivered and sending it again cannot deliver it twice.

    Only a sender made with ``resend=False`` reports this; other senders send such a
    message again on the next connection by themselves.
    """


class NotDelivered(ClientError):
    """A request was not taken by any consumer: the router released it (nobody consumes
    its address, or nobody could take it now), or a consumer gave it back unprocessed.

    It was not acted upon, so it is safe to send again.  ``outcome`` is the router's
    (``Released`` or ``Modified``).
    """

    def __init__(self, message: str, outcome: object) -> None:
        super().__init__(message)
        self.outcome = outcome


class RequestRejected(ClientError):
    """The consumer (or the router) rejected a request; ``error`` says why."""


class RequestTimeout(ClientError):
    """No reply came within the request's timeout.

    The request may or may not have been processed.  A reply that comes later is
    accepted and dropped.
    """


def describe(error: Error | None) -> str:
    """``condition: description`` of an AMQP error, for messages."""
    if error is None:
        return "no error"
    return f"{error.condition}: {error.description}" if error.description else str(error.condition)
