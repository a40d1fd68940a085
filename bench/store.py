"""Durable store benchmark: enqueue, fetch and remove of 1 KiB messages through the store alone.

    .venv/bin/python bench/store.py [--messages 100000] [--always-messages 5000] [--dir DIR] [--json]

No router and no network: an asyncio event loop drives a ``SqliteStore`` the way the
router's queue forwarder does.  A producer keeps at most ``--window`` enqueues waiting for
their ``done`` (the router's credit does the same) and sends the next as each is
acknowledged; a consumer fetches up to 256 acknowledged messages after the last it saw and
removes each one.  A run ends when every message was enqueued, acknowledged, fetched and
removed, and ``close()`` has committed the last removals.

The rate is messages over that time; each fsync policy runs in a fresh process (so the
peak RSS, ``ru_maxrss``, is its own) on a fresh database in ``--dir`` (default: a
temporary directory; put it on the disk you mean to measure -- on tmpfs a sync costs
nothing).  ``always`` syncs once per message, so it gets fewer messages by default to keep
the run short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/queue.py is named like the standard library's `queue`, and running a script from
# bench/ puts bench/ first on the path: load the real `queue` before the store needs it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
import queue as _stdlib_queue  # noqa: E402, F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from switchboard.store import FSYNC_POLICIES, SqliteStore, StoredMessage  # noqa: E402

PAYLOAD_BYTES = 1024
FETCH_COUNT = 256
FETCH_BYTES = 1 << 20


async def drive(store: SqliteStore, messages: int, window: int) -> None:
    """Enqueue ``messages``, fetch and remove each once acknowledged; return when all are gone."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    payload = b"m" * PAYLOAD_BYTES
    sent = acknowledged = removed = 0
    last_fetched = 0
    fetching = False

    def on_acknowledged(error: BaseException | None) -> None:
        nonlocal acknowledged
        if error is not None:
            finished.set_exception(error)
            return
        acknowledged += 1
        produce()
        if not fetching and last_fetched < acknowledged:
            consume()

    def produce() -> None:
        nonlocal sent
        now = time.time()
        while sent < messages and sent - acknowledged < window:
            sent += 1
            store.enqueue("bench", StoredMessage(sent, payload, None), now, on_acknowledged)

    def consume() -> None:
        nonlocal fetching
        fetching = True
        store.fetch("bench", last_fetched, FETCH_COUNT, FETCH_BYTES, on_fetched)

    def on_fetched(found: list[StoredMessage] | BaseException) -> None:
        nonlocal fetching, last_fetched, removed
        fetching = False
        if isinstance(found, BaseException):
            finished.set_exception(found)
            return
        for message in found:
            store.remove("bench", message.message_id)
        removed += len(found)
        if found:
            last_fetched = found[-1].message_id
        if removed == messages:
            finished.set_result(None)
        elif last_fetched < acknowledged:
            consume()

    produce()
    await finished


def run_one(fsync: str, messages: int, window: int, directory: str | None) -> dict:
    with tempfile.TemporaryDirectory(dir=directory, prefix="bench-store-") as tmp:
        loop = asyncio.new_event_loop()
        store = SqliteStore(Path(tmp) / "store.db", loop.call_soon_threadsafe, fsync)
        store.open()
        started = time.perf_counter()
        loop.run_until_complete(drive(store, messages, window))
        store.close()
        elapsed = time.perf_counter() - started
        loop.close()
    return {
        "fsync": fsync,
        "messages": messages,
        "seconds": round(elapsed, 3),
        "messages_per_second": round(messages / elapsed),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100000, help="messages with fsync batch")
    parser.add_argument("--always-messages", type=int, default=5000, help="messages with fsync always")
    parser.add_argument("--window", type=int, default=1000, help="enqueues waiting for done at most")
    parser.add_argument("--dir", default=None, help="where the databases go (default: a temporary dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per policy")
    parser.add_argument("--one", choices=FSYNC_POLICIES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        messages = args.messages if args.one == "batch" else args.always_messages
        print(json.dumps(run_one(args.one, messages, args.window, args.dir)))
        return

    results = []
    for fsync in ("batch", "always"):
        command = [sys.executable, __file__, "--one", fsync, "--messages", str(args.messages),
                   "--always-messages", str(args.always_messages), "--window", str(args.window)]
        if args.dir:
            command += ["--dir", args.dir]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.splitlines()[-1]))

    if args.json:
        for result in results:
            print(json.dumps(result))
        return
    print(f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}, "
          f"1 KiB messages, window {args.window}: enqueue (durable) + fetch + remove")
    print(f"{'fsync':<8} {'messages':>9} {'seconds':>8} {'messages/s':>11} {'peak RSS MiB':>13}")
    for r in results:
        print(f"{r['fsync']:<8} {r['messages']:>9} {r['seconds']:>8.2f} "
              f"{r['messages_per_second']:>11} {r['peak_rss_mib']:>13}")


if __name__ == "__main__":
    main()
