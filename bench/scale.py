"""Scale benchmark of the router network's control plane (``switchboard.router.network``).

    .venv/bin/python bench/scale.py [--cases mesh10,interior50,interior200] [--seed 1] [--json]

Runs the real ``RouterNetwork`` code for every router of a network in one process, on a
simulated clock (the simulator of ``tests/router/network/network_sim.py``; links have
``--latency`` seconds of one-way delay, 1 ms by default, and deliver in order).  Cases:

* ``mesh10``: 10 routers, full mesh, 10,000 client addresses;
* ``interior50``: 10 interior routers in a full mesh, 40 edge routers each linked to two
  interior routers, 25,000 addresses;
* ``interior200``: 20 interior routers in a full mesh, 180 edge routers each linked to two
  interior routers, 50,000 addresses;
* ``random200`` (not run by default): 200 routers, a random connected graph of average
  degree 4, 50,000 addresses.

All link costs are 1.  Addresses are one per compute node (``rpc/compute.nodeNNNNN``, on
the edge routers, round robin) plus 100 RPC topics with consumers on 5 routers each.

For each case: every router starts at t=0 with its addresses and all links come up at
once; after 10 s of simulated time, 60 s idle; then the busiest interior router dies and
its neighbours are told at once (``neighbour_lost``, as their connection heartbeat would;
detection time itself is not counted), and 10 s more.  Reported:

* convergence: simulated time from the start (or the loss) to the last change any
  router made to its routes or addresses; every router's routes are then checked against
  the shortest paths of the true topology and its address count against the truth;
* control messages and bytes sent per router (mean and max over routers) during the
  start (its 10 s), per second when idle, and for the loss what its 10 s cost beyond the
  idle routine (HELLOs, RAs); bytes are the maps encoded with
  ``switchboard.amqp.codec`` (AMQP map bodies, without transfer framing);
* routing tables per router: routers reachable, distinct remote addresses, (address,
  router) entries;
* memory per router: one router of the case built alone under ``tracemalloc``, fed the
  link state and full address lists of all the others through the codec (so every string
  is its own, as in a router process), after its tables are built;
* wall time of the simulation (the whole network, one process, one core).

Targets (issue 7): 200 routers converge in under 1 s of simulated time after a loss; a
router's routing state for 50,000 addresses under 100 MiB.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "router" / "network"))

from network_sim import Simulation  # noqa: E402

from switchboard.amqp.codec import decode_value, encode  # noqa: E402
from switchboard.router.network import HELLO, LSU, MAU, RouterNetwork  # noqa: E402
from switchboard.router.network.paths import shortest_paths  # noqa: E402

START_WINDOW = 10.0
IDLE_WINDOW = 60.0
LOSS_WINDOW = 10.0
TOPICS = 100
TOPIC_ROUTERS = 5


@dataclass
class Case:
    name: str
    routers: list[str]
    links: list[tuple[str, str]]
    addresses: dict[str, list[str]]  # router -> its local addresses
    victim: str
    description: str
    address_count: int = 0


def interior_edge(interior: int, edge: int, addresses: int, rng: random.Random, name: str) -> Case:
    cores = [f"i{i:02d}" for i in range(interior)]
    edges = [f"e{i:03d}" for i in range(edge)]
    links = [(a, b) for n, a in enumerate(cores) for b in cores[n + 1:]]
    for n, e in enumerate(edges):
        first = n % interior
        second = (first + 1 + (n // interior) % (interior - 1)) % interior
        links += [(e, cores[first]), (e, cores[second])]
    case = Case(name, cores + edges, links, {}, cores[0],
                f"{interior} interior routers in a full mesh, {edge} edge routers linked to 2 interior routers each")
    place_addresses(case, edges, addresses, rng)
    return case


def full_mesh(count: int, addresses: int, rng: random.Random) -> Case:
    names = [f"r{i:02d}" for i in range(count)]
    links = [(a, b) for n, a in enumerate(names) for b in names[n + 1:]]
    case = Case(f"mesh{count}", names, links, {}, names[0], f"{count} routers, full mesh")
    place_addresses(case, names, addresses, rng)
    return case


def random_graph(count: int, degree: float, addresses: int, rng: random.Random) -> Case:
    names = [f"r{i:03d}" for i in range(count)]
    edges: set[tuple[str, str]] = set()
    order = names[:]
    rng.shuffle(order)
    for n in range(1, count):  # a random spanning tree keeps it connected
        edges.add(tuple(sorted((order[n], order[rng.randrange(n)]))))
    while len(edges) < count * degree / 2:
        a, b = rng.sample(names, 2)
        edges.add(tuple(sorted((a, b))))
    links = sorted(edges)
    degrees: dict[str, int] = {}
    for a, b in links:
        degrees[a] = degrees.get(a, 0) + 1
        degrees[b] = degrees.get(b, 0) + 1
    victim = max(names, key=lambda n: (degrees.get(n, 0), n))
    case = Case(f"random{count}", names, links, {}, victim, f"{count} routers, random connected graph, average degree {degree}")
    place_addresses(case, names, addresses, rng)
    return case


def place_addresses(case: Case, hosts: list[str], total: int, rng: random.Random) -> None:
    case.addresses = {name: [] for name in case.routers}
    for n in range(total - TOPICS):
        case.addresses[hosts[n % len(hosts)]].append(f"rpc/compute.node{n:05d}")
    for t in range(TOPICS):
        for host in rng.sample(case.routers, min(TOPIC_ROUTERS, len(case.routers))):
            case.addresses[host].append(f"rpc/service{t % 10}.topic{t:03d}")
    case.address_count = total


class CountingAdapter:
    """The data plane of a simulated router, reduced to what the benchmark checks."""

    def __init__(self, sim: Simulation, router_id: str) -> None:
        self.sim = sim
        self.id = router_id
        self.next_hops: dict[str, str] = {}
        self.costs: dict[str, int] = {}
        self.entries = 0
        self.last_change = 0.0

    def send_control(self, neighbour_id: str, message: dict) -> None:
        self.sim.transmit(self.id, neighbour_id, message)

    def routes_changed(self, next_hops: dict[str, str], costs: dict[str, int]) -> None:
        self.next_hops, self.costs = next_hops, costs
        self.last_change = self.sim.now

    def address_added(self, address: str, router_id: str) -> None:
        self.entries += 1
        self.last_change = self.sim.now

    def address_removed(self, address: str, router_id: str) -> None:
        self.entries -= 1
        self.last_change = self.sim.now

    def duplicate_router(self, router_id: str) -> None:
        raise AssertionError(f"{self.id}: unexpected duplicate router {router_id}")


@dataclass
class Traffic:
    messages: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)


def snapshot(sim: Simulation) -> Traffic:
    return Traffic(dict(sim.messages_sent), dict(sim.bytes_sent))


def spent(before: Traffic, after: Traffic, routers: list[str], baseline: dict | None = None) -> dict[str, float]:
    """Per-router traffic between two snapshots, less ``baseline`` (per router) when given."""
    messages = [after.messages.get(r, 0) - before.messages.get(r, 0) for r in routers]
    sizes = [after.bytes.get(r, 0) - before.bytes.get(r, 0) for r in routers]
    if baseline is not None:
        messages = [m - baseline["messages"][r] for m, r in zip(messages, routers)]
        sizes = [b - baseline["bytes"][r] for b, r in zip(sizes, routers)]
    return {
        "messages_mean": sum(messages) / len(routers),
        "messages_max": max(messages),
        "bytes_mean": sum(sizes) / len(routers),
        "bytes_max": max(sizes),
    }


def check(sim: Simulation, case: Case) -> None:
    """Routes are the true shortest paths; address entries are those of reachable routers."""
    topology = sim.true_topology()
    pairs = {name: len(set(case.addresses[name])) for name in sim.routers}
    for name, network in sim.routers.items():
        next_hops, costs = shortest_paths(topology, name)
        adapter = sim.adapters[name]
        if adapter.next_hops != next_hops or adapter.costs != costs:
            raise AssertionError(f"{case.name}: {name} has wrong routes")
        expected = sum(pairs[other] for other in next_hops)
        if adapter.entries != expected:
            raise AssertionError(f"{case.name}: {name} has {adapter.entries} address entries, expected {expected}")


def last_change_since(sim: Simulation, start: float) -> float:
    return max(0.0, max(sim.adapters[name].last_change for name in sim.routers) - start)


def run_case(case: Case, latency: float) -> dict:
    sim = Simulation(latency=latency, wire=False, adapter_factory=CountingAdapter)
    wall = time.perf_counter()
    for name in case.routers:
        sim.add_router(name, addresses=case.addresses[name])
    for a, b in case.links:
        sim.connect(a, b)
    before = snapshot(sim)
    sim.run_until(START_WINDOW)
    check(sim, case)
    start = {"converged_s": last_change_since(sim, 0.0), **spent(before, snapshot(sim), case.routers)}
    start_wall = time.perf_counter() - wall

    before = snapshot(sim)
    sim.run_for(IDLE_WINDOW)
    after = snapshot(sim)
    idle = spent(before, after, case.routers)
    idle = {key: value / IDLE_WINDOW for key, value in idle.items()}
    # what the idle routine (HELLOs, RAs) costs in the loss window, per router
    scale = LOSS_WINDOW / IDLE_WINDOW
    routine = {
        "messages": {r: (after.messages.get(r, 0) - before.messages.get(r, 0)) * scale for r in case.routers},
        "bytes": {r: (after.bytes.get(r, 0) - before.bytes.get(r, 0)) * scale for r in case.routers},
    }

    survivors = [name for name in case.routers if name != case.victim]
    wall_loss = time.perf_counter()
    before = snapshot(sim)
    lost_at = sim.now
    sim.kill(case.victim)
    sim.run_for(LOSS_WINDOW)
    check(sim, case)
    loss = {"converged_s": last_change_since(sim, lost_at), **spent(before, snapshot(sim), survivors, routine)}
    loss_wall = time.perf_counter() - wall_loss

    some = sim.routers[survivors[-1]]
    tables = {
        "routers_reachable": len(some.view()["routers"]) - 1,
        "remote_addresses": some.view()["addresses"],
        "address_entries": sim.adapters[survivors[-1]].entries,
    }
    return {
        "case": case.name,
        "description": case.description,
        "routers": len(case.routers),
        "links": len(case.links),
        "addresses": case.address_count,
        "victim": case.victim,
        "start": start,
        "idle_per_s": idle,
        "loss": loss,
        "tables_of": survivors[-1],
        "tables": tables,
        "wall_s": {"start": start_wall, "loss": loss_wall, "total": time.perf_counter() - wall},
    }


def router_memory(case: Case, subject: str) -> dict:
    """One router's state for the whole case, fed through the codec, under tracemalloc."""
    neighbours: dict[str, dict[str, int]] = {name: {} for name in case.routers}
    for a, b in case.links:
        neighbours[a][b] = 1
        neighbours[b][a] = 1
    via = sorted(neighbours[subject])[0]

    class Quiet:
        def send_control(self, n, m): pass
        def routes_changed(self, h, c): pass
        def address_added(self, a, r): pass
        def address_removed(self, a, r): pass
        def duplicate_router(self, r): pass

    wire = [encode(LSU(name, 1, 1, peers).to_map()) for name, peers in neighbours.items() if name != subject]
    wire += [
        encode(MAU(name, 1, 1, True, tuple(sorted(set(addresses)))).to_map())
        for name, addresses in case.addresses.items()
        if name != subject
    ]
    hello = encode(HELLO(via, 1, (subject,)).to_map())
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    network = RouterNetwork(subject, 1, Quiet())
    for address in set(case.addresses[subject]):
        network.add_local_address(address, 0.0)
    network.neighbour_connected(via, 1, 1, 0.0)
    network.handle(via, decode_value(hello, 0)[0], 0.0)
    network.tick(0.0)
    for payload in wire:
        network.handle(via, decode_value(payload, 0)[0], 0.001)
    network.tick(0.001)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    view = network.view()
    assert view["addresses"] > 0 and all(r["reachable"] for r in view["routers"]), "memory case did not converge"
    return {"router": subject, "bytes": used, "remote_addresses": view["addresses"]}


CASES = {
    "mesh10": lambda rng: full_mesh(10, 10_000, rng),
    "interior50": lambda rng: interior_edge(10, 40, 25_000, rng, "interior50"),
    "interior200": lambda rng: interior_edge(20, 180, 50_000, rng, "interior200"),
    "random200": lambda rng: random_graph(200, 4.0, 50_000, rng),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="mesh10,interior50,interior200",
                        help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--latency", type=float, default=0.001, help="one-way link latency, seconds (default 0.001)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    results = []
    for name in args.cases.split(","):
        if name not in CASES:
            parser.error(f"--cases: unknown case {name!r}")
        case = CASES[name](random.Random(args.seed))
        result = run_case(case, args.latency)
        result["memory"] = router_memory(case, case.routers[-1])
        results.append(result)
        if not args.json:
            print(f"{name}: done in {result['wall_s']['total']:.1f} s", file=sys.stderr)
    if args.json:
        print(json.dumps({"latency_s": args.latency, "seed": args.seed, "results": results}, indent=2))
        return 0
    print_table(results, args.latency)
    return 0


def print_table(results: list[dict], latency: float) -> None:
    rows = [
        ("routers / links", lambda r: f"{r['routers']} / {r['links']}"),
        ("client addresses", lambda r: f"{r['addresses']:,}"),
        ("converged after start (simulated s)", lambda r: f"{r['start']['converged_s']:.3f}"),
        ("converged after a loss (simulated s)", lambda r: f"{r['loss']['converged_s']:.3f}"),
        ("start: messages per router, mean / max", lambda r: f"{r['start']['messages_mean']:,.0f} / {r['start']['messages_max']:,}"),
        ("start: KiB per router, mean / max", lambda r: f"{r['start']['bytes_mean'] / 1024:,.0f} / {r['start']['bytes_max'] / 1024:,.0f}"),
        ("loss, over idle: messages per router, mean / max", lambda r: f"{r['loss']['messages_mean']:,.1f} / {r['loss']['messages_max']:,.0f}"),
        ("loss, over idle: KiB per router, mean / max", lambda r: f"{r['loss']['bytes_mean'] / 1024:,.1f} / {r['loss']['bytes_max'] / 1024:,.1f}"),
        ("idle: messages/s per router, mean / max", lambda r: f"{r['idle_per_s']['messages_mean']:.1f} / {r['idle_per_s']['messages_max']:.1f}"),
        ("idle: bytes/s per router, mean / max", lambda r: f"{r['idle_per_s']['bytes_mean']:,.0f} / {r['idle_per_s']['bytes_max']:,.0f}"),
        ("table: routers / remote addresses / entries", lambda r: f"{r['tables']['routers_reachable']} / {r['tables']['remote_addresses']:,} / {r['tables']['address_entries']:,}"),
        ("memory per router (MiB)", lambda r: f"{r['memory']['bytes'] / 2**20:.1f}"),
        ("wall time: start / loss / total (s)", lambda r: f"{r['wall_s']['start']:.1f} / {r['wall_s']['loss']:.1f} / {r['wall_s']['total']:.1f}"),
    ]
    header = ["", *[r["case"] for r in results]]
    table = [header, ["---"] * len(header)]
    for label, value in rows:
        table.append([label, *[value(r) for r in results]])
    print(f"link latency {latency * 1000:g} ms")
    for line in table:
        print("| " + " | ".join(line) + " |")
    for r in results:
        print(f"{r['case']}: {r['description']}; the router lost: {r['victim']}")


if __name__ == "__main__":
    sys.exit(main())
