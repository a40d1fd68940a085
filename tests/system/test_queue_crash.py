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


class FloodSender(ProtonClient):
    """Sends numbered 1 KiB messages as fast as credit allows; records which were accepted."""

    def __init__(self, url: str, address: str, total: int) -> None:
        super().__init__()
        self.url, self.address, self.total = url, address, total
        self.sent = 0
        self.accepted: set[int] = set()
        self.other: dict[int, str] = {}
        self.numbers: dict[Any, int] = {}
        self.padding = "x" * 1000

    def on_start(self, event: Any) -> None:
        event.container.create_sender(self.connect(event.container, self.url), self.address)

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.sent < self.total:
            delivery = event.sender.send(Message(body=f"{self.sent}:{self.padding}", durable=True))
            self.numbers[delivery] = self.sent
            self.sent += 1

    def on_settled(self, event: Any) -> None:
        number = self.numbers.pop(event.delivery, None)
        if number is None:
            return
        outcome = outcome_name(event.delivery)
        if outcome == "accepted":
            self.accepted.add(number)
        else:
            self.other[number] = outcome
        if len(self.accepted) + len(self.other) == self.total:
            self.finish()


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


@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_sigkill_under_load_loses_no_accepted_message(router, fsync: str) -> None:
    config = CONFIG.format(fsync=fsync)
    r = router(config)
    rng = random.Random()
    kill_after = rng.randint(300, 3000) if fsync == "batch" else rng.randint(100, 600)

    consumer = Drain(r.url, "queue/crash", TOTAL, credit=200)
    producer = FloodSender(r.url, "queue/crash", TOTAL)
    consumer_thread = ProtonThread(consumer, 120)
    producer_thread = ProtonThread(producer, 120)
    consumer_thread.start()
    producer_thread.start()
    wait_until_true(lambda: len(producer.accepted) >= kill_after or producer.finished, 60,
                    f"{kill_after} messages accepted")
    r.kill()  # SIGKILL, mid-stream
    r.expect_exit = True
    for thread in (producer_thread, consumer_thread):
        try:
            thread.join_result()
        except Exception:
            pass  # the connection died with the router: expected
    delivered_before = list(consumer.numbers)

    r2 = router(config)
    waiting = queue_rows(r2.url).get("queue/crash", {}).get("depth", 0)
    drained = run_proton(Drain(r2.url, "queue/crash", waiting, credit=500), timeout=120) if waiting else None
    delivered_after = drained.numbers if drained is not None else []
    assert queue_rows(r2.url)["queue/crash"]["depth"] == 0

    delivered = set(delivered_before) | set(delivered_after)
    duplicates = len(delivered_before) + len(delivered_after) - len(delivered)
    lost = producer.accepted - delivered
    print(f"\nfsync={fsync}: sent {producer.sent}, acknowledged {len(producer.accepted)},"
          f" delivered before the kill {len(delivered_before)}, after the restart {len(delivered_after)},"
          f" duplicates {duplicates}, lost {len(lost)} (killed after {kill_after} acknowledged)")
    assert not lost, f"accepted but never delivered: {sorted(lost)[:20]}"
    assert delivered <= set(range(producer.sent)), "nothing delivered that was never sent"
    assert len(producer.accepted) >= kill_after
