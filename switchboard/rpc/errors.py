"""What RPC calls raise, and what servers answer for requests they cannot dispatch."""

from __future__ import annotations

__all__ = [
    "MessagingError",
    "MessagingTimeout",
    "MessageDeliveryFailure",
    "RemoteError",
    "NoSuchMethod",
    "UnsupportedVersion",
]


class MessagingError(Exception):
    """Base of the errors ``switchboard.rpc`` raises."""


class MessagingTimeout(MessagingError, TimeoutError):
    """No reply (or no server to take the request) within the call's timeout."""


class MessageDeliveryFailure(MessagingError):
    """The request could not be delivered, or its server was lost with it in flight.

    ``maybe_processed`` says whether the server may have run it (the connection to the
    server was lost after it took the request): a retry could run it twice.
    """

    def __init__(self, message: str, maybe_processed: bool = False) -> None:
        super().__init__(message)
        self.maybe_processed = maybe_processed


class RemoteError(MessagingError):
    """The remote method raised: its class name, module, message and traceback.

    ``exc_type`` is the class name (``ValueError``); ``str(error)`` starts with it and
    the remote message, then the remote traceback.
    """

    def __init__(self, exc_type: str, value: str, traceback: str = "", module: str = "",
                 args: list | None = None) -> None:
        self.exc_type = exc_type
        self.value = value
        self.traceback = traceback
        self.module = module
        self.remote_args = list(args or [])
        text = f"{exc_type}: {value}" if value else exc_type
        super().__init__(f"{text}\n{traceback}".rstrip() if traceback else text)


class NoSuchMethod(MessagingError, AttributeError):
    """The server's endpoints serve the namespace and version, but not the method."""

    def __init__(self, method: str) -> None:
        super().__init__(f"no endpoint has a public method {method!r}")
        self.method = method


class UnsupportedVersion(MessagingError):
    """No endpoint serves the request's namespace with a compatible version."""

    def __init__(self, version: str | None, method: str | None = None, detail: str = "") -> None:
        message = f"no endpoint serves version {version or '1.0'}"
        if method:
            message += f" of method {method!r}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.version = version
        self.method = method
