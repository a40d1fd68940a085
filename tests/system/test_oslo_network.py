"""oslo.messaging services on a network of two routers, through oslo.messaging's public API.

    A ---- B        clients on B, servers on A (and on B where said);
                    notification queues hosted by A
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import oslo_messaging

from oslo_support import WAIT, Recorder, oslo, switchboard_url  # noqa: F401  (fixture)

TOPOLOGY = {"A": [], "B": [("A", 1)]}
NOTIFICATIONS_AT_A = '''
[[addresses]]
prefix = "notify/"
distribution = "queue"
host = "A"
'''


class Endpoint:
    def __init__(self, name: str, seen: Recorder | None = None) -> None:
        self.name = name
        self.seen = seen

    def whoami(self, ctxt: Any) -> str:
        return self.name

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value

    def note(self, ctxt: Any, value: Any) -> None:
        assert self.seen is not None
        self.seen.add((self.name, value))

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> None:
        assert self.seen is not None
        self.seen.add((self.name, payload["n"]))


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_client_and_server_on_different_routers(network: Any, oslo: Any) -> None:
    routers = network(TOPOLOGY, extra=NOTIFICATIONS_AT_A)
    at_a = switchboard_url(routers["A"].process.port)
    # The client's list starts with a router that is down: it goes on to B.
    at_b = switchboard_url(unused_port(), routers["B"].process.port)
    seen = Recorder()
    oslo.server(oslo.rpc_transport(at_a), "compute", "host-a", [Endpoint("host-a", seen)])
    oslo.server(oslo.rpc_transport(switchboard_url(routers["B"].process.port)), "compute", "host-b",
                [Endpoint("host-b", seen)])
    transport = oslo.rpc_transport(at_b)
    client = oslo.client(transport, "compute", timeout=WAIT)

    assert client.prepare(server="host-a").call({}, "whoami") == "host-a"
    assert client.prepare(server="host-a").call({}, "echo", value={"k": [1, "two"]}) == {"k": [1, "two"]}
    client.prepare(server="host-a").cast({}, "note", value="cast")
    client.prepare(fanout=True).cast({}, "note", value="fanout")
    items = seen.wait_count(3, "a cast and two fanout copies")
    assert sorted(items) == [("host-a", "cast"), ("host-a", "fanout"), ("host-b", "fanout")]

    # Notifications sent at B wait in A's queue for a listener that starts later, at A.
    notifier = oslo.notifier(oslo.notification_transport(at_b), "instances")
    for number in range(5):
        notifier.info({}, "instance.create", {"n": number})
    received = Recorder()
    oslo.listener(oslo.notification_transport(at_a), "instances", [Endpoint("listener-a", received)])
    assert sorted(received.wait_count(5, "notifications")) == [("listener-a", n) for n in range(5)]


def test_a_router_killed_under_calls_fails_over_and_no_call_waits_for_its_timeout(network: Any, oslo: Any) -> None:
    """Servers on both routers, callers on both; B is killed (SIGKILL) while calls are in
    flight.  Each call completes or fails at once with MessageDeliveryFailure (none waits
    for the RPC timeout); the callers on B fail over to A and their calls succeed again."""
    routers = network(TOPOLOGY)
    a_port, b_port = routers["A"].process.port, routers["B"].process.port
    oslo.override("idle_timeout", 2.0)
    oslo.server(oslo.rpc_transport(switchboard_url(a_port, b_port)), "compute", "host-a", [Endpoint("host-a")])
    oslo.server(oslo.rpc_transport(switchboard_url(b_port, a_port)), "compute", "host-b", [Endpoint("host-b")])
    clients = [
        oslo.client(oslo.rpc_transport(switchboard_url(a_port, b_port)), "compute", timeout=WAIT),
        oslo.client(oslo.rpc_transport(switchboard_url(b_port, a_port)), "compute", timeout=WAIT),
    ]
    results: dict[int, list[Any]] = {0: [], 1: []}
    stop_calling = threading.Event()

    def caller(index: int) -> None:
        client = clients[index]
        number = 0
        while not stop_calling.is_set():
            number += 1
            try:
                answer = client.call({}, "echo", value=number)
            except (oslo_messaging.MessageDeliveryFailure, oslo_messaging.MessagingTimeout) as exc:
                answer = exc
            results[index].append((number, answer, time.monotonic()))

    threads = [threading.Thread(target=caller, args=(index,)) for index in (0, 1, 0, 1)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while min(len(results[0]), len(results[1])) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = {index: len(results[index]) for index in results}
        routers["B"].process.expect_exit = True
        routers["B"].process.kill()
        killed = time.monotonic()
        deadline = time.monotonic() + WAIT
        while min(len(results[0]) - before[0], len(results[1]) - before[1]) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop_calling.set()
        for thread in threads:
            thread.join(WAIT * 2)
    for index in results:
        after = results[index][before[index]:]
        assert len(after) >= 50, f"caller {index} made only {len(after)} calls after the kill"
        timed_out = [answer for _, answer, _ in results[index] if isinstance(answer, oslo_messaging.MessagingTimeout)]
        assert timed_out == [], f"caller {index}: a call waited for its timeout"
        for number, answer, _ in results[index]:
            if not isinstance(answer, Exception):
                assert answer == number
        # The last calls, made after the failover, all succeed.
        assert all(not isinstance(answer, Exception) for _, answer, _ in results[index][-20:])
        failed = sum(isinstance(answer, Exception) for _, answer, _ in after)
        resumed = next(at for _, answer, at in after if not isinstance(answer, Exception) and at > killed)
        print(f"\ncaller on {'AB'[index]}: {failed} calls failed at the kill (MessageDeliveryFailure),"
              f" first success {resumed - killed:.3f} s after it (heartbeat interval: idle timeout 2 s / 2)")
