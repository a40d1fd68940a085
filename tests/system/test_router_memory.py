"""A real router's memory stays bounded whatever its consumers advertise.

A consumer that grants a million credit and stops reading, or one that keeps its session's
incoming window at zero, used to let senders push until the router held gigabytes.  Here
a real router process meets such a consumer (our engine on a raw socket, pumped only when
the test says) and a producer in its own process sending as fast as the router lets it.
The router must stop granting credit, hold little, and — once the consumer behaves —
deliver every message the producer sent, each accepted end to end.
"""

from __future__ import annotations

import psutil
import pytest

from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.delivery import ACCEPTED
from switchboard.amqp.spec import Source

from system_support import RawPeer

MiB = 1024 * 1024

CONFIG = """
[limits]
max_memory = "64MiB"
max_address_bytes = "8MiB"
max_link_unsettled = 200
max_connection_output = "256KiB"
"""

PRODUCER = r'''
import asyncio, sys
from switchboard.amqp.message import Message
from switchboard.client.connection import Client
from switchboard.io.loop import run

url, address, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

async def main():
    async with await Client.connect(url) as client:
        sender = await client.sender(address)
        payload = Message(b"p" * size).encode()
        futures = []
        while len(futures) < count:
            try:
                futures.append(await asyncio.wait_for(sender.send(payload, wait=False), 5.0))
            except TimeoutError:
                break
        print(f"stopped after {len(futures)} sent", flush=True)
        states = await asyncio.gather(*futures, return_exceptions=True)
        names = sorted(type(state).__name__ for state in states)
        summary = " ".join(f"{name}={names.count(name)}" for name in sorted(set(names)))
        print(f"outcomes {summary or 'none'}", flush=True)

run(main)
'''

SENT = r"stopped after (\d+) sent"


def consumer(port: int, address: str, credit: int, window: int | None = None) -> tuple[RawPeer, object]:
    peer = RawPeer(port, Connection("hostile-consumer"))
    peer.engine.open()
    session = peer.engine.begin_session()
    if window is not None:
        session.set_incoming_window(window)
    link = session.receiver("hostile", source=Source(address=address), credit=credit)
    assert peer.pump(lambda: link.active, timeout=10), "the router did not attach the consumer"
    return peer, link


def accept_until(peer: RawPeer, done, timeout: float) -> int:
    """Read and accept everything the router sends until ``done()``; how many."""
    accepted = 0

    def settle_and_check() -> bool:
        nonlocal accepted
        for event in peer.of_type(ev.DeliveryReceived):
            if not event.delivery.settled:
                event.delivery.settle(ACCEPTED)
                accepted += 1
        peer.events = [e for e in peer.events if not isinstance(e, ev.DeliveryReceived)]
        return done()

    assert peer.pump(settle_and_check, timeout=timeout), "the producer did not hear every outcome in time"
    return accepted


@pytest.mark.parametrize("kind", ["stops-reading", "closed-window"])
def test_a_hostile_consumer_cannot_make_the_router_buffer_without_bound(router, spawn_script, kind: str) -> None:
    process = router(CONFIG)
    rss = psutil.Process(process.proc.pid)
    if kind == "stops-reading":
        peer, _ = consumer(process.port, "jobs", credit=1_000_000)
    else:
        peer, _ = consumer(process.port, "jobs", credit=1_000_000, window=0)
    baseline = rss.memory_info().rss

    # 60,000 messages of 2 KiB would be 120 MiB if the router took them all.
    producer = spawn_script(PRODUCER, process.url, "jobs", "60000", "2048")
    sent = int(producer.wait_line(SENT, timeout=90).group(1))
    grown = rss.memory_info().rss - baseline

    assert sent < 2000, f"the router gave credit for {sent} messages the consumer was not taking"
    assert grown < 48 * MiB, f"router RSS grew by {grown / MiB:.0f} MiB"
    assert process.alive()

    if kind == "closed-window":
        # A consumer that can take nothing gives its senders nothing; once its window
        # opens, credit flows and messages are delivered.
        assert sent == 0
        assert producer.wait_line(r"outcomes (.*)", timeout=10).group(1) == "none"
        peer.engine.sessions[0].set_incoming_window(10_000)
        producer = spawn_script(PRODUCER, process.url, "jobs", "500", "2048")
        sent = 500
    # The consumer behaves again: everything the producer sent arrives, accepted.
    accepted = accept_until(peer, lambda: producer.stdout.wait_for("outcomes", 0) is not None, timeout=60)
    line = producer.wait_line(r"outcomes (.*)", timeout=10).group(1)
    assert line == f"Accepted={sent}", line
    assert accepted == sent
    peer.close()
