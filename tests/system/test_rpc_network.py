"""switchboard.rpc across a two-router network: caller and server on different routers;
notifications whose queues one router hosts."""

from __future__ import annotations

from typing import Any

from system_support import run_async, wait_until

from switchboard.client import Client
from switchboard.rpc import NotificationListener, Notifier, RPCClient, RPCServer, Target

WAIT = 20.0

NOTIFY_ON_A = """
[[addresses]]
prefix = "notify/"
distribution = "queue"
host = "A"
max_messages = 1000
overflow = "drop-head"
message_ttl = 3600
expiry = 3600
"""


class Echo:
    def __init__(self, name: str) -> None:
        self.name = name
        self.casts: list[Any] = []

    def echo(self, ctxt: dict[str, Any], value: Any) -> dict[str, Any]:
        return {"server": self.name, "value": value}

    def remember(self, ctxt: dict[str, Any], value: Any) -> None:
        self.casts.append(value)


def test_calls_casts_and_fanout_cross_the_network(network) -> None:
    routers = network({"A": [], "B": [("A", 1)]})

    async def scenario() -> None:
        servers = []
        endpoints = {"a1": Echo("a1"), "b1": Echo("b1")}
        for name, router_id in (("a1", "A"), ("b1", "B")):
            client = await Client.connect(routers[router_id].url)
            server = RPCServer(client, Target(topic="net", server=name), [endpoints[name]])
            await server.start()
            servers.append((client, server))
        async with await Client.connect(routers["B"].url) as client:
            rpc = RPCClient(client, Target(topic="net"), timeout=WAIT)
            assert await rpc.prepare(server="a1").call({}, "echo", value=1) == {"server": "a1", "value": 1}
            await rpc.prepare(fanout=True).cast({}, "remember", value="all")
            await wait_until(lambda: all(e.casts == ["all"] for e in endpoints.values()), WAIT,
                             "the fanout cast on both routers")
        for client, server in servers:
            await server.stop()
            await server.wait()
            await client.close()

    run_async(scenario)


def test_notifications_sent_on_one_router_wait_for_a_late_listener_on_the_other(network) -> None:
    routers = network({"A": [], "B": [("A", 1)]}, extra=NOTIFY_ON_A)

    class Collector:
        def __init__(self) -> None:
            self.seen: list[Any] = []

        def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> None:
            self.seen.append(payload["n"])

    async def scenario() -> None:
        pooled = Collector()
        pool_client = await Client.connect(routers["A"].url)
        pool_listener = NotificationListener(pool_client, [Target(topic="notifications")], [pooled], pool="metering")
        await pool_listener.start()
        async with await Client.connect(routers["B"].url) as client:
            notifier = Notifier(client, "compute.host1")
            await notifier.start()
            await wait_until(lambda: notifier.pools("notifications", "info") == ["metering"], WAIT,
                             "the notifier on B to learn the pool on A")
            await notifier.info({}, "first", {"n": 0})
            for n in range(1, 5):
                await notifier.info({}, "more", {"n": n})
        late = Collector()
        late_client = await Client.connect(routers["B"].url)
        late_listener = NotificationListener(late_client, [Target(topic="notifications")], [late])
        await late_listener.start()
        await wait_until(lambda: sorted(late.seen) == [0, 1, 2, 3, 4], WAIT, "the default pool's five, late")
        await wait_until(lambda: sorted(pooled.seen) == [0, 1, 2, 3, 4], WAIT, "the metering pool's five")
        for client, listener in ((pool_client, pool_listener), (late_client, late_listener)):
            await listener.stop()
            await listener.wait()
            await client.close()

    run_async(scenario)
