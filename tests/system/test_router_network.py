"""Networks of real router processes: delivery, settlement and credit across routers,
multicast exactly once, a router killed mid-stream, duplicate ids, the network view.

Topologies are drawn in each test; routers listen on loopback ports the kernel picks and
connect to their neighbours with ``[[connectors]]``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from switchboard.amqp.message import Message, read_routing
from switchboard.amqp.spec import Accepted, Properties
from switchboard.client.connection import Client, ClientError
from switchboard.router.interrouter import TRACE

from network_support import network_view, wait_converged
from system_support import run_async, switchboard_command


async def consume(url: str, address: str, count: int, timeout: float = 30.0) -> list[Any]:
    """Receive and accept ``count`` messages; their decoded messages."""
    async with await Client.connect(url) as client:
        receiver = await client.receiver(address, credit=50)
        got = []
        for _ in range(count):
            item = await receiver.receive(timeout=timeout)
            got.append(item.message())
            item.accept()
        return got


def test_a_line_of_three_routers_delivers_with_end_to_end_outcomes(network) -> None:
    """
        producer ── A ── B ── C ── consumer
    """
    routers = network({"A": [], "B": [("A", 1)], "C": [("B", 1)]})

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with await Client.connect(routers["C"].url) as consumer_client:
            receiver = await consumer_client.receiver("orders", credit=20)
            async with await Client.connect(routers["A"].url) as producer:
                sender = await producer.sender("orders")
                futures = [await sender.send(Message(b"order %d" % i), wait=False) for i in range(50)]
                received = []
                for _ in range(50):
                    item = await receiver.receive(timeout=20)
                    received.append(item.message())
                    item.accept()
                outcomes = await asyncio.gather(*futures)
        return received, outcomes

    received, outcomes = run_async(scenario, timeout=60)
    assert [m.body for m in received] == [b"order %d" % i for i in range(50)]
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert received[0].message_annotations[TRACE] == ["A", "B"]


def test_a_full_mesh_delivers_through_at_most_two_routers(network) -> None:
    """
        A ── B
        │ ╲╱ │      every router connected to every other
        │ ╱╲ │
        D ── C
    """
    routers = network({"A": [], "B": [("A", 1)], "C": [("A", 1), ("B", 1)], "D": [("A", 1), ("B", 1), ("C", 1)]})

    async def scenario() -> dict[tuple[str, str], list[str]]:
        traces = {}
        for consumer_id in routers:
            async with await Client.connect(routers[consumer_id].url) as consumer:
                receiver = await consumer.receiver(f"mesh/{consumer_id}", credit=10)
                await asyncio.sleep(0)
                for producer_id in routers:
                    if producer_id == consumer_id:
                        continue
                    async with await Client.connect(routers[producer_id].url) as producer:
                        sender = await producer.sender(f"mesh/{consumer_id}")
                        assert isinstance(await sender.send(Message(b"hello")), Accepted)
                    item = await receiver.receive(timeout=20)
                    item.accept()
                    traces[(producer_id, consumer_id)] = item.message().message_annotations[TRACE]
        return traces

    traces = run_async(scenario, timeout=90)
    assert len(traces) == 12
    for (producer_id, consumer_id), trace in traces.items():
        assert trace == [producer_id], (producer_id, consumer_id, trace)  # then straight to the consumer's router


def test_multicast_reaches_every_consumer_once_in_a_ring(network) -> None:
    """
          A
         / \\       a listener on each router, the publisher on A
        B ─ C
    """
    routers = network({"A": [], "B": [("A", 1)], "C": [("A", 1), ("B", 1)]})

    async def scenario() -> dict[str, list[bytes]]:
        clients = {rid: await Client.connect(r.url) for rid, r in routers.items()}
        try:
            receivers = {rid: await c.receiver("multicast/events", credit=100) for rid, c in clients.items()}
            wait = time.monotonic() + 20
            async with await Client.connect(routers["A"].url) as publisher:
                sender = await publisher.sender("multicast/events")
                # Addresses propagate: publish once every router's listener is known at A.
                while True:
                    view = network_view(routers["A"].url)
                    if view is not None and len(view.get("next_hops", {})) == 2:
                        break
                    assert time.monotonic() < wait
                await asyncio.sleep(1.0)  # address advertisements follow the routes
                for i in range(20):
                    await sender.send(Message(b"event %d" % i))
                got = {}
                for rid, receiver in receivers.items():
                    got[rid] = []
                    for _ in range(20):
                        item = await receiver.receive(timeout=20)
                        got[rid].append(item.message().body)
                        item.accept()
                    try:
                        extra = await receiver.receive(timeout=1.0)
                        got[rid].append(extra.message().body)
                    except TimeoutError:
                        pass
                return got
        finally:
            for client in clients.values():
                await client.close()

    got = run_async(scenario, timeout=90)
    for rid, bodies in got.items():
        assert bodies == [b"event %d" % i for i in range(20)], rid


def test_the_network_view_lists_routers_links_costs_and_next_hops(network) -> None:
    """
        A ──(2)── B ──(3)── C
    """
    routers = network({"A": [], "B": [("A", 2)], "C": [("B", 3)]})
    view = network_view(routers["A"].url)
    assert view is not None
    assert view["router"] == "A"
    assert view["next_hops"] == {"B": "B", "C": "B"}
    assert view["costs"] == {"B": 2, "C": 5}
    assert [n["router"] for n in view["neighbours"]] == ["B"]
    import subprocess

    text = subprocess.run([*switchboard_command(), "network", "--router", routers["C"].url],
                          capture_output=True, text=True, timeout=30).stdout
    assert "router C" in text and "via B" in text, text
