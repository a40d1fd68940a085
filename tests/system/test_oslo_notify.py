"""oslo.messaging notifications over real routers, through oslo.messaging's public API:
pools each get every notification, listeners of one pool share them, a listener started
late finds what was sent before it, a requeued notification comes again."""

from __future__ import annotations

import threading
from typing import Any

import oslo_messaging

from oslo_support import Recorder, oslo, switchboard_url  # noqa: F401  (fixture)


class Collector:
    """A notification endpoint recording (listener name, event type, payload)."""

    def __init__(self, name: str, seen: Recorder) -> None:
        self.name = name
        self.seen = seen

    def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> None:
        self.seen.add((self.name, event_type, payload["n"]))

    def error(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> None:
        self.seen.add((self.name, event_type, payload["n"], publisher_id, metadata["message_id"] != ""))


def test_each_pool_gets_every_notification_and_a_late_listener_finds_them(router: Any, oslo: Any) -> None:
    process = router()
    url = switchboard_url(process.port)
    seen = {"audit": Recorder(), "billing": Recorder(), "default": Recorder()}
    # Two pools of two listeners each, before anything is sent.
    for pool in ("audit", "billing"):
        for index in (1, 2):
            oslo.listener(oslo.notification_transport(url), "instances",
                          [Collector(f"{pool}-{index}", seen[pool])], pool=pool)

    notifier = oslo.notifier(oslo.notification_transport(url), "instances")
    for number in range(20):
        notifier.info({}, "compute.instance.create.end", {"n": number})

    for pool in ("audit", "billing"):
        items = seen[pool].wait_count(20, f"notifications in pool {pool}")
        assert sorted(n for _, _, n in items) == list(range(20)), f"pool {pool} got each notification once"
        assert {listener for listener, _, _ in items} <= {f"{pool}-1", f"{pool}-2"}

    # The default pool had no listener while they were sent: its queue kept them.
    oslo.listener(oslo.notification_transport(url), "instances", [Collector("late", seen["default"])])
    items = seen["default"].wait_count(20, "notifications for the late listener")
    assert sorted(n for _, _, n in items) == list(range(20))
    assert {event for _, event, _ in items} == {"compute.instance.create.end"}


def test_listeners_of_one_pool_share_the_notifications(router: Any, oslo: Any) -> None:
    process = router()
    url = switchboard_url(process.port)
    seen = Recorder()
    gate = threading.Event()

    class Slow(Collector):
        def info(self, *args: Any) -> None:
            gate.wait(30)
            super().info(*args)

    oslo.listener(oslo.notification_transport(url), "volumes", [Slow("one", seen)], pool="workers")
    oslo.listener(oslo.notification_transport(url), "volumes", [Slow("two", seen)], pool="workers")
    notifier = oslo.notifier(oslo.notification_transport(url), "volumes")
    for number in range(200):
        notifier.info({}, "volume.attach", {"n": number})
    gate.set()
    items = seen.wait_count(200, "notifications of the pool")
    assert sorted(n for _, _, n in items) == list(range(200))
    assert {listener for listener, _, _ in items} == {"one", "two"}


def test_a_pool_whose_listener_restarts_finds_what_was_sent_meanwhile(router: Any, oslo: Any) -> None:
    process = router()
    url = switchboard_url(process.port)
    seen = Recorder()
    first = oslo.listener(oslo.notification_transport(url), "images", [Collector("first", seen)], pool="metering")
    notifier = oslo.notifier(oslo.notification_transport(url), "images")
    notifier.info({}, "image.upload", {"n": 0})
    seen.wait_count(1, "the first notification")
    oslo.stop(first)

    for number in range(1, 6):
        notifier.info({}, "image.upload", {"n": number})
    oslo.listener(oslo.notification_transport(url), "images", [Collector("second", seen)], pool="metering")
    items = seen.wait_count(6, "notifications")
    assert items[0] == ("first", "image.upload", 0)
    assert sorted(items[1:]) == [("second", "image.upload", n) for n in range(1, 6)]


def test_a_requeued_notification_comes_again_and_priorities_reach_their_methods(router: Any, oslo: Any) -> None:
    process = router()
    url = switchboard_url(process.port)
    seen = Recorder()
    refused = []

    class RequeueOnce(Collector):
        def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> Any:
            if not refused:
                refused.append(payload["n"])
                return oslo_messaging.NotificationResult.REQUEUE
            return super().info(ctxt, publisher_id, event_type, payload, metadata)

    oslo.listener(oslo.notification_transport(url), "hosts", [RequeueOnce("listener", seen)], allow_requeue=True)
    notifier = oslo.notifier(oslo.notification_transport(url), "hosts", publisher_id="compute.host-7")
    notifier.info({}, "host.update", {"n": 1})
    notifier.error({}, "host.failed", {"n": 2})
    items = seen.wait_count(2, "notifications")
    assert refused == [1]
    assert sorted(items, key=lambda item: item[2]) == [
        ("listener", "host.update", 1),
        ("listener", "host.failed", 2, "compute.host-7", True),
    ]


def test_a_batch_listener_gets_notifications_in_batches(router: Any, oslo: Any) -> None:
    process = router()
    url = switchboard_url(process.port)
    batches = Recorder()

    class Batches:
        def info(self, messages: list[dict[str, Any]]) -> None:
            batches.add([message["payload"]["n"] for message in messages])

    notifier = oslo.notifier(oslo.notification_transport(url), "batches")
    for number in range(10):
        notifier.info({}, "batch.event", {"n": number})
    oslo.batch_listener(oslo.notification_transport(url), "batches", [Batches()], batch_size=5, batch_timeout=2)
    items = batches.wait_for(lambda got: sum(len(batch) for batch in got) >= 10, "ten notifications")
    assert sorted(n for batch in items for n in batch) == list(range(10))
    assert max(len(batch) for batch in items) == 5
