"""What the engine reports: facts about the peer, named in the past tense.

The engine appends events as it processes received frames (and as it times out or
fails); the owner takes them with ``Connection.take_events()`` after each
``receive_data`` or ``tick``.  Every event names the endpoint it concerns; the endpoint
carries the details (remote terminus, credit, delivery state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection
    from .delivery import Delivery
    from .link import Link
    from .session import Session
    from .spec import Error

__all__ = [
    "Event",
    "Authenticated",
    "CredentialsReceived",
    "ConnectionOpened",
    "ConnectionClosed",
    "SessionBegun",
    "SessionEnded",
    "LinkAttached",
    "LinkDetached",
    "CreditGranted",
    "LinkFlowReceived",
    "SessionWindowOpened",
    "DeliveryReceived",
    "DeliveryUpdated",
    "DeliveryAborted",
]


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        # The compiled build lists a class's attributes in __mypyc_attrs__; the
        # interpreted one has only the __slots__ declared here.
        cls = type(self)
        names: tuple[str, ...] = getattr(cls, "__mypyc_attrs__", ()) or getattr(cls, "__slots__", ())
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({fields})"


class Authenticated(Event):
    """SASL finished successfully (server: the client's identity; client: we were let in)."""

    __slots__ = ("mechanism", "user")

    def __init__(self, mechanism: str, user: str | None) -> None:
        self.mechanism = mechanism
        self.user = user


class CredentialsReceived(Event):
    """A SASL client presented credentials that the owner decides on (server only).

    Sent when the ``SaslServer`` was made with ``decide_later=True``.  The connection
    reads nothing more until the owner answers with ``Connection.sasl_decided(code)``.
    """

    __slots__ = ("mechanism", "user", "password")

    def __init__(self, mechanism: str, user: str, password: str) -> None:
        self.mechanism = mechanism
        self.user = user
        self.password = password

    def __repr__(self) -> str:
        # Events end up in logs and test failures: never the password.
        return f"CredentialsReceived(mechanism={self.mechanism!r}, user={self.user!r})"


class ConnectionOpened(Event):
    """The peer's open arrived; its fields are on ``connection.remote_open``."""

    __slots__ = ("connection",)

    def __init__(self, connection: "Connection") -> None:
        self.connection = connection


class ConnectionClosed(Event):
    """The connection is over: the peer closed it, we closed it for an error, or it was lost.

    ``error`` is the peer's error (``by_peer``), ours (a protocol violation we detected,
    an idle timeout), or a ``amqp:connection:forced`` error for a lost transport.
    """

    __slots__ = ("connection", "error", "by_peer")

    def __init__(self, connection: "Connection", error: "Error | None", by_peer: bool) -> None:
        self.connection = connection
        self.error = error
        self.by_peer = by_peer


class SessionBegun(Event):
    """The peer's begin arrived: an answer to ours, or a new session the engine accepted."""

    __slots__ = ("session",)

    def __init__(self, session: "Session") -> None:
        self.session = session


class SessionEnded(Event):
    """The session is over (peer's end, our end for an error, or the connection went)."""

    __slots__ = ("session", "error")

    def __init__(self, session: "Session", error: "Error | None") -> None:
        self.session = session
        self.error = error


class LinkAttached(Event):
    """The peer's attach arrived.

    If the peer initiated the link (``link.remote_initiated``), the owner answers with
    ``link.attach()`` or refuses with ``link.refuse(error)``.
    """

    __slots__ = ("link",)

    def __init__(self, link: "Link") -> None:
        self.link = link


class LinkDetached(Event):
    """The link is over: the peer detached it, we did for an error, or its session ended."""

    __slots__ = ("link", "error", "closed")

    def __init__(self, link: "Link", error: "Error | None", closed: bool) -> None:
        self.link = link
        self.error = error
        self.closed = closed


class CreditGranted(Event):
    """A sender link's credit changed (the peer's flow); ``link.drain`` says if it drains."""

    __slots__ = ("link",)

    def __init__(self, link: "Link") -> None:
        self.link = link


class LinkFlowReceived(Event):
    """A receiver link got the sender's flow (after a drain: ``link.credit`` is now 0)."""

    __slots__ = ("link",)

    def __init__(self, link: "Link") -> None:
        self.link = link


class SessionWindowOpened(Event):
    """The peer's flow reopened its incoming window, which had no room for our transfers."""

    __slots__ = ("session",)

    def __init__(self, session: "Session") -> None:
        self.session = session


class DeliveryReceived(Event):
    """A complete message arrived on a receiver link (all its transfer frames)."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: "Delivery") -> None:
        self.delivery = delivery


class DeliveryUpdated(Event):
    """The peer's disposition changed a delivery's remote state or settled it."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: "Delivery") -> None:
        self.delivery = delivery


class DeliveryAborted(Event):
    """The sender aborted a delivery part-way; nothing of it is kept."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: "Delivery") -> None:
        self.delivery = delivery


