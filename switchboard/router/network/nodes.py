"""The routers this router knows of: their link state, reachability and routes.

A record exists for every other router we have heard of through a link-state or address
update.  Its boot ``instance`` orders its lives: state of a higher instance replaces all
that an earlier one advertised (the router restarted), state of a lower one is stale and
dropped.  Within an instance, a higher ``ls_seq`` replaces a lower one.

Changes only mark the table dirty; ``recompute()``, run once per tick, computes the
shortest paths (``paths.py``) and tells the data plane only what changed: new next hops or
costs (one ``routes_changed``), routers that became reachable or unreachable.  A router
unreachable for ``remote_max_age`` is forgotten, so the table holds what the network holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from .paths import shortest_paths

__all__ = ["Freshness", "NodeTable", "RouterRecord"]


class Freshness(Enum):
    """How an instance seen in a message compares with the one on record."""

    STALE = "stale"  # an earlier life of the router: drop the message
    CURRENT = "current"  # the life on record
    NEW = "new"  # first news of this router
    RESTARTED = "restarted"  # a later life: everything of the earlier one was reset


@dataclass(slots=True)
class RouterRecord:
    id: str
    instance: int
    ls_seq: int = 0  # 0: no link state received yet
    peers: dict[str, int] = field(default_factory=dict)
    reachable: bool = False
    cost: int | None = None
    next_hop: str | None = None
    unreachable_since: float | None = None


class NodeTable:
    """Known routers, dirty-flagged shortest paths, data-plane notifications on change."""

    def __init__(
        self,
        router_id: str,
        remote_max_age: float,
        routes_changed: Callable[[dict[str, str], dict[str, int]], None],
        reachability_changed: Callable[[str, bool], None],
    ) -> None:
        self._id = router_id
        self._max_age = remote_max_age
        self._routes_changed = routes_changed
        self._reachability_changed = reachability_changed
        self.records: dict[str, RouterRecord] = {}
        self.next_hops: dict[str, str] = {}
        self.costs: dict[str, int] = {}
        self.dirty = False
        self.recomputes = 0
        self._requested_until: dict[str, float] = {}  # link state asked for, not yet received

    # -- link state

    def observe(self, router_id: str, instance: int, now: float) -> Freshness:
        """Place ``instance`` against the record, creating or resetting it as needed."""
        record = self.records.get(router_id)
        if record is None:
            self.records[router_id] = RouterRecord(router_id, instance, unreachable_since=now)
            return Freshness.NEW
        if instance == record.instance:
            return Freshness.CURRENT
        if instance < record.instance:
            return Freshness.STALE
        record.instance = instance
        record.ls_seq = 0
        if record.peers:
            record.peers = {}
            self.dirty = True
        return Freshness.RESTARTED

    def update_link_state(self, router_id: str, ls_seq: int, peers: Mapping[str, int]) -> bool:
        """Store a newer link state of the current instance; False when not newer."""
        record = self.records[router_id]
        if ls_seq <= record.ls_seq:
            return False
        record.ls_seq = ls_seq
        self._requested_until.pop(router_id, None)
        if peers != record.peers:
            record.peers = dict(peers)
            self.dirty = True
        return True

    def wants_link_state(self, router_id: str, instance: int, ls_seq: int, now: float, retry_after: float) -> bool:
        """Whether a summary shows newer link state than ours and no request is outstanding."""
        record = self.records.get(router_id)
        if ls_seq == 0 or (record is not None and (instance, ls_seq) <= (record.instance, record.ls_seq)):
            return False
        if now < self._requested_until.get(router_id, float("-inf")):
            return False
        self._requested_until[router_id] = now + retry_after
        return True

    # -- routes

    def recompute(self, own_peers: Mapping[str, int], now: float) -> None:
        """Recompute paths if anything changed since the last time; notify on change."""
        if not self.dirty:
            return
        self.dirty = False
        self.recomputes += 1
        topology: dict[str, Mapping[str, int]] = {rid: rec.peers for rid, rec in self.records.items()}
        topology[self._id] = own_peers
        next_hops, costs = shortest_paths(topology, self._id)
        # a neighbour that is up but whose own record has not arrived is still reachable
        for router_id in next_hops:
            if router_id not in self.records:
                self.records[router_id] = RouterRecord(router_id, 0, unreachable_since=now)
        # Withdraw addresses before routes and announce routes before addresses, so the
        # data plane never holds an address on a router it has no route to.
        gained = []
        for record in self.records.values():
            reachable = record.id in next_hops
            record.cost = costs.get(record.id)
            record.next_hop = next_hops.get(record.id)
            if reachable != record.reachable:
                record.reachable = reachable
                record.unreachable_since = None if reachable else now
                if reachable:
                    gained.append(record.id)
                else:
                    self._reachability_changed(record.id, False)
        if next_hops != self.next_hops or costs != self.costs:
            self.next_hops = next_hops
            self.costs = costs
            self._routes_changed(dict(next_hops), dict(costs))
        for router_id in gained:
            self._reachability_changed(router_id, True)

    def expire(self, now: float) -> list[str]:
        """Forget routers unreachable for longer than the maximum age; return their ids."""
        gone = [
            rid
            for rid, rec in self.records.items()
            if rec.unreachable_since is not None and now >= rec.unreachable_since + self._max_age
        ]
        for router_id in gone:
            del self.records[router_id]  # unreachable already: no path changes
        # requests never answered (a router that vanished meanwhile) must not pile up
        if self._requested_until:
            self._requested_until = {rid: until for rid, until in self._requested_until.items() if until > now}
        return gone

    def deadline(self, now: float) -> float | None:
        if self.dirty:
            return now
        ages = [rec.unreachable_since for rec in self.records.values() if rec.unreachable_since is not None]
        return min(ages) + self._max_age if ages else None
