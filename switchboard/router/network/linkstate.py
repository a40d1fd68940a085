"""Our own link state and when to advertise it.

Our link state is the set of neighbours that are up and our cost to each, numbered by
``ls_seq``.  Changes made within one tick are advertised together: the next tick bumps the
sequence once and floods one LSU.  Every router passes on each LSU that is news to it, so
a change reaches the whole network in one crossing of its diameter.

Floods can be lost (a connection cut in the middle of one).  The repair is the router
advertisement (RA): every ``ra_interval`` each router tells its neighbours the versions of
everything it knows, and a neighbour that is behind asks for what it lacks.  While the
topology is in flux — within ``flux_duration`` of the last change, ours or anyone's — RAs
go every ``ra_interval_flux`` instead, so losses during churn are repaired quickly, while an
idle network costs one RA per neighbour per ``ra_interval``.
"""

from __future__ import annotations

from .messages import LSU

__all__ = ["LinkStateEngine"]


class LinkStateEngine:
    def __init__(
        self,
        router_id: str,
        instance: int,
        ra_interval: float,
        ra_interval_flux: float,
        flux_duration: float,
    ) -> None:
        self._id = router_id
        self._instance = instance
        self._ra_interval = ra_interval
        self._ra_interval_flux = ra_interval_flux
        self._flux_duration = flux_duration
        self.peers: dict[str, int] = {}
        self.ls_seq = 0
        self._changed = False
        self._last_change: float | None = None
        self._next_ra_at: float | None = None

    # -- our link state

    def set_peer(self, neighbour_id: str, cost: int, now: float) -> None:
        if self.peers.get(neighbour_id) != cost:
            self.peers[neighbour_id] = cost
            self._changed = True
            self.note_change(now)

    def remove_peer(self, neighbour_id: str, now: float) -> None:
        if self.peers.pop(neighbour_id, None) is not None:
            self._changed = True
            self.note_change(now)

    def skip_past(self, ls_seq: int, now: float) -> None:
        """Our own state was seen with a higher sequence (an echo of a lost past): move past it."""
        if ls_seq > self.ls_seq:
            self.ls_seq = ls_seq
            self._changed = True
            self.note_change(now)

    def has_changes(self) -> bool:
        return self._changed

    def take_changes(self) -> LSU | None:
        """The LSU to flood when our link state changed since the last tick, else None."""
        if not self._changed:
            return None
        self._changed = False
        self.ls_seq += 1
        return self.own_lsu()

    def own_lsu(self) -> LSU:
        return LSU(self._id, self._instance, self.ls_seq, dict(self.peers))

    # -- advertisement timing

    def note_change(self, now: float) -> None:
        """The topology changed (ours or another router's): advertise faster for a while."""
        self._last_change = now
        soon = now + self._ra_interval_flux
        if self._next_ra_at is None or soon < self._next_ra_at:
            self._next_ra_at = soon

    def in_flux(self, now: float) -> bool:
        return self._last_change is not None and now < self._last_change + self._flux_duration

    def ra_due(self, now: float) -> bool:
        """True once per interval; the caller then sends the RA to every neighbour up."""
        if self._next_ra_at is None:
            self._next_ra_at = now + self._ra_interval
        if now < self._next_ra_at:
            return False
        interval = self._ra_interval_flux if self.in_flux(now) else self._ra_interval
        self._next_ra_at = now + interval
        return True

    def deadline(self, now: float) -> float | None:
        if self._changed:
            return now
        return self._next_ra_at
