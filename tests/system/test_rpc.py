"""switchboard.rpc against real routers started with the embedded defaults (no
configuration): call, cast, fanout, direct to a server, timeouts, remote exceptions,
dispatch errors, a server killed mid-call, the worker bound."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from system_support import run_async, wait_until

from switchboard.amqp.spec import Rejected
from switchboard.client import Client, Message
from switchboard.rpc import (
    MessageDeliveryFailure,
    MessagingTimeout,
    RemoteError,
    RPCClient,
    RPCServer,
    Target,
)
from switchboard.rpc.wire import rpc_address

WAIT = 20.0


class Calculator:
    target = Target(namespace=None, version="1.4")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.casts: list[Any] = []

    def add(self, ctxt: dict[str, Any], a: int, b: int) -> int:
        return a + b

    async def whoami(self, ctxt: dict[str, Any]) -> dict[str, Any]:
        return {"server": self.name, "user": ctxt.get("user")}

    async def remember(self, ctxt: dict[str, Any], value: Any) -> None:
        self.casts.append(value)

    def divide(self, ctxt: dict[str, Any], a: int, b: int) -> float:
        if b == 0:
            raise ValueError(f"cannot divide {a} by zero")
        return a / b


async def _serve(url: str, topic: str, server: str, endpoints: list[Any], workers: int = 4) -> tuple[Client, RPCServer]:
    client = await Client.connect(url)
    rpc_server = RPCServer(client, Target(topic=topic, server=server), endpoints, workers=workers)
    await rpc_server.start()
    return client, rpc_server


async def _shutdown(*pairs: tuple[Client, RPCServer]) -> None:
    for client, rpc_server in pairs:
        await rpc_server.stop()
        await rpc_server.wait()
        await client.close()


def test_call_returns_the_result_and_cast_reaches_one_server(router) -> None:
    r = router()

    async def scenario() -> None:
        endpoint = Calculator("s1")
        served = await _serve(r.url, "calc", "s1", [endpoint])
        async with await Client.connect(r.url) as client:
            rpc = RPCClient(client, Target(topic="calc"), timeout=WAIT)
            assert await rpc.call({"user": "alice"}, "add", a=2, b=3) == 5
            assert await rpc.call({"user": "alice"}, "whoami") == {"server": "s1", "user": "alice"}
            await rpc.cast({}, "remember", value=[1, "two"])
            await wait_until(lambda: endpoint.casts == [[1, "two"]], WAIT, "the cast to arrive")
        await _shutdown(served)

    run_async(scenario)


def test_fanout_reaches_every_server_and_direct_calls_reach_the_named_one(router) -> None:
    r = router()

    async def scenario() -> None:
        endpoints = [Calculator(f"s{i}") for i in range(3)]
        served = [await _serve(r.url, "calc", f"s{i}", [endpoints[i]]) for i in range(3)]
        async with await Client.connect(r.url) as client:
            rpc = RPCClient(client, Target(topic="calc"), timeout=WAIT)
            await rpc.prepare(fanout=True).cast({}, "remember", value="everyone")
            await wait_until(lambda: all(e.casts == ["everyone"] for e in endpoints), WAIT,
                             "the fanout cast to reach all three servers")
            direct = rpc.prepare(server="s2")
            answers = [await direct.call({}, "whoami") for _ in range(6)]
            assert {a["server"] for a in answers} == {"s2"}
            spread = {(await rpc.call({}, "whoami"))["server"] for _ in range(30)}
            assert len(spread) > 1, "calls to the topic should be shared among its servers"
            assert all(e.casts == ["everyone"] for e in endpoints), "a fanout cast is delivered once per server"
        await _shutdown(*served)

    run_async(scenario)


def test_a_call_nobody_serves_and_a_call_answered_too_late_time_out(router) -> None:
    r = router()

    class Slow:
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def wait(self, ctxt: dict[str, Any]) -> str:
            await self.release.wait()
            return "late"

    async def scenario() -> None:
        slow = Slow()
        served = await _serve(r.url, "slow", "s1", [slow])
        async with await Client.connect(r.url) as client:
            nobody = RPCClient(client, Target(topic="nobody-serves-this"), timeout=0.5)
            with pytest.raises(MessagingTimeout) as raised:
                await nobody.call({}, "anything")
            assert "waiting for a server of rpc/default/nobody-serves-this" in str(raised.value)
            with pytest.raises(MessagingTimeout):
                await nobody.cast({}, "anything")

            rpc = RPCClient(client, Target(topic="slow"), timeout=0.5)
            with pytest.raises(MessagingTimeout) as raised:
                await rpc.call({}, "wait")
            assert "waiting for the reply" in str(raised.value)
            slow.release.set()
            # The late reply is dropped; the next call gets its own answer.
            assert await rpc.prepare(timeout=WAIT).call({}, "wait") == "late"
        await _shutdown(served)

    run_async(scenario)


def test_a_remote_exception_is_raised_with_its_type_message_and_traceback(router) -> None:
    r = router()

    async def scenario() -> None:
        served = await _serve(r.url, "calc", "s1", [Calculator()])
        async with await Client.connect(r.url) as client:
            rpc = RPCClient(client, Target(topic="calc"), timeout=WAIT)
            with pytest.raises(RemoteError) as raised:
                await rpc.call({}, "divide", a=7, b=0)
            error = raised.value
            assert error.exc_type == "ValueError"
            assert error.module == "builtins"
            assert error.value == "cannot divide 7 by zero"
            assert "in divide" in error.traceback
            assert str(error).startswith("ValueError: cannot divide 7 by zero")
            assert await rpc.call({}, "divide", a=7, b=2) == 3.5
        await _shutdown(served)

    run_async(scenario)


def test_namespace_version_and_method_mismatches_are_answered_with_a_clear_error(router) -> None:
    r = router()

    class Admin:
        target = Target(namespace="admin", version="2.1")

        def reset(self, ctxt: dict[str, Any]) -> str:
            return "reset"

    async def scenario() -> None:
        served = await _serve(r.url, "calc", "s1", [Calculator(), Admin()])
        async with await Client.connect(r.url) as client:
            rpc = RPCClient(client, Target(topic="calc"), timeout=WAIT)
            assert await rpc.prepare(namespace="admin", version="2.0").call({}, "reset") == "reset"
            assert await rpc.prepare(version="1.3").call({}, "add", a=1, b=1) == 2

            cases = [
                (rpc.prepare(namespace="billing"), "add",
                 "UnsupportedVersion", "no endpoint serves namespace 'billing' (served: 'admin', None)"),
                (rpc.prepare(version="1.5"), "add",
                 "UnsupportedVersion", "no endpoint serves version 1.5 of method 'add': namespace None is served at version(s) 1.4"),
                (rpc.prepare(namespace="admin", version="3.0"), "reset",
                 "UnsupportedVersion", "namespace 'admin' is served at version(s) 2.1"),
                (rpc, "multiply", "NoSuchMethod", "no endpoint has a public method 'multiply'"),
                (rpc, "_private", "NoSuchMethod", "no endpoint has a public method '_private'"),
            ]
            for prepared, method, exc_type, text in cases:
                with pytest.raises(RemoteError) as raised:
                    await prepared.call({}, method)
                assert raised.value.exc_type == exc_type, (method, raised.value)
                assert text in raised.value.value, (method, raised.value.value)
        await _shutdown(served)

    run_async(scenario)


def test_a_malformed_request_is_rejected_with_decode_error(router) -> None:
    r = router()

    async def scenario() -> None:
        served = await _serve(r.url, "calc", "s1", [Calculator()])
        async with await Client.connect(r.url) as client:
            sender = await client.sender(rpc_address("default", "calc"))
            outcome = await sender.send(Message(b"not json"))
            assert isinstance(outcome, Rejected)
            assert outcome.error is not None and str(outcome.error.condition) == "amqp:decode-error"
            assert "JSON" in (outcome.error.description or "")
        await _shutdown(served)

    run_async(scenario)


def test_no_more_than_workers_requests_run_at_once(router) -> None:
    r = router()

    class Gate:
        def __init__(self) -> None:
            self.running = 0
            self.most = 0
            self.started = 0
            self.open = asyncio.Event()

        async def work(self, ctxt: dict[str, Any], n: int) -> int:
            self.running += 1
            self.started += 1
            self.most = max(self.most, self.running)
            try:
                await self.open.wait()
            finally:
                self.running -= 1
            return n

    async def scenario() -> None:
        gate = Gate()
        client_s, rpc_server = await _serve(r.url, "gate", "s1", [gate], workers=2)
        async with await Client.connect(r.url) as client:
            rpc = RPCClient(client, Target(topic="gate"), timeout=WAIT)
            calls = [asyncio.ensure_future(rpc.call({}, "work", n=n)) for n in range(6)]
            await wait_until(lambda: gate.running == 2, WAIT, "two requests to run")
            # The others are prefetched or waiting at the router: none may start.
            for _ in range(20):
                await asyncio.sleep(0)
            assert gate.started == 2 and rpc_server.running == 2
            gate.open.set()
            assert sorted(await asyncio.gather(*calls)) == list(range(6))
            assert gate.most == 2
        await _shutdown((client_s, rpc_server))

    run_async(scenario)


SERVER_SCRIPT = """
import asyncio, sys
from switchboard.client import Client
from switchboard.rpc import RPCServer, Target

class Endpoint:
    async def hang(self, ctxt):
        await asyncio.Event().wait()

    def echo(self, ctxt, value):
        return value

async def main():
    client = await Client.connect(sys.argv[1])
    server = RPCServer(client, Target(topic="restart", server="s1"), [Endpoint()], workers=4)
    await server.start()
    print("serving", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_calls_in_flight_fail_fast_when_the_server_dies_and_new_calls_reach_its_replacement(router, spawn_script) -> None:
    r = router()
    first = spawn_script(SERVER_SCRIPT, r.url)
    first.wait_line("serving", WAIT)

    async def scenario() -> None:
        async with await Client.connect(r.url) as client:
            # A call timeout far beyond the test's bound: failing at the timeout would fail the test.
            rpc = RPCClient(client, Target(topic="restart"), timeout=300)
            assert await rpc.call({}, "echo", value=1) == 1
            hanging = [asyncio.ensure_future(rpc.call({}, "hang")) for _ in range(3)]
            # Let the three requests reach the server before it dies.
            await asyncio.wait(hanging, timeout=0.5)
            first.proc.send_signal(signal.SIGKILL)
            results = await asyncio.gather(*hanging, return_exceptions=True)
            for result in results:
                assert isinstance(result, MessageDeliveryFailure), result
                assert result.maybe_processed
                assert "lost with the request in flight" in str(result)

            second = spawn_script(SERVER_SCRIPT, r.url)
            await asyncio.to_thread(second.wait_line, "serving", WAIT)
            answers = await asyncio.gather(*(rpc.call({}, "echo", value=n) for n in range(10)))
            assert answers == list(range(10))

    run_async(scenario, timeout=60)


def test_a_stopped_server_hands_back_what_it_had_not_started_and_callers_resend_it(router) -> None:
    r = router()

    class Once:
        def __init__(self) -> None:
            self.open = asyncio.Event()
            self.started = 0

        async def work(self, ctxt: dict[str, Any], n: int) -> str:
            self.started += 1
            await self.open.wait()
            return f"first:{n}"

    class Other:
        def work(self, ctxt: dict[str, Any], n: int) -> str:
            return f"second:{n}"

    async def scenario() -> None:
        once = Once()
        first = await _serve(r.url, "handover", "s1", [once], workers=1)
        async with await Client.connect(r.url) as client:
            rpc = RPCClient(client, Target(topic="handover"), timeout=WAIT)
            calls = [asyncio.ensure_future(rpc.call({}, "work", n=n)) for n in range(3)]
            await wait_until(lambda: once.started == 1, WAIT, "the first request to start")
            await first[1].stop()  # the other two were prefetched: released, sent again
            second = await _serve(r.url, "handover", "s2", [Other()])
            once.open.set()
            answers = await asyncio.gather(*calls)
            assert sorted(a.split(":")[0] for a in answers) == ["first", "second", "second"]
            assert sorted(int(a.split(":")[1]) for a in answers) == [0, 1, 2]
            await first[1].wait()
            await first[0].close()
        await _shutdown(second)

    run_async(scenario)
