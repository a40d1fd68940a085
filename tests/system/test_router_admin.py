"""The admin listener of a real router process: JSON views, Prometheus metrics, health.

    Qpid Proton client ──► router ◄── HTTP (urllib): /api/..., /metrics, /healthz, /readyz

What an operator checks: each view shows the traffic a client made (its connection,
its links with their credit, unsettled and delivered counts, its address, a queue's
depth); the same rows come back over ``$management``; the metrics rise by what was sent;
``/readyz`` turns 503 when a shutdown begins while ``/healthz`` stays 200; an admin
listener beyond loopback without a token is refused at start, and with a token every
view needs it.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from proton import Message

from queue_clients import QueueReceiver, QueueSender, management
from system_support import HOST, ProtonClient, ProtonThread, run_async, run_proton, start_router_process
from tls_support import Pki
from switchboard.client import Client
from switchboard.io.tls import client_context
from switchboard.router.config import ADMIN_PORT

_ADMIN = re.compile(r"admin on (http://\S+)")
TOKEN = "0123456789abcdef0123456789abcdef-admin-token"

CONFIG = """
[router]
id = "adm"

[[addresses]]
prefix = "queue/"
distribution = "queue"

[admin]
port = 0

[limits]
shutdown_timeout = 30.0
"""


def admin_url(process: Any) -> str:
    match = process.stdout.wait_for(_ADMIN, 15)
    assert match is not None, process.output()
    return match.group(1)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    status, _, body = get(url, headers)
    assert status == 200, (url, status, body)
    return json.loads(body)


def metrics(base: str, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, parsed by prometheus-client's own parser."""
    status, response_headers, body = get(f"{base}/metrics", headers)
    assert status == 200, (status, body)
    assert response_headers["Content-Type"].startswith("text/plain"), response_headers
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class HeldTraffic(ProtonClient):
    """Sends ``count`` messages to ``address`` and receives them on one connection,
    accepting all but the last, which it holds unsettled until ``let_go`` is set.
    ``ready`` is set once the rest are settled at the sender; then it stays connected."""

    RECEIVER_SPARE_CREDIT = 5

    def __init__(self, url: str, address: str, count: int) -> None:
        super().__init__(auto_accept=False, auto_settle=True, prefetch=0)
        self.url, self.address, self.count = url, address, count
        self.sent = self.received = self.accepted = 0
        self.held: Any = None
        self.ready = threading.Event()
        self.let_go = threading.Event()
        self.outcome_of_held: str | None = None

    def on_start(self, event: Any) -> None:
        self.container = event.container
        connection = self.connect(event.container, self.url)
        receiver = event.container.create_receiver(connection, self.address)
        receiver.flow(self.count + self.RECEIVER_SPARE_CREDIT)
        event.container.create_sender(connection, self.address)

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.sent < self.count:
            event.sender.send(Message(body=f"message {self.sent}" + "x" * 100))
            self.sent += 1

    def on_message(self, event: Any) -> None:
        self.received += 1
        if self.received < self.count:
            self.accept(event.delivery)
        else:
            self.held = event.delivery
            self._check()

    def on_accepted(self, event: Any) -> None:
        self.accepted += 1
        if self.accepted == self.count:
            self.outcome_of_held = "accepted"
            self.finish()
        else:
            self._check()

    def _check(self) -> None:
        if self.held is not None and self.accepted == self.count - 1 and not self.ready.is_set():
            self.ready.set()
            self._wait_for_let_go()

    def _wait_for_let_go(self) -> None:
        # Proton's reactor is not to be touched from another thread: look again on its own timer.
        outer = self

        class Look:
            def on_timer_task(self, event: Any) -> None:
                if outer.let_go.is_set():
                    outer.accept(outer.held)
                else:
                    event.container.schedule(0.02, self)

        self.container.schedule(0.02, Look())


def start_router(tmp_path: Any, config: str = CONFIG, args: tuple[str, ...] = ()) -> Any:
    process = start_router_process(tmp_path, config, args=args)
    process.wait_listening()
    return process


def test_every_view_shows_the_traffic_and_metrics_rise_by_what_was_sent(router) -> None:
    process = router(CONFIG)
    base = admin_url(process)
    before = metrics(base)

    traffic = HeldTraffic(process.url, "work/a", 100)
    thread = ProtonThread(traffic, timeout=60, container_id="admin-viewer").start()
    assert traffic.ready.wait(30), traffic.describe()
    try:
        after = metrics(base)
        connections = get_json(f"{base}/api/connections")
        links = get_json(f"{base}/api/links")
        addresses = get_json(f"{base}/api/addresses")
        amqp_links = management(process.url, "QUERY", "links")
        amqp_addresses = management(process.url, "QUERY", "addresses")
        amqp_connections = management(process.url, "QUERY", "connections")
    finally:
        traffic.let_go.set()
    thread.join_result()
    assert traffic.outcome_of_held == "accepted"

    def value(name: str, **labels: str) -> float:
        return after[(name, tuple(sorted(labels.items())))] - before.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("switchboard_deliveries_received_total") == 100
    assert value("switchboard_deliveries_forwarded_total") == 100
    assert value("switchboard_connections_opened_total") == 1
    assert after[("switchboard_unsettled_deliveries", ())] == 1  # the one the receiver holds
    assert after[("switchboard_connections", (("role", "normal"),))] == 1
    assert after[("switchboard_links", (("direction", "in"),))] == 1
    assert after[("switchboard_links", (("direction", "out"),))] == 1
    assert after[("switchboard_ready", ())] == 1
    assert after[("switchboard_memory_used_bytes", ())] > 0  # the held delivery counts
    assert after[("switchboard_router_info", (("router_id", "adm"), ("version", after_version(after))))] == 1

    (mine,) = [c for c in connections if c["container"] == "admin-viewer"]
    assert mine["role"] == "normal" and mine["tls"] is None and mine["router"] is None
    assert mine["links_in"] == 1 and mine["links_out"] == 1
    assert mine["bytes_in"] > 100 * 100 and mine["bytes_out"] > 100 * 100
    assert mine["age_seconds"] >= 0
    rows = {row["direction"]: row for row in links if row["connection"] == mine["connection"]}
    assert rows["in"]["address"] == "work/a" and rows["out"]["address"] == "work/a"
    assert rows["in"]["delivered"] == 100 and rows["out"]["delivered"] == 100
    assert rows["in"]["unsettled"] == 1 and rows["out"]["unsettled"] == 1
    assert rows["out"]["credit"] == HeldTraffic.RECEIVER_SPARE_CREDIT
    (work,) = [a for a in addresses if a["address"] == "work/a"]
    assert work["distribution"] == "balanced" and work["consumers"] == 1 and work["senders"] == 1
    assert work["remote_routers"] == []

    # $management answers from the same views: the same rows for this connection and address.
    assert [row for row in amqp_links if row["connection"] == mine["connection"]] == \
        [row for row in links if row["connection"] == mine["connection"]]
    assert [a for a in amqp_addresses if a["address"] == "work/a"] == [work]
    (amqp_mine,) = [c for c in amqp_connections if c["container"] == "admin-viewer"]
    assert {k: v for k, v in amqp_mine.items() if k not in ("age_seconds", "bytes_in", "bytes_out")} == \
        {k: v for k, v in mine.items() if k not in ("age_seconds", "bytes_in", "bytes_out")}

    # Gone from the views once the client has closed (the router answered its close, so
    # it had forgotten the connection before the client's container could end).
    assert not [c for c in get_json(f"{base}/api/connections") if c["container"] == "admin-viewer"]
    assert not [row for row in get_json(f"{base}/api/links") if row["connection"] == mine["connection"]]


def test_scrapes_during_a_flow_see_the_counters_climb_to_what_was_sent(router) -> None:
    process = router(CONFIG)
    base = admin_url(process)
    before = metrics(base)[("switchboard_deliveries_received_total", ())]
    consumer = ProtonThread(QueueReceiver(process.url, "flow/a", 2000, credit=200), timeout=90).start()
    sender = ProtonThread(QueueSender(process.url, "flow/a", [f"m{i}" for i in range(2000)]), timeout=90).start()
    seen = []
    for _ in range(10_000):  # bounded; the flow ends long before
        seen.append(metrics(base)[("switchboard_deliveries_received_total", ())] - before)
        if seen[-1] >= 2000:
            break
    assert len(sender.join_result().accepted) == 2000
    assert len(consumer.join_result().received) == 2000
    assert seen == sorted(seen) and seen[-1] == 2000, seen
    assert metrics(base)[("switchboard_unsettled_deliveries", ())] == 0


def after_version(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> str:
    (labels,) = [dict(labels) for name, labels in samples if name == "switchboard_router_info"]
    return labels["version"]


def test_queues_view_and_metrics_show_depth_bytes_and_oldest_age(router) -> None:
    process = router(CONFIG)
    base = admin_url(process)
    sender = run_proton(QueueSender(process.url, "queue/jobs", ["a", "b", "c"]))
    assert sender.accepted == ["a", "b", "c"]

    (row,) = [q for q in get_json(f"{base}/api/queues") if q["name"] == "queue/jobs"]
    assert row["depth"] == 3 and row["bytes"] > 0 and row["consumers"] == 0
    assert row["oldest_age_seconds"] is not None and row["oldest_age_seconds"] >= 0
    assert management(process.url, "QUERY", "queues")[0]["depth"] == 3
    samples = metrics(base)
    assert samples[("switchboard_queue_messages", (("queue", "queue/jobs"),))] == 3
    assert samples[("switchboard_queue_bytes", (("queue", "queue/jobs"),))] == row["bytes"]
    assert samples[("switchboard_queue_consumers", (("queue", "queue/jobs"),))] == 0


def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` (which asks a router) until it holds, bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # between two questions to the router, not instead of one


def test_three_routers_in_a_line_show_their_links_and_the_traffic_through_the_middle(network) -> None:
    routers = network({"A": [], "B": [("A", 3)], "C": [("B", 1)]}, extra="[admin]\nport = 0\n")
    base = {name: admin_url(r.process) for name, r in routers.items()}
    view = get_json(f"{base['A']}/api/network")
    assert view["router"] == "A" and view["next_hops"] == {"B": "B", "C": "B"} and view["costs"] == {"B": 3, "C": 4}
    (neighbour,) = view["neighbours"]
    assert neighbour["router"] == "B" and neighbour["up"] is True and neighbour["cost"] == 3
    middle = metrics(base["B"])
    assert middle[("switchboard_neighbour_up", (("neighbour", "A"),))] == 1
    assert middle[("switchboard_neighbour_up", (("neighbour", "C"),))] == 1
    assert middle[("switchboard_neighbour_cost", (("neighbour", "A"),))] == 3
    assert middle[("switchboard_connections", (("role", "inter-router"),))] == 2
    assert middle[("switchboard_routers_reachable", ())] == 2
    assert {c["router"] for c in get_json(f"{base['B']}/api/connections") if c["role"] == "inter-router"} == {"A", "C"}

    consumer = ProtonThread(QueueReceiver(routers["C"].url, "line/work", 50, credit=50), timeout=60).start()
    wait_for(lambda: [a["remote_routers"] for a in get_json(f"{base['A']}/api/addresses")
                      if a["address"] == "line/work"] == [["C"]], "A to learn of the consumer on C")
    sender = run_proton(QueueSender(routers["A"].url, "line/work", [f"m{i}" for i in range(50)]), timeout=60)
    assert sorted(sender.accepted) == sorted(f"m{i}" for i in range(50))
    assert len(consumer.join_result().received) == 50

    after = metrics(base["B"])
    passed = {name: after[(name, ())] - middle[(name, ())]
              for name in ("switchboard_deliveries_received_total", "switchboard_deliveries_forwarded_total")}
    assert passed == {"switchboard_deliveries_received_total": 50, "switchboard_deliveries_forwarded_total": 50}
    # Counted per neighbour since its connection opened, the address's links gone or not.
    through = {n["router"]: (n["delivered_in"], n["delivered_out"]) for n in get_json(f"{base['B']}/api/network")["neighbours"]}
    assert through == {"A": (50, 0), "C": (0, 50)}


def test_a_tls_connection_shows_its_protocol_version_and_cipher(router, tmp_path) -> None:
    (tmp_path / "pki").mkdir()
    pki = Pki(tmp_path / "pki")
    server = pki.server("A")
    process = router(
        f"[[listeners]]\nhost = '{HOST}'\nport = 0\ntls_cert = '{server.cert}'\ntls_key = '{server.key}'\n"
        "[admin]\nport = 0\n",
        listen=False,
    )
    base = admin_url(process)

    async def look() -> list[dict[str, Any]]:
        url = f"amqps://{HOST}:{process.port}"
        async with await Client.connect(url, ssl_context=client_context(cafile=pki.ca("A").cert), timeout=10):
            return await asyncio.to_thread(get_json, f"{base}/api/connections")

    (row,) = run_async(look)
    assert row["tls"]["version"] in ("TLSv1.2", "TLSv1.3") and row["tls"]["cipher"], row
    assert row["user"] == "anonymous" and row["role"] == "normal"


def test_readyz_turns_503_when_a_shutdown_begins_and_healthz_stays_200(router) -> None:
    process = router(CONFIG)
    base = admin_url(process)
    assert get_json(f"{base}/readyz")["status"] == "ready"
    traffic = HeldTraffic(process.url, "work/b", 3)
    thread = ProtonThread(traffic, timeout=60).start()
    assert traffic.ready.wait(30), traffic.describe()
    try:
        # A delivery is out with its consumer: the shutdown waits for it (up to 30 s).
        process.expect_exit = True
        process.signal(signal.SIGTERM)
        assert process.wait_log("shutting down", 15), process.output()
        status, _, body = get(f"{base}/readyz")
        assert status == 503, body
        assert json.loads(body) == {"status": "not ready", "reason": "shutting down", "router": "adm"}
        assert get(f"{base}/healthz")[0] == 200
    finally:
        traffic.let_go.set()
    thread.join_result()
    assert process.proc.wait(20) == 0


def test_a_non_loopback_admin_listener_without_a_token_is_refused_at_start(tmp_path) -> None:
    for config, args, key in (
        (CONFIG, ("--admin", "0.0.0.0:0"), "--admin 0.0.0.0:0"),
        (CONFIG.replace("port = 0\n", 'host = "0.0.0.0"\nport = 0\n'), (), "admin.host"),
    ):
        process = start_router_process(tmp_path, config, args=args)
        assert process.proc.wait(20) == 1
        process.stderr.join(5)
        assert f"configuration error: {key}: the admin listener on 0.0.0.0" in process.stderr.text()
        assert "needs authentication; set admin.token_file" in process.stderr.text()
        assert "admin on" not in process.stdout.text()


def test_a_configured_admin_port_in_use_stops_the_router_naming_the_key(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_router_process(tmp_path, CONFIG.replace("port = 0\n", f"port = {port}\n"))
        assert process.proc.wait(20) == 1
    process.stderr.join(5)
    assert f"cannot start: admin.port: cannot listen on {HOST}:{port}" in process.stderr.text()


def test_the_default_port_taken_leaves_the_router_running_without_an_admin_listener(tmp_path) -> None:
    with socket.socket() as taken:
        try:
            taken.bind((HOST, ADMIN_PORT))
        except OSError:
            pytest.skip(f"port {ADMIN_PORT} is in use on this machine")
        taken.listen()
        process = start_router(tmp_path, CONFIG.replace("port = 0\n", ""))
        try:
            assert process.wait_log(f"admin listener not started: {HOST}:{ADMIN_PORT} is in use", 10), process.output()
            assert management(process.url, "QUERY", "network")["router"] == "adm"  # AMQP goes on
        finally:
            assert process.terminate() == 0
    assert "admin on" not in process.stdout.text()


def test_with_a_token_every_view_needs_it_and_health_does_not(router, tmp_path) -> None:
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    process = router(CONFIG.replace("port = 0\n", 'port = 0\ntoken_file = "admin.token"\n'))
    base = admin_url(process)
    for path in ("/api/network", "/api/connections", "/api/links", "/api/addresses", "/api/queues", "/metrics"):
        status, headers, body = get(base + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic"), headers
        assert json.loads(body)["error"] == "unauthorized"
        assert get(base + path, {"Authorization": "Bearer " + TOKEN[:-1] + "X"})[0] == 401
        assert get(base + path, {"Authorization": "Bearer " + TOKEN})[0] == 200, path
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert get_json(f"{base}/api/network", {"Authorization": "Basic " + basic})["router"] == "adm"
    wrong = base64.b64encode(b"anyone:guess").decode()
    assert get(f"{base}/api/network", {"Authorization": "Basic " + wrong})[0] == 401
    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/readyz")[0] == 200
    assert metrics(base, {"Authorization": "Bearer " + TOKEN})[("switchboard_ready", ())] == 1
