"""Temporary stand-in (development only): an omniscient network for one process."""
from __future__ import annotations
import heapq

_ALL: dict[str, "RouterNetwork"] = {}


class RouterNetwork:
    def __init__(self, router_id, instance, adapter, timers=None):
        self.router_id = router_id; self.instance = instance; self.adapter = adapter
        self.neighbours: dict[str, int] = {}
        self.local: set[str] = set()
        self.hops: dict = {}; self.cost_map: dict = {}; self.known: dict[str, set[str]] = {}
        _ALL[router_id] = self

    def neighbour_connected(self, nid, instance, cost, now):
        self.neighbours[nid] = cost; _recompute()
    def neighbour_lost(self, nid, now):
        self.neighbours.pop(nid, None); _recompute()
    def handle(self, nid, message, now): pass
    def tick(self, now): return None
    def add_local_address(self, a, now): self.local.add(a); _recompute()
    def remove_local_address(self, a, now): self.local.discard(a); _recompute()
    def next_hop(self, r): return self.hops.get(r)
    def cost(self, r): return self.cost_map.get(r)
    def routers_for(self, a): return frozenset(r for r, s in self.known.items() if a in s)
    def view(self): return {"routers": sorted(_ALL)}


def _recompute():
    for me in _ALL.values():
        dist = {me.router_id: 0}; first = {}
        heap = [(0, me.router_id, None)]
        while heap:
            d, r, f = heapq.heappop(heap)
            if d > dist.get(r, 1e18): continue
            node = _ALL.get(r)
            if node is None: continue
            for n, c in sorted(node.neighbours.items()):
                other = _ALL.get(n)
                if other is None or r not in other.neighbours: continue
                nd = d + c
                if nd < dist.get(n, 1e18):
                    dist[n] = nd; first[n] = f or n; heapq.heappush(heap, (nd, n, f or n))
        hops = {r: first[r] for r in first}; costs = {r: dist[r] for r in first}
        if hops != me.hops or costs != me.cost_map:
            me.hops, me.cost_map = hops, costs
            me.adapter.routes_changed(hops, costs)
        for r in first:
            new = set(_ALL[r].local); old = me.known.get(r, set())
            for a in new - old: me.adapter.address_added(a, r)
            for a in old - new: me.adapter.address_removed(a, r)
            me.known[r] = new
        for r in list(me.known):
            if r not in first:
                for a in me.known.pop(r): me.adapter.address_removed(a, r)
