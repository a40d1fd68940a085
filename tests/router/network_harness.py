"""Several router cores in-process, joined by in-memory inter-router connections.

::

    Fabric: one simulated clock for all
      RouterHarness "A" ──InterRouterPipe (A connects, B accepts)── RouterHarness "B"
          clients                                                        clients

``Fabric.router(id)`` makes a router (``router_harness.RouterHarness`` sharing the
fabric's clock), ``connect(a, b, cost)`` an inter-router connection made as a connector
makes it (``a``'s engine opens with its identity), ``run()`` moves bytes until nothing
moves, ``advance(seconds)`` moves the clock in steps, ticking engines, cores and the
routing protocol.  A pipe can be ``cut()`` (both ends see the connection lost) or
``stalled`` (nothing moves: a router that stopped, seen only by heartbeats).
"""

from __future__ import annotations

from typing import Any

from switchboard.amqp.connection import Connection
from switchboard.amqp.types import Symbol
from switchboard.io.turns import ARRIVAL_BATCH
from switchboard.router.config import Limits, RouterConfig
from switchboard.router.core import ANONYMOUS_RELAY
from switchboard.router.interrouter import identity

from router_harness import PipePort, RouterHarness

__all__ = ["Fabric", "InterRouterPipe"]


def _engine(router: RouterHarness, server: bool, properties: dict[Any, Any] | None) -> Connection:
    limits = router.config.limits
    engine = Connection(
        router.config.router_id,
        server=server,
        max_frame_size=limits.max_frame_size,
        channel_max=limits.max_sessions_per_connection - 1,
        handle_max=65535,
        idle_timeout=limits.inter_router_idle_timeout,
        handshake_timeout=limits.handshake_timeout or None,
        offered_capabilities=[ANONYMOUS_RELAY],
        properties=properties,
    )
    engine.frame_budget = ARRIVAL_BATCH
    return engine


class InterRouterPipe:
    def __init__(self, fabric: "Fabric", a: RouterHarness, b: RouterHarness, cost: int) -> None:
        self.fabric = fabric
        self.a = a
        self.b = b
        self.stalled = False
        engine_a = _engine(a, False, {Symbol("product"): "switchboard", **identity(a.config.router_id, a.core.instance, cost)})
        engine_b = _engine(b, True, None)
        self.port_a = PipePort(a, engine_a, f"10.1.0.{len(fabric.pipes) + 1}", "inter-router")
        self.port_b = PipePort(b, engine_b, f"10.2.0.{len(fabric.pipes) + 1}", "inter-router")
        a.ports.append(self.port_a)
        b.ports.append(self.port_b)
        b.core.connection_started(self.port_b)
        a.core.connection_started(self.port_a)

    def step(self) -> bool:
        if self.stalled:
            return False
        moved = False
        if self.port_a.unread and not self.port_b.gone:
            self.port_b.receive(self.port_a.take_unread())
            moved = True
        if self.port_b.unread and not self.port_a.gone:
            self.port_a.receive(self.port_b.take_unread())
            moved = True
        if self.port_a.gone != self.port_b.gone:
            # One end dropped the socket: the other sees the connection lost.
            self.port_a.abort()
            self.port_b.abort()
            moved = True
        return moved

    def cut(self) -> None:
        """The connection breaks: both routers see it lost at once."""
        self.port_a.abort()
        self.port_b.abort()
        self.fabric.run()


class Fabric:
    def __init__(self) -> None:
        self.now = 0.0
        self.routers: dict[str, RouterHarness] = {}
        self.pipes: list[InterRouterPipe] = []

    def router(self, router_id: str, limits: Limits | None = None, **config: Any) -> RouterHarness:
        harness = RouterHarness(limits, RouterConfig(router_id=router_id, **config))
        harness.fabric = self
        self.routers[router_id] = harness
        return harness

    def connect(self, a: str, b: str, cost: int = 1) -> InterRouterPipe:
        pipe = InterRouterPipe(self, self.routers[a], self.routers[b], cost)
        self.pipes.append(pipe)
        self.run()
        return pipe

    def run(self, max_rounds: int = 20_000) -> None:
        for _ in range(max_rounds):
            moved = False
            for router in self.routers.values():
                moved = router.step() or moved
            for pipe in self.pipes:
                moved = pipe.step() or moved
            if not moved:
                return
        raise AssertionError(f"still moving after {max_rounds} rounds")

    def advance(self, seconds: float, step: float = 0.1) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            for router in self.routers.values():
                router.tick()
            self.run()
