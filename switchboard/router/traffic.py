"""Traffic counted per configured address prefix, and RPC call latency per topic and method.

Each ``Address`` points at the record of the prefix it matched (resolved once, when the
address is made), so routing a message adds to plain integers on an object it already
holds: no lookup, no allocation.  The records outlive addresses (an address that goes
leaves its counts where they were), so the counters never go backwards; the metrics
collector (``metrics.py``) reads them at scrape time.  Labels stay bounded: one record
per configured prefix, one for dynamic (reply) addresses, one for what is routed to
another router's address; RPC series are capped (``MAX_RPC_SERIES``).
"""

from __future__ import annotations

from typing import Final

from urllib.parse import unquote

from ..amqp.spec import Accepted, Modified, Rejected, Released

__all__ = [
    "PrefixTraffic", "RpcSeries", "RpcTopic", "TrafficTable", "RPC_ADDRESS_PREFIX", "RPC_BUCKETS",
    "MAX_RPC_SERIES", "DYNAMIC_LABEL", "OWNER_LABEL", "OTHER_LABEL",
]

RPC_ADDRESS_PREFIX: Final = "rpc/"
"""Addresses of RPC calls and casts: ``rpc/<exchange>/<topic>[/<server>]`` (the RPC wire
format, ``switchboard/rpc/wire.py``, whose requests carry their method as the subject)."""

RPC_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the RPC latency histogram's buckets."""

MAX_RPC_SERIES: Final = 1000
"""(topic, method) pairs measured separately; calls beyond them are counted under
``OTHER_LABEL``, so a client inventing names cannot grow the metrics without bound."""

DYNAMIC_LABEL: Final = "(dynamic)"
"""The prefix label of dynamic addresses (clients' reply addresses), all together."""
OWNER_LABEL: Final = "(to owner)"
"""The prefix label of what a router sends toward another router that owns the address
(a dynamic address made there, a queue hosted there)."""
OTHER_LABEL: Final = "(other)"


class PrefixTraffic:
    """What routing did for the addresses under one prefix."""

    __slots__ = (
        "prefix", "received", "forwarded", "accepted", "rejected", "released", "modified",
        "router_accepted", "router_released", "router_rejected", "router_expired",
    )

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.received = 0
        """Messages senders (clients and other routers) sent to these addresses."""
        self.forwarded = 0
        """Messages sent on to consumers and to other routers."""
        # The outcomes consumers gave what they were sent unsettled.
        self.accepted = 0
        self.rejected = 0
        self.released = 0
        self.modified = 0
        # The outcomes the router gave senders itself.
        self.router_accepted = 0
        self.router_released = 0
        self.router_rejected = 0
        self.router_expired = 0

    def consumer_outcome(self, state: object) -> None:
        """Count a consumer's outcome (Accepted, Rejected, Released or Modified)."""
        kind = type(state)
        if kind is Accepted:
            self.accepted += 1
        elif kind is Released:
            self.released += 1
        elif kind is Modified:
            self.modified += 1
        elif kind is Rejected:
            self.rejected += 1


class RpcSeries:
    """One (topic, method) histogram of call latencies: calls per bucket (not cumulative;
    bucket ``bisect_left(RPC_BUCKETS, seconds)``, the last above every bound) and their
    sum, added to by the core as each call's outcome comes back."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(RPC_BUCKETS) + 1)
        self.total = 0.0


class RpcTopic:
    """The calls to one RPC topic (of one exchange), by method."""

    __slots__ = ("exchange", "topic", "methods", "_table")

    def __init__(self, exchange: str, topic: str, table: "TrafficTable") -> None:
        self.exchange = exchange
        self.topic = topic
        self.methods: dict[str, RpcSeries] = {}
        self._table = table

    def series(self, method: object) -> RpcSeries:
        """The histogram of ``method`` (a string from the request; anything else is other)."""
        key = method if type(method) is str and method else OTHER_LABEL
        series = self.methods.get(key)
        if series is None:
            series = self._table.new_series(self, key)
        return series


class TrafficTable:
    """The prefix records and RPC series of one router.

    Records are keyed by the configured prefix string, so a configuration that changes
    the address prefixes keeps the counts of every prefix it keeps: build the new
    ``AddressTable`` with the same ``TrafficTable``.  A removed prefix's record stays (its
    counters are still exported, unchanged) until the router restarts.
    """

    def __init__(self) -> None:
        self.prefixes: dict[str, PrefixTraffic] = {}
        self.dynamic = PrefixTraffic(DYNAMIC_LABEL)
        self.to_owner = PrefixTraffic(OWNER_LABEL)
        self.rpc_topics: dict[tuple[str, str], RpcTopic] = {}
        self._series = 0

    def for_prefix(self, prefix: str) -> PrefixTraffic:
        record = self.prefixes.get(prefix)
        if record is None:
            record = self.prefixes[prefix] = PrefixTraffic(prefix)
        return record

    def records(self) -> list[PrefixTraffic]:
        return [*self.prefixes.values(), self.dynamic, self.to_owner]

    def rpc_topic(self, address: str) -> RpcTopic | None:
        """The topic record of an RPC address (``rpc/<exchange>/<topic>[/<server>]``), or
        None if ``address`` is not one."""
        if not address.startswith(RPC_ADDRESS_PREFIX):
            return None
        parts = address[len(RPC_ADDRESS_PREFIX):].split("/")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            return None
        key = (unquote(parts[0]), unquote(parts[1]))
        topic = self.rpc_topics.get(key)
        if topic is None:
            if len(self.rpc_topics) >= MAX_RPC_SERIES:
                key = (OTHER_LABEL, OTHER_LABEL)
                topic = self.rpc_topics.get(key)
                if topic is not None:
                    return topic
            topic = self.rpc_topics[key] = RpcTopic(key[0], key[1], self)
        return topic

    def new_series(self, topic: RpcTopic, method: str) -> RpcSeries:
        if self._series >= MAX_RPC_SERIES:
            series = topic.methods.get(OTHER_LABEL)
            if series is not None:
                return series
            method = OTHER_LABEL
        series = topic.methods[method] = RpcSeries()
        self._series += 1
        return series
