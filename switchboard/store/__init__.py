"""Durable queues: the store interface (``base.py``) and its backends."""

from .base import (
    FSYNC_POLICIES, Done, Post, QueueRecord, QueueStore, Recovered, StoredMessage, StoreError,
)

__all__ = [
    "FSYNC_POLICIES", "Done", "Post", "QueueRecord", "QueueStore", "Recovered", "StoredMessage", "StoreError",
]
