"""Durable queues: the store interface (``base.py``) and its backends."""

from .base import (
    FSYNC_POLICIES, Done, Post, QueueRecord, QueueStore, Recovered, StoredMessage, StoreError,
)
from .sqlite import SqliteStore

__all__ = [
    "FSYNC_POLICIES", "Done", "Post", "QueueRecord", "QueueStore", "Recovered", "StoredMessage", "StoreError",
    "SqliteStore",
]
