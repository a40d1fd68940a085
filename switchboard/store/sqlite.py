"""The embedded store: one SQLite file in WAL mode, written by one thread.

The router's event loop never waits on the disk.  Every call puts an operation on a queue
and returns; one writer thread owns the connection and applies the operations strictly
in the order they were made.  It takes everything that is queued (up to a bound), applies
it in one transaction, commits -- ``synchronous=FULL``, so the commit returns once the
write-ahead log is synced -- and only then hands the callbacks of that batch back to the
loop, all in one ``post``.  That is group commit: while one commit is being synced the
next batch gathers, so one sync covers many messages under load and a single message
under no load waits for one sync only.  With the ``always`` policy every ``enqueue`` is
committed on its own before its callback.

Reads (``fetch``, ``queue``, ``expire``) go through the same thread, so they see every
earlier write.

The per-queue numbers (messages, bytes, next message id, last activity) live in the
``queues`` table and in a mirror the writer thread keeps in memory: operations update the
mirror, and the queues they changed are written back once per transaction.  If a
transaction fails, the mirror is reloaded from the database.

A lock file beside the database (``<file>.lock``, held with ``flock``) keeps a second
router from opening the same store.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue as queue_module
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .base import FSYNC_POLICIES, Done, Post, QueueRecord, Recovered, StoredMessage, StoreError

__all__ = ["SqliteStore", "SCHEMA_VERSION", "DEFAULT_FILE_NAME"]

logger = logging.getLogger(__name__)

DEFAULT_FILE_NAME = "queues.db"
"""The store's file name in the router's data directory."""

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of a store this code writes."""

MAX_BATCH_OPERATIONS = 4096
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""A transaction takes at most this many operations or payload bytes, so the callbacks
of the first operation in a burst do not wait behind an unbounded backlog."""

_SCHEMA = """
CREATE TABLE queues (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    created_at      REAL NOT NULL,
    last_active_at  REAL NOT NULL,
    next_message_id INTEGER NOT NULL,
    messages        INTEGER NOT NULL,
    bytes           INTEGER NOT NULL
);
CREATE TABLE messages (
    queue_id       INTEGER NOT NULL,
    message_id     INTEGER NOT NULL,
    payload        BLOB NOT NULL,
    expires_at     REAL,
    delivery_count INTEGER NOT NULL,
    enqueued_at    REAL NOT NULL
);
CREATE UNIQUE INDEX messages_in_order ON messages (queue_id, message_id);
CREATE INDEX messages_by_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
"""


@dataclass
class _Queue:
    """The writer thread's mirror of one ``queues`` row."""

    id: int
    name: str
    created_at: float
    last_active_at: float
    next_message_id: int
    messages: int
    bytes: int


class _Failed(Exception):
    """One operation could not be applied; the rest of its transaction stands."""


_STOP = object()


class SqliteStore:
    """A ``QueueStore`` in one SQLite file (see the module docstring).

    ``open`` once, ``close`` once; a call before ``open`` or after ``close`` raises
    ``StoreError``.  Calls may come from any thread and are applied in the order they were
    made; callbacks run wherever ``post`` runs them.
    """

    def __init__(self, path: str | os.PathLike, post: Post, fsync: str = "batch") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.fsync = fsync
        self._post = post
        self._ops: queue_module.SimpleQueue = queue_module.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock_fd: int | None = None
        # Owned by the writer thread once it runs.
        self._db: sqlite3.Connection | None = None
        self._by_name: dict[str, _Queue] = {}
        self._by_id: dict[int, _Queue] = {}
        self._dirty: set[int] = set()

    @property
    def shared(self) -> bool:
        return False

    # -- life ----------------------------------------------------------------------------

    def open(self) -> Recovered:
        if self._thread is not None or self._closed:
            raise StoreError(f"{self.path}: a store is opened once (make a new one to reopen)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path.parent}: cannot create the store's directory: {exc}") from exc
        self._take_lock()
        try:
            self._db = self._connect()
            self._load()
        except BaseException:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._release_lock()
            raise
        recovered = Recovered(queues=[self._record(q) for q in self._by_name.values()])
        self._thread = threading.Thread(target=self._run, name=f"store {self.path.name}", daemon=True)
        self._thread.start()
        return recovered

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._ops.put(_STOP)
        self._thread.join()
        self._thread = None
        self._release_lock()

    def _take_lock(self) -> None:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{self.lock_path}: cannot open the store's lock file: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_small(fd)
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise StoreError(
                f"{self.lock_path}: locked by another process{who}; "
                "is another router using this data directory?") from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"{self.lock_path}: cannot lock: {exc}") from exc
        # The holder's pid, for the message a second router prints.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from exc
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL mode (journal mode is {mode})")
            db.execute("PRAGMA synchronous = FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = db.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
                if tables:
                    raise StoreError(f"{self.path}: not a switchboard store (it has other tables)")
                db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: store schema version {version}, this router reads version "
                    f"{SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from exc
        except StoreError:
            db.close()
            raise
        return db

    def _load(self) -> None:
        """Fill the mirror from the ``queues`` table (at open, and after a failed commit)."""
        assert self._db is not None
        try:
            rows = self._db.execute(
                "SELECT id, name, created_at, last_active_at, next_message_id, messages, bytes "
                "FROM queues").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the store: {exc}") from exc
        self._by_name = {}
        self._by_id = {}
        self._dirty = set()
        for row in rows:
            q = _Queue(*row)
            self._by_name[q.name] = q
            self._by_id[q.id] = q

    # -- calls (any thread; they only queue the operation) --------------------------------

    def _submit(self, apply: Callable[..., Any], args: tuple, done: Callable | None, size: int = 0) -> None:
        if self._closed or self._thread is None:
            raise StoreError(f"{self.path}: store is not open")
        self._ops.put((apply, args, done, size))

    def create_queue(self, name: str, now: float) -> None:
        self._submit(self._apply_create_queue, (name, now), None)

    def delete_queue(self, name: str, done: Done | None = None) -> None:
        self._submit(self._apply_delete_queue, (name,), done)

    def purge_queue(self, name: str, done: Done | None = None) -> None:
        self._submit(self._apply_purge_queue, (name,), done)

    def touch_queue(self, name: str, now: float) -> None:
        self._submit(self._apply_touch_queue, (name, now), None)

    def queue(self, name: str, done: Callable[[QueueRecord | None | BaseException], None]) -> None:
        self._submit(self._apply_queue, (name,), done)

    def enqueue(self, name: str, message: StoredMessage, now: float, done: Done | None) -> None:
        self._submit(self._apply_enqueue, (name, message, now), done, len(message.payload))

    def fetch(self, name: str, after_id: int, max_count: int, max_bytes: int,
              done: Callable[[list[StoredMessage] | BaseException], None]) -> None:
        self._submit(self._apply_fetch, (name, after_id, max_count, max_bytes), done)

    def remove(self, name: str, message_id: int) -> None:
        self._submit(self._apply_remove, (name, message_id), None)

    def set_delivery_count(self, name: str, message_id: int, delivery_count: int) -> None:
        self._submit(self._apply_set_delivery_count, (name, message_id, delivery_count), None)

    def move(self, name: str, message_id: int, to_name: str, new_id: int, now: float) -> None:
        self._submit(self._apply_move, (name, message_id, to_name, new_id, now), None)

    def expire(self, now: float, done: Callable[[dict[str, int] | BaseException], None]) -> None:
        self._submit(self._apply_expire, (now,), done)

    def try_lease(self, name: str, holder: str, now: float, seconds: float,
                  done: Callable[[str | BaseException], None]) -> None:
        # One router per file: the lease is always ours.  Still in order with the rest.
        self._submit(_grant, (holder,), done)

    def release_lease(self, name: str, holder: str) -> None:
        pass  # one router per file: there is nobody to give the queue to

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        ops = self._ops
        stopping = False
        while not stopping:
            batch: list = []
            size = 0
            op = ops.get()
            while True:
                if op is _STOP:  # close() is the last call: nothing follows it
                    stopping = True
                    break
                batch.append(op)
                size += op[3]
                if len(batch) >= MAX_BATCH_OPERATIONS or size >= MAX_BATCH_BYTES or ops.empty():
                    break
                op = ops.get()
            if batch:
                self._apply_batch(batch)
        self._finish()

    def _apply_batch(self, batch: list) -> None:
        """Apply ``batch`` in as few transactions as the policy allows, then post results."""
        db = self._db
        assert db is not None
        results: list[tuple[Callable, Any]] = []  # applied, not yet committed and posted
        each_enqueue = self.fsync == "always"
        unapplied = 0  # batch[unapplied:] has not been applied
        enqueue, remove = self._apply_enqueue, self._apply_remove
        count = len(batch)
        try:
            db.execute("BEGIN")
            index = 0
            while index < count:
                apply, args, done, _ = batch[index]
                if (apply == remove or (apply == enqueue and not each_enqueue)) and index + 1 < count \
                        and batch[index + 1][0] == apply:
                    # A run of inserts or deletes: one statement for all of them.
                    end = index + 1
                    while end < count and batch[end][0] == apply:
                        end += 1
                    run = batch[index:end]
                    outcomes = self._apply_enqueues(run) if apply == enqueue else self._apply_removes(run)
                    for (_, _, run_done, _), result in zip(run, outcomes):
                        if run_done is not None:
                            results.append((run_done, result))
                    index = unapplied = end
                    continue
                try:
                    result = apply(*args)
                except _Failed as exc:
                    result = StoreError(f"{self.path}: {exc}")
                    if done is None:
                        logger.error("store %s: %s", self.path, exc)
                index = unapplied = index + 1
                if done is not None:
                    results.append((done, result))
                if each_enqueue and apply == enqueue:
                    self._commit()
                    self._post_results(results)
                    results = []
                    db.execute("BEGIN")
            self._commit()
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error):  # a bug of ours: fail the batch, keep running
                logger.exception("store %s: unexpected error", self.path)
            self._abandon(batch[unapplied:], [done for done, _ in results], exc)
            return
        self._post_results(results)

    def _commit(self) -> None:
        db = self._db
        assert db is not None
        if self._dirty:
            db.executemany(
                "UPDATE queues SET last_active_at = ?, next_message_id = ?, messages = ?, "
                "bytes = ? WHERE id = ?",
                [(q.last_active_at, q.next_message_id, q.messages, q.bytes, q.id)
                 for q in map(self._by_id.get, self._dirty) if q is not None])
            self._dirty.clear()
        db.execute("COMMIT")

    def _abandon(self, rest: list, applied: list[Callable], exc: BaseException) -> None:
        """The transaction failed: roll it back, fail every operation it held (``applied``
        callbacks, and ``rest``: the operation that failed and those after it), and reload
        the mirror from what is committed."""
        db = self._db
        assert db is not None
        lost = len(applied) + len(rest)
        logger.error("store %s: a transaction failed; up to %d operations were not applied: %s",
                     self.path, lost, exc)
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error as rollback_exc:
            logger.error("store %s: rollback failed: %s", self.path, rollback_exc)
        error = StoreError(f"{self.path}: {exc}")
        waiting = applied + [done for _, _, done, _ in rest if done is not None]
        self._post_results([(done, error) for done in waiting])
        try:
            self._load()
        except StoreError as load_exc:
            logger.error("%s", load_exc)

    def _post_results(self, results: list[tuple[Callable, Any]]) -> None:
        if not results:
            return

        def deliver() -> None:
            for done, result in results:
                try:
                    done(result)
                except Exception:
                    logger.exception("store %s: a completion callback failed", self.path)

        try:
            self._post(deliver)
        except Exception:  # the loop is gone (shutdown): nobody is waiting any more
            logger.warning("store %s: %d completions could not be delivered (event loop closed)",
                           self.path, len(results))

    def _finish(self) -> None:
        """At close: fold the write-ahead log into the database and let the file go."""
        db = self._db
        assert db is not None
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # the log stays; the next open replays it
            logger.warning("store %s: checkpoint at close failed: %s", self.path, exc)
        try:
            db.close()
        except sqlite3.Error as exc:
            logger.warning("store %s: close failed: %s", self.path, exc)
        self._db = None

    # -- operations (writer thread, inside a transaction) ---------------------------------

    def _queue_named(self, name: str, now: float) -> _Queue:
        q = self._by_name.get(name)
        if q is None:
            cursor = self._db.execute(  # type: ignore[union-attr]
                "INSERT INTO queues (name, created_at, last_active_at, next_message_id, messages, bytes) "
                "VALUES (?, ?, ?, 1, 0, 0)", (name, now, now))
            q = _Queue(cursor.lastrowid, name, now, now, 1, 0, 0)  # type: ignore[arg-type]
            self._by_name[name] = q
            self._by_id[q.id] = q
        return q

    def _apply_create_queue(self, name: str, now: float) -> None:
        self._queue_named(name, now)

    def _apply_delete_queue(self, name: str) -> None:
        q = self._by_name.pop(name, None)
        if q is None:
            return
        del self._by_id[q.id]
        self._dirty.discard(q.id)
        self._db.execute("DELETE FROM messages WHERE queue_id = ?", (q.id,))  # type: ignore[union-attr]
        self._db.execute("DELETE FROM queues WHERE id = ?", (q.id,))  # type: ignore[union-attr]

    def _apply_purge_queue(self, name: str) -> None:
        q = self._by_name.get(name)
        if q is None:
            return
        self._db.execute("DELETE FROM messages WHERE queue_id = ?", (q.id,))  # type: ignore[union-attr]
        q.messages = 0
        q.bytes = 0
        self._dirty.add(q.id)

    def _apply_touch_queue(self, name: str, now: float) -> None:
        q = self._by_name.get(name)
        if q is not None and now > q.last_active_at:
            q.last_active_at = now
            self._dirty.add(q.id)

    def _apply_queue(self, name: str) -> QueueRecord | None:
        q = self._by_name.get(name)
        return None if q is None else self._record(q)

    def _record(self, q: _Queue) -> QueueRecord:
        row = self._db.execute(  # type: ignore[union-attr]
            "SELECT enqueued_at FROM messages WHERE queue_id = ? ORDER BY message_id LIMIT 1",
            (q.id,)).fetchone()
        return QueueRecord(
            name=q.name, messages=q.messages, bytes=q.bytes, created_at=q.created_at,
            last_active_at=q.last_active_at, oldest_at=None if row is None else row[0],
            next_message_id=q.next_message_id)

    def _apply_enqueue(self, name: str, message: StoredMessage, now: float) -> None:
        q = self._queue_named(name, now)
        try:
            self._db.execute(  # type: ignore[union-attr]
                "INSERT INTO messages (queue_id, message_id, payload, expires_at, delivery_count, "
                "enqueued_at) VALUES (?, ?, ?, ?, ?, ?)",
                (q.id, message.message_id, message.payload, message.expires_at,
                 message.delivery_count, now))
        except sqlite3.IntegrityError:
            raise _Failed(f"queue {name!r} already holds message {message.message_id}") from None
        self._added(q, message.message_id, len(message.payload), now)

    def _added(self, q: _Queue, message_id: int, size: int, now: float) -> None:
        q.messages += 1
        q.bytes += size
        if message_id >= q.next_message_id:
            q.next_message_id = message_id + 1
        if now > q.last_active_at:
            q.last_active_at = now
        self._dirty.add(q.id)

    def _removed(self, q: _Queue, size: int) -> None:
        q.messages -= 1
        q.bytes -= size
        self._dirty.add(q.id)

    def _apply_fetch(self, name: str, after_id: int, max_count: int, max_bytes: int) -> list[StoredMessage]:
        q = self._by_name.get(name)
        if q is None or max_count <= 0:
            return []
        cursor = self._db.execute(  # type: ignore[union-attr]
            "SELECT message_id, payload, expires_at, delivery_count FROM messages "
            "WHERE queue_id = ? AND message_id > ? ORDER BY message_id LIMIT ?",
            (q.id, after_id, max_count))
        found: list[StoredMessage] = []
        total = 0
        for message_id, payload, expires_at, delivery_count in cursor:
            total += len(payload)
            if found and total > max_bytes:
                break
            found.append(StoredMessage(message_id, payload, expires_at, delivery_count))
        cursor.close()
        return found

    def _apply_enqueues(self, run: list) -> list[Any]:
        """Consecutive enqueues in one ``executemany``; if one of them fails (an id already
        held), the run is undone and applied one by one, so only that one fails."""
        db = self._db
        assert db is not None
        rows = []
        for _, (name, message, now), _, _ in run:
            q = self._queue_named(name, now)
            rows.append((q.id, message.message_id, message.payload, message.expires_at, message.delivery_count, now))
        db.execute("SAVEPOINT run")
        try:
            db.executemany(
                "INSERT INTO messages (queue_id, message_id, payload, expires_at, delivery_count, "
                "enqueued_at) VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK TO run")
            db.execute("RELEASE run")
            outcomes: list[Any] = []
            for _, args, done, _ in run:
                try:
                    self._apply_enqueue(*args)
                    outcomes.append(None)
                except _Failed as exc:
                    outcomes.append(StoreError(f"{self.path}: {exc}"))
                    if done is None:
                        logger.error("store %s: %s", self.path, exc)
            return outcomes
        db.execute("RELEASE run")
        for _, (name, message, now), _, _ in run:
            self._added(self._by_name[name], message.message_id, len(message.payload), now)
        return [None] * len(run)

    def _apply_removes(self, run: list) -> list[Any]:
        """Consecutive removes: their sizes read with one query per queue, then one
        ``executemany`` deletes them."""
        db = self._db
        assert db is not None
        wanted: dict[int, list[int]] = {}
        for _, (name, message_id), _, _ in run:
            q = self._by_name.get(name)
            if q is not None:
                wanted.setdefault(q.id, []).append(message_id)
        gone: list[tuple[int, int]] = []
        for queue_id, ids in wanted.items():
            q = self._by_id[queue_id]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for message_id, size in db.execute(
                        f"SELECT message_id, length(payload) FROM messages WHERE queue_id = ? AND message_id IN ({marks})",
                        (queue_id, *chunk)):
                    gone.append((queue_id, message_id))
                    self._removed(q, size)
        if gone:
            db.executemany("DELETE FROM messages WHERE queue_id = ? AND message_id = ?", gone)
        return [None] * len(run)

    def _apply_remove(self, name: str, message_id: int) -> None:
        q = self._by_name.get(name)
        if q is None:
            return
        row = self._db.execute(  # type: ignore[union-attr]
            "DELETE FROM messages WHERE queue_id = ? AND message_id = ? RETURNING length(payload)",
            (q.id, message_id)).fetchone()
        if row is not None:
            self._removed(q, row[0])

    def _apply_set_delivery_count(self, name: str, message_id: int, delivery_count: int) -> None:
        q = self._by_name.get(name)
        if q is not None:
            self._db.execute(  # type: ignore[union-attr]
                "UPDATE messages SET delivery_count = ? WHERE queue_id = ? AND message_id = ?",
                (delivery_count, q.id, message_id))

    def _apply_move(self, name: str, message_id: int, to_name: str, new_id: int, now: float) -> None:
        q = self._by_name.get(name)
        if q is None:
            return
        db = self._db
        assert db is not None
        row = db.execute(
            "SELECT length(payload) FROM messages WHERE queue_id = ? AND message_id = ?",
            (q.id, message_id)).fetchone()
        if row is None:
            return  # already removed or expired: nothing to dead-letter
        to = self._queue_named(to_name, now)
        try:
            db.execute(
                "INSERT INTO messages (queue_id, message_id, payload, expires_at, delivery_count, "
                "enqueued_at) SELECT ?, ?, payload, expires_at, delivery_count, ? FROM messages "
                "WHERE queue_id = ? AND message_id = ?",
                (to.id, new_id, now, q.id, message_id))
        except sqlite3.IntegrityError:
            raise _Failed(f"cannot move message {message_id} of {name!r}: queue {to_name!r} "
                          f"already holds message {new_id}") from None
        db.execute("DELETE FROM messages WHERE queue_id = ? AND message_id = ?", (q.id, message_id))
        self._removed(q, row[0])
        self._added(to, new_id, row[0], now)

    def _apply_expire(self, now: float) -> dict[str, int]:
        rows = self._db.execute(  # type: ignore[union-attr]
            "DELETE FROM messages WHERE expires_at < ? RETURNING queue_id, length(payload)",
            (now,)).fetchall()
        counts: dict[str, int] = {}
        for queue_id, size in rows:
            q = self._by_id.get(queue_id)
            if q is None:
                continue
            self._removed(q, size)
            counts[q.name] = counts.get(q.name, 0) + 1
        return counts


def _grant(holder: str) -> str:
    return holder


def _read_small(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return ""
