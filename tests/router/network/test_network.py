"""Whole networks of real RouterNetwork objects on a simulated clock (``network_sim.py``).

Each test draws its topology.  After a change the simulation runs for ``CONVERGED``
seconds of simulated time; then every router's routes must be the shortest paths of the
true topology and its address table must hold exactly the addresses of the routers it
can reach.  Running on must change nothing more, and no router may have told its data
plane something that was not a change (``violations``).
"""

from __future__ import annotations

import pytest

from network_sim import Simulation
from switchboard.router.network import LSU, MAU, NetworkTimers, RouterNetwork
from switchboard.router.network.paths import shortest_paths

CONVERGED = 1.0  # seconds of simulated time after a change; links have 1 ms latency


def expected_addresses(sim: Simulation, router_id: str) -> dict[str, frozenset[str]]:
    reachable = shortest_paths(sim.true_topology(), router_id)[1]
    table: dict[str, set[str]] = {}
    for other in reachable:
        for address in sim.routers[other].local_addresses():
            table.setdefault(address, set()).add(other)
    return {address: frozenset(routers) for address, routers in table.items()}


def assert_converged(sim: Simulation) -> None:
    topology = sim.true_topology()
    for router_id, network in sim.routers.items():
        adapter = sim.adapters[router_id]
        next_hops, costs = shortest_paths(topology, router_id)
        assert adapter.next_hops == next_hops, router_id
        assert adapter.costs == costs, router_id
        assert {r: network.next_hop(r) for r in next_hops} == next_hops
        table = adapter.address_table()
        assert table == expected_addresses(sim, router_id), router_id
        assert all(network.routers_for(address) == routers for address, routers in table.items())
    assert sim.violations == []


def settle(sim: Simulation, within: float = CONVERGED) -> float:
    """Run ``within`` seconds, check convergence, check that nothing moves after; return the time it took."""
    start = sim.now
    sim.run_until(start + within)
    assert_converged(sim)
    took = max(sim.last_change() - start, 0.0)
    updates = {rid: (a.route_updates, a.address_updates) for rid, a in sim.adapters.items() if rid in sim.routers}
    sim.run_for(60.0)
    assert {rid: (a.route_updates, a.address_updates) for rid, a in sim.adapters.items() if rid in sim.routers} == updates
    assert_converged(sim)
    return took


def build(edges: list[tuple[str, str] | tuple[str, str, int] | tuple[str, str, int, int]], **options) -> Simulation:
    sim = Simulation(**options)
    names = sorted({name for edge in edges for name in edge[:2]})
    for name in names:
        sim.add_router(name, addresses=[f"{name}/only", "shared/topic"])
    for edge in edges:
        sim.connect(*edge)
    return sim


def test_line():
    """
    A --- B --- C --- D --- E
    """
    sim = build([("A", "B"), ("B", "C"), ("C", "D"), ("D", "E")])
    settle(sim)
    assert sim.adapters["A"].next_hops == {"B": "B", "C": "B", "D": "B", "E": "B"}
    assert sim.adapters["A"].costs == {"B": 1, "C": 2, "D": 3, "E": 4}
    assert sim.routers["A"].routers_for("shared/topic") == frozenset("BCDE")
    assert sim.routers["C"].routers_for("E/only") == frozenset("E")
    # cutting the line in the middle splits it in two
    sim.cut("C", "D")
    settle(sim)
    assert sim.adapters["A"].next_hops == {"B": "B", "C": "B"}
    assert sim.routers["A"].routers_for("shared/topic") == frozenset("BC")
    assert sim.routers["A"].routers_for("E/only") == frozenset()


def test_ring_reroutes_around_a_cut():
    """
        A --- B
        |     |
        E     C
         \\   /
           D
    """
    sim = build([("A", "B"), ("B", "C"), ("C", "D"), ("D", "E"), ("E", "A")])
    settle(sim)
    assert sim.adapters["A"].next_hops == {"B": "B", "C": "B", "D": "E", "E": "E"}
    sim.cut("A", "B")
    took = settle(sim)
    assert sim.adapters["A"].next_hops == {"B": "E", "C": "E", "D": "E", "E": "E"}
    assert sim.adapters["A"].costs == {"B": 4, "C": 3, "D": 2, "E": 1}
    assert took < 0.1  # flooded: a few link latencies, not a timer
    sim.connect("A", "B")
    settle(sim)
    assert sim.adapters["A"].next_hops["B"] == "B"


def test_full_mesh_every_router_one_hop_and_a_death():
    """
        A ----- B
        | \\   / |
        |   X   |      every pair linked
        | /   \\ |
        D ----- C
    """
    names = "ABCD"
    sim = build([(a, b) for a in names for b in names if a < b])
    settle(sim)
    for name in names:
        assert sim.adapters[name].next_hops == {other: other for other in names if other != name}
    sim.kill("C")
    settle(sim)
    for name in "ABD":
        assert sim.adapters[name].next_hops == {other: other for other in "ABD" if other != name}
        assert "C/only" not in sim.adapters[name].address_table()
        assert sim.routers[name].routers_for("shared/topic") == frozenset("ABD") - {name}


def test_star_loses_everything_with_its_hub():
    """
          L1  L2  L3
            \\ | /
        L6 -- H -- L4
              |
              L5
    """
    leaves = [f"L{i}" for i in range(1, 7)]
    sim = build([("H", leaf) for leaf in leaves])
    settle(sim)
    assert sim.adapters["L1"].next_hops == {name: "H" for name in ["H", *leaves[1:]]}
    assert sim.adapters["L1"].costs["L4"] == 2
    sim.kill("H")
    settle(sim)
    for leaf in leaves:
        assert sim.adapters[leaf].next_hops == {}
        assert sim.adapters[leaf].address_table() == {}


def test_asymmetric_costs():
    """
        A ---1--> B        A to B costs 1, B to A costs 10
          <--10--
         \\       /
          5     5
           \\   /
             C
    """
    sim = build([("A", "B", 1, 10), ("A", "C", 5), ("B", "C", 5)])
    settle(sim)
    assert sim.adapters["A"].next_hops == {"B": "B", "C": "C"}
    assert sim.adapters["A"].costs == {"B": 1, "C": 5}
    assert sim.adapters["B"].next_hops == {"A": "A", "C": "C"}
    assert sim.adapters["B"].costs == {"A": 10, "C": 5}
    # making B->A dearer than the detour through C moves B's route
    sim.cut("A", "B")
    sim.connect("A", "B", 1, 20)
    settle(sim)
    assert sim.adapters["B"].next_hops["A"] == "C"
    assert sim.adapters["B"].costs["A"] == 10


def test_partition_and_heal_with_changes_on_both_sides():
    """
        A --- B ======= E --- F
        |     |         |     |
        D --- C ======= H --- G

    The two === links are cut; each half changes its addresses; the links come back.
    """
    sim = build([("A", "B"), ("B", "C"), ("C", "D"), ("D", "A"), ("E", "F"), ("F", "G"), ("G", "H"), ("H", "E"),
                 ("B", "E"), ("C", "H")])
    settle(sim)
    sim.cut("B", "E")
    sim.cut("C", "H")
    settle(sim)
    assert set(sim.adapters["A"].next_hops) == set("BCD")
    assert sim.routers["A"].routers_for("shared/topic") == frozenset("BCD")
    for step in range(30):  # more changes than any router keeps deltas of
        sim.routers["G"].add_local_address(f"G/new{step}", sim.now)
        sim.touch("G")
        sim.run_for(0.1)
    sim.routers["A"].remove_local_address("A/only", sim.now)
    sim.routers["A"].add_local_address("A/new", sim.now)
    sim.touch("A")
    settle(sim)
    sim.connect("B", "E")
    sim.connect("C", "H")
    took = settle(sim)
    assert took < CONVERGED
    assert sim.routers["D"].routers_for("G/new29") == frozenset("G")
    assert sim.routers["F"].routers_for("A/new") == frozenset("A")
    assert sim.routers["F"].routers_for("A/only") == frozenset()


def test_a_restarted_router_replaces_its_earlier_life():
    """
    A --- B --- C          B restarts (new boot instance) with other addresses
    """
    sim = build([("A", "B"), ("B", "C")])
    sim.routers["B"].add_local_address("B/old-consumer", 0.0)
    settle(sim)
    assert sim.routers["A"].routers_for("B/old-consumer") == frozenset("B")
    sim.kill("B")
    settle(sim)
    sim.add_router("B", instance=2, addresses=["B/new-consumer"])
    sim.connect("A", "B")
    sim.connect("B", "C")
    settle(sim)
    view = {router["id"]: router for router in sim.routers["A"].view()["routers"]}
    assert view["B"]["instance"] == 2
    assert sim.routers["A"].routers_for("B/old-consumer") == frozenset()
    assert sim.routers["C"].routers_for("B/new-consumer") == frozenset("B")


def test_a_restart_noticed_only_through_the_new_instance():
    """
    A --- B --- C          B restarts so fast that its neighbours never saw it go
    """
    sim = build([("A", "B"), ("B", "C")])
    sim.routers["B"].add_local_address("B/old-consumer", 0.0)
    settle(sim)
    del sim.routers["B"]  # no neighbour_lost: the old connections "still look up"
    sim.links.clear()
    sim.add_router("B", instance=2, addresses=["B/new-consumer"])
    # the cores replace the connections: the old one is lost, then the new one is made
    for neighbour in "AC":
        sim.routers[neighbour].neighbour_lost("B", sim.now)
        sim.touch(neighbour)
    sim.connect("A", "B")
    sim.connect("B", "C")
    settle(sim)
    assert sim.routers["A"].routers_for("B/old-consumer") == frozenset()
    assert sim.routers["A"].routers_for("B/new-consumer") == frozenset("B")


def test_duplicate_id_of_a_neighbour_connecting_with_our_id():
    sim = Simulation()
    network = sim.add_router("A")
    network.neighbour_connected("A", 5, 1, 0.0)
    assert sim.adapters["A"].duplicates == ["A"]
    assert network.view()["neighbours"] == []


def test_duplicate_id_already_in_the_network_is_refused_and_the_incumbent_kept():
    """
    A --- B --- C        a second "C" (another instance) connects to A: refused
    """
    sim = build([("A", "B"), ("B", "C")])
    settle(sim)
    routes = dict(sim.adapters["A"].next_hops)
    sim.routers["A"].neighbour_connected("C", 99, 1, sim.now)
    assert sim.adapters["A"].duplicates == ["C"]
    # the refused connection closing does not take the real C with it
    sim.routers["A"].neighbour_lost("C", sim.now, instance=99)
    # and the newcomer's messages are not taken from a connection that was refused
    sim.routers["A"].handle("C", {"op": "HELLO", "v": 1, "id": "C", "instance": 99, "seen": ["A"]}, sim.now)
    assert sim.routers["A"].view()["counters"]["dropped_unknown_neighbour"] == 1
    settle(sim)
    assert sim.adapters["A"].next_hops == routes
    # a second neighbour connection of a router already our neighbour, under another instance
    sim.routers["A"].neighbour_connected("B", 42, 1, sim.now)
    assert sim.adapters["A"].duplicates == ["C", "B"]
    settle(sim)


def test_our_id_advertised_by_another_router_is_reported_once():
    """
    A --- B --- C        B floods a link state of "A" with another boot instance
    """
    sim = build([("A", "B"), ("B", "C")])
    settle(sim)
    impostor = LSU("A", 77, 5, {"B": 1}).to_map()
    for _ in range(3):
        sim.routers["A"].handle("B", impostor, sim.now)
    sim.routers["A"].handle("B", MAU("A", 77, 3, True, ("x",)).to_map(), sim.now)
    assert sim.adapters["A"].duplicates == ["A"]


def test_a_late_joiner_learns_every_address_and_is_learned():
    """
        A --- B --- C               then   A --- B --- C
        |           |                      |           |
        E --------- D                      E --------- D --- Late
    """
    sim = build([("A", "B"), ("B", "C"), ("C", "D"), ("D", "E"), ("E", "A")])
    for name in "ABCDE":
        for i in range(40):
            sim.routers[name].add_local_address(f"{name}/compute{i}", 0.0)
        sim.touch(name)
    sim.run_for(100.0)  # long enough that the early deltas are old history
    sim.add_router("Late", addresses=["Late/only"])
    sim.connect("D", "Late")
    took = settle(sim)
    assert took < CONVERGED
    assert len(sim.adapters["Late"].address_table()) == 5 * 41 + 1  # 5 * (40 + own) + shared/topic
    assert sim.routers["B"].routers_for("Late/only") == frozenset(["Late"])


def test_lost_deltas_are_asked_for_again():
    """
    A --- B --- C        A's deltas to B are lost for a while: B notices the gap and asks (MAR)
    """
    seen_full_lists = []

    def drop_deltas(source: str, destination: str, message: dict) -> bool:
        if message.get("op") == "MAU" and "exist" in message:
            seen_full_lists.append((source, destination))
        return dropping and source == "A" and message.get("op") == "MAU"

    timers = NetworkTimers(mobile_delta_history=4)
    sim = build([("A", "B"), ("B", "C")], timers=timers)
    settle(sim)
    sim.drop_rules.append(drop_deltas)

    def change_a(count: int) -> None:
        for _ in range(count):
            change_a.n += 1
            sim.routers["A"].add_local_address(f"A/a{change_a.n}", sim.now)
            sim.touch("A")
            sim.run_for(0.05)

    change_a.n = 0
    # two deltas lost, then one delivered: B sees the gap and gets the two from A's history
    dropping = True
    change_a(2)
    dropping = False
    seen_full_lists.clear()
    change_a(1)
    settle(sim)
    assert sim.routers["B"].view()["counters"]["address_gaps"] >= 1
    assert sim.routers["B"].view()["counters"]["sent_MAR"] >= 1
    assert seen_full_lists == []
    # more lost than A keeps: the answer is the full list
    dropping = True
    change_a(6)
    dropping = False
    change_a(1)
    settle(sim)
    assert ("A", "B") in seen_full_lists
    assert sim.routers["C"].routers_for("A/a10") == frozenset("A")


def test_a_lost_flood_is_repaired_by_the_next_advertisement():
    """
    A -x- B --- C --- D        A--B is cut and the link-state floods to D are lost
    """
    sim = build([("A", "B"), ("B", "C"), ("C", "D")])
    settle(sim)
    dropping = True
    sim.drop_rules.append(lambda s, d, m: dropping and d == "D" and m.get("op") == "LSU")
    sim.cut("A", "B")
    sim.run_for(0.2)
    assert "A" in sim.adapters["D"].next_hops  # D missed the news
    dropping = False
    settle(sim, within=2 * sim.timers.ra_interval_flux + 0.1)
    assert "A" not in sim.adapters["D"].next_hops


def test_a_neighbour_is_used_only_when_hellos_go_both_ways():
    """
    A --- B        B's HELLOs to A are lost: A never hears B, so B never sees itself in A's HELLO
    """
    sim = Simulation()
    sim.add_router("A")
    sim.add_router("B")
    deaf = True
    sim.drop_rules.append(lambda s, d, m: deaf and s == "B" and d == "A")
    sim.connect("A", "B")
    sim.run_for(5.0)
    assert sim.routers["A"].neighbours_up() == frozenset()
    assert sim.routers["B"].neighbours_up() == frozenset()
    assert sim.adapters["A"].next_hops == {} and sim.adapters["B"].next_hops == {}
    assert [n["state"] for n in sim.routers["B"].view()["neighbours"]] == ["heard"]
    deaf = False
    sim.run_for(2.0)
    assert sim.adapters["A"].next_hops == {"B": "B"}


def test_a_silent_neighbour_expires_without_the_core_noticing():
    """
    A --- B --- C        B goes silent (no messages) but its connections look up
    """
    sim = build([("A", "B"), ("B", "C")])
    settle(sim)
    sim.drop_rules.append(lambda s, d, m: s == "B")
    start = sim.now
    sim.run_for(sim.timers.hello_max_age + 1.0)
    assert sim.adapters["A"].next_hops == {}
    assert sim.adapters["A"].address_table() == {}
    assert start + sim.timers.hello_max_age - sim.timers.hello_interval <= sim.adapters["A"].last_change
    assert sim.adapters["A"].last_change <= start + sim.timers.hello_max_age + 0.01


def test_an_idle_network_only_says_hello():
    """
        A --- B
        |     |
        D --- C        60 s idle: HELLOs every second, an RA every 30 s, nothing else
    """
    sim = build([("A", "B"), ("B", "C"), ("C", "D"), ("D", "A")])
    settle(sim)
    before = {name: dict(sim.routers[name].counters) for name in "ABCD"}
    sim.run_for(60.0)
    for name in "ABCD":
        after = sim.routers[name].counters
        sent = {key: after[key] - before[name].get(key, 0) for key in after if key.startswith("sent_")}
        sent = {key: value for key, value in sent.items() if value}
        assert set(sent) <= {"sent_HELLO", "sent_RA"}, name
        assert 2 * 59 <= sent["sent_HELLO"] <= 2 * 61
        assert sent.get("sent_RA", 0) <= 2 * 3
    assert sim.violations == []


def test_local_address_churn_within_a_tick_sends_nothing():
    network_sim = build([("A", "B")])
    settle(network_sim)
    a = network_sim.routers["A"]
    sent = a.counters.get("sent_MAU", 0)
    a.add_local_address("brief", network_sim.now)
    a.remove_local_address("brief", network_sim.now)
    a.add_local_address("A/only", network_sim.now)  # already there
    network_sim.touch("A")
    network_sim.run_for(1.0)
    assert a.counters.get("sent_MAU", 0) == sent


@pytest.mark.parametrize("bad", [
    {"hello_interval": 0},
    {"hello_max_age": 0.5},
    {"ra_interval": -1},
    {"mobile_delta_history": 0},
])
def test_bad_timers_are_refused(bad):
    with pytest.raises(ValueError):
        NetworkTimers(**bad)


def test_caller_mistakes_raise():
    class Adapter:
        def send_control(self, n, m): pass
        def routes_changed(self, h, c): pass
        def address_added(self, a, r): pass
        def address_removed(self, a, r): pass
        def duplicate_router(self, r): pass

    with pytest.raises(ValueError):
        RouterNetwork("", 1, Adapter())
    with pytest.raises(ValueError):
        RouterNetwork("r1", 0, Adapter())
    network = RouterNetwork("r1", 1, Adapter())
    with pytest.raises(ValueError):
        network.neighbour_connected("r2", 1, 0, 0.0)
    with pytest.raises(ValueError):
        network.add_local_address("", 0.0)
