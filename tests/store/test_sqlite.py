"""The embedded SQLite store: what only it does (files, the lock, crashes of a real process).

What every backend does is in ``test_store_conformance.py``.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from switchboard.store import FSYNC_POLICIES, SqliteStore, StoredMessage, StoreError

from store_support import Completions

T0 = 1_800_000_000.0
CHILD_TIMEOUT = 60.0
"""Seconds a child process may take to reach each point the test waits for."""


def payload_of(message_id: int) -> bytes:
    return message_id.to_bytes(8, "big") * 128  # 1 KiB that says which message it is


# A process that enqueues as fast as it can and prints each id once ``done(None)`` has
# reached it; the parent kills it with SIGKILL at a moment of its choosing.
ENQUEUER = textwrap.dedent("""
    import queue, sys, time
    from switchboard.store import SqliteStore, StoredMessage

    path, fsync = sys.argv[1], sys.argv[2]
    posted = queue.Queue()
    store = SqliteStore(path, posted.put, fsync)
    store.open()
    print("open", flush=True)
    acknowledged = []
    in_flight = 0

    def done_for(message_id):
        def done(error):
            global in_flight
            in_flight -= 1
            if error is not None:
                print("error", error, flush=True)
            else:
                acknowledged.append(message_id)
        return done

    next_id = 1
    while True:
        while in_flight < 500:  # bounded, as the router's credit is
            payload = next_id.to_bytes(8, "big") * 128
            store.enqueue("q", StoredMessage(next_id, payload, None), time.time(), done_for(next_id))
            next_id += 1
            in_flight += 1
        posted.get()()
        while not posted.empty():
            posted.get()()
        # Only what done(None) has reached is printed, and printed at once.
        sys.stdout.write("".join(f"{i}\\n" for i in acknowledged))
        sys.stdout.flush()
        acknowledged.clear()
""")


def read_lines_until(child: subprocess.Popen, enough, timeout: float) -> list[str]:
    """Lines of ``child``'s stdout until ``enough(lines)``; bounded by ``timeout``."""
    lines: list[str] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    fd = child.stdout.fileno()
    while not enough(lines):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"child printed {len(lines)} lines in {timeout} s: {lines[-3:]}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"child exited ({child.wait()}): {child.stderr.read().decode()}")
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines.extend(line.decode() for line in complete)
    return lines


@pytest.mark.parametrize("fsync", FSYNC_POLICIES)
def test_every_acknowledged_enqueue_survives_sigkill(tmp_path, fsync):
    path = tmp_path / "data" / "store.db"
    kill_after = random.randint(2000, 8000) if fsync == "batch" else random.randint(100, 600)
    child = subprocess.Popen([sys.executable, "-c", ENQUEUER, str(path), fsync],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = read_lines_until(child, lambda lines: lines[:1] == ["open"], CHILD_TIMEOUT)
        lines += read_lines_until(child, lambda more: len(more) >= kill_after, CHILD_TIMEOUT)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=CHILD_TIMEOUT)
        # What was already in the pipe when it died was acknowledged too.
        rest = child.stdout.read().decode()
        lines += rest.splitlines()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()

    assert not [line for line in lines if line.startswith("error")]
    acknowledged = {int(line) for line in lines[1:] if line}

    completions = Completions()
    store = SqliteStore(path, completions.post, fsync)
    store.open()
    try:
        found = completions.call(store.fetch, "q", 0, 10_000_000, 1 << 40)
    finally:
        store.close()
    found_ids = {m.message_id for m in found}
    print(f"fsync={fsync}: acknowledged {len(acknowledged)}, found {len(found_ids)} "
          f"(acknowledged and missing: {len(acknowledged - found_ids)})")
    assert acknowledged <= found_ids
    assert all(m.payload == payload_of(m.message_id) for m in found)
    assert len(acknowledged) >= kill_after


# -- opening --------------------------------------------------------------------------------


def test_a_second_store_on_the_same_file_is_refused_naming_the_lock(tmp_path):
    path = tmp_path / "data" / "store.db"
    completions = Completions()
    first = SqliteStore(path, completions.post)
    first.open()
    second = SqliteStore(path, completions.post)
    try:
        with pytest.raises(StoreError) as refused:
            second.open()
        message = str(refused.value)
        assert str(path) + ".lock" in message
        assert f"process {os.getpid()}" in message
    finally:
        first.close()
    # Once the first is closed, the file is free.
    second = SqliteStore(path, completions.post)
    second.open()
    second.close()


def test_a_store_in_another_process_is_refused(tmp_path):
    """The lock holds between processes, not only within one."""
    path = tmp_path / "store.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from switchboard.store import SqliteStore
            store = SqliteStore(sys.argv[1], lambda callback: None)
            store.open()
            print("open", flush=True)
            sys.stdin.read()
            store.close()
        """), str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_lines_until(holder, lambda lines: lines[:1] == ["open"], CHILD_TIMEOUT)
        with pytest.raises(StoreError, match=f"store.db.lock: locked by another process \\(process {holder.pid}\\)"):
            SqliteStore(path, Completions().post).open()
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=CHILD_TIMEOUT) == 0
        holder.stdout.close()
        holder.stderr.close()


def test_open_creates_the_directory(tmp_path):
    path = tmp_path / "a" / "b" / "store.db"
    store = SqliteStore(path, Completions().post)
    assert store.open().queues == []
    store.close()
    assert path.is_file()


def test_a_file_that_is_not_a_database_is_refused_naming_it(tmp_path):
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not an SQLite file at all; " * 200)
    with pytest.raises(StoreError, match=str(path)):
        SqliteStore(path, Completions().post).open()
    # The refused open let the lock go: the same place opens once the file is replaced.
    os.remove(path)
    store = SqliteStore(path, Completions().post)
    store.open()
    store.close()


def test_a_database_of_something_else_is_refused(tmp_path):
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    db.close()
    with pytest.raises(StoreError, match="not a switchboard store"):
        SqliteStore(path, Completions().post).open()


def test_a_store_written_by_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "store.db"
    store = SqliteStore(path, Completions().post)
    store.open()
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path, Completions().post).open()


def test_an_unknown_fsync_policy_is_refused():
    with pytest.raises(ValueError, match="always, batch"):
        SqliteStore("unused.db", Completions().post, fsync="sometimes")


def test_calls_before_open_and_after_close_are_refused(tmp_path):
    store = SqliteStore(tmp_path / "store.db", Completions().post)
    with pytest.raises(StoreError, match="not open"):
        store.create_queue("q", T0)
    store.open()
    store.close()
    with pytest.raises(StoreError, match="not open"):
        store.enqueue("q", StoredMessage(1, b"x", None), T0, None)
    with pytest.raises(StoreError, match="opened once"):
        store.open()
    store.close()  # a second close is harmless


def test_a_failed_operation_nobody_waits_for_is_logged(tmp_path, caplog):
    completions = Completions()
    store = SqliteStore(tmp_path / "store.db", completions.post)
    store.open()
    try:
        store.enqueue("q", StoredMessage(1, b"first", None), T0, None)
        store.enqueue("q", StoredMessage(1, b"again", None), T0, None)
        store.enqueue("dead", StoredMessage(1, b"dead", None), T0, None)
        store.move("q", 1, "dead", 1, T0)
        [kept] = completions.call(store.fetch, "q", 0, 10, 1 << 20)
    finally:
        store.close()
    assert kept.payload == b"first"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"store {tmp_path / 'store.db'}: queue 'q' already holds message 1",
        f"store {tmp_path / 'store.db'}: cannot move message 1 of 'q': queue 'dead' already holds message 1",
    ]


def test_close_leaves_no_write_ahead_log_behind(tmp_path):
    path = tmp_path / "store.db"
    completions = Completions()
    store = SqliteStore(path, completions.post)
    store.open()
    for i in range(1, 101):
        store.enqueue("q", StoredMessage(i, payload_of(i), None), T0, None)
    store.close()
    wal = path.with_name("store.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


# -- a full disk ----------------------------------------------------------------------------

# The file-size limit (RLIMIT_FSIZE) makes the kernel refuse writes past it, for any user:
# a real "no more room" without mounting anything.
FILLER = textwrap.dedent("""
    import queue, resource, signal, sys, time
    from switchboard.store import SqliteStore, StoredMessage

    path, fsync, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write(), not a killed process
    posted = queue.Queue()
    store = SqliteStore(path, posted.put, fsync)
    store.open()
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    results = {}

    def done_for(message_id):
        def done(error):
            results[message_id] = error
        return done

    for i in range(1, 2001):
        store.enqueue("q", StoredMessage(i, i.to_bytes(8, "big") * 128, None), time.time(), done_for(i))
        if i % 50 == 0:  # a few batches, so some commit before the disk is full
            while len(results) < i:
                posted.get(timeout=60)()
    for i, error in sorted(results.items()):
        print(i, "ok" if error is None else f"error {error}", flush=True)
    # There is room again: the store goes on where it stopped.
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    store.enqueue("q", StoredMessage(5000, b"after", None), time.time(), done_for(5000))
    while 5000 not in results:
        posted.get(timeout=60)()
    print("after", "ok" if results[5000] is None else f"error {results[5000]}", flush=True)
    answer = queue.Queue()
    store.queue("q", answer.put)
    posted.get(timeout=60)()
    record = answer.get(timeout=60)
    print("record", getattr(record, "messages", record), flush=True)
    store.close()
""")


@pytest.mark.parametrize("fsync", FSYNC_POLICIES)
def test_a_full_disk_fails_the_enqueues_it_hits_loses_nothing_and_passes(tmp_path, fsync):
    path = tmp_path / "store.db"
    result = subprocess.run([sys.executable, "-c", FILLER, str(path), fsync, str(256 * 1024)],
                            capture_output=True, text=True, timeout=CHILD_TIMEOUT * 2)
    assert result.returncode == 0, result.stderr
    assert f"store {path}: a transaction failed" in result.stderr  # logged, naming the file
    lines = result.stdout.splitlines()
    outcomes = dict(line.split(" ", 1) for line in lines if line[0].isdigit())
    acknowledged = {int(i) for i, outcome in outcomes.items() if outcome == "ok"}
    errors = [outcome for outcome in outcomes.values() if outcome != "ok"]
    print(f"fsync={fsync}: acknowledged {len(acknowledged)}, failed {len(errors)}: {errors[:1]}")
    assert acknowledged and errors, "the limit should let some enqueues through and stop others"
    # SQLite reports a write the kernel refused as an I/O error, a full file as "full".
    assert {error.removeprefix(f"error {path}: ") for error in errors} <= {
        "disk I/O error", "database or disk is full"}
    [record_line] = [line for line in lines if line.startswith("record")]
    assert "after ok" in lines

    completions = Completions()
    store = SqliteStore(path, completions.post, fsync)
    store.open()
    try:
        found = completions.call(store.fetch, "q", 0, 10_000, 1 << 40)
        record = completions.call(store.queue, "q")
    finally:
        store.close()
    found_ids = {m.message_id for m in found}
    assert acknowledged | {5000} <= found_ids
    assert record.messages == len(found_ids)
    # After the failure the store answered with what it had committed.
    assert record_line == f"record {len(found_ids)}"


# -- backup ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 shell is not installed")
@pytest.mark.parametrize("command", ["VACUUM INTO '{copy}'", ".backup '{copy}'"])
def test_a_backup_taken_while_the_store_writes_is_a_consistent_store(tmp_path, command):
    """What docs/store.md tells operators to run, while messages are being committed."""
    path = tmp_path / "queues.db"
    copy = tmp_path / "backup" / "queues.db"
    copy.parent.mkdir()
    completions = Completions()
    store = SqliteStore(path, completions.post)
    store.open()
    try:
        acknowledged = [completions.pending() for _ in range(300)]
        for i, pending in enumerate(acknowledged, 1):
            store.enqueue("q", StoredMessage(i, payload_of(i), None), T0, pending)
        for pending in acknowledged:
            assert completions.wait(pending) is None
        # Keep the writer busy while the shell copies.
        for i in range(301, 5001):
            store.enqueue("q", StoredMessage(i, payload_of(i), None), T0, None)
            if i % 7 == 0:
                store.remove("q", i - 300)
        result = subprocess.run(["sqlite3", str(path), command.format(copy=copy)],
                                capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        assert result.returncode == 0, result.stderr
    finally:
        store.close()

    restored = SqliteStore(copy, completions.post)
    [record] = restored.open().queues
    try:
        found = completions.call(restored.fetch, "q", 0, 10_000, 1 << 40)
    finally:
        restored.close()
    found_ids = [m.message_id for m in found]
    print(f"{command.split()[0]}: the copy holds {len(found_ids)} messages, up to id {max(found_ids)}")
    # One snapshot: the counters agree with the messages, and nothing acknowledged before is missing.
    assert record.messages == len(found_ids)
    assert record.bytes == sum(len(m.payload) for m in found)
    assert record.next_message_id == max(found_ids) + 1
    assert set(range(1, 301)) - {i - 300 for i in range(301, 5001) if i % 7 == 0} <= set(found_ids)
    assert all(m.payload == payload_of(m.message_id) for m in found)
