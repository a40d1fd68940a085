"""Shortest paths as a pure function of a topology; each topology drawn in its docstring."""

from __future__ import annotations

import random

from switchboard.router.network.paths import shortest_paths


def links(*edges: tuple[str, str, int] | tuple[str, str, int, int]) -> dict[str, dict[str, int]]:
    """Both directions of each edge: (a, b, cost) or (a, b, cost a->b, cost b->a)."""
    topology: dict[str, dict[str, int]] = {}
    for edge in edges:
        a, b, cost = edge[0], edge[1], edge[2]
        back = edge[3] if len(edge) == 4 else cost
        topology.setdefault(a, {})[b] = cost
        topology.setdefault(b, {})[a] = back
    return topology


def test_line():
    """
    A --1-- B --1-- C --1-- D
    """
    topology = links(("A", "B", 1), ("B", "C", 1), ("C", "D", 1))
    next_hops, costs = shortest_paths(topology, "A")
    assert next_hops == {"B": "B", "C": "B", "D": "B"}
    assert costs == {"B": 1, "C": 2, "D": 3}
    next_hops, costs = shortest_paths(topology, "C")
    assert next_hops == {"A": "B", "B": "B", "D": "D"}
    assert costs == {"A": 2, "B": 1, "D": 1}


def test_ring_breaks_ties_by_lowest_first_hop():
    """
        A --1-- B
        |       |
        1       1
        |       |
        D --1-- C

    From A, C is 2 away both ways round: through B (lower id) wins, from every start.
    """
    topology = links(("A", "B", 1), ("B", "C", 1), ("C", "D", 1), ("D", "A", 1))
    assert shortest_paths(topology, "A") == ({"B": "B", "C": "B", "D": "D"}, {"B": 1, "C": 2, "D": 1})
    assert shortest_paths(topology, "C")[0] == {"A": "B", "B": "B", "D": "D"}
    # the answer does not depend on the order the link states were stored in
    shuffled = {node: dict(reversed(list(peers.items()))) for node, peers in reversed(list(topology.items()))}
    assert shortest_paths(shuffled, "A") == shortest_paths(topology, "A")


def test_tie_break_follows_the_first_hop_through_longer_paths():
    """
        A --1-- X --1-- C --2-- E
        |                       |
        1                       1
        |                       |
        B --1-- Y --------1---- D

    E is 4 away through X and 4 away through B: the first hops are X and B; B wins.
    """
    topology = links(("A", "X", 1), ("X", "C", 1), ("C", "E", 2), ("A", "B", 1), ("B", "Y", 1), ("Y", "D", 1), ("D", "E", 1))
    next_hops, costs = shortest_paths(topology, "A")
    assert (next_hops["E"], costs["E"]) == ("B", 4)
    assert next_hops["C"] == "X"


def test_asymmetric_costs_use_the_outgoing_direction():
    """
        A ---1-->  B      A->B costs 1, B->A costs 10
          <--10---
        |          |
        4          4
        |          |
        +--- C ----+

    From A, B is 1 away directly; from B, A is 8 away through C, not 10 directly.
    """
    topology = links(("A", "B", 1, 10), ("A", "C", 4), ("B", "C", 4))
    assert shortest_paths(topology, "A") == ({"B": "B", "C": "C"}, {"B": 1, "C": 4})
    assert shortest_paths(topology, "B") == ({"A": "C", "C": "C"}, {"A": 8, "C": 4})


def test_a_link_advertised_by_one_end_only_is_not_used():
    """
    A --1-- B --1-- C        C still lists D; D (dead) is no longer listed by anyone
                    : 
                    D --1-- E

    C's link to D is one-sided, so D and E are unreachable from A.
    """
    topology = links(("A", "B", 1), ("B", "C", 1), ("D", "E", 1))
    topology["C"]["D"] = 1
    next_hops, costs = shortest_paths(topology, "A")
    assert next_hops == {"B": "B", "C": "B"}
    assert "D" not in costs and "E" not in costs


def test_the_roots_own_links_need_no_answer():
    """
    A --1-- B        B's link state has not arrived yet: A trusts its own link (checked by HELLO)
    """
    assert shortest_paths({"A": {"B": 1}}, "A") == ({"B": "B"}, {"B": 1})


def test_unknown_root_and_isolated_router():
    assert shortest_paths({}, "A") == ({}, {})
    assert shortest_paths({"A": {}, "B": {}}, "A") == ({}, {})


def test_matches_an_exhaustive_search_on_random_graphs():
    """Costs and lexicographically smallest first hops against a brute-force search."""
    rng = random.Random(7)
    for _ in range(40):
        names = [f"r{i}" for i in range(rng.randint(2, 8))]
        topology: dict[str, dict[str, int]] = {name: {} for name in names}
        for a in names:
            for b in names:
                if a < b and rng.random() < 0.4:
                    topology[a][b] = rng.randint(1, 4)
                    topology[b][a] = rng.randint(1, 4)
        root = names[0]
        expected: dict[str, tuple[int, str]] = {}

        def walk(node: str, cost: int, first: str | None, seen: frozenset[str]) -> None:
            if first is not None:
                label = (cost, first)
                if node not in expected or label < expected[node]:
                    expected[node] = label
            for peer, link_cost in topology[node].items():
                if peer not in seen:
                    walk(peer, cost + link_cost, first or peer, seen | {peer})

        walk(root, 0, None, frozenset({root}))
        expected.pop(root, None)
        next_hops, costs = shortest_paths(topology, root)
        assert {node: (costs[node], next_hops[node]) for node in costs} == expected
