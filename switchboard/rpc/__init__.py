"""RPC and notifications with oslo.messaging's semantics, over ``switchboard.client``:
``from switchboard.rpc import RPCClient, RPCServer, Target, Notifier, NotificationListener``.

See ``docs/rpc.md``; the wire format (addresses and envelopes) is ``wire.py``.
"""

from .client import RPCClient
from .dispatch import version_is_compatible
from .errors import (
    MessageDeliveryFailure,
    MessagingError,
    MessagingTimeout,
    NoSuchMethod,
    RemoteError,
    UnsupportedVersion,
)
from .notify import NotificationListener, NotificationResult, Notifier
from .server import RPCServer
from .target import Target

__all__ = [
    "Target",
    "RPCClient",
    "RPCServer",
    "Notifier",
    "NotificationListener",
    "NotificationResult",
    "MessagingError",
    "MessagingTimeout",
    "MessageDeliveryFailure",
    "RemoteError",
    "NoSuchMethod",
    "UnsupportedVersion",
    "version_is_compatible",
]
