"""What a client reports about its connection: facts, in the order they happen.

Listeners (``Client.connect(..., on_event=f)`` or ``client.add_listener(f)``) are plain
functions called on the client's event loop; they must not block.  A listener that
raises is logged and otherwise ignored: it cannot break the client.

A failover reads, for a client on r1 of ``r1,r2``::

    ConnectionLost(r1, error, outcome_unknown=3, resending=1)
    Connected(r2, reconnected=True)

and when every router is down::

    ConnectAttemptFailed(r2, 1, ...)  ConnectAttemptFailed(r1, 2, ...)
    RoundFailed(1, delay=0.1)
    ConnectAttemptFailed(r2, 3, ...)  ...
    GaveUp(ClientError(...))          (once the reconnect policy's bound is reached)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..amqp.spec import Error
from .urls import Router

if TYPE_CHECKING:
    from .errors import ClientError
    from .receiver import Receiver

__all__ = [
    "ClientEvent",
    "Connected",
    "ConnectAttemptFailed",
    "RoundFailed",
    "ConnectionLost",
    "GaveUp",
    "ReceiverAddressChanged",
    "Listener",
]


class ClientEvent:
    """Base of the client's events."""

    __slots__ = ()


@dataclass(frozen=True)
class Connected(ClientEvent):
    """The client is open on ``router``; after a failover, its links are attached again."""

    router: Router
    reconnected: bool


@dataclass(frozen=True)
class ConnectAttemptFailed(ClientEvent):
    """Attempt number ``attempt`` (counted from the start of this outage) failed."""

    router: Router
    attempt: int
    error: BaseException


@dataclass(frozen=True)
class RoundFailed(ClientEvent):
    """Every router in the list failed once; the next round starts after ``delay`` s."""

    round: int
    delay: float


@dataclass(frozen=True)
class ConnectionLost(ClientEvent):
    """The connection to ``router`` ended; the client fails over (unless it gave up).

    ``outcome_unknown`` deliveries were written but not settled: their senders got
    ``OutcomeUnknown``.  ``resending`` were never written: they go out on the next
    connection (a ``resend=False`` sender's fail with ``NotSent``; requests among them
    are sent again by their requester, with the next connection's reply address).
    """

    router: Router
    error: Error | None
    outcome_unknown: int
    resending: int


@dataclass(frozen=True)
class GaveUp(ClientEvent):
    """The client stopped trying (reconnect bound reached, or a refusal no retry cures);
    every operation still waiting failed with ``error``."""

    error: "ClientError"


@dataclass(frozen=True)
class ReceiverAddressChanged(ClientEvent):
    """A dynamic receiver, attached again after a failover, has a new address."""

    receiver: "Receiver"
    old: str | None
    new: str | None


Listener = Callable[[ClientEvent], None]
