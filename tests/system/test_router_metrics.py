"""The router's Prometheus metrics against known traffic, scraped from a real router's
admin listener and parsed with prometheus-client's own parser.

    Qpid Proton / switchboard.rpc clients ──► router(s) ◄── GET /metrics

What an operator checks: messages to a prefix show as in, out and the outcome their
consumers gave, by that prefix; what the router released (no consumer) or rejected is
counted for the prefix too; a sender left waiting for a consumer is a credit stall; RPC
calls show in a latency histogram by topic and method, counted once (at the caller's
router) even across routers; a killed neighbour's link state goes to 0.
"""

from __future__ import annotations

import signal
from typing import Any

from proton import Message

from queue_clients import QueueReceiver, QueueSender, outcome_name
from system_support import ProtonClient, ProtonThread, run_async, run_proton
from test_router_admin import admin_url, get_json, metrics, wait_for

from switchboard.client import Client
from switchboard.rpc import RPCClient, RPCServer, Target

CONFIG = """
[router]
id = "met"

[[addresses]]
prefix = "work/"
distribution = "balanced"

[admin]
port = 0
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def consumers(base: str, address: str) -> int:
    return sum(a["consumers"] for a in get_json(f"{base}/api/addresses") if a["address"] == address)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)


class RelaySender(ProtonClient):
    """Sends each (address, body) on the anonymous relay and records the outcomes."""

    def __init__(self, url: str, messages: list[tuple[str, str]]) -> None:
        super().__init__(auto_settle=True)
        self.url, self.messages = url, messages
        self.next = 0
        self.outcomes: list[str] = []

    def on_start(self, event: Any) -> None:
        event.container.create_sender(self.connect(event.container, self.url), None)

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.next < len(self.messages):
            address, body = self.messages[self.next]
            self.next += 1
            event.sender.send(Message(address=address, body=body))

    def on_settled(self, event: Any) -> None:
        self.outcomes.append(outcome_name(event.delivery))
        if len(self.outcomes) == len(self.messages):
            self.finish()


def test_deliveries_in_and_out_by_prefix_with_the_outcomes_consumers_and_the_router_gave(router) -> None:
    process = router(CONFIG)
    base = admin_url(process)
    before = metrics(base)

    # 20 accepted by a consumer.
    consumer = ProtonThread(QueueReceiver(process.url, "work/a", 20, credit=20), timeout=30).start()
    wait_for(lambda: consumers(base, "work/a") == 1, "the consumer to attach")
    sender = run_proton(QueueSender(process.url, "work/a", [f"a{i}" for i in range(20)]))
    assert len(sender.accepted) == 20 and len(consumer.join_result().received) == 20

    # 5 settled by a consumer that rejects the first 3 and releases the other 2.
    def decide(message: Any, delivery: Any) -> str:
        return "reject" if message.body < "b3" else "release"

    picky = ProtonThread(QueueReceiver(process.url, "work/b", 5, decide=decide, credit=5), timeout=30).start()
    wait_for(lambda: consumers(base, "work/b") == 1, "the consumer to attach")
    sender = run_proton(QueueSender(process.url, "work/b", [f"b{i}" for i in range(5)]))
    assert sorted(sender.outcomes.values()) == ["rejected:None"] * 3 + ["released"] * 2, sender.outcomes
    picky.join_result()

    # 4 with nobody to take them: released by the router, 2 under work/, 2 under the default prefix.
    relay = run_proton(RelaySender(process.url, [("work/nobody", "x"), ("elsewhere/x", "y")] * 2))
    assert relay.outcomes == ["released"] * 4

    after = metrics(base)
    assert delta(before, after, "switchboard_address_deliveries_in_total", prefix="work/") == 20 + 5 + 2
    assert delta(before, after, "switchboard_address_deliveries_out_total", prefix="work/") == 20 + 5
    outcomes = {(by, outcome): delta(before, after, "switchboard_address_outcomes_total", prefix="work/", by=by,
                                     outcome=outcome)
                for by in ("consumer", "router") for outcome in ("accepted", "rejected", "released", "modified")}
    assert outcomes == {
        ("consumer", "accepted"): 20, ("consumer", "rejected"): 3, ("consumer", "released"): 2,
        ("consumer", "modified"): 0, ("router", "accepted"): 0, ("router", "rejected"): 0,
        ("router", "released"): 2, ("router", "modified"): 0,
    }
    assert delta(before, after, "switchboard_address_deliveries_in_total", prefix="") == 2
    assert delta(before, after, "switchboard_address_outcomes_total", prefix="", by="router", outcome="released") == 2
    # One label per configured prefix, whatever the addresses used.
    prefixes = {dict(labels)["prefix"] for name, labels in after if name == "switchboard_address_deliveries_in_total"}
    assert prefixes == {"work/", "", "multicast/", "closest/", "rpc/", "rpc-fanout/", "notify-pools/", "notify/",
                        "(dynamic)", "(to owner)"}
    assert sample(after, "switchboard_connection_output_limit_bytes") == 1024 * 1024
    assert sample(after, "switchboard_connections_write_paused") == 0


def test_a_sender_waiting_for_a_consumer_is_a_credit_stall(router) -> None:
    process = router(CONFIG)
    base = admin_url(process)
    stalls = sample(metrics(base), "switchboard_credit_stalls_total")

    sender = ProtonThread(QueueSender(process.url, "work/late", [f"m{i}" for i in range(10)]), timeout=30).start()
    wait_for(lambda: sample(metrics(base), "switchboard_senders_blocked") == 1, "the sender to wait for credit")
    assert sample(metrics(base), "switchboard_credit_stalls_total") >= stalls + 1

    consumer = ProtonThread(QueueReceiver(process.url, "work/late", 10), timeout=30).start()
    assert len(consumer.join_result().received) == 10
    assert len(sender.join_result().accepted) == 10
    wait_for(lambda: sample(metrics(base), "switchboard_senders_blocked") == 0, "the sender to go (no longer waiting)")


class Calculator:
    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        return a + b

    def ping(self, ctxt: dict[str, Any]) -> str:
        return "pong"

    def note(self, ctxt: dict[str, Any], value: Any) -> None:
        pass


def rpc_calls(server_url: str, client_url: str, topic: str, calls: list[str]) -> None:
    """Serve ``topic`` on ``server_url``; from ``client_url`` make ``calls`` and one cast."""

    async def scenario() -> None:
        async with await Client.connect(server_url) as served:
            server = RPCServer(served, Target(topic=topic, server="s1"), [Calculator()])
            await server.start()
            async with await Client.connect(client_url) as client:
                rpc = RPCClient(client, Target(topic=topic), timeout=20)
                for method in calls:
                    assert await (rpc.call({}, "add", a=1, b=2) if method == "add" else rpc.call({}, method)) in (3, "pong")
                await rpc.cast({}, "note", value=1)  # a cast is not a call: not timed
            await server.stop()
            await server.wait()

    run_async(scenario, timeout=60)


def rpc_series(samples: Samples, topic: str) -> dict[tuple[str, str, str], float]:
    """(method, sample suffix, le) -> value of the RPC histogram for ``topic``."""
    series = {}
    for (name, labels), value in samples.items():
        labels_ = dict(labels)
        if name.startswith("switchboard_rpc_call_duration_seconds") and labels_.get("topic") == topic:
            assert labels_["exchange"] == "default"
            series[(labels_["method"], name.rsplit("_", 1)[-1], labels_.get("le", ""))] = value
    return series


def test_rpc_calls_show_in_the_latency_histogram_by_topic_and_method(router) -> None:
    process = router(CONFIG)
    base = admin_url(process)
    rpc_calls(process.url, process.url, "calc", ["add", "add", "add", "ping", "ping"])

    series = rpc_series(metrics(base), "calc")
    assert {(method, suffix) for method, suffix, _ in series if suffix == "count"} == {("add", "count"), ("ping", "count")}
    assert series[("add", "count", "")] == 3 and series[("ping", "count", "")] == 2
    assert series[("add", "bucket", "+Inf")] == 3
    assert 0 < series[("add", "sum", "")] < 20
    add_buckets = sorted((float(le), value) for (method, suffix, le), value in series.items()
                         if method == "add" and suffix == "bucket")
    counts = [value for _, value in add_buckets]
    assert counts == sorted(counts)  # cumulative


def test_on_three_routers_traffic_and_calls_are_counted_where_they_enter_and_a_lost_neighbour_goes_to_0(network) -> None:
    routers = network({"A": [], "B": [("A", 1)], "C": [("B", 1)]}, extra="[admin]\nport = 0\n")
    base = {name: admin_url(r.process) for name, r in routers.items()}
    before = {name: metrics(url) for name, url in base.items()}
    assert sample(before["B"], "switchboard_neighbour_up", neighbour="A") == 1
    assert sample(before["B"], "switchboard_neighbour_up", neighbour="C") == 1

    consumer = ProtonThread(QueueReceiver(routers["C"].url, "net/work", 10, credit=10), timeout=60).start()
    wait_for(lambda: [a["remote_routers"] for a in get_json(f"{base['A']}/api/addresses")
                      if a["address"] == "net/work"] == [["C"]], "A to learn of the consumer on C")
    sender = ProtonThread(QueueSender(routers["A"].url, "net/work", [f"m{i}" for i in range(10)]), timeout=60).start()
    assert len(sender.join_result().accepted) == 10
    assert len(consumer.join_result().received) == 10
    rpc_calls(routers["C"].url, routers["A"].url, "far", ["ping", "ping"])

    after = {name: metrics(url) for name, url in base.items()}
    for name in ("A", "B", "C"):  # each router on the way saw them go out and be accepted
        assert delta(before[name], after[name], "switchboard_address_deliveries_out_total", prefix="") == 10, name
        assert delta(before[name], after[name], "switchboard_address_outcomes_total", prefix="", by="consumer",
                     outcome="accepted") == 10, name
    # Timed once, at the caller's router.
    assert rpc_series(after["A"], "far")[("ping", "count", "")] == 2
    assert rpc_series(after["B"], "far") == {} and rpc_series(after["C"], "far") == {}

    routers["C"].process.proc.send_signal(signal.SIGKILL)
    routers["C"].process.expect_exit = True
    wait_for(lambda: sample(metrics(base["B"]), "switchboard_neighbour_up", neighbour="C") == 0
             and ("switchboard_neighbour_up", (("neighbour", "C"),)) in metrics(base["B"]), "B to see C gone")
    samples = metrics(base["B"])
    assert sample(samples, "switchboard_neighbour_up", neighbour="A") == 1
    assert sample(samples, "switchboard_connections", role="inter-router") == 1
    wait_for(lambda: sample(metrics(base["A"]), "switchboard_routers_reachable") == 1, "A to lose its route to C")
