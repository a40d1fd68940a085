"""Prometheus metrics of a router, read from its state at scrape time.

A ``RouterCollector`` is a ``prometheus_client`` custom collector: nothing is counted for
it on the hot path.  The core's ``Counters`` already count what routing does; each scrape
reads them, and walks the connections, links and queues for gauges (a scrape costs time
in proportion to the links, once per scrape).  The names are listed in
``docs/operations.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .. import __version__

if TYPE_CHECKING:
    from .core import RouterCore

__all__ = ["RouterCollector", "router_registry"]

PREFIX = "switchboard"

_COUNTERS = (
    # (Counters attribute, metric name, help)
    ("received", "deliveries_received", "Messages received from senders, clients and other routers"),
    ("forwarded", "deliveries_forwarded", "Messages sent to consumers, clients and other routers"),
    ("released_for_memory", "released_for_memory",
     "Messages released to their senders because an address or the router was at its memory bound"),
    ("copies_dropped", "multicast_copies_dropped", "Multicast copies dropped for consumers that fell behind"),
    ("dropped", "deliveries_dropped", "Presettled messages the router could not deliver"),
    ("looped", "deliveries_looped", "Messages released because their route looped"),
    ("connections_opened", "connections_opened", "Connections admitted"),
    ("connections_refused", "connections_refused", "Connections refused (limits, policy, shutting down)"),
    ("logins_failed", "logins_failed", "SASL PLAIN logins with a wrong user or password"),
    ("logins_throttled", "logins_throttled", "Logins refused without a check: their host failed too often"),
    ("logins_busy", "logins_busy", "Logins refused because too many were being verified"),
    ("policy_denied", "policy_denied", "Links and messages refused by the policy"),
)
_OUTCOMES = (
    # (Counters attribute, outcome label): outcomes the router itself gave senders.
    ("accepted_at_router", "accepted"),
    ("released", "released"),
    ("rejected", "rejected"),
    ("modified", "modified"),
    ("expired", "expired"),
)
_QUEUE_COUNTERS = (
    ("delivered", "Messages of the queue sent to consumers (redeliveries too)"),
    ("acknowledged", "Messages of the queue a consumer accepted"),
    ("expired", "Messages of the queue that expired"),
    ("dropped", "Messages of the queue dropped (overflow, rejected without a dead-letter queue)"),
    ("dead_lettered", "Messages of the queue moved to its dead-letter queue"),
)


class RouterCollector(Collector):
    """Everything the router can tell Prometheus, read when scraped."""

    def __init__(self, core: "RouterCore", ready: Callable[[], str | None]) -> None:
        self.core = core
        self.ready = ready
        """None when the router is ready, else why not (``/readyz``)."""

    def collect(self) -> Iterator[Metric]:
        core = self.core
        counters = core.counters
        info = InfoMetricFamily(f"{PREFIX}_router", "The router's identity")
        info.add_metric([], {"router_id": core.router_id, "version": __version__})
        yield info
        ready = GaugeMetricFamily(f"{PREFIX}_ready", "1 when the router is ready (/readyz answers 200)")
        ready.add_metric([], 1.0 if self.ready() is None else 0.0)
        yield ready

        for attribute, name, help_text in _COUNTERS:
            yield CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=getattr(counters, attribute))
        outcomes = CounterMetricFamily(
            f"{PREFIX}_router_outcomes",
            "Outcomes the router decided for senders' deliveries (consumers' outcomes are relayed, not counted)",
            labels=["outcome"],
        )
        for attribute, outcome in _OUTCOMES:
            outcomes.add_metric([outcome], getattr(counters, attribute))
        yield outcomes

        yield from self._connections_and_links()
        memory = core.memory
        yield GaugeMetricFamily(f"{PREFIX}_unsettled_deliveries",
                                "Forwarded deliveries waiting for their consumer's outcome", value=memory.in_flight)
        for name, value, help_text in (
            ("memory_held_bytes", memory.held, "Bytes of messages held in addresses and multicast backlogs"),
            ("memory_used_bytes", memory.used, "Bytes counted against limits.max_memory (held, and in flight)"),
            ("memory_limit_bytes", memory.limit, "limits.max_memory"),
            ("memory_high_water_bytes", memory.high_water, "Above this senders get no new credit"),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        yield GaugeMetricFamily(f"{PREFIX}_addresses", "Addresses in use on this router", value=len(core.addresses))
        yield from self._queues()
        yield from self._network()

    def _connections_and_links(self) -> Iterator[Metric]:
        by_role: dict[str, int] = {"normal": 0, "inter-router": 0}
        links_in = links_out = blocked = 0
        for conn in self.core.connections:
            by_role[conn.role] = by_role.get(conn.role, 0) + 1
            links_in += len(conn.inbound)
            links_out += len(conn.outbound)
            for inbound in conn.inbound:
                if inbound.blocked:
                    blocked += 1
        connections = GaugeMetricFamily(f"{PREFIX}_connections", "Open connections", labels=["role"])
        for role, count in sorted(by_role.items()):
            connections.add_metric([role], count)
        yield connections
        links = GaugeMetricFamily(f"{PREFIX}_links", "Attached links (in: the router receives)", labels=["direction"])
        links.add_metric(["in"], links_in)
        links.add_metric(["out"], links_out)
        yield links
        yield GaugeMetricFamily(
            f"{PREFIX}_senders_blocked",
            "Senders given no credit now for want of room (consumers' capacity or memory): credit stalls",
            value=blocked,
        )

    def _queues(self) -> Iterator[Metric]:
        manager = self.core.queues
        depth = GaugeMetricFamily(f"{PREFIX}_queue_messages", "Messages in the queue (waiting and unacknowledged)", labels=["queue"])
        size = GaugeMetricFamily(f"{PREFIX}_queue_bytes", "Bytes of the queue's messages", labels=["queue"])
        consumers = GaugeMetricFamily(f"{PREFIX}_queue_consumers", "Consumers attached to the queue here", labels=["queue"])
        totals = {
            attribute: CounterMetricFamily(f"{PREFIX}_queue_{attribute}", help_text, labels=["queue"])
            for attribute, help_text in _QUEUE_COUNTERS
        }
        for name, queue in sorted(manager.queues.items()):
            depth.add_metric([name], queue.depth)
            size.add_metric([name], queue.bytes)
            address = queue.address
            consumers.add_metric([name], len(address.consumers) if address is not None else 0)
            for attribute, family in totals.items():
                family.add_metric([name], getattr(queue, attribute))
        yield depth
        yield size
        yield consumers
        yield from totals.values()
        yield CounterMetricFamily(f"{PREFIX}_store_errors", "Queue store operations that failed", value=manager.store_errors)

    def _network(self) -> Iterator[Metric]:
        plane = self.core.plane
        up = GaugeMetricFamily(f"{PREFIX}_neighbour_up",
                               "1 while the inter-router link to the neighbour carries the routing protocol",
                               labels=["neighbour"])
        cost = GaugeMetricFamily(f"{PREFIX}_neighbour_cost", "The inter-router link's cost", labels=["neighbour"])
        for router_id, neighbour in sorted(plane.neighbours.items()):
            up.add_metric([router_id], 1.0 if neighbour.up else 0.0)
            cost.add_metric([router_id], neighbour.cost)
        yield up
        yield cost
        yield GaugeMetricFamily(f"{PREFIX}_routers_reachable", "Other routers this router has a route to",
                                value=len(plane.next_hops))


def router_registry(core: "RouterCore", ready: Callable[[], str | None]) -> CollectorRegistry:
    """A registry of the router's own metrics (not the process-wide default one)."""
    registry = CollectorRegistry()
    registry.register(RouterCollector(core, ready))
    return registry
