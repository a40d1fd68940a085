"""oslo.messaging RPC over real routers: ``transport_url = switchboard://...`` and nothing else
changes in the service.  Only oslo.messaging's public API is used, with the threading
executor."""

from __future__ import annotations

import threading
import time
from typing import Any

import oslo_messaging
import pytest

from oslo_support import WAIT, Recorder, oslo, switchboard_url  # noqa: F401  (fixture)


class Echo:
    """An endpoint that says which server answered."""

    def __init__(self, name: str, seen: Recorder | None = None) -> None:
        self.name = name
        self.seen = seen if seen is not None else Recorder()

    def echo(self, ctxt: Any, value: Any) -> Any:
        return value

    def whoami(self, ctxt: Any) -> str:
        return self.name

    def note(self, ctxt: Any, value: Any) -> None:
        self.seen.add((self.name, value))

    def fail(self, ctxt: Any, text: str) -> None:
        raise ValueError(text)

    def sleep(self, ctxt: Any, seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    def context(self, ctxt: Any) -> Any:
        return ctxt

    def slow_whoami(self, ctxt: Any, seconds: float) -> str:
        time.sleep(seconds)
        return self.name


def test_call_returns_the_result_and_cast_reaches_the_server(router: Any, oslo: Any) -> None:
    process = router()
    transport = oslo.rpc_transport(switchboard_url(process.port))
    seen = Recorder()
    oslo.server(transport, "compute", "host-1", [Echo("host-1", seen)])
    client = oslo.client(transport, "compute", timeout=WAIT)

    value = {"name": "vm-1", "flavors": [1, 2.5, None, True], "nested": {"ok": "yes"}}
    assert client.call({}, "echo", value=value) == value
    assert client.call({"user": "alice", "project": "p1"}, "context") == {"user": "alice", "project": "p1"}

    client.cast({}, "note", value="cast-1")
    assert seen.wait_count(1, "casts") == [("host-1", "cast-1")]


def test_a_remote_exception_reaches_the_caller(router: Any, oslo: Any) -> None:
    process = router()
    transport = oslo.rpc_transport(switchboard_url(process.port))
    oslo.server(transport, "compute", "host-1", [Echo("host-1")])
    client = oslo.client(transport, "compute", timeout=WAIT)

    with pytest.raises(ValueError) as raised:
        client.call({}, "fail", text="disk full on host-1")
    assert "disk full on host-1" in str(raised.value)

    # A method the server lacks: oslo's own NoSuchMethod, as a remote error.
    with pytest.raises(oslo_messaging.RemoteError) as missing:
        client.call({}, "no_such_method")
    assert missing.value.exc_type == "NoSuchMethod"


def test_a_call_nobody_serves_times_out(router: Any, oslo: Any) -> None:
    process = router()
    transport = oslo.rpc_transport(switchboard_url(process.port))
    client = oslo.client(transport, "nobody-listens", timeout=1)
    with pytest.raises(oslo_messaging.MessagingTimeout) as raised:
        client.call({}, "echo", value=1)
    assert "rpc/openstack/nobody-listens" in str(raised.value)


def test_a_call_whose_server_is_too_slow_times_out_and_the_next_call_works(router: Any, oslo: Any) -> None:
    process = router()
    transport = oslo.rpc_transport(switchboard_url(process.port))
    oslo.server(transport, "compute", "host-1", [Echo("host-1")])
    client = oslo.client(transport, "compute")

    with pytest.raises(oslo_messaging.MessagingTimeout):
        client.prepare(timeout=0.5).call({}, "sleep", seconds=3)
    # The late reply to the call that timed out is dropped; the next call gets its own.
    assert client.prepare(timeout=WAIT).call({}, "echo", value="after") == "after"


def test_calls_to_a_topic_are_shared_and_a_server_can_be_called_directly(router: Any, oslo: Any) -> None:
    process = router()
    transport = oslo.rpc_transport(switchboard_url(process.port))
    for name in ("host-1", "host-2"):
        oslo.server(oslo.rpc_transport(switchboard_url(process.port)), "compute", name, [Echo(name)])
    client = oslo.client(transport, "compute", timeout=WAIT)

    direct = client.prepare(server="host-2")
    assert {direct.call({}, "whoami") for _ in range(20)} == {"host-2"}

    # Forty calls at once on the topic: both servers take some.
    answers: list[str] = []
    callers = [threading.Thread(target=lambda: answers.append(client.call({}, "slow_whoami", seconds=0.2)))
               for _ in range(40)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(WAIT)
    assert len(answers) == 40
    assert set(answers) == {"host-1", "host-2"}


def test_a_fanout_cast_reaches_every_server_of_the_topic(router: Any, oslo: Any) -> None:
    process = router()
    seen = Recorder()
    for name in ("host-1", "host-2", "host-3"):
        oslo.server(oslo.rpc_transport(switchboard_url(process.port)), "compute", name, [Echo(name, seen)])
    oslo.server(oslo.rpc_transport(switchboard_url(process.port)), "network", "host-9", [Echo("host-9", seen)])
    transport = oslo.rpc_transport(switchboard_url(process.port))
    client = oslo.client(transport, "compute")

    client.prepare(fanout=True).cast({}, "note", value="refresh")
    items = seen.wait_count(3, "fanout copies")
    assert sorted(items) == [("host-1", "refresh"), ("host-2", "refresh"), ("host-3", "refresh")]

    # A fanout nobody listens to is done at once, as with a broker's fanout exchange.
    oslo.client(transport, "nobody").prepare(fanout=True).cast({}, "note", value="lost")


def test_retry_bounds_the_resends_of_a_cast_nobody_takes(router: Any, oslo: Any) -> None:
    process = router()
    transport = oslo.rpc_transport(switchboard_url(process.port))
    oslo.override("send_timeout", 1.0)

    with pytest.raises(oslo_messaging.MessageDeliveryFailure) as once:
        oslo.client(transport, "nobody", retry=0).cast({}, "note", value=1)
    assert "after 1 attempt(s)" in str(once.value)
    with pytest.raises(oslo_messaging.MessageDeliveryFailure) as three:
        oslo.client(transport, "nobody", retry=2).cast({}, "note", value=1)
    assert "after 3 attempt(s)" in str(three.value)
    # retry=None: resent until the deadline.
    with pytest.raises(oslo_messaging.MessagingTimeout):
        oslo.client(transport, "nobody").cast({}, "note", value=1)


def test_a_cast_sent_before_its_server_starts_is_delivered_once_it_does(router: Any, oslo: Any) -> None:
    process = router()
    transport = oslo.rpc_transport(switchboard_url(process.port))
    client = oslo.client(transport, "compute")
    seen = Recorder()
    done = threading.Event()

    def cast() -> None:
        client.cast({}, "note", value="early")
        done.set()

    caster = threading.Thread(target=cast)
    caster.start()
    assert not done.wait(0.5), "the cast returned although no server could have taken it"
    oslo.server(oslo.rpc_transport(switchboard_url(process.port)), "compute", "host-1", [Echo("host-1", seen)])
    assert done.wait(WAIT)
    caster.join(WAIT)
    assert seen.wait_count(1, "casts") == [("host-1", "early")]


def test_a_server_restarted_mid_stream_loses_no_call(router: Any, oslo: Any) -> None:
    """Calls keep coming while the only server stops and a new one starts: each call
    returns its own answer (a request the stopping server had not started is given back
    and sent again), or fails at once with MessageDeliveryFailure; none waits for its
    timeout."""
    process = router()
    client = oslo.client(oslo.rpc_transport(switchboard_url(process.port)), "compute", timeout=WAIT)
    first = oslo.server(oslo.rpc_transport(switchboard_url(process.port)), "compute", "host-1", [Echo("host-1")])
    results: list[tuple[int, Any]] = []
    stop_calling = threading.Event()

    def caller(base: int) -> None:
        for number in range(base, base + 10_000):
            if stop_calling.is_set():
                return
            try:
                answer = client.call({}, "echo", value=number)
            except (oslo_messaging.MessageDeliveryFailure, oslo_messaging.MessagingTimeout) as exc:
                answer = exc
            results.append((number, answer))

    callers = [threading.Thread(target=caller, args=(base,)) for base in (0, 100_000, 200_000, 300_000)]
    for thread in callers:
        thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while len(results) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        oslo.stop(first)
        stopped_at = len(results)
        oslo.server(oslo.rpc_transport(switchboard_url(process.port)), "compute", "host-2", [Echo("host-2")])
        deadline = time.monotonic() + WAIT
        while len(results) < stopped_at + 100 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop_calling.set()
        for thread in callers:
            thread.join(WAIT)
    assert len(results) >= stopped_at + 100, "calls did not go on after the new server started"
    timed_out = [(number, answer) for number, answer in results if isinstance(answer, oslo_messaging.MessagingTimeout)]
    assert timed_out == [], "a call waited for its timeout"
    for number, answer in results:
        if not isinstance(answer, Exception):
            assert answer == number
    failed = [answer for _, answer in results if isinstance(answer, Exception)]
    assert len(failed) <= 4, f"more calls failed than were in flight: {failed}"


def test_call_monitor_heartbeats_keep_a_long_call_alive(router: Any, oslo: Any) -> None:
    process = router()
    transport = oslo.rpc_transport(switchboard_url(process.port))
    oslo.server(transport, "compute", "host-1", [Echo("host-1")])
    client = oslo.client(transport, "compute")

    # The method runs longer than the call-monitor timeout: the server's heartbeats
    # (every half of it) keep the call waiting for its result.
    assert client.prepare(timeout=WAIT, call_monitor_timeout=2).call({}, "sleep", seconds=5) == "slept"
