"""The blocking RPC and notification classes, used from many threads at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from switchboard.client import BlockingClient
from switchboard.rpc import (
    BlockingNotificationListener,
    BlockingNotifier,
    BlockingRPCClient,
    BlockingRPCServer,
    MessagingTimeout,
    RemoteError,
    Target,
)

WAIT = 20.0


class Inventory:
    def __init__(self) -> None:
        self.threads: set[str] = set()

    def reserve(self, ctxt: dict[str, Any], item: str, count: int) -> str:
        self.threads.add(threading.current_thread().name)
        if count < 0:
            raise ValueError(f"cannot reserve {count} of {item}")
        return f"{count} x {item} for {ctxt['user']}"


def test_threads_call_one_blocking_client_at_once(router) -> None:
    r = router()
    inventory = Inventory()
    with BlockingClient.connect(r.url) as server_client, BlockingClient.connect(r.url) as client:
        server = BlockingRPCServer(server_client, Target(topic="inventory", server="s1"), [inventory], workers=4)
        server.start()
        rpc = BlockingRPCClient(client, Target(topic="inventory"), timeout=WAIT)

        def one(n: int) -> str:
            return rpc.call({"user": f"u{n}"}, "reserve", item="disk", count=n)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(40)))
        assert answers == [f"{n} x disk for u{n}" for n in range(40)]
        assert inventory.threads and all(name.startswith("rpc-worker") for name in inventory.threads)

        with pytest.raises(RemoteError) as raised:
            rpc.call({"user": "x"}, "reserve", item="disk", count=-1)
        assert (raised.value.exc_type, raised.value.value) == ("ValueError", "cannot reserve -1 of disk")
        with pytest.raises(MessagingTimeout):
            rpc.prepare(topic="nobody", timeout=0.3).call({}, "reserve")
        rpc.prepare(server="s1").cast({"user": "y"}, "reserve", item="cpu", count=1)

        server.stop()
        server.wait()


def test_blocking_notifications_reach_a_late_listener(router) -> None:
    r = router()
    got: list[Any] = []
    all_there = threading.Event()

    class Audit:
        def audit(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> None:
            got.append(payload["n"])
            if len(got) == 4:
                all_there.set()

    with BlockingClient.connect(r.url) as client:
        notifier = BlockingNotifier(client, "identity.host1", topics=["security"])
        for n in range(4):
            notifier.audit({}, "identity.authenticate", {"n": n})
        listener = BlockingNotificationListener(client, [Target(topic="security")], [Audit()])
        listener.start()
        assert all_there.wait(WAIT), f"got only {got}"
        assert sorted(got) == [0, 1, 2, 3]
        listener.stop()
        listener.wait()
