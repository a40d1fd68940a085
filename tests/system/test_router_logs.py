"""The router's log, as an operator reads it from a real router's stderr.

    Qpid Proton client ──► router ──► stderr (text or JSON lines)

What an operator checks: a connection's open and close lines carry one id, the id the
``connections`` view shows while it is open; in JSON every line parses and carries the
event's fields; a level set for one logger (links at debug) shows its lines while the rest
stay at info; a neighbour that dies is logged as down, by its router id.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from typing import Any

from proton import Message

from queue_clients import management
from system_support import ProtonClient, ProtonThread, start_router_process

ADDRESS = "logs/echo"


class HeldOpen(ProtonClient):
    """Sends ``count`` messages to itself, then holds its connection open until told."""

    def __init__(self, url: str, count: int) -> None:
        super().__init__()
        self.url, self.count = url, count
        self.sent = self.received = 0
        self.ready = threading.Event()
        self.let_go = threading.Event()

    def on_start(self, event: Any) -> None:
        connection = self.connect(event.container, self.url)
        event.container.create_receiver(connection, ADDRESS)
        event.container.create_sender(connection, ADDRESS)

    def on_sendable(self, event: Any) -> None:
        while event.sender.credit and self.sent < self.count:
            event.sender.send(Message(body=f"message {self.sent}"))
            self.sent += 1

    def on_message(self, event: Any) -> None:
        self.received += 1
        if self.received == self.count:
            self.ready.set()
            outer = self

            class Look:  # Proton's reactor is touched only from its own thread
                def on_timer_task(self, event: Any) -> None:
                    if outer.let_go.is_set():
                        outer.finish()
                    else:
                        event.container.schedule(0.02, self)

            event.container.schedule(0.02, Look())


def hold_open(url: str, container_id: str, count: int) -> tuple[HeldOpen, ProtonThread]:
    client = HeldOpen(url, count)
    thread = ProtonThread(client, timeout=30, container_id=container_id).start()
    assert client.ready.wait(20), client.describe()
    return client, thread


def connection_id(url: str, container_id: str) -> str:
    (row,) = [c for c in management(url, "QUERY", "connections") if c["container"] == container_id]
    return row["id"]


def test_a_connection_is_logged_open_and_closed_under_the_id_its_view_row_shows(router) -> None:
    r = router()
    client, thread = hold_open(r.url, "log-text", 3)
    try:
        shown = connection_id(r.url, "log-text")
    finally:
        client.let_go.set()
    thread.join_result()

    opened = r.wait_log(r"INFO switchboard\.router\.connections: connection (c\d+) opened: peer 127\.0\.0\.1:\d+,"
                        r" container log-text, user anonymous, no TLS, role normal", 10)
    assert opened is not None, r.output()
    assert opened.group(1) == shown
    closed = r.wait_log(rf"connection {shown} closed by peer \(peer 127\.0\.0\.1:\d+, [\d.]+ s, (\d+) bytes in,"
                        rf" (\d+) out, 3 deliveries in, 3 out\)", 10)
    assert closed is not None, r.output()
    assert int(closed.group(1)) > 0 and int(closed.group(2)) > 0
    assert len(re.findall(rf"connection {shown} ", r.stderr.text())) == 2, r.output()  # no lines at info per message


def test_json_lines_parse_and_carry_the_connection_fields(router) -> None:
    r = router(args=("--log-format", "json"))
    client, thread = hold_open(r.url, "log-json", 2)
    try:
        shown = connection_id(r.url, "log-json")
    finally:
        client.let_go.set()
    thread.join_result()
    assert r.wait_log(rf'"conn": "{shown}".*"deliveries_out": 2', 10), r.output()

    lines = [json.loads(line) for line in r.stderr.text().splitlines()]
    assert all({"time", "level", "logger", "message", "router"} <= line.keys() for line in lines)
    mine = [line for line in lines if line.get("conn") == shown]
    opened, closed = mine
    assert opened["logger"] == "switchboard.router.connections" and opened["level"] == "info"
    assert opened["container"] == "log-json" and opened["user"] == "anonymous" and opened["role"] == "normal"
    assert opened["tls"] is None and opened["peer"].startswith("127.0.0.1:")
    assert closed["message"].startswith(f"connection {shown} closed")
    assert closed["peer"] == opened["peer"] and closed["by_peer"] is True and closed["condition"] is None
    assert closed["deliveries_in"] == 2 and closed["deliveries_out"] == 2
    assert closed["bytes_in"] > 0 and closed["bytes_out"] > 0 and closed["duration_seconds"] >= 0


def test_a_level_per_logger_shows_link_lines_while_the_rest_stays_at_info(router) -> None:
    r = router('[logging]\nlevel = "info"\n[logging.levels]\n"switchboard.router.links" = "debug"\n')
    client, thread = hold_open(r.url, "log-links", 1)
    client.let_go.set()
    thread.join_result()

    attached = r.wait_log(r"DEBUG switchboard\.router\.links: connection (c\d+): link '[^']+' attached,"
                          rf" in from the peer to {ADDRESS}", 10)
    assert attached is not None, r.output()
    conn = attached.group(1)
    assert r.wait_log(rf"DEBUG switchboard\.router\.links: connection {conn}: link '[^']+' attached, out to the peer"
                      rf" from {ADDRESS}", 10), r.output()
    assert r.wait_log(rf"DEBUG switchboard\.router\.links: connection {conn}: link '[^']+' detached", 10), r.output()
    assert r.wait_log(rf"INFO switchboard\.router\.connections: connection {conn} closed", 10), r.output()
    debug = [line for line in r.stderr.text().splitlines() if " DEBUG " in line]
    assert debug and all(" DEBUG switchboard.router.links: " in line for line in debug), r.output()


def test_a_reload_changes_the_levels_without_a_restart(router) -> None:
    r = router('[logging]\nlevel = "info"\n')
    first, first_thread = hold_open(r.url, "log-before-reload", 1)
    first.let_go.set()
    first_thread.join_result()
    assert r.wait_log(r"INFO switchboard\.router\.connections: connection c\d+ closed", 10), r.output()
    assert " DEBUG " not in r.stderr.text()

    r.config_path.write_text('[logging]\nlevel = "info"\n[logging.levels]\n"switchboard.router.links" = "debug"\n',
                             encoding="utf-8")
    r.proc.send_signal(signal.SIGHUP)
    assert r.wait_log(r"INFO switchboard\.router\.config: reload: logging\.levels: \{\} -> "
                      r"\{'switchboard\.router\.links': 'debug'\}", 10), r.output()

    second, second_thread = hold_open(r.url, "log-after-reload", 1)
    second.let_go.set()
    second_thread.join_result()
    assert r.wait_log(rf"DEBUG switchboard\.router\.links: connection c\d+: link '[^']+' attached,"
                      rf" in from the peer to {ADDRESS}", 10), r.output()


def test_bad_logging_configuration_is_refused_at_start_with_its_key(tmp_path) -> None:
    process = start_router_process(tmp_path, '[logging.levels]\n"switchboard.router.links" = "loud"\n')
    try:
        code = process.proc.wait(20)
    finally:
        process.kill()
    process.stderr.join(5)
    assert code != 0
    assert 'configuration error: logging.levels."switchboard.router.links": must be one of' in process.stderr.text(), \
        process.output()


def test_a_killed_neighbour_is_logged_down_by_its_router_id(network) -> None:
    routers = network({"A": [], "B": [("A", 1)]})
    a, b = routers["A"].process, routers["B"].process
    up = a.wait_log(r"INFO switchboard\.router\.network: neighbour router 'B' up: connection (c\d+) from"
                    r" 127\.0\.0\.1:\d+", 10)
    assert up is not None, a.output()
    b.expect_exit = True
    b.signal(signal.SIGKILL)
    down = a.wait_log(rf"neighbour router 'B' down: connection {up.group(1)} amqp:connection:forced connection lost", 20)
    assert down is not None, a.output()
    assert a.wait_log(rf"connection {up.group(1)} closed: connection lost", 10), a.output()
