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
from switchboard.client import OutcomeUnknown
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
            async def receive_all() -> list[Any]:
                received = []
                for _ in range(50):
                    item = await receiver.receive(timeout=20)
                    received.append(item.message())
                    item.accept()
                return received

            receiving = asyncio.ensure_future(receive_all())
            async with await Client.connect(routers["A"].url) as producer:
                sender = await producer.sender("orders")
                # Credit is end to end: more than the consumer's 20 wait for it to take some.
                futures = [await sender.send(Message(b"order %d" % i), wait=False) for i in range(50)]
                outcomes = await asyncio.gather(*futures)
            received = await receiving
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
                for producer_id in routers:
                    if producer_id == consumer_id:
                        continue
                    async with await Client.connect(routers[producer_id].url) as producer:
                        sender = await producer.sender(f"mesh/{consumer_id}")
                        outcome = await sender.send(Message(b"hello"), wait=False)
                        item = await receiver.receive(timeout=20)
                        item.accept()
                        assert isinstance(await outcome, Accepted)
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
    import re

    # C's table: A is reachable at cost 5 through B.
    assert "router C" in text and re.search(r"^A\s+yes\s+5\s+B\b", text, re.MULTILINE), text


SLOW_CONSUMER = r'''
import asyncio, sys, time
from switchboard.client.connection import Client
from switchboard.io.loop import run

url, address, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])

async def main():
    async with await Client.connect(url) as client:
        receiver = await client.receiver(address, credit=5)
        print("ready", flush=True)
        count = 0
        while True:
            try:
                item = await receiver.receive(timeout=10)
            except TimeoutError:
                break
            if delay:
                await asyncio.sleep(delay)  # this consumer's own work
            item.accept()
            count += 1
        print(f"consumed {count}", flush=True)

run(main)
'''


def test_balanced_sends_more_to_the_faster_consumer_across_routers(network, spawn_script) -> None:
    """
             ┌─ B ── fast consumer
        A ───┤
             └─ C ── slow consumer (20 ms a message)
    """
    routers = network({"A": [], "B": [("A", 1)], "C": [("A", 1)]})
    fast = spawn_script(SLOW_CONSUMER, routers["B"].url, "work", "0")
    slow = spawn_script(SLOW_CONSUMER, routers["C"].url, "work", "0.02")
    fast.wait_line("ready", 20)
    slow.wait_line("ready", 20)
    wait_converged(routers)
    count = 400

    async def produce() -> list[Any]:
        async with await Client.connect(routers["A"].url) as producer:
            sender = await producer.sender("work")
            futures = [await sender.send(Message(b"job"), wait=False) for _ in range(count)]
            return await asyncio.gather(*futures)

    outcomes = run_async(produce, timeout=120)
    assert all(isinstance(o, Accepted) for o in outcomes)
    fast_count = int(fast.wait_line(r"consumed (\d+)", 30).group(1))
    slow_count = int(slow.wait_line(r"consumed (\d+)", 30).group(1))
    assert fast_count + slow_count == count
    assert fast_count > 2 * slow_count, (fast_count, slow_count)


PRODUCER = r'''
import asyncio, sys, time
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Properties
from switchboard.client.connection import Client
from switchboard.io.loop import run

url, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def main():
    async with await Client.connect(url) as client:
        sender = await client.sender(address)
        pending = []
        for i in range(count):
            future = await sender.send(Message(b"m", properties=Properties(message_id=i)), wait=False)
            pending.append((i, future, time.monotonic()))
            await asyncio.sleep(0.005)
        for i, future, sent_at in pending:
            try:
                state = await future
                name = type(state).__name__
            except Exception as exc:
                name = "failed"
            print(f"outcome {i} {name} {sent_at:.3f}", flush=True)
        print("done", flush=True)

run(main)
'''

CONSUMER = r'''
import asyncio, sys
from switchboard.client.connection import Client
from switchboard.io.loop import run

url, address = sys.argv[1], sys.argv[2]

async def main():
    async with await Client.connect(url) as client:
        receiver = await client.receiver(address, credit=50)
        print("ready", flush=True)
        while True:
            try:
                item = await receiver.receive(timeout=15)
            except TimeoutError:
                break
            print(f"accepted {item.message().properties.message_id}", flush=True)
            item.accept()
        print("done", flush=True)

run(main)
'''


def test_a_router_killed_mid_stream_loses_nothing_a_sender_saw_accepted(network, spawn_script) -> None:
    """
        A ─(1)─ B ─(1)─ C       the producer on A, the consumer on C; traffic goes
        └──────(5)──────┘       through B until B is killed, then over A─C
    """
    routers = network({"A": [], "B": [("A", 1)], "C": [("B", 1), ("A", 5)]})
    consumer = spawn_script(CONSUMER, routers["C"].url, "ledger")
    consumer.wait_line("ready", 20)
    wait_converged(routers)
    producer = spawn_script(PRODUCER, routers["A"].url, "ledger", "600")
    consumer.wait_line(r"accepted 100\b", 60)
    killed_at = time.monotonic()
    routers["B"].process.proc.send_signal(signal.SIGKILL)
    routers["B"].process.expect_exit = True
    producer.wait_line("^done", 120)
    consumer.wait_line("^done", 60)

    outcomes = {}
    for line in producer.stdout.lines:
        if line.startswith("outcome "):
            _, index, name, sent_at = line.split()
            outcomes[int(index)] = (name, float(sent_at))
    accepted_by_consumer = {int(line.split()[1]) for line in consumer.stdout.lines if line.startswith("accepted ")}
    accepted_for_sender = {i for i, (name, _) in outcomes.items() if name == "Accepted"}
    assert len(outcomes) == 600
    # Nothing the sender saw accepted is lost, and nothing is reported accepted that the
    # consumer did not accept.
    assert accepted_for_sender <= accepted_by_consumer
    # Everything else was reported as failed or released, never silence.
    assert all(name in ("Accepted", "Modified", "Released", "failed") for name, _ in outcomes.values())
    # Traffic resumed over A─C.
    resumed = sorted(sent_at for i, (name, sent_at) in outcomes.items() if name == "Accepted" and sent_at > killed_at)
    assert resumed, "nothing was accepted after the kill"
    recovery = resumed[0] - killed_at
    print(f"recovery after SIGKILL of B: first message accepted {recovery:.3f} s after the kill; "
          f"{sum(1 for n, _ in outcomes.values() if n != 'Accepted')} of 600 not accepted (told so)")
    assert accepted_for_sender >= {i for i in outcomes if outcomes[i][1] > killed_at + 5}


def test_a_second_router_with_the_same_id_is_refused_on_both_sides(network, router, tmp_path) -> None:
    from network_support import router_config

    routers = network({"A": [], "B": [("A", 1)]})
    twin = router(router_config("B", [(routers["A"].inter_router_port, 1)]), listen=False)
    refused = routers["A"].process.wait_log(r"refusing connection .*router 'B' is already connected", 20)
    assert refused is not None, routers["A"].process.output()
    told = twin.wait_log(r"connection ended \(amqp:not-allowed: router 'B' is already connected", 20)
    assert told is not None, twin.output()
    wait_converged(routers)


def test_routers_connect_over_mutual_tls_with_external_and_a_router_without_a_certificate_is_kept_out(
        router, tmp_path) -> None:
    """
        B ══TLS, EXTERNAL══ A ── C (no certificate: refused)
    """
    from network_support import NetworkRouter, router_config
    from tls_support import Pki

    (tmp_path / "pki").mkdir()
    pki = Pki(tmp_path / "pki")
    ca, server = pki.ca("net"), pki.server("net")
    client = pki.client("net", "router-b")
    a_config = router_config("A", []).replace(
        'role = "inter-router"\n',
        f'role = "inter-router"\ntls_cert = "{server.cert}"\ntls_key = "{server.key}"\ntls_ca = "{ca.cert}"\n'
        'sasl_mechanisms = ["EXTERNAL"]\n',
    )
    a = router(a_config, listen=False)
    port = int(a.stdout.wait_for(r":(\d+) \(inter-router\) tls=on", 15).group(1))
    b_config = router_config("B", []) + (
        f'[[connectors]]\nhost = "127.0.0.1"\nport = {port}\ntls_ca = "{ca.cert}"\n'
        f'tls_cert = "{client.cert}"\ntls_key = "{client.key}"\nsasl_mechanism = "EXTERNAL"\n'
    )
    b = router(b_config, listen=False)
    c_config = router_config("C", []) + f'[[connectors]]\nhost = "127.0.0.1"\nport = {port}\ntls_ca = "{ca.cert}"\n'
    c = router(c_config, listen=False)
    routers = {"A": NetworkRouter("A", a, port), "B": NetworkRouter("B", b, 0)}
    wait_converged(routers)
    assert c.wait_log(r"connectors\[0\] .*(certificate required|connection ended|cannot connect)", 20) is not None, c.output()
    view = network_view(a.url)
    assert [n["router"] for n in view["neighbours"]] == ["B"]

    async def scenario() -> Any:
        async with await Client.connect(b.url) as consumer:
            receiver = await consumer.receiver("secure", credit=5)
            wait_converged(routers)
            async with await Client.connect(a.url) as producer:
                sender = await producer.sender("secure")
                outcome = await sender.send(Message(b"over tls"), wait=False)
                item = await receiver.receive(timeout=20)
                item.accept()
                return item.message().body, await outcome

    body, outcome = run_async(scenario, timeout=60)
    assert body == b"over tls" and isinstance(outcome, Accepted)


def test_a_client_given_two_routers_fails_over_and_still_reaches_a_consumer_elsewhere(network) -> None:
    """
        producer (amqp://A,B) ── A ── C ── consumer      A is killed: the producer moves
                                 └── B ─┘                to B and reaches C through it
    """

    routers = network({"A": [], "B": [], "C": [("A", 1), ("B", 1)]})
    failover_url = f"amqp://127.0.0.1:{routers['A'].process.port},127.0.0.1:{routers['B'].process.port}"

    async def scenario() -> tuple[list[Any], list[bytes], str]:
        async with await Client.connect(routers["C"].url) as consumer:
            receiver = await consumer.receiver("inventory", credit=50)
            got: list[bytes] = []

            async def drain() -> None:
                while True:
                    item = await receiver.receive(timeout=30)
                    got.append(item.message().body)
                    item.accept()

            draining = asyncio.ensure_future(drain())
            async with await Client.connect(failover_url) as producer:
                sender = await producer.sender("inventory")
                outcomes = [await sender.send(Message(b"before %d" % i)) for i in range(5)]
                routers["A"].process.proc.send_signal(signal.SIGKILL)
                routers["A"].process.expect_exit = True
                for i in range(5):
                    try:
                        outcomes.append(await sender.send(Message(b"after %d" % i)))
                    except OutcomeUnknown as exc:
                        outcomes.append(exc)
                on = producer.router
            draining.cancel()
            return outcomes, got, str(on)

    outcomes, got, on = run_async(scenario, timeout=90)
    assert str(routers["B"].process.port) in on
    bodies = [b"before %d" % i for i in range(5)] + [b"after %d" % i for i in range(5)]
    for body, outcome in zip(bodies, outcomes):
        # Accepted means a consumer took it; anything else was reported, never silent.
        assert isinstance(outcome, (Accepted, OutcomeUnknown)), (body, outcome)
        if isinstance(outcome, Accepted):
            assert body in got, body
    assert sum(isinstance(o, OutcomeUnknown) for o in outcomes) <= 1  # the one written to the dead router
    assert got.count(b"after 4") == 1


def test_a_router_connecting_to_a_client_listener_is_refused(router) -> None:
    from network_support import router_config

    a = router(router_config("A", []), listen=False)
    b = router(router_config("B", [(a.port, 1)]), listen=False)
    assert a.wait_log(r"refusing connection .*connected to a client listener", 20) is not None, a.output()
    assert b.wait_log(r"connection ended \(amqp:not-allowed: router 'B' connected to a client listener", 20) \
        is not None, b.output()
