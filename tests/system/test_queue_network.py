"""A queue in a router network: hosted by one router, reached from every router.

    producer ── C ── B ── A [queue/…, hosted here] ── consumer
                     │
                  consumer

Every router names A as the host of ``queue/`` (``host = "A"``).  A producer on C has
its messages stored at A (``accepted`` only once stored there); consumers on A, B and C
get them through the network, each message to one consumer.
"""

from __future__ import annotations

import time

from queue_clients import QueueReceiver, QueueSender, queue_rows
from system_support import ProtonThread, run_proton

QUEUES = """
[[addresses]]
prefix = "queue/"
distribution = "queue"
host = "A"
"""


def bodies(count: int, tag: str = "m") -> list[str]:
    return [f"{tag}{i}" for i in range(count)]


def test_a_queue_hosted_by_one_router_serves_producers_and_consumers_on_others(network) -> None:
    routers = network({"A": [], "B": [("A", 1)], "C": [("B", 1)]}, extra=QUEUES)
    a, b, c = routers["A"].url, routers["B"].url, routers["C"].url

    # Sent on C before any consumer exists: stored at A.
    sender = run_proton(QueueSender(c, "queue/jobs", bodies(100)), timeout=30)
    assert sender.accepted == bodies(100), sender.outcomes
    assert queue_rows(a)["queue/jobs"]["depth"] == 100
    assert "queue/jobs" not in queue_rows(c), "only the host keeps the queue"

    # A consumer on B, two hops from the producer and one from the queue, gets them all, in order.
    got = run_proton(QueueReceiver(b, "queue/jobs", 100, credit=20), timeout=30)
    assert got.received == bodies(100)
    assert queue_rows(a)["queue/jobs"]["depth"] == 0

    # Consumers on A and C compete for what a producer on B sends.
    on_a = ProtonThread(QueueReceiver(a, "queue/jobs", 1000, credit=10), 60).start()
    on_c = ProtonThread(QueueReceiver(c, "queue/jobs", 1000, credit=10), 60).start()
    sender = run_proton(QueueSender(b, "queue/jobs", bodies(300, "n")), timeout=60)
    assert sender.accepted == bodies(300, "n")
    # Each receiver stops at its count; tell them to stop when the queue is drained.
    deadline = time.monotonic() + 30
    while len(on_a.handler.received) + len(on_c.handler.received) < 300:
        assert time.monotonic() < deadline, (len(on_a.handler.received), len(on_c.handler.received))
        time.sleep(0.05)  # between looks at the receivers' counts
    for thread in (on_a, on_c):
        thread.container.schedule(0, _Finish(thread.handler))
    received = on_a.join_result().received + on_c.join_result().received
    assert sorted(received) == sorted(bodies(300, "n")), "each message to exactly one consumer"
    assert on_a.handler.received and on_c.handler.received, "both routers' consumers got some"


class _Finish:
    """Ends a receiver from its own container's thread."""

    def __init__(self, handler) -> None:
        self.handler = handler

    def on_timer_task(self, event) -> None:
        self.handler.finish()


def test_producer_and_consumer_on_a_router_that_does_not_host_the_queue(network) -> None:
    """Both on B: the messages go to A to be stored, and come back to B's consumer."""
    routers = network({"A": [], "B": [("A", 1)]}, extra=QUEUES)
    b = routers["B"].url
    sender = run_proton(QueueSender(b, "queue/local", bodies(20)), timeout=30)
    assert sender.accepted == bodies(20)
    assert queue_rows(routers["A"].url)["queue/local"]["depth"] == 20
    got = run_proton(QueueReceiver(b, "queue/local", 20, credit=5), timeout=30)
    assert got.received == bodies(20)


def test_consumer_waiting_on_a_router_that_does_not_host_the_queue_gets_what_is_sent_there(network) -> None:
    """The consumer attaches on B first; then a producer on B sends."""
    routers = network({"A": [], "B": [("A", 1)]}, extra=QUEUES)
    b = routers["B"].url
    waiting = ProtonThread(QueueReceiver(b, "queue/waiting", 20, credit=5), 30).start()
    deadline = time.monotonic() + 15
    while "queue/waiting" not in queue_rows(routers["A"].url) or \
            queue_rows(routers["A"].url)["queue/waiting"]["remote_consumers"] == 0:
        assert time.monotonic() < deadline, "A never saw B's consumer"
        time.sleep(0.05)  # between two questions to the router
    sender = run_proton(QueueSender(b, "queue/waiting", bodies(20)), timeout=30)
    assert sender.accepted == bodies(20)
    assert waiting.join_result().received == bodies(20)


EACH = """
[[addresses]]
prefix = "each/"
distribution = "queue"
"""


def test_routers_that_each_host_a_queue_of_one_name_do_not_pass_messages_back_and_forth(router) -> None:
    """No ``host``: A and B each keep their own ``each/jobs``.  A consumer on B also gets
    what was stored on A (sent on, marked as stored already, not stored again), and a
    message is never bounced between the two queues: 200 sent, 200 received, no more."""
    from network_support import NetworkRouter, router_config, wait_converged

    routers: dict[str, NetworkRouter] = {}
    for router_id, links in (("A", []), ("B", [("A", 1)])):
        connectors = [(routers[peer].inter_router_port, cost) for peer, cost in links]
        config = router_config(router_id, connectors, EACH).replace(
            f'id = "{router_id}"\n', f'id = "{router_id}"\ndata_dir = "{router_id}-data"\n', 1)
        process = router(config, listen=False)
        match = process.stdout.wait_for(r":(\d+) \(inter-router\)", 15)
        assert match is not None, process.output()
        routers[router_id] = NetworkRouter(router_id, process, int(match.group(1)))
    wait_converged(routers)
    a, b = routers["A"].url, routers["B"].url
    assert run_proton(QueueSender(a, "each/jobs", bodies(100, "a")), timeout=30).accepted == bodies(100, "a")
    assert run_proton(QueueSender(b, "each/jobs", bodies(100, "b")), timeout=30).accepted == bodies(100, "b")
    got = run_proton(QueueReceiver(b, "each/jobs", 200, credit=20), timeout=60)
    assert sorted(got.received) == sorted(bodies(100, "a") + bodies(100, "b")), "each message once"
    rows_a, rows_b = queue_rows(a)["each/jobs"], queue_rows(b)["each/jobs"]
    assert rows_a["depth"] == rows_b["depth"] == 0
    assert rows_a["delivered"] + rows_b["delivered"] == 200, (rows_a, rows_b)
