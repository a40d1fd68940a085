"""Fixtures for the durable store's tests, the same for every backend.

* ``completions`` -- a ``store_support.Completions``: the stand-in for the router's event
  loop that a store under test posts its callbacks to.
* ``store_factory`` -- parametrized by backend name.  ``store_factory(post, fsync)``
  opens a store and returns ``(store, recovered)``; every call in one test opens the
  same underlying database (a fresh one per test), so closing and calling it again is a
  restart.  Stores still open at teardown are closed.

A backend is added by writing a function that takes the test's ``request`` and
``tmp_path`` and returns a maker ``(post, fsync) -> store not yet opened``, and listing
it in ``BACKENDS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from store_support import Completions
from switchboard.store import QueueStore, Recovered, SqliteStore
from switchboard.store.base import Post

from postgres_cluster import postgres_cluster, postgres_dsn  # noqa: F401  (fixtures)

Maker = Callable[[Post, str], QueueStore]


def _sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Maker:
    path = tmp_path / "data" / "store.db"
    return lambda post, fsync: SqliteStore(path, post, fsync)


def _postgres_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Maker:
    from switchboard.store.postgres import PostgresStore

    dsn = request.getfixturevalue("postgres_dsn")
    return lambda post, fsync: PostgresStore(dsn, post, fsync, holder="test-router")


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Maker]] = {
    "sqlite": _sqlite_backend,
    "postgres": _postgres_backend,
}


@pytest.fixture
def completions() -> Completions:
    return Completions()


@pytest.fixture(params=list(BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path):
    make = BACKENDS[request.param](request, tmp_path)
    opened: list[QueueStore] = []

    def open_store(post: Post, fsync: str = "batch") -> tuple[QueueStore, Recovered]:
        store = make(post, fsync)
        recovered = store.open()
        opened.append(store)
        return store, recovered

    yield open_store
    for store in opened:
        store.close()
