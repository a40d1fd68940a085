"""RouterNetwork: one router's control plane of the router network, sans-IO.

It composes neighbour discovery (``hello.py``), our own link state (``linkstate.py``), the
table of known routers and their routes (``nodes.py``) and address advertisement
(``mobile.py``).  The core feeds it calls — connections made and lost, control messages
from neighbours, local addresses gained and lost, timer ticks — each with ``now``, and it
answers through a ``NetworkAdapter``: control messages for neighbours, route and address
changes for the data plane, and duplicate router ids.  It reads no clock and does no I/O,
so hundreds of them run in one process on a simulated clock.

Inputs only mark work; ``tick()`` does it, so a burst of updates costs one path
computation and one advertisement.  Call ``tick()`` at the deadline it returns and also
soon after other calls (``deadline()`` says when: often "now").  Floods are the
exception: news from a neighbour is passed on at once, since every hop of delay adds up
across the network.

Every message from a neighbour is validated; a malformed one is counted and dropped and
never raises.  Duplicate router ids: a neighbour that connects with our id, or with the id
of a router we already reach under another boot instance, is refused (``duplicate_router``,
the connection is ignored: the router already in the network keeps its place); an
advertisement carrying our id with another instance is reported the same way, once per
instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .hello import HelloProtocol
from .linkstate import LinkStateEngine
from .messages import (
    HELLO,
    LSR,
    LSU,
    MAR,
    MAU,
    MAX_ADDRESS_CHARS,
    MAX_COST,
    MAX_ROUTER_ID_CHARS,
    PROTOCOL_VERSION,
    RA,
    ControlMessage,
    RouterSummary,
    parse_message,
)
from .mobile import MobileAddressEngine, Outcome
from .nodes import Freshness, NodeTable

__all__ = ["NetworkAdapter", "NetworkTimers", "RouterNetwork"]

_MAX_REPORTED_DUPLICATES = 64  # other instances of our id reported, each once; bounds the memory of them


class NetworkAdapter(Protocol):
    """What the control plane needs from the router core."""

    def send_control(self, neighbour_id: str, message: dict) -> None:
        """Deliver ``message`` to that neighbour's ``RouterNetwork.handle``.

        The same map may be passed for several neighbours: treat it as read-only.
        """

    def routes_changed(self, next_hops: dict[str, str], costs: dict[str, int]) -> None:
        """Router id -> neighbour to forward through / path cost; reachable routers only."""

    def address_added(self, address: str, router_id: str) -> None:
        """``router_id`` (reachable) now has consumers for ``address``."""

    def address_removed(self, address: str, router_id: str) -> None:
        """``router_id`` no longer has consumers for ``address``, or became unreachable."""

    def duplicate_router(self, router_id: str) -> None:
        """Another router uses ``router_id``, which is ours or one already in the network."""


@dataclass(frozen=True, slots=True)
class NetworkTimers:
    """Intervals of the control plane, in seconds.

    The defaults converge a network well within a second of a change (changes are flooded
    at once; these timers only repair losses and detect silent neighbours) and cost little
    when idle: a HELLO per neighbour per second, an RA per neighbour per 30 s.
    """

    hello_interval: float = 1.0
    hello_max_age: float = 3.0  # a neighbour silent this long is down
    ra_interval: float = 30.0
    ra_interval_flux: float = 1.0  # while the topology is in flux
    flux_duration: float = 5.0  # in flux this long after the last change
    remote_router_max_age: float = 60.0  # an unreachable router is forgotten after this
    mobile_delta_history: int = 16  # address deltas kept per router for lagging peers

    def __post_init__(self) -> None:
        for name in ("hello_interval", "hello_max_age", "ra_interval", "ra_interval_flux",
                     "flux_duration", "remote_router_max_age"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")
        if self.hello_max_age <= self.hello_interval:
            raise ValueError("hello_max_age: must be longer than hello_interval")
        if not isinstance(self.mobile_delta_history, int) or self.mobile_delta_history < 1:
            raise ValueError(f"mobile_delta_history: must be a positive integer, got {self.mobile_delta_history!r}")


def _check_id(value: Any, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ROUTER_ID_CHARS:
        raise ValueError(f"{what}: a router id is a string of 1 to {MAX_ROUTER_ID_CHARS} characters, got {value!r}")


class RouterNetwork:
    """One router's view of the router network; see the module docstring."""

    def __init__(
        self,
        router_id: str,
        instance: int,
        adapter: NetworkAdapter,
        timers: NetworkTimers | None = None,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        _check_id(router_id, "router_id")
        if not isinstance(instance, int) or isinstance(instance, bool) or not 0 < instance < 1 << 63:
            raise ValueError(f"instance: a positive integer that grows with every start, got {instance!r}")
        self.id = router_id
        self.instance = instance
        self.timers = timers or NetworkTimers()
        self._adapter = adapter
        self._trace = trace
        self._now = 0.0
        self.counters: dict[str, int] = {}
        self._duplicates_reported: set[int] = set()
        t = self.timers
        self._hello = HelloProtocol(router_id, instance, t.hello_interval, t.hello_max_age, self._send)
        self._links = LinkStateEngine(router_id, instance, t.ra_interval, t.ra_interval_flux, t.flux_duration)
        self._mobile = MobileAddressEngine(
            router_id, instance, t.mobile_delta_history, adapter.address_added, adapter.address_removed
        )
        self._nodes = NodeTable(router_id, t.remote_router_max_age, adapter.routes_changed, self._mobile.set_reachable)

    # -- inputs from the core

    def neighbour_connected(self, neighbour_id: str, instance: int, cost: int, now: float) -> None:
        """An inter-router connection to ``neighbour_id`` is up (not yet used for routing)."""
        _check_id(neighbour_id, "neighbour_id")
        if not isinstance(cost, int) or isinstance(cost, bool) or not 1 <= cost <= MAX_COST:
            raise ValueError(f"cost: an integer from 1 to {MAX_COST}, got {cost!r}")
        self._now = now
        if neighbour_id == self.id:
            self._refuse(neighbour_id, instance, "connects with our own router id")
            return
        known = self._hello.neighbours.get(neighbour_id)
        if known is not None:
            if known.instance != instance:
                self._refuse(neighbour_id, instance, f"is already our neighbour as instance {known.instance}")
                return
            known.cost = cost  # the same router again: a new cost takes effect
            if self._hello.is_up(neighbour_id):
                self._links.set_peer(neighbour_id, cost, now)
            return
        record = self._nodes.records.get(neighbour_id)
        if record is not None and record.reachable and record.instance != instance:
            self._nodes.recompute(self._links.peers, now)  # it may have been lost just now
        if record is not None and record.reachable and record.instance != instance:
            self._refuse(neighbour_id, instance, f"is already in the network as instance {record.instance}")
            return
        self._log(f"neighbour {neighbour_id} connected (instance {instance}, cost {cost})")
        self._hello.connect(neighbour_id, instance, cost, now)

    def neighbour_lost(self, neighbour_id: str, now: float, instance: int | None = None) -> None:
        """The connection to that neighbour is gone.

        Pass ``instance`` to make sure a refused duplicate's connection closing cannot take
        down the accepted neighbour of the same id.
        """
        self._now = now
        known = self._hello.neighbours.get(neighbour_id)
        if known is None or (instance is not None and instance != known.instance):
            return
        self._log(f"neighbour {neighbour_id} lost")
        if self._hello.disconnect(neighbour_id):
            self._neighbour_down(neighbour_id, now)

    def handle(self, neighbour_id: str, message: dict, now: float) -> None:
        """A control message from a neighbour; a malformed one is counted and dropped."""
        self._now = now
        neighbour = self._hello.neighbours.get(neighbour_id)
        if neighbour is None:
            self._count("dropped_unknown_neighbour")
            return
        try:
            parsed = parse_message(message)
        except ValueError as error:
            self._count("malformed")
            self._log(f"malformed control message from {neighbour_id}: {error}")
            return
        if isinstance(parsed, HELLO):
            if parsed.id != neighbour_id or parsed.instance != neighbour.instance:
                self._count("malformed")
                self._log(f"HELLO from {neighbour_id} names {parsed.id!r} instance {parsed.instance}")
                return
            self._count("received_HELLO")
            became = self._hello.on_hello(neighbour_id, parsed, now)
            if became is True:
                self._neighbour_up(neighbour_id, now)
            elif became is False:
                self._neighbour_down(neighbour_id, now)
            return
        self._count(f"received_{parsed.OP}")
        if not self._hello.is_up(neighbour_id):
            self._count("dropped_not_up")
            return
        self._dispatch(neighbour_id, parsed, now)

    def add_local_address(self, address: str, now: float) -> None:
        """We now have consumers for ``address``; advertised at the next tick."""
        self._check_address(address)
        self._now = now
        self._mobile.add_local(address)

    def remove_local_address(self, address: str, now: float) -> None:
        self._check_address(address)
        self._now = now
        self._mobile.remove_local(address)

    def tick(self, now: float) -> float | None:
        """Run what is due; return the next deadline (None: nothing until the next input)."""
        self._now = now
        for neighbour_id in self._hello.tick(now):
            self._log(f"neighbour {neighbour_id} silent for {self.timers.hello_max_age}s")
            self._neighbour_down(neighbour_id, now)
        lsu = self._links.take_changes()
        if lsu is not None:
            self._nodes.dirty = True
            self._flood(lsu, None)
        mau = self._mobile.take_changes()
        if mau is not None:
            self._flood(mau, None)
        self._nodes.recompute(self._links.peers, now)
        for router_id in self._nodes.expire(now):
            self._mobile.forget_origin(router_id)
        self._mobile.prune_requests(now)
        if self._links.ra_due(now):
            ra = self._ra()
            for neighbour_id in sorted(self._hello.up()):
                self._send(neighbour_id, ra)
        return self.deadline()

    def deadline(self) -> float | None:
        """When ``tick()`` next has work; the time of the last input when it has work now."""
        now = self._now
        if self._mobile.has_changes():
            return now
        deadlines = [d for d in (self._hello.deadline(), self._links.deadline(now), self._nodes.deadline(now)) if d is not None]
        return min(deadlines) if deadlines else None

    # -- queries

    def next_hop(self, router_id: str) -> str | None:
        return self._nodes.next_hops.get(router_id)

    def cost(self, router_id: str) -> int | None:
        return self._nodes.costs.get(router_id)

    def routers_for(self, address: str) -> frozenset[str]:
        """Reachable remote routers with consumers for ``address``."""
        return self._mobile.routers_for(address)

    def neighbours_up(self) -> frozenset[str]:
        return self._hello.up()

    def local_addresses(self) -> frozenset[str]:
        """The addresses we have consumers for (as told by add/remove_local_address)."""
        return self._mobile.local_addresses

    def view(self) -> dict[str, Any]:
        """The routing state in plain values, for ``switchboard network`` and tests."""
        routers = [
            {
                "id": self.id,
                "instance": self.instance,
                "reachable": True,
                "cost": 0,
                "next_hop": None,
                "ls_seq": self._links.ls_seq,
                "mobile_seq": self._mobile.seq,
                "addresses": len(self._mobile.local_addresses),
                "neighbours": dict(sorted(self._links.peers.items())),
            }
        ]
        for record in sorted(self._nodes.records.values(), key=lambda r: r.id):
            summary = self._mobile.summary(record.id)
            state = self._mobile.origins.get(record.id)
            routers.append(
                {
                    "id": record.id,
                    "instance": record.instance,
                    "reachable": record.reachable,
                    "cost": record.cost,
                    "next_hop": record.next_hop,
                    "ls_seq": record.ls_seq,
                    "mobile_seq": summary[1] if summary else 0,
                    "addresses": len(state.addresses) if state else 0,
                    "neighbours": dict(sorted(record.peers.items())),
                }
            )
        neighbours = [
            {"id": n.id, "instance": n.instance, "cost": n.cost, "state": n.state}
            for n in sorted(self._hello.neighbours.values(), key=lambda n: n.id)
        ]
        return {
            "id": self.id,
            "instance": self.instance,
            "protocol_version": PROTOCOL_VERSION,
            "routers": routers,
            "neighbours": neighbours,
            "addresses": self._mobile.address_count,
            "counters": dict(sorted(self.counters.items())) | {"path_computations": self._nodes.recomputes},
        }

    # -- control messages from up neighbours

    def _dispatch(self, neighbour_id: str, message: ControlMessage, now: float) -> None:
        if isinstance(message, LSU):
            self._on_lsu(neighbour_id, message, now)
        elif isinstance(message, MAU):
            self._on_mau(neighbour_id, message, now)
        elif isinstance(message, RA):
            self._on_ra(neighbour_id, message, now)
        elif isinstance(message, LSR):
            self._on_lsr(neighbour_id, message)
        elif isinstance(message, MAR):
            self._on_mar(neighbour_id, message)

    def _on_lsu(self, neighbour_id: str, lsu: LSU, now: float) -> None:
        if lsu.id == self.id:
            if self._is_own_instance(lsu.instance):
                self._links.skip_past(lsu.ls_seq, now)
            return
        if self._observe(lsu.id, lsu.instance, now) is Freshness.STALE:
            return
        if self._nodes.update_link_state(lsu.id, lsu.ls_seq, lsu.peers):
            self._links.note_change(now)
            self._flood(lsu, neighbour_id)
        else:
            self._count("old")

    def _on_mau(self, neighbour_id: str, mau: MAU, now: float) -> None:
        if mau.id == self.id:
            if self._is_own_instance(mau.instance):
                self._mobile.skip_past(mau.mobile_seq)
            return
        if self._observe(mau.id, mau.instance, now) is Freshness.STALE:
            return
        outcome = self._mobile.on_update(mau)
        if outcome is Outcome.APPLIED:
            self._flood(mau, neighbour_id)
        elif outcome is Outcome.GAP:
            self._count("address_gaps")
            request = self._mobile.request_after_gap(mau.id, now, self.timers.ra_interval_flux)
            if request is not None:
                self._send(neighbour_id, request)
        else:
            self._count("old")

    def _on_ra(self, neighbour_id: str, ra: RA, now: float) -> None:
        retry = self.timers.ra_interval_flux
        wanted: list[str] = []
        requests: list[MAR] = []
        for summary in (RouterSummary(ra.id, ra.instance, ra.ls_seq, ra.mobile_seq), *ra.known):
            if summary.id == self.id:
                if self._is_own_instance(summary.instance):
                    self._links.skip_past(summary.ls_seq, now)
                    self._mobile.skip_past(summary.mobile_seq)
                continue
            if self._nodes.wants_link_state(summary.id, summary.instance, summary.ls_seq, now, retry):
                wanted.append(summary.id)
            request = self._mobile.wants(summary.id, summary.instance, summary.mobile_seq, now, retry)
            if request is not None:
                requests.append(request)
        if wanted:
            self._send(neighbour_id, LSR(self.id, self.instance, tuple(wanted)))
        for request in requests:
            self._send(neighbour_id, request)

    def _on_lsr(self, neighbour_id: str, lsr: LSR) -> None:
        for router_id in dict.fromkeys(lsr.want):
            if router_id == self.id:
                if self._links.ls_seq > 0:
                    self._send(neighbour_id, self._links.own_lsu())
                continue
            record = self._nodes.records.get(router_id)
            if record is not None and record.ls_seq > 0:
                self._send(neighbour_id, LSU(record.id, record.instance, record.ls_seq, record.peers))

    def _on_mar(self, neighbour_id: str, mar: MAR) -> None:
        for update in self._mobile.answer(mar):
            self._send(neighbour_id, update)

    # -- helpers

    def _neighbour_up(self, neighbour_id: str, now: float) -> None:
        neighbour = self._hello.neighbours[neighbour_id]
        self._log(f"neighbour {neighbour_id} up")
        self._observe(neighbour_id, neighbour.instance, now)
        self._links.set_peer(neighbour_id, neighbour.cost, now)
        self._nodes.dirty = True
        self._send(neighbour_id, self._ra())

    def _neighbour_down(self, neighbour_id: str, now: float) -> None:
        self._log(f"neighbour {neighbour_id} down")
        self._links.remove_peer(neighbour_id, now)
        self._nodes.dirty = True

    def _observe(self, router_id: str, instance: int, now: float) -> Freshness:
        freshness = self._nodes.observe(router_id, instance, now)
        if freshness is Freshness.RESTARTED:
            self._log(f"router {router_id} restarted (instance {instance})")
            self._mobile.reset_origin(router_id, instance)
            self._links.note_change(now)
        elif freshness is Freshness.STALE:
            self._count("stale")
        return freshness

    def _is_own_instance(self, instance: int) -> bool:
        """Whether news of our own id is of us; report it once per other instance when not."""
        if instance == self.instance:
            return True
        if instance not in self._duplicates_reported and len(self._duplicates_reported) < _MAX_REPORTED_DUPLICATES:
            self._duplicates_reported.add(instance)
            self._refuse(self.id, instance, "is advertised in the network by another router")
        return False

    def _refuse(self, router_id: str, instance: int, why: str) -> None:
        self._count("duplicate_router")
        self._log(f"duplicate router id {router_id!r} (instance {instance}) {why}")
        self._adapter.duplicate_router(router_id)

    def _ra(self) -> RA:
        known = []
        for record in self._nodes.records.values():
            if record.reachable:
                summary = self._mobile.summary(record.id)
                mobile_seq = summary[1] if summary is not None and summary[0] == record.instance else 0
                known.append(RouterSummary(record.id, record.instance, record.ls_seq, mobile_seq))
        return RA(self.id, self.instance, self._links.ls_seq, self._mobile.seq, tuple(known))

    def _flood(self, message: LSU | MAU, came_from: str | None) -> None:
        body = None
        for neighbour_id in sorted(self._hello.up()):
            if neighbour_id != came_from:
                if body is None:
                    body = message.to_map()
                self._count(f"sent_{message.OP}")
                self._adapter.send_control(neighbour_id, body)

    def _send(self, neighbour_id: str, message: ControlMessage) -> None:
        self._count(f"sent_{message.OP}")
        self._adapter.send_control(neighbour_id, message.to_map())

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _log(self, text: str) -> None:
        if self._trace is not None:
            self._trace(f"{self.id}: {text}")

    @staticmethod
    def _check_address(address: Any) -> None:
        if not isinstance(address, str) or not 0 < len(address) <= MAX_ADDRESS_CHARS:
            raise ValueError(f"address: a string of 1 to {MAX_ADDRESS_CHARS} characters, got {address!r}")
