"""The PostgreSQL store's own behaviour: a database several routers share, leases, a
server that goes away and comes back, a router killed while it writes.

What every backend does (fetch order and limits, remove, move, expire, restart) is in
``test_store_conformance.py``, which runs on PostgreSQL too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from postgres_cluster import PostgresCluster
from switchboard.store import StoredMessage, StoreError

asyncpg = pytest.importorskip("asyncpg")

from switchboard.store.postgres import SCHEMA_VERSION, PostgresStore  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def message(message_id: int, size: int = 100, expires_at: float | None = None) -> StoredMessage:
    return StoredMessage(message_id, bytes([message_id % 251]) * size, expires_at)


@pytest.fixture
def open_store(postgres_dsn, completions):
    """``open_store(holder=..., fsync=...)``: an opened store on the test's database."""
    opened: list[PostgresStore] = []

    def make(holder: str = "router-a", fsync: str = "batch", dsn: str = postgres_dsn) -> PostgresStore:
        store = PostgresStore(dsn, completions.post, fsync, holder=holder)
        store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def enqueue(completions, store, name, *messages, now=None):
    """Enqueue without waiting in between; return what each ``done`` got."""
    now = time.time() if now is None else now
    pendings = []
    for m in messages:
        pending = completions.pending()
        store.enqueue(name, m, now, pending)
        pendings.append(pending)
    return [completions.wait(p) for p in pendings]


def ids(messages):
    return [m.message_id for m in messages]


def query(dsn: str, sql: str, *args):
    import asyncio

    async def run():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


# -- one database, several routers ------------------------------------------------------------


def test_an_acknowledged_message_is_seen_by_another_store_on_the_same_database(open_store, completions):
    writer = open_store("router-a")
    assert enqueue(completions, writer, "q", message(1), message(2)) == [None, None]

    reader = open_store("router-b")  # while the writer is still open: another router
    assert ids(completions.call(reader.fetch, "q", 0, 10, 1 << 20)) == [1, 2]
    record = completions.call(reader.queue, "q")
    assert (record.messages, record.bytes, record.next_message_id) == (2, 200, 3)
    assert reader.shared is True


def test_two_routers_opening_a_new_database_at_once_both_get_the_schema(postgres_dsn, completions):
    import threading

    stores = [PostgresStore(postgres_dsn, completions.post, holder=f"r{i}") for i in range(4)]
    errors: list[BaseException] = []

    def open_one(store):
        try:
            store.open()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert [r["version"] for r in query(postgres_dsn, "SELECT version FROM switchboard_schema")] == [
            SCHEMA_VERSION]
    finally:
        for store in stores:
            store.close()


def test_a_database_of_a_newer_schema_is_refused(postgres_dsn, completions, open_store):
    open_store().close()
    query(postgres_dsn, "UPDATE switchboard_schema SET version = $1", SCHEMA_VERSION + 1)
    store = PostgresStore(postgres_dsn, completions.post)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        store.open()


# -- group commit -----------------------------------------------------------------------------


def commits(dsn: str) -> int:
    [row] = query(dsn, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    return row["xact_commit"]


@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_batch_commits_many_enqueues_together_and_always_commits_each(
        postgres_dsn, completions, fsync):
    store = PostgresStore(postgres_dsn, completions.post, fsync)
    store.open()
    before = commits(postgres_dsn)
    count = 300
    assert enqueue(completions, store, "q", *(message(i, 64) for i in range(1, count + 1))) == [None] * count
    store.close()  # the connection's statistics reach the server when it ends
    made = commits(postgres_dsn) - before
    if fsync == "always":
        assert made >= count
    else:
        assert made < count // 2
    store = PostgresStore(postgres_dsn, completions.post, fsync)
    try:
        [record] = store.open().queues
        assert record.messages == count
    finally:
        store.close()


# -- leases -----------------------------------------------------------------------------------


def test_a_lease_is_held_by_one_router_until_it_expires(open_store, completions):
    a, b = open_store("router-a"), open_store("router-b")
    t0 = time.time()
    assert completions.call(a.try_lease, "q", "router-a", t0, 10.0) == "router-a"
    assert completions.call(b.try_lease, "q", "router-b", t0 + 1, 10.0) == "router-a"
    # the holder renews: the lease now runs to t0 + 5 + 10
    assert completions.call(a.try_lease, "q", "router-a", t0 + 5, 10.0) == "router-a"
    assert completions.call(b.try_lease, "q", "router-b", t0 + 12, 10.0) == "router-a"
    # the holder stopped renewing: once the lease has run out, another router takes it
    assert completions.call(b.try_lease, "q", "router-b", t0 + 15, 10.0) == "router-b"
    assert completions.call(a.try_lease, "q", "router-a", t0 + 16, 10.0) == "router-b"
    assert completions.call(b.try_lease, "q", "router-b", t0 + 20, 10.0) == "router-b"
    # leases are per queue
    assert completions.call(a.try_lease, "other", "router-a", t0 + 16, 10.0) == "router-a"


def test_a_router_that_takes_a_queue_over_continues_it_and_the_old_holder_is_fenced(
        open_store, completions):
    a, b = open_store("router-a"), open_store("router-b")
    t0 = time.time()
    assert completions.call(a.try_lease, "q", "router-a", t0, 10.0) == "router-a"
    assert enqueue(completions, a, "q", *(message(i) for i in range(1, 6))) == [None] * 5
    a.remove("q", 1)
    completions.call(a.queue, "q")  # answered after the remove is committed (calls apply in order)

    # router-a is cut off and stops renewing; router-b takes over once the lease is out.
    assert completions.call(b.try_lease, "q", "router-b", t0 + 11, 10.0) == "router-b"
    record = completions.call(b.queue, "q")
    assert (record.messages, record.next_message_id) == (4, 6)
    assert ids(completions.call(b.fetch, "q", 0, 100, 1 << 20)) == [2, 3, 4, 5]

    # router-a still thinks it serves the queue and allocates the same next id as router-b.
    [late] = enqueue(completions, a, "q", StoredMessage(6, b"from a", None))
    assert isinstance(late, StoreError)
    assert "router-b" in str(late)
    assert enqueue(completions, b, "q", StoredMessage(6, b"from b", None)) == [None]
    assert [m.payload for m in completions.call(b.fetch, "q", 5, 100, 1 << 20)] == [b"from b"]
    # a dead-letter move into a queue someone else holds is refused as well
    a.move("q", 2, "q", 7, time.time())
    completions.call(a.queue, "q")  # the move has been tried
    assert ids(completions.call(b.fetch, "q", 0, 100, 1 << 20)) == [2, 3, 4, 5, 6]


def test_an_id_taken_in_the_database_is_refused_not_overwritten(open_store, completions):
    """Without leases (or with a clock that lies), two routers may pick the same id:
    the second write fails, the first message stays."""
    a, b = open_store("router-a"), open_store("router-b")
    assert enqueue(completions, a, "q", StoredMessage(1, b"first", None)) == [None]
    [second] = enqueue(completions, b, "q", StoredMessage(1, b"second", None))
    assert isinstance(second, StoreError)
    assert [m.payload for m in completions.call(a.fetch, "q", 0, 10, 1 << 20)] == [b"first"]


# -- the server goes away ---------------------------------------------------------------------


def test_open_names_the_server_it_cannot_reach(postgres_cluster, completions):
    import socket

    with socket.socket() as sock:  # a loopback port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dsn = f"postgresql://switchboard:s3cret@127.0.0.1:{port}/queues"
    store = PostgresStore(dsn, completions.post)
    with pytest.raises(StoreError) as raised:
        store.open()
    text = str(raised.value)
    assert f"postgresql://switchboard:***@127.0.0.1:{port}/queues" in text
    assert "s3cret" not in text


def test_open_reports_a_login_the_server_rejects(postgres_cluster, completions):
    dsn = postgres_cluster.dsn("postgres").replace(
        f"{postgres_cluster.user}@", "nobody:hunter2@")
    store = PostgresStore(dsn, completions.post)
    with pytest.raises(StoreError) as raised:
        store.open()
    text = str(raised.value)
    assert "nobody:***@127.0.0.1" in text
    assert 'role "nobody" does not exist' in text
    assert "hunter2" not in text


def test_a_server_that_stops_fails_the_calls_and_the_store_recovers_when_it_is_back(
        postgres_cluster: PostgresCluster, open_store, completions, caplog):
    store = open_store()
    assert enqueue(completions, store, "q", message(1), message(2)) == [None, None]

    postgres_cluster.stop("immediate")  # as if the server crashed
    try:
        [lost] = enqueue(completions, store, "q", message(3))
        assert isinstance(lost, StoreError)
        assert "***" not in str(lost) and "127.0.0.1" in str(lost)
        assert isinstance(completions.call(store.fetch, "q", 0, 10, 1 << 20), StoreError)
        with caplog.at_level(logging.ERROR, logger="switchboard.store.postgres"):
            store.remove("q", 1)  # no callback: the failure is logged
            assert isinstance(completions.call(store.queue, "q"), StoreError)
        assert any("remove" in r.getMessage() and "not applied" in r.getMessage()
                   for r in caplog.records)
    finally:
        postgres_cluster.start()

    # back: within a bounded time the store has reconnected on its own
    deadline = time.monotonic() + 60
    while True:
        result = enqueue(completions, store, "q", message(4))[0]
        if result is None:
            break
        assert isinstance(result, StoreError)
        assert time.monotonic() < deadline, f"the store did not recover: {result}"
        time.sleep(0.2)
    # what was acknowledged before the crash is there; what failed is not
    assert ids(completions.call(store.fetch, "q", 0, 10, 1 << 20)) == [1, 2, 4]


# -- a router killed while it writes ----------------------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from switchboard.store import StoredMessage
    from switchboard.store.postgres import PostgresStore

    async def main(dsn, fsync):
        loop = asyncio.get_running_loop()
        store = PostgresStore(dsn, loop.call_soon_threadsafe, fsync, holder="child")
        store.open()
        window = asyncio.Semaphore(200)

        def acknowledged(message_id):
            def done(error):
                window.release()
                if error is None:
                    sys.stdout.write(f"{message_id}\\n")
                    sys.stdout.flush()
            return done

        message_id = 0
        while True:  # until killed
            await window.acquire()
            message_id += 1
            payload = message_id.to_bytes(8, "big") * 128
            store.enqueue("crash", StoredMessage(message_id, payload, None), time.time(),
                          acknowledged(message_id))
            if message_id % 50 == 0:
                store.remove("crash", message_id - 25)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_every_acknowledged_message_survives_a_killed_router(postgres_dsn, completions, tmp_path, fsync):
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    child = subprocess.Popen([sys.executable, str(script), postgres_dsn, fsync],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL, cwd=REPO)
    acknowledged: list[int] = []
    try:
        wanted = 2000 if fsync == "batch" else 300
        deadline = time.monotonic() + 90
        while len(acknowledged) < wanted:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"the writer stopped: {child.wait(10)} {child.stderr.read()}")
            acknowledged.append(int(line))
            assert time.monotonic() < deadline, f"only {len(acknowledged)} acknowledged"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        # what it printed before it died (acknowledged too)
        acknowledged += [int(line) for line in child.stdout.read().split()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        child.stdout.close()
        child.stderr.close()

    store = PostgresStore(postgres_dsn, completions.post)
    try:
        [record] = store.open().queues
        stored = {m.message_id: m for m in completions.call(store.fetch, "crash", 0, 10**9, 1 << 40)}
    finally:
        store.close()
    removed = {i - 25 for i in range(50, max(acknowledged) + 200, 50)}
    missing = [i for i in acknowledged if i not in stored and i not in removed]
    print(f"acknowledged {len(acknowledged)}, stored {len(stored)}, "
          f"highest id {max(acknowledged)}, next id {record.next_message_id}")
    assert missing == []
    for i in acknowledged:
        if i in stored:
            assert stored[i].payload == i.to_bytes(8, "big") * 128
    assert record.next_message_id > max(acknowledged)


def test_a_server_that_does_not_flush_commits_is_overruled_for_the_store(postgres_dsn, completions, caplog):
    database = postgres_dsn.rsplit("/", 1)[1]
    query(postgres_dsn, f'ALTER DATABASE "{database}" SET synchronous_commit = off')
    store = PostgresStore(postgres_dsn, completions.post)
    with caplog.at_level(logging.WARNING, logger="switchboard.store.postgres"):
        store.open()
    try:
        assert any("synchronous_commit is off" in r.getMessage() for r in caplog.records)
    finally:
        store.close()


@pytest.mark.parametrize("dsn, shown", [
    ("postgresql://sb:pw@db:5432/q", "postgresql://sb:***@db:5432/q"),
    ("postgresql://sb:pw@db1:5432,db2:5432/q?target_session_attrs=read-write",
     "postgresql://sb:***@db1:5432,db2:5432/q?target_session_attrs=read-write"),
    ("postgresql://sb@db/q?password=pw&sslmode=require", "postgresql://sb@db/q?password=***&sslmode=require"),
    ("postgresql://sb@db/q", "postgresql://sb@db/q"),
])
def test_the_password_is_hidden_wherever_the_dsn_has_it(dsn, shown):
    from switchboard.store.postgres import redact_dsn

    assert redact_dsn(dsn) == shown


def test_an_operation_the_server_refuses_fails_alone(open_store, completions):
    """Submitted together they share a transaction; the refusal of one does not fail the others."""
    store = open_store()
    results = enqueue(completions, store, "q", message(1))
    pendings = [completions.pending() for _ in range(3)]
    store.enqueue("q", message(2), time.time(), pendings[0])
    store.enqueue("nul\x00in the name", message(1), time.time(), pendings[1])  # text cannot hold NUL
    store.enqueue("q", message(3), time.time(), pendings[2])
    results += [completions.wait(p) for p in pendings]
    assert results[0] is None and results[1] is None and results[3] is None
    assert isinstance(results[2], StoreError)
    assert ids(completions.call(store.fetch, "q", 0, 10, 1 << 20)) == [1, 2, 3]


def test_writes_made_without_waiting_are_applied_as_if_one_by_one(open_store, completions):
    """Writes made together travel as one statement per kind; the result is still that
    of the calls in the order they were made."""
    store = open_store()
    t0 = 1_800_000_000.0
    store.enqueue("made-by-enqueue", message(1), t0 + 1, None)
    store.create_queue("made-by-enqueue", t0 + 2)  # exists already: nothing changes
    store.create_queue("made-by-create", t0 + 1)
    store.enqueue("made-by-create", message(1), t0 + 2, None)
    store.remove("q", 1)  # not there yet: nothing happens
    store.set_delivery_count("q", 2, 7)  # not there yet either
    store.touch_queue("q", t0 + 3)  # no such queue yet
    store.enqueue("q", message(1), t0 + 1, None)
    store.enqueue("q", message(2), t0 + 1, None)

    first = completions.call(store.queue, "made-by-enqueue")
    assert (first.created_at, first.last_active_at) == (t0 + 1, t0 + 1)
    second = completions.call(store.queue, "made-by-create")
    assert (second.created_at, second.last_active_at) == (t0 + 1, t0 + 2)
    q = completions.call(store.queue, "q")
    assert (q.created_at, q.last_active_at, q.messages) == (t0 + 1, t0 + 1, 2)
    assert [m.delivery_count for m in completions.call(store.fetch, "q", 0, 10, 1 << 20)] == [0, 0]


def test_routers_racing_for_a_free_lease_get_it_once(open_store, completions):
    stores = [open_store(f"router-{i}") for i in range(4)]
    t0 = time.time()
    for round_ in range(5):
        name = f"race-{round_}"
        pendings = []
        for i, store in enumerate(stores):
            pending = completions.pending()
            store.try_lease(name, f"router-{i}", t0, 30.0, pending)
            pendings.append(pending)
        holders = [completions.wait(p) for p in pendings]
        assert len(set(holders)) == 1 and holders[0] in {f"router-{i}" for i in range(4)}, holders
