"""A queue outlives its router: two routers share a PostgreSQL store; when the router
serving a queue is SIGKILLed, the other takes the queue's lease once it runs out and
serves every message from the database.

    producer ── A [serves queue/orders: holds its lease] ── B ── consumer
                ╳ SIGKILL
                                       B [lease taken, messages read back] ── consumer
"""

from __future__ import annotations

import time

from queue_clients import QueueReceiver, QueueSender, queue_rows
from system_support import run_proton

LEASE_SECONDS = 2.0


def shared_store(dsn: str, lease_seconds: float = LEASE_SECONDS) -> str:
    return f"""
[[addresses]]
prefix = "queue/"
distribution = "queue"

[store]
backend = "postgres"
dsn = "{dsn}"
lease_seconds = {lease_seconds}
"""


def bodies(count: int, tag: str = "m") -> list[str]:
    return [f"{tag}{i}" for i in range(count)]


def wait_for(predicate, what: str, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)  # between two questions to the router
    return time.monotonic() - started


def rows_or_empty(url: str) -> dict:
    try:
        return queue_rows(url, timeout=5)
    except Exception:  # noqa: BLE001 - the router may be busy taking over
        return {}


def test_another_router_serves_the_queue_when_its_router_is_killed(network, postgres_dsn) -> None:
    routers = network({"A": [], "B": [("A", 1)]}, extra=shared_store(postgres_dsn))
    a, b = routers["A"].url, routers["B"].url

    # A producer on A: A takes the lease and serves the queue; B knows it as A's.
    sent = run_proton(QueueSender(a, "queue/orders", bodies(100)), timeout=30)
    assert sent.accepted == bodies(100), sent.outcomes
    assert queue_rows(a)["queue/orders"]["depth"] == 100

    # A consumer on B is served by A through the network.
    first = run_proton(QueueReceiver(b, "queue/orders", 30, credit=10), timeout=30)
    assert first.received == bodies(100)[:30]
    # B asked for the lease when its consumer attached, and was told A holds it.
    wait_for(lambda: "queue/orders" not in queue_rows(b), "B to leave the queue to A, which holds its lease")
    wait_for(lambda: queue_rows(a)["queue/orders"]["depth"] == 70, "A to have the 30 accepted removed")

    routers["A"].process.kill()
    routers["A"].process.expect_exit = True
    killed = time.monotonic()

    # B takes the lease once A's runs out and reads the 70 back from the database.
    wait_for(lambda: rows_or_empty(b).get("queue/orders", {}).get("depth") == 70, "B to serve the queue")
    took_over = time.monotonic() - killed
    rest = run_proton(QueueReceiver(b, "queue/orders", 70, credit=20), timeout=30)
    assert rest.received == bodies(100)[30:], "every message still queued at the kill, in order"

    # New messages go to the queue on B.
    more = run_proton(QueueSender(b, "queue/orders", bodies(10, "n")), timeout=30)
    assert more.accepted == bodies(10, "n")
    assert run_proton(QueueReceiver(b, "queue/orders", 10), timeout=30).received == bodies(10, "n")
    print(f"\nB served the queue {took_over:.2f} s after A was killed (lease {LEASE_SECONDS} s)")
    assert took_over >= LEASE_SECONDS * 0.5, "not before A's lease could have run out"


def test_a_router_stopped_cleanly_hands_its_queues_over_at_once(network, postgres_dsn) -> None:
    """SIGTERM: the router gives its leases up, so the other serves the queue without
    waiting for them to run out (30 s here)."""
    routers = network({"A": [], "B": [("A", 1)]}, extra=shared_store(postgres_dsn, lease_seconds=30))
    a, b = routers["A"].url, routers["B"].url
    assert run_proton(QueueSender(a, "queue/handover", bodies(21)), timeout=30).accepted == bodies(21)
    # A consumer on B takes one, through A: B knows A serves the queue.
    assert run_proton(QueueReceiver(b, "queue/handover", 1), timeout=30).received == ["m0"]
    assert routers["A"].process.terminate() == 0
    routers["A"].process.expect_exit = True
    stopped = time.monotonic()
    waited = wait_for(lambda: rows_or_empty(b).get("queue/handover", {}).get("state") == "ready",
                      "B to serve the queue", timeout=20)
    assert rows_or_empty(b)["queue/handover"]["depth"] == 20
    assert run_proton(QueueReceiver(b, "queue/handover", 20), timeout=30).received == bodies(21)[1:]
    print(f"\nB served the queue {time.monotonic() - stopped:.2f} s after A was stopped (lease 30 s)")
    assert waited < 20
