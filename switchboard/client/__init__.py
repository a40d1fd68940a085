"""The asyncio client: ``from switchboard.client import Client``.

See ``docs/client.md`` for a guide, and ``connection.py`` for how failover works.
"""

from ..amqp.message import Message
from .connection import Client
from .errors import ClientError, OutcomeUnknown
from .events import (
    ClientEvent,
    ConnectAttemptFailed,
    Connected,
    ConnectionLost,
    GaveUp,
    ReceiverAddressChanged,
    RoundFailed,
)
from .failover import Reconnect
from .receiver import Received, Receiver
from .sender import Sender
from .urls import Router, Url, UrlError, parse_url

__all__ = [
    "Client",
    "Message",
    "ClientError",
    "OutcomeUnknown",
    "Reconnect",
    "Sender",
    "Receiver",
    "Received",
    "Router",
    "Url",
    "UrlError",
    "parse_url",
    "ClientEvent",
    "Connected",
    "ConnectAttemptFailed",
    "RoundFailed",
    "ConnectionLost",
    "GaveUp",
    "ReceiverAddressChanged",
]
