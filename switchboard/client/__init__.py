"""The client: ``from switchboard.client import Client`` (asyncio) or ``BlockingClient``
(threads).

See ``docs/client.md`` for a guide, ``connection.py`` for how failover works,
``requester.py`` for request/response and ``blocking.py`` for the threaded facade.
"""

from ..amqp.message import Message
from .blocking import BlockingClient, BlockingReceived, BlockingReceiver, BlockingRequester, BlockingSender
from .connection import Client
from .errors import ClientError, NotDelivered, NotSent, OutcomeUnknown, RequestRejected, RequestTimeout
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
from .requester import DEFAULT_REQUEST_TIMEOUT, Requester
from .sender import Sender
from .urls import Router, Url, UrlError, parse_url

__all__ = [
    "Client",
    "BlockingClient",
    "BlockingSender",
    "BlockingReceiver",
    "BlockingReceived",
    "BlockingRequester",
    "Message",
    "ClientError",
    "OutcomeUnknown",
    "NotSent",
    "NotDelivered",
    "RequestRejected",
    "RequestTimeout",
    "Requester",
    "DEFAULT_REQUEST_TIMEOUT",
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
