"""Prometheus metrics of a router, read from its state at scrape time.

A ``RouterCollector`` is a ``prometheus_client`` custom collector: nothing is counted for
it on the hot path.  The core's ``Counters`` already count what routing does; each scrape
reads them, and walks the connections, links and queues for gauges (a scrape costs time
in proportion to the links, once per scrape).  Traffic by address prefix and RPC call
latencies come from the records of ``traffic.py``, which routing counts on with plain
integer increments.  The names are listed in ``docs/operations.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .. import __version__
from .traffic import RPC_BUCKETS

if TYPE_CHECKING:
    from .core import RouterCore

__all__ = ["RouterCollector", "router_registry"]

PREFIX = "switchboard"

_COUNTERS = (
    # (Counters attribute, metric name, help)
    ("received", "deliveries_received", "Messages received from senders, clients and other routers"),
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
    ("credit_stalls", "credit_stalls",
     "Times a sender was refused more credit for want of room (consumers' capacity or memory)"),
)
_OUTCOMES = (
    # (Counters attribute, outcome label): outcomes the router itself gave senders.
    ("accepted_at_router", "accepted"),
    ("released", "released"),
    ("rejected", "rejected"),
    ("modified", "modified"),
    ("expired", "expired"),
)
_CONSUMER_OUTCOMES = ("accepted", "rejected", "released", "modified")
_ROUTER_OUTCOMES = (
    # (PrefixTraffic attribute, outcome label)
    ("router_accepted", "accepted"),
    ("router_released", "released"),
    ("router_rejected", "rejected"),
    ("router_expired", "expired"),
)
_BUCKET_LABELS = [*(repr(float(bound)) for bound in RPC_BUCKETS), "+Inf"]
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
        self._neighbours_seen: set[str] = set()
        """Routers that have been neighbours: a lost one stays, at 0, rather than vanish."""

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
        # Counted once, per prefix, where messages are sent: the router-wide sum is read here.
        yield CounterMetricFamily(f"{PREFIX}_deliveries_forwarded",
                                  "Messages sent to consumers, clients and other routers",
                                  value=sum(record.forwarded for record in core.addresses.traffic.records()))
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
        yield from self._prefix_traffic()
        yield from self._rpc_latency()
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
        yield from self._output_buffers()

    def _output_buffers(self) -> Iterator[Metric]:
        total = largest = paused = 0
        for conn in self.core.connections:
            port = conn.port
            buffered = port.output_buffered()
            total += buffered
            if buffered > largest:
                largest = buffered
            if port.write_paused:
                paused += 1
        for name, value, help_text in (
            ("connection_output_bytes", total, "Bytes written to connections that their peers have not taken yet"),
            ("connection_output_max_bytes", largest, "The most such bytes on one connection"),
            ("connection_output_limit_bytes", self.core.config.limits.max_connection_output,
             "limits.max_connection_output: past it a connection is sent nothing more until its peer reads"),
            ("connections_write_paused", paused, "Connections past limits.max_connection_output now"),
        ):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)

    def _prefix_traffic(self) -> Iterator[Metric]:
        core = self.core
        records = core.addresses.traffic.records()
        received = CounterMetricFamily(
            f"{PREFIX}_address_deliveries_in",
            "Messages sent to addresses under the prefix (by clients and other routers)", labels=["prefix"])
        forwarded = CounterMetricFamily(
            f"{PREFIX}_address_deliveries_out",
            "Messages for addresses under the prefix sent on to consumers and other routers", labels=["prefix"])
        outcomes = CounterMetricFamily(
            f"{PREFIX}_address_outcomes",
            "Outcomes of the prefix's deliveries: by=consumer, what consumers (and next routers) settled"
            " the messages sent to them with; by=router, what the router settled senders' deliveries with itself",
            labels=["prefix", "by", "outcome"])
        for record in records:
            label = record.prefix
            received.add_metric([label], record.received)
            forwarded.add_metric([label], record.forwarded)
            for outcome in _CONSUMER_OUTCOMES:
                outcomes.add_metric([label, "consumer", outcome], getattr(record, outcome))
            for attribute, outcome in _ROUTER_OUTCOMES:
                outcomes.add_metric([label, "router", outcome], getattr(record, attribute))
        yield received
        yield forwarded
        yield outcomes
        held_by_prefix = {record.prefix: 0 for record in records}
        largest = 0
        for address in core.addresses:
            held = address.held_bytes
            if held:
                label = address.traffic.prefix
                held_by_prefix[label] = held_by_prefix.get(label, 0) + held
                if held > largest:
                    largest = held
        held = GaugeMetricFamily(f"{PREFIX}_address_held_bytes",
                                 "Bytes held for the prefix's addresses (waiting messages, multicast copies)",
                                 labels=["prefix"])
        for label, value in held_by_prefix.items():
            held.add_metric([label], value)
        yield held
        yield GaugeMetricFamily(f"{PREFIX}_address_held_max_bytes", "The most bytes held for one address",
                                value=largest)
        yield GaugeMetricFamily(f"{PREFIX}_address_held_limit_bytes", "limits.max_address_bytes",
                                value=core.config.limits.max_address_bytes)

    def _rpc_latency(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            f"{PREFIX}_rpc_call_duration_seconds",
            "RPC calls from this router's clients: from the request's arrival to the server's acceptance"
            " (given once its reply is sent)",
            labels=["exchange", "topic", "method"])
        for topic in list(self.core.addresses.traffic.rpc_topics.values()):
            for method, series in list(topic.methods.items()):
                cumulative = 0
                buckets = []
                for label, count in zip(_BUCKET_LABELS, series.buckets):
                    cumulative += count
                    buckets.append((label, cumulative))
                family.add_metric([topic.exchange, topic.topic, method], buckets, series.total)
        yield family

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
        seen = self._neighbours_seen
        seen.update(plane.neighbours)
        for router_id in sorted(seen):
            neighbour = plane.neighbours.get(router_id)
            up.add_metric([router_id], 1.0 if neighbour is not None and neighbour.up else 0.0)
            if neighbour is not None:
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
