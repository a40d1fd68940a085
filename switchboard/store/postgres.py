"""Durable queues in PostgreSQL: one database that several routers share.

The store owns one thread running its own asyncio loop with one asyncpg connection, so
database work never runs on the router's loop.  Public methods append an operation to a
list under a lock and wake that thread; they never wait.  The thread takes everything
that has arrived, applies it in call order, commits, and hands the results back through
``post`` in one call per batch.

Group commit (``batch``): the operations that arrived while the previous transaction was
committing are applied in the next transaction together.  Runs of writes that commute
(enqueue, remove, delivery counts, touch, create) are sent as one multi-row statement
each (``unnest`` over arrays), so a batch of a thousand enqueues is a few round trips and
one commit.  ``always``: every enqueue ends its transaction, so each is committed before
its callback and before the next enqueue is applied.

``synchronous_commit`` is left as the server has it (on by default), except that ``off`` is
turned ``on`` for the store's connection: a commit returns once the server has flushed its
WAL, and on a cluster with ``synchronous_standby_names`` once the standbys it names have
it too, so "acknowledged" follows the cluster's replication settings.

Leases: ``try_lease`` is one upsert that succeeds only when the lease is free, expired or
already the caller's.  Ids of a queue's messages are allocated by the router holding its
lease.  Enqueues and dead-letter moves lock the queue's lease row (``FOR SHARE``) and are
refused with ``StoreError`` when another holder has a live lease, so a router that lost
its lease cannot add messages under a new holder's ids; a takeover waits for such a
transaction to commit, so the new holder's ``queue()`` sees every message the old one
had committed.  A message id already taken is refused, never overwritten.  Removes,
delivery counts and touches are not fenced: a late remove from the old holder deletes a
message its consumer accepted (which the new holder might otherwise deliver again).

A lost connection fails the operations of the transaction in flight (callbacks get
``StoreError``; those without a callback are logged) and every operation that arrives
before the connection is back; the store reconnects with back-off in the background.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .base import FSYNC_POLICIES, Done, Post, QueueRecord, Recovered, StoredMessage, StoreError

__all__ = ["PostgresStore", "SCHEMA_VERSION", "redact_dsn"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Serialises schema creation between routers opening the same database at once.
_SCHEMA_LOCK_KEY = 0x5357_4244_0001

_SCHEMA = """
CREATE TABLE IF NOT EXISTS switchboard_schema (
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS queues (
    name text PRIMARY KEY,
    created_at double precision NOT NULL,
    last_active_at double precision NOT NULL,
    next_message_id bigint NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS messages (
    queue text NOT NULL,
    message_id bigint NOT NULL,
    payload bytea NOT NULL,
    expires_at double precision,
    delivery_count integer NOT NULL DEFAULT 0,
    enqueued_at double precision NOT NULL,
    PRIMARY KEY (queue, message_id)
);
CREATE INDEX IF NOT EXISTS messages_expires_at ON messages (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at double precision NOT NULL
);
"""

CONNECT_TIMEOUT = 10.0
"""Seconds ``open()`` and each reconnection attempt wait for the server."""

COMMAND_TIMEOUT = 60.0
"""Seconds one statement may take before the connection is given up as lost (a server
that vanished without closing the socket; a synchronous standby that never answers)."""

RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0

MAX_BATCH_OPERATIONS = 4096
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""A transaction takes at most this many operations or payload bytes, so the callbacks
of the first operation in a burst do not wait behind an unbounded backlog."""

_RETRIES = 3
"""Attempts for a transaction that failed on a deadlock or a serialization failure."""

# SQLSTATEs after which the transaction can simply be run again.
_TRANSIENT = {"40001", "40P01"}


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    if parts.password is None:
        redacted = dsn
    else:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        redacted = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    if "password=" in redacted:
        # key=value form or a password given as a query parameter
        words = []
        for word in redacted.replace("&", " & ").replace("?", " ? ").split(" "):
            words.append("password=***" if word.startswith("password=") else word)
        redacted = " ".join(words).replace(" & ", "&").replace(" ? ", "?")
    return redacted


@dataclass(slots=True)
class _Op:
    kind: str
    args: tuple
    done: Callable[[Any], None] | None
    result: Any = None


# Writes that commute within a batch: applied grouped, in this order.
_GROUPED = ("create", "enqueue", "delivery_count", "remove", "touch")


class _ConnectionLost(Exception):
    pass


class PostgresStore:
    """A ``QueueStore`` in a PostgreSQL database (``dsn``), shareable by several routers."""

    def __init__(self, dsn: str, post: Post, fsync: str = "batch", holder: str = "") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self._dsn = dsn
        self._post = post
        self._fsync = fsync
        self._holder = holder
        # Lease holders this store writes for: its own, and any it was granted a lease as.
        self._holders = {holder}
        self._lock = threading.Lock()
        self._pending: list[_Op] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._conn: asyncpg.Connection | None = None
        self._reconnecting: asyncio.Task | None = None
        self._lost_reason = ""
        self._closing = False
        self._worker_done: asyncio.Event | None = None

    # -- life --------------------------------------------------------------------------
    @property
    def shared(self) -> bool:
        return True

    @property
    def dsn(self) -> str:
        """The DSN with its password hidden."""
        return redact_dsn(self._dsn)

    def open(self) -> Recovered:
        if self._thread is not None:
            raise StoreError("store already open")
        self._closing = False
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="postgres-store", daemon=True)
        self._thread.start()
        started.wait()
        try:
            return asyncio.run_coroutine_threadsafe(self._open(), loop).result()
        except BaseException:
            self._stop_thread()
            raise

    def close(self) -> None:
        if self._thread is None:
            return
        self._closing = True
        assert self._loop is not None
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
        finally:
            self._stop_thread()

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    async def _open(self) -> Recovered:
        self._wake = asyncio.Event()
        self._worker_done = asyncio.Event()
        try:
            self._conn = await self._connect()
            await self._create_schema(self._conn)
            rows = await self._conn.fetch(_QUEUE_RECORDS)
        except Exception as exc:  # unreachable, login refused, bad DSN, a schema we cannot use
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            raise StoreError(f"cannot open the PostgreSQL store at {self.dsn}: {_describe(exc)}") from exc
        asyncio.get_running_loop().create_task(self._worker())
        return Recovered(queues=[_record(row) for row in rows])

    async def _close(self) -> None:
        assert self._wake is not None and self._worker_done is not None
        self._wake.set()
        await self._worker_done.wait()
        reconnecting = self._reconnecting
        if reconnecting is not None:
            reconnecting.cancel()
            await asyncio.gather(reconnecting, return_exceptions=True)
        if self._conn is not None:
            try:
                await asyncio.wait_for(self._conn.close(), timeout=CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self._conn.terminate()
            self._conn = None

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self._dsn, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
            server_settings={"application_name": f"switchboard {self._holder}".strip()},
        )
        # Every level but "off" flushes the commit locally before it returns; the stronger
        # ones (on, remote_apply with synchronous_standby_names) are the operator's choice.
        if await conn.fetchval("SHOW synchronous_commit") == "off":
            log.warning("store %s: synchronous_commit is off on the server; "
                        "turned on for the store's connection", self.dsn)
            await conn.execute("SET synchronous_commit = on")
        return conn

    @staticmethod
    async def _create_schema(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
            await conn.execute(_SCHEMA)
            version = await conn.fetchval("SELECT max(version) FROM switchboard_schema")
            if version is None:
                await conn.execute("INSERT INTO switchboard_schema (version) VALUES ($1)", SCHEMA_VERSION)
            elif version > SCHEMA_VERSION:
                raise asyncpg.InterfaceError(
                    f"the database holds schema version {version}; this Switchboard knows "
                    f"only up to {SCHEMA_VERSION}")

    # -- the calls ---------------------------------------------------------------------
    def _submit(self, kind: str, args: tuple, done: Callable[[Any], None] | None) -> None:
        loop = self._loop
        if loop is None or self._closing:
            error = StoreError("the PostgreSQL store is not open")
            if done is None:
                log.error("store %s: %s dropped: %s", self.dsn, kind, error)
            else:
                self._post(lambda: done(error))
            return
        with self._lock:
            self._pending.append(_Op(kind, args, done))
            first = len(self._pending) == 1
        if first:
            loop.call_soon_threadsafe(self._wake_worker)

    def _wake_worker(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def create_queue(self, name: str, now: float) -> None:
        self._submit("create", (name, now), None)

    def delete_queue(self, name: str, done: Done | None = None) -> None:
        self._submit("delete", (name,), done)

    def purge_queue(self, name: str, done: Done | None = None) -> None:
        self._submit("purge", (name,), done)

    def touch_queue(self, name: str, now: float) -> None:
        self._submit("touch", (name, now), None)

    def queue(self, name: str, done: Callable[[QueueRecord | None | BaseException], None]) -> None:
        self._submit("queue", (name,), done)

    def enqueue(self, name: str, message: StoredMessage, now: float, done: Done | None) -> None:
        self._submit("enqueue", (name, message, now), done)

    def fetch(self, name: str, after_id: int, max_count: int, max_bytes: int,
              done: Callable[[list[StoredMessage] | BaseException], None]) -> None:
        self._submit("fetch", (name, after_id, max_count, max_bytes), done)

    def remove(self, name: str, message_id: int) -> None:
        self._submit("remove", (name, message_id), None)

    def set_delivery_count(self, name: str, message_id: int, delivery_count: int) -> None:
        self._submit("delivery_count", (name, message_id, delivery_count), None)

    def move(self, name: str, message_id: int, to_name: str, new_id: int, now: float) -> None:
        self._submit("move", (name, message_id, to_name, new_id, now), None)

    def expire(self, now: float, done: Callable[[dict[str, int] | BaseException], None]) -> None:
        self._submit("expire", (now,), done)

    def try_lease(self, name: str, holder: str, now: float, seconds: float,
                  done: Callable[[str | BaseException], None]) -> None:
        self._submit("lease", (name, holder, now, seconds), done)

    def release_lease(self, name: str, holder: str) -> None:
        self._submit("release", (name, holder), None)

    # -- the store's thread ------------------------------------------------------------
    async def _worker(self) -> None:
        assert self._wake is not None and self._worker_done is not None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                ops = self._take()
                if ops:
                    for transaction in self._transactions(ops):
                        await self._run(transaction)
                        self._deliver(transaction)
                elif self._closing:
                    return
                if self._closing or self._pending:
                    self._wake.set()  # what is left, or came in meanwhile; then stop if closing
        finally:
            self._worker_done.set()

    def _take(self) -> list[_Op]:
        """The next batch: what is pending, up to the bounds."""
        with self._lock:
            pending = self._pending
            count = size = 0
            for op in pending:
                if count and (count >= MAX_BATCH_OPERATIONS or size >= MAX_BATCH_BYTES):
                    break
                count += 1
                if op.kind == "enqueue":
                    size += len(op.args[1].payload)
            ops, self._pending = pending[:count], pending[count:]
        return ops

    def _transactions(self, ops: list[_Op]) -> list[list[_Op]]:
        if self._fsync == "batch":
            return [ops]
        transactions: list[list[_Op]] = [[]]
        for op in ops:
            transactions[-1].append(op)
            if op.kind == "enqueue":
                transactions.append([])
        return [t for t in transactions if t]

    async def _run(self, ops: list[_Op]) -> None:
        """Apply ``ops`` in one transaction; set each op's result (or error)."""
        for attempt in range(_RETRIES):
            conn = self._conn
            if conn is None or conn.is_closed():
                self._connection_lost(self._lost_reason or "connection closed")
                _fail(ops, StoreError(f"PostgreSQL store {self.dsn} unavailable: {self._lost_reason}"))
                return
            for op in ops:
                op.result = None
            try:
                async with conn.transaction():
                    await self._apply(conn, ops)
                return
            except asyncpg.PostgresError as exc:
                if exc.sqlstate in _TRANSIENT and attempt + 1 < _RETRIES:
                    continue
                if _is_connection_error(exc) or conn.is_closed():
                    self._connection_lost(_describe(exc))
                elif len(ops) > 1:
                    # Something in the batch is refused (nothing was applied): apply the
                    # operations one by one, so only the one at fault fails.
                    for op in ops:
                        await self._run([op])
                    return
                _fail(ops, StoreError(f"PostgreSQL store {self.dsn}: {_describe(exc)}"))
                return
            except (OSError, asyncio.TimeoutError, asyncpg.InterfaceError) as exc:
                self._connection_lost(_describe(exc))
                _fail(ops, StoreError(f"PostgreSQL store {self.dsn} unavailable: {_describe(exc)}"))
                return
            except Exception as exc:  # unforeseen (a driver or a bug of ours): fail these, keep serving
                log.exception("store %s: transaction failed", self.dsn)
                if conn.is_closed():
                    self._connection_lost(_describe(exc))
                _fail(ops, StoreError(f"PostgreSQL store {self.dsn}: {exc!r}"))
                return

    def _connection_lost(self, reason: str) -> None:
        self._lost_reason = reason
        if self._reconnecting is not None or self._closing:
            return
        log.warning("store %s: connection lost (%s); reconnecting", self.dsn, reason)
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = RECONNECT_FIRST
        try:
            while not self._closing:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                try:
                    self._conn = await self._connect()
                except Exception as exc:  # refused, not yet accepting, timed out: try again later
                    self._lost_reason = _describe(exc)
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                log.warning("store %s: connection restored", self.dsn)
                self._lost_reason = ""
                return
        finally:
            self._reconnecting = None

    def _deliver(self, ops: list[_Op]) -> None:
        unreported = [op for op in ops if op.done is None and isinstance(op.result, BaseException)]
        for op in unreported:
            log.error("store %s: %s%r not applied: %s", self.dsn, op.kind, _brief(op.args), op.result)
        callbacks = [(op.done, op.result) for op in ops if op.done is not None]
        if callbacks:
            try:
                self._post(lambda: _call_all(callbacks))
            except RuntimeError as exc:  # the caller's loop is closed: nobody is waiting
                log.warning("store %s: %d results not delivered: %s", self.dsn, len(callbacks), exc)

    # -- applying a transaction --------------------------------------------------------
    async def _apply(self, conn: asyncpg.Connection, ops: list[_Op]) -> None:
        group: list[_Op] = []
        # What the group's removes, delivery counts and touches name: they are applied
        # after its creates and enqueues, so one of those on the same message (queue)
        # called after them must wait for the next group.
        marked: set[tuple[str, int]] = set()
        touched: set[str] = set()
        for op in ops:
            if op.kind in _GROUPED:
                if group and _after_in_group(op, marked, touched):
                    await self._apply_group(conn, group)
                    group, marked, touched = [], set(), set()
                group.append(op)
                if op.kind in ("remove", "delivery_count"):
                    marked.add((op.args[0], op.args[1]))
                elif op.kind == "touch":
                    touched.add(op.args[0])
                continue
            if group:
                await self._apply_group(conn, group)
                group, marked, touched = [], set(), set()
            await self._apply_one(conn, op)
        if group:
            await self._apply_group(conn, group)

    async def _apply_group(self, conn: asyncpg.Connection, ops: list[_Op]) -> None:
        """Apply writes that commute: creates and enqueues, then delivery counts, then
        removes, then touches, one statement each (``_apply`` made the group so that
        this order gives what the call order would)."""
        by_kind: dict[str, list[_Op]] = {kind: [] for kind in _GROUPED}
        for op in ops:
            by_kind[op.kind].append(op)
        if by_kind["enqueue"]:
            await self._enqueue(conn, by_kind["enqueue"])
        await self._advance_queues(conn, [op for op in ops if op.kind in ("create", "enqueue")])
        if by_kind["delivery_count"]:
            names, ids, counts = _columns([op.args for op in by_kind["delivery_count"]], 3)
            await conn.execute(_SET_DELIVERY_COUNTS, names, ids, counts)
        if by_kind["remove"]:
            names, ids = _columns([op.args for op in by_kind["remove"]], 2)
            await conn.execute(_REMOVE, names, ids)
        if by_kind["touch"]:
            names, nows = _columns([op.args for op in by_kind["touch"]], 2)
            await conn.execute(_TOUCH, names, nows)

    async def _fenced(self, conn: asyncpg.Connection, names: list[str]) -> dict[str, str]:
        """Queues among ``names`` whose live lease another holder has, with that holder.
        Locks the lease rows so that a takeover waits for this transaction."""
        rows = await conn.fetch(_LOCK_LEASES, sorted(set(names)))
        now = time.time()
        return {row["name"]: row["holder"] for row in rows
                if row["holder"] not in self._holders and row["expires_at"] > now}

    async def _enqueue(self, conn: asyncpg.Connection, ops: list[_Op]) -> None:
        """Insert the messages; refused ones (leased elsewhere, id taken) get their error."""
        fenced = await self._fenced(conn, [op.args[0] for op in ops])
        accepted: list[_Op] = []
        for op in ops:
            name = op.args[0]
            if name in fenced:
                op.result = StoreError(f"queue {name!r} is leased to {fenced[name]!r}")
            else:
                accepted.append(op)
        if not accepted:
            return
        names, messages, nows = _columns([op.args for op in accepted], 3)
        inserted = await conn.fetch(
            _INSERT_MESSAGES, names, [m.message_id for m in messages], [m.payload for m in messages],
            [m.expires_at for m in messages], [m.delivery_count for m in messages], nows)
        stored = {(row["queue"], row["message_id"]) for row in inserted}
        for op in accepted:
            name, message = op.args[0], op.args[1]
            if (name, message.message_id) in stored:
                stored.discard((name, message.message_id))  # a repeat in the batch is refused
            else:
                op.result = StoreError(f"queue {name!r} already holds message {message.message_id}")

    @staticmethod
    async def _advance_queues(conn: asyncpg.Connection, ops: list[_Op]) -> None:
        """The queues rows after ``ops`` (creates and applied enqueues, in call order): a
        queue that does not exist is made at the ``now`` of the first of them; enqueues
        record activity and move ``next_message_id`` on."""
        first: dict[str, float] = {}
        active: dict[str, float | None] = {}
        next_id: dict[str, int] = {}
        for op in ops:
            if isinstance(op.result, BaseException):
                continue
            name, now = op.args[0], op.args[-1]
            first.setdefault(name, now)
            active.setdefault(name, None)
            next_id.setdefault(name, 1)
            if op.kind == "enqueue":
                active[name] = max(now, active[name] or now)
                next_id[name] = max(next_id[name], op.args[1].message_id + 1)
        if not first:
            return
        names = sorted(first)  # one statement, rows in name order: a fixed lock order between stores
        await conn.execute(_ADVANCE_QUEUES, names, [first[n] for n in names],
                           [active[n] for n in names], [next_id[n] for n in names])

    async def _apply_one(self, conn: asyncpg.Connection, op: _Op) -> None:
        kind, args = op.kind, op.args
        if kind == "fetch":
            name, after_id, max_count, max_bytes = args
            rows = await conn.fetch(_FETCH, name, after_id, max(max_count, 0))
            messages: list[StoredMessage] = []
            size = 0
            for row in rows:
                payload = row["payload"]
                if messages and size + len(payload) > max_bytes:
                    break
                size += len(payload)
                messages.append(StoredMessage(row["message_id"], payload, row["expires_at"],
                                              row["delivery_count"]))
            op.result = messages
        elif kind == "queue":
            row = await conn.fetchrow(_QUEUE_RECORD, args[0])
            op.result = None if row is None else _record(row)
        elif kind == "expire":
            rows = await conn.fetch(_EXPIRE, args[0])
            op.result = {row["queue"]: row["count"] for row in rows}
        elif kind == "release":
            await conn.execute("DELETE FROM queue_leases WHERE name = $1 AND holder = $2", *args)
        elif kind == "lease":
            name, holder, now, seconds = args
            granted = await conn.fetchval(_TRY_LEASE, name, holder, now, now + seconds) is not None
            if granted:
                self._holders.add(holder)
                op.result = holder
            else:
                op.result = await conn.fetchval("SELECT holder FROM queue_leases WHERE name = $1", name)
        elif kind == "move":
            name, message_id, to_name, new_id, now = args
            fenced = await self._fenced(conn, [to_name])
            if to_name in fenced:
                op.result = StoreError(f"queue {to_name!r} is leased to {fenced[to_name]!r}")
                return
            moved = await conn.fetchval(_MOVE, name, message_id, to_name, new_id, now)
            if moved:
                await conn.execute(_ADVANCE_QUEUES, [to_name], [now], [now], [new_id + 1])
            else:
                exists = await conn.fetchval(_EXISTS, name, message_id)
                if exists:
                    op.result = StoreError(f"queue {to_name!r} already holds message {new_id}")
        elif kind == "purge":
            await conn.execute("DELETE FROM messages WHERE queue = $1", args[0])
        elif kind == "delete":
            await conn.execute("DELETE FROM messages WHERE queue = $1", args[0])
            await conn.execute("DELETE FROM queues WHERE name = $1", args[0])
            await conn.execute("DELETE FROM queue_leases WHERE name = $1", args[0])
        else:  # pragma: no cover - every kind is submitted by a method above
            raise AssertionError(kind)


# -- statements ------------------------------------------------------------------------
# oldest_at: when the message with the lowest id was added (read through the primary key).
_QUEUE_STATS = """
    SELECT q.name, q.created_at, q.last_active_at, q.next_message_id,
           count(m.message_id) AS messages,
           coalesce(sum(octet_length(m.payload)), 0) AS bytes,
           (SELECT o.enqueued_at FROM messages o WHERE o.queue = q.name
            ORDER BY o.message_id LIMIT 1) AS oldest_at
    FROM queues q LEFT JOIN messages m ON m.queue = q.name
"""
_QUEUE_RECORDS = _QUEUE_STATS + " GROUP BY q.name ORDER BY q.name"
_QUEUE_RECORD = _QUEUE_STATS + " WHERE q.name = $1 GROUP BY q.name"

_LOCK_LEASES = """
    SELECT name, holder, expires_at FROM queue_leases WHERE name = ANY($1::text[])
    ORDER BY name FOR SHARE
"""
_INSERT_MESSAGES = """
    INSERT INTO messages (queue, message_id, payload, expires_at, delivery_count, enqueued_at)
    SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::float8[], $5::int4[], $6::float8[])
    ON CONFLICT (queue, message_id) DO NOTHING
    RETURNING queue, message_id
"""
# $2: when a queue made here is created; $3: the latest activity (NULL: none, a create).
_ADVANCE_QUEUES = """
    WITH t AS (
        SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[], $4::int8[])
            AS u(name, created, active, next_id)
    )
    INSERT INTO queues AS q (name, created_at, last_active_at, next_message_id)
    SELECT name, created, greatest(created, active), next_id FROM t ORDER BY name
    ON CONFLICT (name) DO UPDATE SET
        last_active_at = greatest(q.last_active_at, (SELECT active FROM t WHERE t.name = excluded.name)),
        next_message_id = greatest(q.next_message_id, excluded.next_message_id)
"""
_SET_DELIVERY_COUNTS = """
    UPDATE messages m SET delivery_count = t.count
    FROM unnest($1::text[], $2::int8[], $3::int4[]) AS t(queue, message_id, count)
    WHERE m.queue = t.queue AND m.message_id = t.message_id
"""
_REMOVE = """
    DELETE FROM messages m USING unnest($1::text[], $2::int8[]) AS t(queue, message_id)
    WHERE m.queue = t.queue AND m.message_id = t.message_id
"""
_TOUCH = """
    UPDATE queues q SET last_active_at = greatest(q.last_active_at, t.now)
    FROM (SELECT name, max(now) AS now FROM unnest($1::text[], $2::float8[]) AS u(name, now)
          GROUP BY name) AS t
    WHERE q.name = t.name
"""
_FETCH = """
    SELECT message_id, payload, expires_at, delivery_count FROM messages
    WHERE queue = $1 AND message_id > $2 ORDER BY message_id LIMIT $3
"""
_EXPIRE = """
    WITH gone AS (DELETE FROM messages WHERE expires_at < $1 RETURNING queue)
    SELECT queue, count(*) AS count FROM gone GROUP BY queue
"""
_TRY_LEASE = """
    INSERT INTO queue_leases AS l (name, holder, expires_at) VALUES ($1, $2, $4)
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
    WHERE l.holder = excluded.holder OR l.expires_at <= $3
    RETURNING holder
"""
# The insert and the delete see the same snapshot; the delete happens only if the insert did.
_MOVE = """
    WITH added AS (
        INSERT INTO messages (queue, message_id, payload, expires_at, delivery_count, enqueued_at)
        SELECT $3, $4, payload, expires_at, delivery_count, $5 FROM messages
        WHERE queue = $1 AND message_id = $2
        ON CONFLICT (queue, message_id) DO NOTHING
        RETURNING 1
    ), taken AS (
        DELETE FROM messages WHERE queue = $1 AND message_id = $2 AND EXISTS (SELECT 1 FROM added)
        RETURNING 1
    )
    SELECT count(*) > 0 FROM taken
"""
_EXISTS = "SELECT EXISTS (SELECT 1 FROM messages WHERE queue = $1 AND message_id = $2)"


# -- helpers ---------------------------------------------------------------------------
def _after_in_group(op: _Op, marked: set[tuple[str, int]], touched: set[str]) -> bool:
    """Whether ``op``, called after the group's removes/delivery counts (``marked``) and
    touches, would be applied before one of them on the same message or queue."""
    if op.kind == "enqueue":
        return (op.args[0], op.args[1].message_id) in marked or op.args[0] in touched
    if op.kind == "create":
        return op.args[0] in touched
    return False


def _record(row: asyncpg.Record) -> QueueRecord:
    return QueueRecord(
        name=row["name"], messages=row["messages"], bytes=row["bytes"],
        created_at=row["created_at"], last_active_at=row["last_active_at"],
        oldest_at=row["oldest_at"], next_message_id=row["next_message_id"],
    )


def _columns(rows: list[tuple], width: int) -> tuple[list, ...]:
    return tuple([row[i] for row in rows] for i in range(width))


def _fail(ops: list[_Op], error: StoreError) -> None:
    for op in ops:
        op.result = error


def _call_all(callbacks: list[tuple[Callable[[Any], None], Any]]) -> None:
    for done, result in callbacks:
        try:
            done(result)
        except Exception:
            log.exception("store callback failed")


def _is_connection_error(exc: asyncpg.PostgresError) -> bool:
    state = exc.sqlstate or ""
    # 08: connection exception; 57P0x: the server is shutting down or restarting.
    return state.startswith("08") or state.startswith("57P")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text


def _brief(args: tuple) -> tuple:
    return tuple(f"<message {a.message_id}>" if isinstance(a, StoredMessage) else a for a in args)
