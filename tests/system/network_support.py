"""Real router networks for system tests: N ``switchboard router`` processes on loopback.

``network(topology)`` starts one router per id, each with a client listener and an
inter-router listener on ports the kernel picks, and a connector for each link of the
topology (from the router started later to the one started earlier, so its port is
known), then waits — bounded — until every router sees a route to every other one, asking
each with ``switchboard network --json`` (the CLI under test).  Routers are stopped at
teardown by the ``router`` fixture.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from system_support import HOST, RouterProcess, switchboard_command

CONVERGE_TIMEOUT = 30.0


@dataclass
class NetworkRouter:
    router_id: str
    process: RouterProcess
    inter_router_port: int

    @property
    def url(self) -> str:
        return self.process.url


def network_view(url: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """``switchboard network --router URL --json``, or None if the router did not answer."""
    try:
        done = subprocess.run(
            [*switchboard_command(), "network", "--router", url, "--json", "--timeout", str(timeout)],
            capture_output=True, text=True, timeout=timeout + 10,
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)


def wait_converged(routers: dict[str, NetworkRouter], timeout: float = CONVERGE_TIMEOUT,
                   expect: dict[str, set[str]] | None = None) -> float:
    """Wait until each router has a route to each other one (or to ``expect[id]``);
    return the seconds it took."""
    started = time.monotonic()
    pending = dict(routers)
    while pending:
        for router_id, router in list(pending.items()):
            view = network_view(router.url, timeout=5.0)
            wanted = expect[router_id] if expect is not None else set(routers) - {router_id}
            if view is not None and set(view.get("next_hops", {})) >= wanted and \
                    (expect is None or set(view.get("next_hops", {})) == wanted):
                del pending[router_id]
        if pending and time.monotonic() - started > timeout:
            raise AssertionError(f"routers {sorted(pending)} did not converge within {timeout} s")
    return time.monotonic() - started


def router_config(router_id: str, connectors: list[tuple[int, int]], extra: str = "", limits: str = "") -> str:
    lines = [
        f'[router]\nid = "{router_id}"\n',
        f'[[listeners]]\nhost = "{HOST}"\nport = 0\n',
        f'[[listeners]]\nhost = "{HOST}"\nport = 0\nrole = "inter-router"\n',
    ]
    for port, cost in connectors:
        lines.append(f'[[connectors]]\nhost = "{HOST}"\nport = {port}\ncost = {cost}\n')
    lines.append("[limits]\nshutdown_timeout = 2.0\n" + limits)
    lines.append(extra)
    return "\n".join(lines)


@pytest.fixture
def network(router: Any) -> Any:
    """Factory: ``network({"A": [], "B": [("A", 1)], ...})`` — each router's links to
    routers listed before it, with costs — returns ``{id: NetworkRouter}``, converged.
    ``extra`` is appended to each router's configuration, ``limits`` to its ``[limits]``."""

    def start(topology: dict[str, list[tuple[str, int]]], extra: str = "", converge: bool = True,
              limits: str = "") -> dict[str, NetworkRouter]:
        routers: dict[str, NetworkRouter] = {}
        for router_id, links in topology.items():
            connectors = [(routers[peer].inter_router_port, cost) for peer, cost in links]
            process = router(router_config(router_id, connectors, extra, limits), listen=False)
            match = process.stdout.wait_for(r":(\d+) \(inter-router\)", 15)
            assert match is not None, process.output()
            routers[router_id] = NetworkRouter(router_id, process, int(match.group(1)))
        if converge:
            wait_converged(routers)
        return routers

    return start
