"""A router SIGKILLed under full load on a durable queue loses nothing it accepted.

    producer (Proton) ──► router [queue/crash, SQLite] ──► consumer (Proton)
                              ╳ SIGKILL once a random number of messages were accepted
    restart on the same data directory ──► drain ──► every accepted message was delivered

Counts printed: sent, acknowledged (settled ``accepted`` for the producer), delivered
before the kill, delivered after the restart, duplicates (at least once allows them).
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from proton import Message

from queue_clients import QueueReceiver, outcome_name, queue_rows
from system_support import ProtonClient, ProtonThread, run_proton

CONFIG = """
[router]
id = "crash"

[[addresses]]
prefix = "queue/"
distribution = "queue"

[store]
fsync = "{fsync}"
"""

TOTAL = 20_000


class Flood(ProtonClient):
    """One producer and one consumer, each on its own connection, in one container (so
    the router's death ends both at once).  The producer sends numbered 1 KiB messages as
    fast as credit allows and records which were accepted; the consumer accepts
    everything and records what it got."""

    def __init__(self, url: str, address: str, total: int, consumer_credit: int = 200) -> None:
        super().__init__(auto_accept=False, prefetch=0)
        self.url, self.address, self.total = url, address, total
        self.consumer_credit = consumer_credit
        self.sent = 0
        self.accepted: set[int] = set()
        self.other: dict[int, str] = {}
        self.consumed: list[int] = []
        self.numbers: dict[Any, int] = {}
        self.padding = "x" * 1000
        self.receiver: Any = None

    def on_start(self, event: Any) -> None:
        container = event.container
        self.receiver = container.create_receiver(self.connect(container, self.url), self.address)
        self.receiver.flow(self.consumer_credit)
        container.create_sender(self.connect(container, self.url), self.address)

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.sent < self.total:
            delivery = event.sender.send(Message(body=f"{self.sent}:{self.padding}", durable=True))
            self.numbers[delivery] = self.sent
            self.sent += 1

    def on_message(self, event: Any) -> None:
        self.consumed.append(int(event.message.body.split(":", 1)[0]))
        self.accept(event.delivery)
        self.receiver.flow(1)

    def on_settled(self, event: Any) -> None:
        number = self.numbers.pop(event.delivery, None)
        if number is None:
            return
        outcome = outcome_name(event.delivery)
        if outcome == "accepted":
            self.accepted.add(number)
        else:
            self.other[number] = outcome


class Drain(QueueReceiver):
    """Accepts everything; keeps the numbers."""

    @property
    def numbers(self) -> list[int]:
        return [int(body.split(":", 1)[0]) for body in self.received]


def wait_until_true(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)  # between looks at the clients' counters


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_sigkill_under_load_loses_no_accepted_message(router, fsync: str, backend: str, request) -> None:
    config = CONFIG.format(fsync=fsync)
    if backend == "postgres":
        config += f'backend = "postgres"\ndsn = "{request.getfixturevalue("postgres_dsn")}"\n'

    r = router(config)
    rng = random.Random()
    kill_after = rng.randint(300, 3000) if fsync == "batch" else rng.randint(100, 600)

    flood = Flood(r.url, "queue/crash", TOTAL)
    thread = ProtonThread(flood, 120).start()
    wait_until_true(lambda: len(flood.accepted) >= kill_after or flood.finished, 60, f"{kill_after} messages accepted")
    r.kill()  # SIGKILL, mid-stream
    r.expect_exit = True
    thread.join_result()
    assert flood.errors, "the clients saw their connections die"
    delivered_before = list(flood.consumed)

    r2 = router(config)
    deadline = time.monotonic() + 30
    while queue_rows(r2.url).get("queue/crash", {}).get("state") != "ready":
        assert time.monotonic() < deadline, "the queue was not read back within 30 s"
        time.sleep(0.05)  # between two questions to the router
    waiting = queue_rows(r2.url)["queue/crash"]["depth"]
    drained = run_proton(Drain(r2.url, "queue/crash", waiting, credit=500), timeout=120) if waiting else None
    delivered_after = drained.numbers if drained is not None else []
    assert queue_rows(r2.url)["queue/crash"]["depth"] == 0

    delivered = set(delivered_before) | set(delivered_after)
    duplicates = len(delivered_before) + len(delivered_after) - len(delivered)
    lost = flood.accepted - delivered
    print(f"\n{backend} fsync={fsync}: sent {flood.sent}, acknowledged {len(flood.accepted)},"
          f" delivered before the kill {len(delivered_before)}, after the restart {len(delivered_after)},"
          f" duplicates {duplicates}, lost {len(lost)} (killed after {kill_after} acknowledged)")
    assert not lost, f"accepted but never delivered: {sorted(lost)[:20]}"
    assert delivered <= set(range(flood.sent)), "nothing delivered that was never sent"
    assert len(flood.accepted) >= kill_after
