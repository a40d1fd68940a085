"""What the client raises when an operation cannot complete."""

from __future__ import annotations

from ..amqp.spec import Error

__all__ = ["ClientError", "OutcomeUnknown", "describe"]


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


def describe(error: Error | None) -> str:
    """``condition: description`` of an AMQP error, for messages."""
    if error is None:
        return "no error"
    return f"{error.condition}: {error.description}" if error.description else str(error.condition)
