"""Notifications against a real router with the embedded defaults: pools, late
listeners, requeue, batches."""

from __future__ import annotations

import asyncio
from typing import Any

from system_support import run_async, wait_until

from switchboard.client import Client
from switchboard.rpc import NotificationListener, NotificationResult, Notifier, Target

WAIT = 20.0
TOPICS = [Target(topic="notifications")]


class Collector:
    """Records every notification it handles, one by one."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.seen: list[tuple[str, str, Any]] = []

    def info(self, ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any, metadata: dict[str, Any]) -> None:
        self.seen.append(("info", event_type, payload))

    async def error(self, ctxt: dict[str, Any], publisher_id: str, event_type: str, payload: Any,
                    metadata: dict[str, Any]) -> None:
        assert publisher_id == "compute.host1" and metadata["message_id"] and metadata["timestamp"]
        self.seen.append(("error", event_type, payload))


async def _listen(url: str, endpoint: Any, **options: Any) -> tuple[Client, NotificationListener]:
    client = await Client.connect(url)
    listener = NotificationListener(client, TOPICS, [endpoint], **options)
    await listener.start()
    return client, listener


async def _stop(*pairs: tuple[Client, NotificationListener]) -> None:
    for client, listener in pairs:
        await listener.stop()
        await listener.wait()
        await client.close()


def test_a_listener_started_late_gets_what_was_sent_before_it_started(router) -> None:
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as client:
            notifier = Notifier(client, "compute.host1")
            for n in range(5):
                await notifier.info({"request_id": f"req-{n}"}, "compute.instance.create.end", {"n": n})
            await notifier.error({}, "compute.instance.create.error", {"n": 99})
        collector = Collector()
        late = await _listen(r.url, collector)
        await wait_until(lambda: len(collector.seen) == 6, WAIT, "the six notifications sent before the listener")
        key = lambda seen: (seen[0], seen[1], seen[2]["n"])  # noqa: E731
        assert sorted(collector.seen, key=key) == sorted(
            [("info", "compute.instance.create.end", {"n": n}) for n in range(5)]
            + [("error", "compute.instance.create.error", {"n": 99})], key=key)
        await _stop(late)

    run_async(scenario)


def test_every_pool_gets_every_notification_and_listeners_of_a_pool_compete(router) -> None:
    r = router()

    async def scenario() -> None:
        collectors = {(pool, i): Collector(f"{pool}{i}") for pool in ("metering", "audit") for i in range(2)}
        listeners = [await _listen(r.url, c, pool=pool) for (pool, _), c in collectors.items()]
        async with await Client.connect(r.url) as client:
            notifier = Notifier(client, "compute.host1")
            await notifier.start()  # asks the listeners for their pools
            await wait_until(lambda: notifier.pools("notifications", "info") == ["audit", "metering"], WAIT,
                             "the notifier to learn both pools")
            await notifier.info({}, "warm.up", {"n": -1})
            for n in range(40):
                await notifier.info({}, "compute.instance.update", {"n": n})

        for pool in ("metering", "audit"):
            members = [c for (p, _), c in collectors.items() if p == pool]
            await wait_until(lambda: sum(len(c.seen) for c in members) == 41, WAIT, f"pool {pool} to get all 41")
            payloads = [seen[2]["n"] for c in members for seen in c.seen]
            assert sorted(payloads) == list(range(-1, 40)), f"pool {pool}: each notification once"
            assert all(c.seen for c in members), f"pool {pool}: both listeners take a share"
        await _stop(*listeners)

    run_async(scenario)


def test_a_named_pool_whose_listeners_were_down_gets_what_it_missed(router) -> None:
    r = router()

    async def scenario() -> None:
        first = Collector()
        pool_member = await _listen(r.url, first, pool="billing")
        async with await Client.connect(r.url) as client:
            notifier = Notifier(client, "compute.host1")
            await notifier.info({}, "before", {})
            await wait_until(lambda: len(first.seen) == 1, WAIT, "the first notification")
            await _stop(pool_member)
            for n in range(3):
                await notifier.info({}, "while.down", {"n": n})
        again = Collector()
        restarted = await _listen(r.url, again, pool="billing")
        await wait_until(lambda: len(again.seen) == 3, WAIT, "what the pool missed while down")
        assert [s[2]["n"] for s in again.seen] == [0, 1, 2]
        await _stop(restarted)

    run_async(scenario)


def test_a_notification_the_endpoint_requeues_or_fails_on_comes_again(router) -> None:
    r = router()

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0
            self.handled: list[Any] = []

        def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                return NotificationResult.REQUEUE
            if self.calls == 2:
                raise RuntimeError("database unavailable")
            self.handled.append(payload)
            return NotificationResult.HANDLED

    async def scenario() -> None:
        flaky = Flaky()
        listening = await _listen(r.url, flaky)
        async with await Client.connect(r.url) as client:
            await Notifier(client, "compute.host1").info({}, "retry.me", {"n": 1})
        await wait_until(lambda: flaky.handled == [{"n": 1}], WAIT, "the third delivery to be handled")
        assert flaky.calls == 3
        await _stop(listening)

    run_async(scenario)


def test_batches_are_full_or_cut_by_the_timeout(router) -> None:
    r = router()

    class Batches:
        def __init__(self) -> None:
            self.batches: list[list[int]] = []

        def info(self, messages: list[dict[str, Any]]) -> None:
            assert all(set(m) == {"ctxt", "publisher_id", "event_type", "payload", "metadata"} for m in messages)
            self.batches.append([m["payload"]["n"] for m in messages])

    async def scenario() -> None:
        async with await Client.connect(r.url) as client:
            notifier = Notifier(client, "compute.host1")
            for n in range(10):
                await notifier.info({}, "batch", {"n": n})
        full = Batches()
        listening = await _listen(r.url, full, batch_size=5)
        await wait_until(lambda: sum(map(len, full.batches)) == 10, WAIT, "two batches of five")
        assert [len(b) for b in full.batches] == [5, 5]
        assert sorted(n for b in full.batches for n in b) == list(range(10))
        await _stop(listening)

        cut = Batches()
        listening = await _listen(r.url, cut, batch_size=100, batch_timeout=0.3)
        async with await Client.connect(r.url) as client:
            notifier = Notifier(client, "compute.host1")
            for n in range(3):
                await notifier.info({}, "batch", {"n": n})
        await wait_until(lambda: sum(map(len, cut.batches)) == 3, WAIT, "a short batch after the timeout")
        assert sorted(n for b in cut.batches for n in b) == [0, 1, 2]
        assert all(len(b) < 100 for b in cut.batches)
        await _stop(listening)

    run_async(scenario)


def test_nothing_a_listener_took_is_lost_when_it_stops_with_a_partial_batch(router) -> None:
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as client:
            notifier = Notifier(client, "compute.host1")
            for n in range(3):
                await notifier.info({}, "partial", {"n": n})

        class Never:
            def info(self, messages: list[dict[str, Any]]) -> None:
                raise AssertionError("a batch of 100 never fills here")

        waiting = await _listen(r.url, Never(), batch_size=100)
        await _stop(waiting)  # stop hands the partial batch to the endpoint, which raises: requeued

        collector = Collector()
        after = await _listen(r.url, collector)
        await wait_until(lambda: len(collector.seen) == 3, WAIT, "the three notifications again")
        await _stop(after)

    run_async(scenario)
