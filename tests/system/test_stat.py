"""``switchboard stat`` and asking any router of a network about another.

    Qpid Proton clients ──► router(s) ◄── switchboard stat --router URL [--at ID] [--json]
                                      ◄── HTTP /api/VIEW?router=ID

What an operator checks: every view of one router shows the traffic a client made (its
connection by container id, its links with the credit and unsettled count it left, its
address with a consumer, a queue's depth), in JSON for scripts and in tables; on a line
of three routers A–B–C, C's views asked at A (``--at C`` and ``?router=C``) are C's;
an unknown router id is an error that says so at once (not a timeout); a router that
does not answer gives a bounded answer naming it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from proton import Message

from queue_clients import QueueSender
from system_support import ProtonClient, ProtonThread, run_proton, switchboard_command

CONFIG = """
[router]
id = "solo"

[[addresses]]
prefix = "queue/"
distribution = "queue"
"""

_ADMIN = re.compile(r"admin on (http://\S+)")


def stat(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*switchboard_command(), "stat", *args, "--timeout", str(timeout)],
                          capture_output=True, text=True, timeout=timeout + 20)


def stat_json(*args: str) -> Any:
    done = stat(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def at_once(calls: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """Run ``{key: (function, *args)}`` side by side (each a ``switchboard`` process)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {key: pool.submit(call[0], *call[1:]) for key, call in calls.items()}
        return {key: future.result() for key, future in futures.items()}


def http(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class HeldMessages(ProtonClient):
    """On one connection: a receiver on ``address`` with ``credit``, and a sender of
    ``count`` messages to it; the receiver holds them all unsettled until ``let_go``."""

    def __init__(self, url: str, address: str, count: int, credit: int) -> None:
        super().__init__(auto_accept=False, auto_settle=True, prefetch=0)
        self.url, self.address, self.count, self.credit = url, address, count, credit
        self.sent = 0
        self.held: list[Any] = []
        self.accepted = 0
        self.ready = threading.Event()
        self.let_go = threading.Event()

    def on_start(self, event: Any) -> None:
        connection = self.connect(event.container, self.url)
        receiver = event.container.create_receiver(connection, self.address)
        receiver.flow(self.credit)
        if self.count == 0:
            event.container.schedule(0.02, self)
        else:
            event.container.create_sender(connection, self.address)

    def on_link_opened(self, event: Any) -> None:
        if self.count == 0 and event.receiver is not None:
            self.ready.set()

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.sent < self.count:
            event.sender.send(Message(body="x" * 1000))
            self.sent += 1

    def on_message(self, event: Any) -> None:
        self.held.append(event.delivery)
        if len(self.held) == self.count:
            self.ready.set()
            event.container.schedule(0.02, self)

    def on_timer_task(self, event: Any) -> None:
        # Proton's reactor is not to be touched from another thread: look again on its own timer.
        if not self.let_go.is_set():
            event.container.schedule(0.02, self)
            return
        for delivery in self.held:
            self.accept(delivery)
        if self.count == 0:
            self.finish()

    def on_accepted(self, event: Any) -> None:
        self.accepted += 1
        if self.accepted == self.count:
            self.finish()


def test_every_view_of_one_router_shows_the_traffic(router) -> None:
    process = router(CONFIG)
    assert run_proton(QueueSender(process.url, "queue/jobs", ["a", "b"])).accepted == ["a", "b"]
    traffic = HeldMessages(process.url, "stat/a", count=3, credit=10)
    thread = ProtonThread(traffic, timeout=60, container_id="stat-probe").start()
    assert traffic.ready.wait(30), traffic.describe()
    try:
        views = at_once({what: (stat_json, what, "--router", process.url)
                         for what in ("connections", "links", "addresses", "queues", "network")})
        tables = at_once({what: (stat, what, "--router", process.url)
                          for what in ("connections", "links", "addresses", "queues")})
    finally:
        traffic.let_go.set()
    thread.join_result()

    (probe,) = [c for c in views["connections"] if c["container"] == "stat-probe"]
    assert probe["role"] == "normal" and probe["links_in"] == 1 and probe["links_out"] == 1
    assert probe["bytes_in"] > 3000 and probe["bytes_out"] > 3000  # raw numbers in JSON
    links = {row["direction"]: row for row in views["links"] if row["connection"] == probe["connection"]}
    assert links["out"]["address"] == "stat/a" and links["out"]["credit"] == 7 and links["out"]["unsettled"] == 3
    assert links["in"]["delivered"] == 3 and links["in"]["unsettled"] == 3  # the sender waits for the outcomes
    (address,) = [a for a in views["addresses"] if a["address"] == "stat/a"]
    assert address["consumers"] == 1 and address["senders"] == 1 and address["distribution"] == "balanced"
    assert address["messages_in"] == 3 and address["messages_out"] == 3
    (queue,) = [q for q in views["queues"] if q["name"] == "queue/jobs"]
    assert queue["depth"] == 2 and queue["consumers"] == 0
    assert views["network"]["router"] == "solo" and views["network"]["next_hops"] == {}
    # A router answers its own id as its own $management.
    assert stat_json("network", "--router", process.url, "--at", "solo")["router"] == "solo"

    for done in tables.values():
        assert done.returncode == 0, done.stderr
    (row,) = [line for line in tables["connections"].stdout.splitlines() if "stat-probe" in line]
    assert probe["connection"] in row and re.search(r"\d(\.\d)? KiB", row), row  # bytes for people
    assert "CREDIT" in tables["links"].stdout and "UNSETTLED" in tables["links"].stdout
    (row,) = [line for line in tables["links"].stdout.splitlines() if "stat/a" in line and " out " in line]
    assert row.split()[3:5] == ["7", "3"], row
    assert re.search(r"stat/a\s+balanced\s+1\s+1", tables["addresses"].stdout), tables["addresses"].stdout
    assert re.search(r"queue/jobs\s+2\s", tables["queues"].stdout), tables["queues"].stdout

    # The older commands print the same tables.
    listed = subprocess.run([*switchboard_command(), "queues", "list", "--router", process.url],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "DEPTH" in listed.stdout and "queue/jobs" in listed.stdout, listed


def test_an_unreachable_router_is_a_clear_error(router) -> None:
    process = router(CONFIG)
    process.terminate()
    process.expect_exit = True
    done = stat("connections", "--router", process.url, timeout=5)
    assert done.returncode != 0 and "cannot connect" in done.stderr, done.stderr


def test_c_is_asked_through_a_on_a_line_of_three_routers(network) -> None:
    routers = network({"A": [], "B": [("A", 1)], "C": [("B", 1)]}, extra="[admin]\nport = 0\n")
    admin = {}
    for name, r in routers.items():
        match = r.process.stdout.wait_for(_ADMIN, 15)
        assert match is not None, r.process.output()
        admin[name] = match.group(1)
    a, c = routers["A"].url, routers["C"].url

    traffic = HeldMessages(c, "stat/c", count=0, credit=5)
    thread = ProtonThread(traffic, timeout=60, container_id="probe-at-c").start()
    assert traffic.ready.wait(30), traffic.describe()
    try:
        via_a = at_once({what: (stat_json, what, "--router", a, "--at", "C")
                         for what in ("connections", "links", "addresses", "queues", "network")})
        table = stat("connections", "--router", a, "--at", "C")
        http_connections = http(f"{admin['A']}/api/connections?router=C")
        http_addresses = http(f"{admin['A']}/api/addresses?router=C")
        http_links = http(f"{admin['A']}/api/links?router=C")
        http_network = http(f"{admin['A']}/api/network?router=C")
        http_queues = http(f"{admin['A']}/api/queues?router=C")
        own = http(f"{admin['A']}/api/network?router=A")
        direct = stat_json("addresses", "--router", c)
    finally:
        traffic.let_go.set()
    thread.join_result()

    assert [c["container"] for c in via_a["connections"] if c["container"] == "probe-at-c"] == ["probe-at-c"]
    assert {c["router"] for c in via_a["connections"] if c["role"] == "inter-router"} == {"B"}
    (address,) = [row for row in via_a["addresses"] if row["address"] == "stat/c"]
    assert address["consumers"] == 1 and address == [row for row in direct if row["address"] == "stat/c"][0]
    (link,) = [row for row in via_a["links"] if row["address"] == "stat/c" and row["neighbour"] is None]
    assert link["direction"] == "out" and link["credit"] == 5
    assert via_a["network"]["router"] == "C" and via_a["network"]["next_hops"] == {"A": "B", "B": "B"}
    assert isinstance(via_a["queues"], list)
    assert table.returncode == 0 and "probe-at-c" in table.stdout, table

    status, body = http_connections
    assert status == 200 and "probe-at-c" in [row["container"] for row in body], body
    status, body = http_addresses
    assert status == 200 and [row["consumers"] for row in body if row["address"] == "stat/c"] == [1], body
    assert http_links[0] == 200 and http_queues[0] == 200
    assert http_network == (200, http_network[1]) and http_network[1]["router"] == "C"
    assert own[0] == 200 and own[1]["router"] == "A"

    # An unknown router id: told at once, by the router, naming it (a timeout says "no answer").
    done = stat("links", "--router", a, "--at", "Z", timeout=60)
    assert done.returncode != 0 and "'Z' is not in the network" in done.stderr, done.stderr
    status, body = http(f"{admin['A']}/api/links?router=Z")
    assert status == 404 and "'Z'" in body["description"], body
    status, body = http(f"{admin['A']}/api/links?router=C&timeout=forever")
    assert status == 400 and "timeout" in body["description"], body

    # C stops answering (SIGSTOP; the network has not noticed yet): both ways of asking
    # end at their bound, saying who did not answer.
    routers["C"].process.signal(signal.SIGSTOP)
    try:
        cli = subprocess.Popen([*switchboard_command(), "stat", "links", "--router", a, "--at", "C", "--timeout", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        status, body = http(f"{admin['A']}/api/connections?router=C&timeout=1")
        _, stderr = cli.communicate(timeout=30)
    finally:
        routers["C"].process.signal(signal.SIGCONT)
    assert status == 504 and "'C' did not answer" in body["description"], (status, body)
    assert cli.returncode != 0 and "no answer from router 'C'" in stderr, stderr


class SteadyTraffic(ProtonClient):
    """A sender of one message every 20 ms to ``address`` and a receiver of them, on one
    connection: it sends until ``pause`` is set (or ``limit`` messages), and keeps its links
    until ``stop`` is set."""

    def __init__(self, url: str, address: str, limit: int = 1000) -> None:
        super().__init__()
        self.url, self.address, self.limit = url, address, limit
        self.sent = self.received = 0
        self.sender: Any = None
        self.pause = threading.Event()
        self.stop = threading.Event()

    def on_start(self, event: Any) -> None:
        connection = self.connect(event.container, self.url)
        event.container.create_receiver(connection, self.address)
        self.sender = event.container.create_sender(connection, self.address)
        event.container.schedule(0.02, self)

    def on_timer_task(self, event: Any) -> None:
        if self.stop.is_set():
            self.finish()
            return
        if self.sender.credit and not self.pause.is_set() and self.sent < self.limit:
            self.sender.send(Message(body="tick"))
            self.sent += 1
        event.container.schedule(0.02, self)

    def on_message(self, event: Any) -> None:
        self.received += 1


def test_an_address_shows_its_message_rates_while_traffic_flows_and_zero_after(router) -> None:
    from queue_clients import management

    process = router(CONFIG)
    traffic = SteadyTraffic(process.url, "stat/rate")
    thread = ProtonThread(traffic, timeout=60).start()

    def row() -> dict[str, Any] | None:
        rows = [a for a in management(process.url, "QUERY", "addresses") if a["address"] == "stat/rate"]
        return rows[0] if rows else None

    try:
        deadline = time.monotonic() + 15
        flowing = row()
        while not (flowing and flowing["rate_in"] > 0 and flowing["rate_out"] > 0) and time.monotonic() < deadline:
            traffic.stop.wait(0.2)
            flowing = row()
        assert flowing and flowing["rate_in"] > 0 and flowing["rate_out"] > 0, flowing
        # About 50 a second are sent; the rate is of this traffic, not a made-up number.
        assert flowing["rate_in"] < 200 and flowing["rate_out"] < 200, flowing
        assert 0 < flowing["messages_in"] <= traffic.sent + 1

        traffic.pause.set()
        deadline = time.monotonic() + 10
        idle = row()
        while idle and (idle["rate_in"] > 0 or idle["rate_out"] > 0) and time.monotonic() < deadline:
            traffic.stop.wait(0.2)  # the rates fall at the router's next once-a-second tick
            idle = row()
        assert idle and idle["rate_in"] == 0 and idle["rate_out"] == 0, idle
        assert idle["messages_in"] == traffic.sent == idle["messages_out"], (idle, traffic.sent)
    finally:
        traffic.stop.set()
    thread.join_result()
