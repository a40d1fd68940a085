"""The durable store behind queue addresses: what every backend provides.

The router core is synchronous and never waits, so a store never blocks its caller:
every call returns at once, and where the caller needs to know the outcome (a message is
durable, messages were read) it passes a ``done`` callback, which the store calls later
on the event loop's thread, through the ``post`` function it was built with
(``loop.call_soon_threadsafe`` in the router).  Calls are applied in the order they were
made: a ``remove`` after an ``enqueue`` of the same message is never applied first.

Durability: ``enqueue`` calls ``done(None)`` only once the message is committed and on
disk under the store's fsync policy.  ``always``: each enqueue is its own transaction,
committed and synced before its callback (one sync per message).  ``batch``: group
commit -- the operations that arrived while the previous commit was being synced are
committed together, with one sync, and each callback runs only after the sync that covers
it; throughput does not collapse to one sync per message, and nothing is acknowledged
before it is on disk.  ``remove``, ``set_delivery_count``, ``move`` and the like need no
callback: they are committed with the next transaction; if the process dies first, the
message is still in the store and is delivered again (at least once, never lost).

Times in the store are wall-clock seconds since the epoch (``now`` arguments), so expiry
survives restarts; the core converts to its monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Protocol

__all__ = [
    "QueueStore", "StoredMessage", "QueueRecord", "Recovered", "StoreError",
    "FSYNC_POLICIES", "Done", "Post",
]

FSYNC_POLICIES = ("always", "batch")

Done = Callable[[BaseException | None], None]
"""Called with None on success, or with the error that stopped the operation."""

Post = Callable[[Callable[[], None]], None]
"""Runs a callable on the event loop's thread (``loop.call_soon_threadsafe``)."""


class StoreError(Exception):
    """The store could not do what was asked (disk full, database gone, corrupt file)."""


class StoredMessage(NamedTuple):
    """One message as the store keeps it (a tuple: one is made per message stored)."""

    message_id: int
    """Assigned by the router serving the queue, increasing within the queue (the queue's
    ``next_message_id`` when it was opened or leased, then one more each time)."""
    payload: bytes
    expires_at: float | None
    """Wall-clock seconds since the epoch after which the message is dropped; None: never."""
    delivery_count: int = 0
    """Deliveries that may have reached a consumer without its outcome (``modified``, a
    consumer lost): the header's ``delivery-count`` when it is sent again."""


@dataclass(frozen=True)
class QueueRecord:
    name: str
    messages: int
    bytes: int
    """Payload bytes."""
    created_at: float
    last_active_at: float
    """Last time a message was added or a consumer attached or took one (wall clock)."""
    oldest_at: float | None = None
    """When the oldest message still in the queue (the one with the lowest id) was added."""
    next_message_id: int = 1
    """One more than the largest message id the queue has ever held."""


@dataclass
class Recovered:
    """What ``open`` found."""

    queues: list[QueueRecord] = field(default_factory=list)


class QueueStore(Protocol):
    # -- life --------------------------------------------------------------------------
    def open(self) -> Recovered:
        """Open (creating if needed) and return the queues it holds.  The only blocking
        call; run before the router takes connections.  Raises ``StoreError``."""

    def close(self) -> None:
        """Commit what is pending and release the store (blocking; at shutdown)."""

    # -- queues ------------------------------------------------------------------------
    def create_queue(self, name: str, now: float) -> None:
        """Make the queue exist (no-op if it does)."""

    def delete_queue(self, name: str, done: Done | None = None) -> None:
        """Remove the queue and every message in it."""

    def purge_queue(self, name: str, done: Done | None = None) -> None:
        """Remove every message of the queue; the queue stays."""

    def touch_queue(self, name: str, now: float) -> None:
        """Record activity (a consumer attached, a message taken): for idle expiry."""

    def queue(self, name: str, done: Callable[[QueueRecord | None | BaseException], None]) -> None:
        """The queue's record as stored now (None if there is no such queue): for a router
        that has just taken the queue's lease, and for operators' views."""

    # -- messages ----------------------------------------------------------------------
    def enqueue(self, name: str, message: StoredMessage, now: float, done: Done | None) -> None:
        """Append ``message`` to the queue (made if it does not exist, created at ``now``);
        ``done(None)`` once it is durable.  An id the queue already holds is refused:
        ``done`` gets a ``StoreError`` and the queue is unchanged."""

    def fetch(self, name: str, after_id: int, max_count: int, max_bytes: int,
              done: Callable[[list[StoredMessage] | BaseException], None]) -> None:
        """The queue's messages with ids above ``after_id``, oldest first: at most
        ``max_count``, and no more bytes than ``max_bytes`` (but always at least one, if
        there is one).  Messages whose ``remove`` was asked for are never returned.
        Messages past their ``expires_at`` that ``expire`` has not deleted yet may be: the
        caller checks the time before it delivers."""

    def remove(self, name: str, message_id: int) -> None:
        """The message was accepted (or dropped): delete it."""

    def set_delivery_count(self, name: str, message_id: int, delivery_count: int) -> None:
        """Record a delivery that may have reached someone (it will be sent again)."""

    def move(self, name: str, message_id: int, to_name: str, new_id: int, now: float) -> None:
        """Dead-letter: take the message out of ``name`` and append it to ``to_name`` with
        ``new_id``, in one transaction.  It keeps its payload, ``expires_at`` and
        ``delivery_count``; it counts as added to ``to_name`` at ``now`` (made if it does not
        exist).  If the message is no longer in ``name``, nothing happens."""

    def expire(self, now: float, done: Callable[[dict[str, int] | BaseException], None]) -> None:
        """Delete messages whose ``expires_at`` has passed; ``done`` gets, per queue, how
        many went."""

    # -- many routers, one database (PostgreSQL) ----------------------------------------
    def try_lease(self, name: str, holder: str, now: float, seconds: float,
                  done: Callable[[str | BaseException], None]) -> None:
        """Take or renew the right to serve queue ``name`` until ``now + seconds``; ``done``
        gets who holds it now: ``holder`` if it was granted, else the router whose lease
        has not expired.  A store that only one router uses (SQLite) always grants it."""

    def release_lease(self, name: str, holder: str) -> None:
        """Give up ``holder``'s lease on ``name`` (a clean shutdown), so another router may
        take the queue at once.  Nothing if ``holder`` does not hold it."""

    @property
    def shared(self) -> bool:
        """True when several routers may use this store at once (leases matter)."""
