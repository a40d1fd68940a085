"""Build the store a router's configuration asks for."""

from __future__ import annotations

from pathlib import Path

from .base import Post, QueueStore

__all__ = ["make_store", "store_exists"]


def make_store(backend: str, data_dir: Path, dsn: str | None, fsync: str, post: Post, holder: str) -> QueueStore:
    """A store, not yet opened: SQLite under ``data_dir``, or PostgreSQL at ``dsn``."""
    if backend == "postgres":
        from .postgres import PostgresStore  # asyncpg is needed only by those who use it

        assert dsn is not None
        return PostgresStore(dsn, post, fsync, holder=holder)
    from .sqlite import DEFAULT_FILE_NAME, SqliteStore

    return SqliteStore(data_dir / DEFAULT_FILE_NAME, post, fsync)


def store_exists(backend: str, data_dir: Path) -> bool:
    """Whether there may be queues to recover: always for a shared database; for SQLite,
    when its file exists (a router that never used a queue has none, and need not open one)."""
    if backend == "postgres":
        return True
    from .sqlite import DEFAULT_FILE_NAME

    return (data_dir / DEFAULT_FILE_NAME).exists()
