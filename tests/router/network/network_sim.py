"""A network of real ``RouterNetwork`` objects in one process, on a simulated clock.

Each router's adapter hands ``send_control`` to the simulation, which delivers the map to
the neighbour's ``handle`` after the link's latency, in order per direction (like one AMQP
link).  By default every message crosses the real AMQP codec (encoded, counted, decoded),
so the maps must survive the wire.  Links can be cut and healed, routers killed and
restarted, messages dropped or delayed by a rule.  Every router's ``tick`` runs at the
deadline it asks for; the clock jumps from event to event.

``wire=False`` hands the maps over as they are (faster, for large simulations) while
still counting their encoded size unless ``count_bytes=False``.

The adapters record what the data plane would see and check the promises made to it:
``routes_changed`` only with a change, ``address_added`` only for an address not already
on that router, ``address_removed`` only for one that was.  Broken promises are collected
in ``Simulation.violations``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from switchboard.amqp.codec import decode_value, encode
from switchboard.router.network import NetworkTimers, RouterNetwork

DropRule = Callable[[str, str, dict], bool]


@dataclass
class Link:
    a: str
    b: str
    cost_ab: int
    cost_ba: int
    latency: float
    up: bool = True
    last_arrival: dict[str, float] = field(default_factory=dict)  # per destination


class SimAdapter:
    def __init__(self, sim: Simulation, router_id: str) -> None:
        self.sim = sim
        self.id = router_id
        self.next_hops: dict[str, str] = {}
        self.costs: dict[str, int] = {}
        self.route_updates = 0
        self.address_updates = 0
        self.addresses: dict[str, set[str]] = {}
        self.duplicates: list[str] = []
        self.last_change = 0.0

    def send_control(self, neighbour_id: str, message: dict) -> None:
        self.sim.transmit(self.id, neighbour_id, message)

    def routes_changed(self, next_hops: dict[str, str], costs: dict[str, int]) -> None:
        if next_hops == self.next_hops and costs == self.costs:
            self.sim.violations.append(f"{self.id}: routes_changed without a change at {self.sim.now}")
        self.next_hops, self.costs = dict(next_hops), dict(costs)
        self.route_updates += 1
        self.last_change = self.sim.now

    def address_added(self, address: str, router_id: str) -> None:
        routers = self.addresses.setdefault(address, set())
        if router_id in routers:
            self.sim.violations.append(f"{self.id}: {address} added twice for {router_id}")
        if router_id not in self.next_hops:
            self.sim.violations.append(f"{self.id}: {address} added for {router_id}, which has no route")
        routers.add(router_id)
        self.address_updates += 1
        self.last_change = self.sim.now

    def address_removed(self, address: str, router_id: str) -> None:
        routers = self.addresses.get(address, set())
        if router_id not in routers:
            self.sim.violations.append(f"{self.id}: {address} removed for {router_id}, which did not have it")
        routers.discard(router_id)
        if not routers:
            self.addresses.pop(address, None)
        self.address_updates += 1
        self.last_change = self.sim.now

    def duplicate_router(self, router_id: str) -> None:
        self.duplicates.append(router_id)

    def address_table(self) -> dict[str, frozenset[str]]:
        return {address: frozenset(routers) for address, routers in self.addresses.items()}


class Simulation:
    """See the module docstring.  ``now`` starts at 0.0."""

    def __init__(
        self,
        timers: NetworkTimers | None = None,
        latency: float = 0.001,
        wire: bool = True,
        trace: Callable[[str], None] | None = None,
        count_bytes: bool = True,
        adapter_factory: Callable[[Simulation, str], Any] = SimAdapter,
    ) -> None:
        self.timers = timers or NetworkTimers()
        self.latency = latency
        self.wire = wire
        self.count_bytes = count_bytes
        self.adapter_factory = adapter_factory
        self.trace = trace
        self.now = 0.0
        self.routers: dict[str, RouterNetwork] = {}
        self.adapters: dict[str, SimAdapter] = {}
        self.links: dict[frozenset[str], Link] = {}
        self.violations: list[str] = []
        self.drop_rules: list[DropRule] = []
        self.delivered = 0
        self.dropped = 0
        self.bytes_sent: dict[str, int] = {}
        self.messages_sent: dict[str, int] = {}
        self._events: list[tuple[float, int, int, str, tuple]] = []
        self._order = itertools.count()
        self._tick_at: dict[str, float] = {}
        self._size_cache: dict[int, tuple[dict, int]] = {}

    # -- building the network

    def add_router(self, router_id: str, instance: int = 1, addresses: Iterable[str] = ()) -> RouterNetwork:
        adapter = self.adapter_factory(self, router_id)
        network = RouterNetwork(router_id, instance, adapter, self.timers, self.trace)
        self.routers[router_id] = network
        self.adapters[router_id] = adapter
        for address in addresses:
            network.add_local_address(address, self.now)
        self._schedule_tick(router_id)
        return network

    def connect(self, a: str, b: str, cost: int = 1, cost_back: int | None = None, latency: float | None = None) -> None:
        """Bring up a connection between two routers (both cores report it at once)."""
        key = frozenset((a, b))
        link = self.links.get(key)
        back = cost if cost_back is None else cost_back
        if link is None or not link.up:
            self.links[key] = Link(a, b, cost, back, self.latency if latency is None else latency)
        for here, there, c in ((a, b, cost), (b, a, back)):
            if here in self.routers:
                self.routers[here].neighbour_connected(there, self.routers[there].instance, c, self.now)
                self._schedule_tick(here)

    def cut(self, a: str, b: str) -> None:
        """The connection goes; both cores notice (as their heartbeat would) at once."""
        link = self.links.get(frozenset((a, b)))
        if link is None or not link.up:
            return
        link.up = False
        for here, there in ((a, b), (b, a)):
            if here in self.routers:
                self.routers[here].neighbour_lost(there, self.now)
                self._schedule_tick(here)

    def kill(self, router_id: str) -> None:
        """The router dies: its links go, its neighbours are told."""
        for link in list(self.links.values()):
            if router_id in (link.a, link.b) and link.up:
                self.cut(link.a, link.b)
        del self.routers[router_id]
        self._tick_at.pop(router_id, None)

    def neighbours(self, router_id: str) -> list[str]:
        return sorted(
            (link.b if link.a == router_id else link.a)
            for link in self.links.values()
            if link.up and router_id in (link.a, link.b)
        )

    # -- messages

    def transmit(self, source: str, destination: str, message: dict) -> None:
        link = self.links.get(frozenset((source, destination)))
        op = message.get("op", "?")
        payload = encode(message) if self.wire else message
        size = len(payload) if self.wire else self._size(message) if self.count_bytes else 0
        self.messages_sent[source] = self.messages_sent.get(source, 0) + 1
        self.bytes_sent[source] = self.bytes_sent.get(source, 0) + size
        if link is None or not link.up or any(rule(source, destination, message) for rule in self.drop_rules):
            self.dropped += 1
            return
        arrival = max(self.now + link.latency, link.last_arrival.get(destination, 0.0))
        link.last_arrival[destination] = arrival
        heapq.heappush(self._events, (arrival, 0, next(self._order), "deliver", (link, destination, payload, op)))

    def _size(self, message: dict) -> int:
        # a flood passes one map to several neighbours: encode it once
        cached = self._size_cache.get(id(message))
        if cached is not None and cached[0] is message:
            return cached[1]
        size = len(encode(message))
        if len(self._size_cache) > 10000:
            self._size_cache.clear()
        self._size_cache[id(message)] = (message, size)
        return size

    # -- time

    def _schedule_tick(self, router_id: str) -> None:
        network = self.routers.get(router_id)
        if network is None:
            return
        deadline = network.deadline()
        if deadline is None:
            self._tick_at.pop(router_id, None)
            return
        deadline = max(deadline, self.now)
        if self._tick_at.get(router_id) == deadline:
            return
        self._tick_at[router_id] = deadline
        heapq.heappush(self._events, (deadline, 1, next(self._order), "tick", (router_id, deadline)))

    def run_until(self, end: float, max_events: int = 5_000_000) -> None:
        """Process every event up to simulated time ``end``, then set the clock to it."""
        for _ in range(max_events):
            if not self._events or self._events[0][0] > end:
                break
            when, _, _, kind, data = heapq.heappop(self._events)
            self.now = max(self.now, when)
            if kind == "deliver":
                link, destination, payload, _op = data
                source = link.a if destination == link.b else link.b
                network = self.routers.get(destination)
                if network is None or not link.up or self.links.get(frozenset((source, destination))) is not link:
                    self.dropped += 1
                    continue
                message = decode_value(payload, 0)[0] if self.wire else payload
                self.delivered += 1
                network.handle(source, message, self.now)
                self._schedule_tick(destination)
            else:
                router_id, deadline = data
                if self._tick_at.get(router_id) != deadline or router_id not in self.routers:
                    continue
                del self._tick_at[router_id]
                self.routers[router_id].tick(self.now)
                self._schedule_tick(router_id)
        else:
            raise AssertionError(f"more than {max_events} events before t={end}")
        self.now = max(self.now, end)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def touch(self, router_id: str) -> None:
        """After calling a router directly (an address added), let it tick when it wants."""
        self._schedule_tick(router_id)

    # -- what the routers think

    def last_change(self) -> float:
        return max((a.last_change for rid, a in self.adapters.items() if rid in self.routers), default=0.0)

    def true_topology(self) -> dict[str, dict[str, int]]:
        topology: dict[str, dict[str, int]] = {rid: {} for rid in self.routers}
        for link in self.links.values():
            if link.up and link.a in self.routers and link.b in self.routers:
                topology[link.a][link.b] = link.cost_ab
                topology[link.b][link.a] = link.cost_ba
        return topology
