"""Address advertisement: which routers have consumers for which addresses.

Each router numbers the changes to its own address set: at most one delta (MAU with the
addresses added and removed) per tick, ``mobile_seq`` one higher than the last.  Deltas
are flooded.  A router applies a delta only on top of the one before it; a gap (a delta
lost, a partition, a late start) makes it ask the neighbour that sent it (MAR, with what
it has), and the answer is the missing deltas while the last ``history_size`` are kept,
else the full list.  Every router keeps that bounded history for every origin, so any
neighbour can answer, not only the origin.

The data plane sees addresses of *reachable* routers only: ``address_added`` when a
reachable router gains consumers for an address or a router with consumers becomes
reachable, ``address_removed`` for the reverse, each exactly once per change.
``routers_for`` reads an index kept in step with those calls; since most addresses live
on a single router, their entry is a frozenset shared by all of that router's addresses.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from .messages import MAR, MAU

__all__ = ["MobileAddressEngine", "OriginAddresses", "Outcome"]


class Outcome(Enum):
    APPLIED = "applied"  # news: pass it on
    OLD = "old"  # already known
    GAP = "gap"  # deltas are missing before it: ask for them


@dataclass(slots=True)
class OriginAddresses:
    """What we know of one router's addresses."""

    instance: int
    history_size: int
    seq: int = 0
    addresses: set[str] = field(default_factory=set)
    history: deque[MAU] = field(init=False)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_size)


_EMPTY: frozenset[str] = frozenset()


class MobileAddressEngine:
    """Our own numbered address deltas, and every other router's addresses."""

    def __init__(
        self,
        router_id: str,
        instance: int,
        history_size: int,
        address_added: Callable[[str, str], None],
        address_removed: Callable[[str, str], None],
    ) -> None:
        self._id = router_id
        self._instance = instance
        self._history_size = history_size
        self._address_added = address_added
        self._address_removed = address_removed
        self._own = OriginAddresses(instance, history_size)
        self._local: set[str] = set()  # what we have now; _own.addresses is what we advertised
        self._pending: dict[str, bool] = {}  # address -> added (True) / removed (False) since
        self._resend_full = False
        self.origins: dict[str, OriginAddresses] = {}
        self._reachable: set[str] = set()
        self._index: dict[str, frozenset[str]] = {}
        self._singletons: dict[str, frozenset[str]] = {}
        self._requested_until: dict[str, float] = {}  # origin -> a MAR is outstanding until

    # -- our own addresses

    @property
    def seq(self) -> int:
        return self._own.seq

    @property
    def local_addresses(self) -> frozenset[str]:
        return frozenset(self._local)

    def add_local(self, address: str) -> None:
        if address in self._local:
            return
        self._local.add(address)
        self._note_local_change(address, True)

    def remove_local(self, address: str) -> None:
        if address not in self._local:
            return
        self._local.discard(address)
        self._note_local_change(address, False)

    def has_changes(self) -> bool:
        return bool(self._pending) or self._resend_full

    def take_changes(self) -> MAU | None:
        """The next numbered update of our addresses, or None when nothing changed."""
        if not self.has_changes():
            return None
        own = self._own
        own.seq += 1
        if self._resend_full:
            self._resend_full = False
            self._pending.clear()
            own.addresses = set(self._local)
            own.history.clear()
            return MAU(self._id, self._instance, own.seq, True, tuple(sorted(own.addresses)))
        added = tuple(sorted(a for a, is_added in self._pending.items() if is_added))
        removed = tuple(sorted(a for a, is_added in self._pending.items() if not is_added))
        self._pending.clear()
        own.addresses.difference_update(removed)
        own.addresses.update(added)
        delta = MAU(self._id, self._instance, own.seq, False, added, removed)
        own.history.append(delta)
        return delta

    def skip_past(self, seq: int) -> None:
        """Our own sequence was seen higher than ours (an echo of a lost past): move past it."""
        if seq > self._own.seq:
            self._own.seq = seq
            self._resend_full = True

    def _note_local_change(self, address: str, added: bool) -> None:
        if self._pending.get(address) is (not added):
            del self._pending[address]  # undone within the same tick
        else:
            self._pending[address] = added

    # -- other routers' addresses

    def summary(self, origin: str) -> tuple[int, int] | None:
        state = self.origins.get(origin)
        return None if state is None else (state.instance, state.seq)

    def wants(self, origin: str, instance: int, seq: int, now: float, retry_after: float) -> MAR | None:
        """A request for ``origin``'s addresses if a summary shows we are behind, else None."""
        state = self.origins.get(origin)
        have = (0, 0) if state is None else (state.instance, state.seq)
        if seq == 0 or (instance, seq) <= have:
            return None  # nothing advertised in that life, or nothing we lack
        return self._request(origin, have, now, retry_after)

    def request_after_gap(self, origin: str, now: float, retry_after: float) -> MAR | None:
        state = self.origins[origin]
        return self._request(origin, (state.instance, state.seq), now, retry_after)

    def _request(self, origin: str, have: tuple[int, int], now: float, retry_after: float) -> MAR | None:
        # one request at a time per origin, whichever neighbour showed us first that we lag
        if now < self._requested_until.get(origin, float("-inf")):
            return None
        self._requested_until[origin] = now + retry_after
        return MAR(self._id, self._instance, origin, have[0], have[1])

    def on_update(self, mau: MAU) -> Outcome:
        """Apply a MAU of the origin's current instance (the caller has checked it)."""
        state = self.origins.get(mau.id)
        if state is None:
            state = self.origins[mau.id] = OriginAddresses(mau.instance, self._history_size)
        if mau.mobile_seq <= state.seq:
            return Outcome.OLD
        if mau.full:
            new = set(mau.added)
            removed, added = state.addresses - new, new - state.addresses
            state.history.clear()
        elif mau.mobile_seq == state.seq + 1:
            removed, added = set(mau.removed), set(mau.added)
            state.history.append(mau)
        else:
            return Outcome.GAP
        state.seq = mau.mobile_seq
        self._requested_until.pop(mau.id, None)
        state.addresses.difference_update(removed)
        state.addresses.update(added)
        if mau.id in self._reachable:
            for address in removed:
                self._index_remove(address, mau.id)
            for address in added:
                self._index_add(address, mau.id)
        return Outcome.APPLIED

    def answer(self, request: MAR) -> list[MAU]:
        """What brings the requester up to date: the missing deltas, else the full list."""
        if request.origin == self._id:
            state, instance = self._own, self._instance
        else:
            found = self.origins.get(request.origin)
            if found is None:
                return []
            state, instance = found, found.instance
        if request.have_instance == instance:
            if request.have_seq >= state.seq:
                return []
            history = state.history
            if history and history[0].mobile_seq <= request.have_seq + 1:
                return [delta for delta in history if delta.mobile_seq > request.have_seq]
        return [MAU(request.origin, instance, state.seq, True, tuple(sorted(state.addresses)))]

    def reset_origin(self, origin: str, instance: int) -> None:
        """The origin restarted: what its earlier life advertised is gone."""
        self.forget_origin(origin, keep_reachable=True)
        self.origins[origin] = OriginAddresses(instance, self._history_size)

    def forget_origin(self, origin: str, keep_reachable: bool = False) -> None:
        state = self.origins.pop(origin, None)
        self._requested_until.pop(origin, None)
        if state is not None and origin in self._reachable:
            for address in state.addresses:
                self._index_remove(address, origin)
        if not keep_reachable:
            self._reachable.discard(origin)

    def set_reachable(self, origin: str, reachable: bool) -> None:
        if reachable == (origin in self._reachable):
            return
        state = self.origins.get(origin)
        if reachable:
            self._reachable.add(origin)
            if state is not None:
                for address in state.addresses:
                    self._index_add(address, origin)
        else:
            self._reachable.discard(origin)
            if state is not None:
                for address in state.addresses:
                    self._index_remove(address, origin)

    def prune_requests(self, now: float) -> None:
        """Drop request records past their retry time (never answered: the origin vanished)."""
        if self._requested_until:
            self._requested_until = {o: until for o, until in self._requested_until.items() if until > now}

    def routers_for(self, address: str) -> frozenset[str]:
        return self._index.get(address, _EMPTY)

    @property
    def address_count(self) -> int:
        return len(self._index)

    # -- the index of reachable routers' addresses

    def _singleton(self, origin: str) -> frozenset[str]:
        found = self._singletons.get(origin)
        if found is None:
            found = self._singletons[origin] = frozenset((origin,))
        return found

    def _index_add(self, address: str, origin: str) -> None:
        routers = self._index.get(address)
        if routers is None:
            self._index[address] = self._singleton(origin)
        elif origin in routers:
            return
        else:
            self._index[address] = routers | {origin}
        self._address_added(address, origin)

    def _index_remove(self, address: str, origin: str) -> None:
        routers = self._index.get(address)
        if routers is None or origin not in routers:
            return
        if len(routers) == 1:
            del self._index[address]
        else:
            rest = routers - {origin}
            self._index[address] = self._singleton(next(iter(rest))) if len(rest) == 1 else rest
        self._address_removed(address, origin)
