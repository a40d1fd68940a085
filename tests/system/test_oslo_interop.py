"""An oslo.messaging service on the switchboard driver and a ``switchboard.rpc`` program
talk to each other through a real router: both speak ``switchboard.rpc.wire``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable

import pytest

from oslo_support import WAIT, Recorder, oslo, switchboard_url  # noqa: F401  (fixture)
from switchboard.client import Client
from switchboard.io.loop import new_event_loop
from switchboard.rpc import NotificationListener, Notifier, RemoteError, RPCClient, RPCServer, Target

EXCHANGE = "openstack"
"""oslo.messaging's default control_exchange; switchboard.rpc names it explicitly."""


class AsyncSide:
    """A switchboard.rpc program: its own asyncio loop in a thread, as a separate program has."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, factory: Callable[[], Awaitable[Any]]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(WAIT):
                return await factory()

        return asyncio.run_coroutine_threadsafe(bounded(), self.loop).result(WAIT + 5)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def program() -> Any:
    side = AsyncSide()
    yield side
    side.close()


class Endpoint:
    def __init__(self, seen: Recorder | None = None) -> None:
        self.seen = seen

    def add(self, ctxt: Any, a: int, b: int) -> int:
        return a + b

    def divide(self, ctxt: Any, a: int, b: int) -> float:
        return a / b

    def user(self, ctxt: Any) -> Any:
        return ctxt.get("user")

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> None:
        assert self.seen is not None
        self.seen.add((publisher_id, event_type, payload))


def test_an_oslo_client_calls_a_switchboard_rpc_server(router: Any, oslo: Any, program: Any) -> None:
    process = router()

    async def serve() -> tuple[Client, RPCServer]:
        client = await Client.connect(process.url)
        server = RPCServer(client, Target(topic="calc", server="s1", exchange=EXCHANGE), [Endpoint()])
        await server.start()
        return client, server

    client, server = program.run(serve)
    try:
        rpc = oslo.client(oslo.rpc_transport(switchboard_url(process.port)), "calc", timeout=WAIT)
        assert rpc.call({"user": "alice"}, "add", a=2, b=3) == 5
        assert rpc.call({"user": "alice"}, "user") == "alice"
        with pytest.raises(ZeroDivisionError) as raised:
            rpc.call({}, "divide", a=1, b=0)
        assert "division by zero" in str(raised.value)
    finally:
        async def stop() -> None:
            await server.stop()
            await server.wait()
            await client.close()

        program.run(stop)


def test_a_switchboard_rpc_client_calls_an_oslo_server(router: Any, oslo: Any, program: Any) -> None:
    process = router()
    oslo.server(oslo.rpc_transport(switchboard_url(process.port)), "calc", "s1", [Endpoint()])

    async def calls() -> tuple[Any, Any, RemoteError]:
        async with await Client.connect(process.url) as client:
            rpc = RPCClient(client, Target(topic="calc", exchange=EXCHANGE), timeout=WAIT)
            total = await rpc.call({"user": "bob"}, "add", a=40, b=2)
            user = await rpc.prepare(server="s1").call({"user": "bob"}, "user")
            try:
                await rpc.call({}, "divide", a=1, b=0)
            except RemoteError as exc:
                return total, user, exc
            raise AssertionError("the remote exception did not reach the caller")

    total, user, error = program.run(calls)
    assert (total, user) == (42, "bob")
    assert error.exc_type == "ZeroDivisionError"
    assert "division by zero" in str(error)


def test_notifications_cross_between_the_two_apis(router: Any, oslo: Any, program: Any) -> None:
    process = router()
    url = switchboard_url(process.port)
    to_oslo = Recorder()
    oslo.listener(oslo.notification_transport(url), "instances", [Endpoint(to_oslo)], pool="oslo-pool")
    to_program = Recorder()

    async def listen() -> tuple[Client, NotificationListener]:
        client = await Client.connect(process.url)
        listener = NotificationListener(client, [Target(topic="instances", exchange=EXCHANGE)],
                                        [Endpoint(to_program)], pool="program-pool")
        await listener.start()
        return client, listener

    client, listener = program.run(listen)
    try:
        async def notify() -> None:
            async with await Client.connect(process.url) as sender:
                notifier = Notifier(sender, "program.host", topics=["instances"], exchange=EXCHANGE,
                                    discovery_wait=0.5)
                await notifier.info({}, "from.program", {"n": 1})

        program.run(notify)
        oslo.notifier(oslo.notification_transport(url), "instances", publisher_id="oslo.host").info(
            {}, "from.oslo", {"n": 2})

        expected = [("oslo.host", "from.oslo", {"n": 2}), ("program.host", "from.program", {"n": 1})]
        assert sorted(to_oslo.wait_count(2, "notifications at the oslo listener")) == expected
        assert sorted(to_program.wait_count(2, "notifications at the switchboard.rpc listener")) == expected
    finally:
        async def stop() -> None:
            await listener.stop()
            await listener.wait()
            await client.close()

        program.run(stop)
