"""Shortest paths over the network's link states: pure functions of a topology.

A topology maps each router id to its advertised peers and its cost to each.  A link
counts only when both ends advertise it (a router that died still lists its neighbours
until its state is forgotten, but they stop listing it, so it drops out at once), with one
exception: the root's own links are taken from the root's entry alone, because the root
has already checked them both ways (HELLO) before it lists them.  The cost of going from
``u`` to ``v`` is what ``u`` advertises for ``v``: links may cost more one way than the other.

Dijkstra with ``heapq``; among equal-cost paths the one whose first hop has the lowest
router id wins, so every router computes the same paths whatever order its state arrived
in.  Labels are ``(cost, first hop)`` compared as tuples; costs are at least 1, so every
router on a shortest path to ``v`` is settled before ``v`` and the smallest first hop has
already propagated.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

__all__ = ["Topology", "shortest_paths"]

Topology = Mapping[str, Mapping[str, int]]
"""Router id -> {peer id: cost from that router to the peer}."""


def shortest_paths(topology: Topology, root: str) -> tuple[dict[str, str], dict[str, int]]:
    """Return ``(next_hops, costs)`` from ``root`` to every other router it can reach.

    ``next_hops[r]`` is the root's neighbour to forward through to reach ``r``;
    ``costs[r]`` the total cost of that path.  The root itself and unreachable routers are
    absent.
    """
    next_hops: dict[str, str] = {}
    costs: dict[str, int] = {}
    best: dict[str, tuple[int, str]] = {}
    heap: list[tuple[int, str, str]] = []
    for peer, cost in topology.get(root, {}).items():
        if peer != root:
            label = (cost, peer)
            if peer not in best or label < best[peer]:
                best[peer] = label
                heapq.heappush(heap, (cost, peer, peer))
    while heap:
        cost, first_hop, node = heapq.heappop(heap)
        if node in costs or best.get(node) != (cost, first_hop):
            continue  # a stale entry: a better label was pushed later
        costs[node] = cost
        next_hops[node] = first_hop
        for peer, link_cost in topology.get(node, {}).items():
            if peer == root or peer in costs:
                continue
            back = topology.get(peer)
            if back is None or node not in back:
                continue  # only one end advertises this link
            label = (cost + link_cost, first_hop)
            if peer not in best or label < best[peer]:
                best[peer] = label
                heapq.heappush(heap, (label[0], first_hop, peer))
    return next_hops, costs
