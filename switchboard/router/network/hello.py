"""Neighbour discovery: HELLO between routers joined by an inter-router connection.

The core says when a connection to a neighbour is up or gone.  Over that connection each
side sends HELLO every ``hello_interval`` naming the neighbours it has heard from within
``hello_max_age``.  A neighbour is *up* — part of our link state, used for routing — only
while we hear it and its last HELLO lists us: then both directions work.  A neighbour
whose HELLOs stop for ``hello_max_age`` goes down even if the core has not (yet) noticed
the connection is gone; that is the fallback, the core's heartbeat is the fast path.

To come up quickly, a HELLO goes out at once when a connection is made and when we first
hear a neighbour (so it learns without waiting a whole interval that we hear it).

Theory of the states, per connected neighbour:

    connected --HELLO--> heard --HELLO listing us--> up
    up --HELLO not listing us--> heard;   heard/up --silent hello_max_age--> connected
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .messages import HELLO

__all__ = ["HelloProtocol", "Neighbour"]


@dataclass(slots=True)
class Neighbour:
    """A router we have an inter-router connection to."""

    id: str
    instance: int
    cost: int
    connected_at: float
    heard_until: float | None = None  # its last HELLO's arrival plus hello_max_age
    lists_us: bool = False  # whether that HELLO named us

    def is_heard(self, now: float) -> bool:
        return self.heard_until is not None and now < self.heard_until

    @property
    def state(self) -> str:
        if self.heard_until is None:
            return "connected"
        return "up" if self.lists_us else "heard"


class HelloProtocol:
    """Tracks connected neighbours and which of them are up (bidirectional)."""

    def __init__(
        self,
        router_id: str,
        instance: int,
        hello_interval: float,
        hello_max_age: float,
        send: Callable[[str, HELLO], None],
    ) -> None:
        self._id = router_id
        self._instance = instance
        self._interval = hello_interval
        self._max_age = hello_max_age
        self._send = send
        self.neighbours: dict[str, Neighbour] = {}
        self._up: set[str] = set()
        self._next_hello_at: float | None = None

    # -- queries

    def up(self) -> frozenset[str]:
        return frozenset(self._up)

    def is_up(self, neighbour_id: str) -> bool:
        return neighbour_id in self._up

    def deadline(self) -> float | None:
        if not self.neighbours:
            return None
        deadlines = [self._next_hello_at] if self._next_hello_at is not None else []
        for neighbour in self.neighbours.values():
            if neighbour.heard_until is not None:
                deadlines.append(neighbour.heard_until)
        return min(deadlines) if deadlines else None

    # -- inputs

    def connect(self, neighbour_id: str, instance: int, cost: int, now: float) -> None:
        self.neighbours[neighbour_id] = Neighbour(neighbour_id, instance, cost, now)
        if self._next_hello_at is None:
            self._next_hello_at = now + self._interval
        self._send_hello(neighbour_id, now)

    def disconnect(self, neighbour_id: str) -> bool:
        """Forget the neighbour; True when it was up."""
        self.neighbours.pop(neighbour_id, None)
        if not self.neighbours:
            self._next_hello_at = None
        if neighbour_id in self._up:
            self._up.discard(neighbour_id)
            return True
        return False

    def on_hello(self, neighbour_id: str, hello: HELLO, now: float) -> bool | None:
        """Take a neighbour's HELLO; return its new up state when it changed, else None."""
        neighbour = self.neighbours[neighbour_id]
        newly_heard = not neighbour.is_heard(now)
        neighbour.heard_until = now + self._max_age
        neighbour.lists_us = self._id in hello.seen
        if newly_heard:
            self._send_hello(neighbour_id, now)
        return self._update(neighbour_id, neighbour.lists_us)

    def tick(self, now: float) -> list[str]:
        """Send HELLOs when due and expire silent neighbours; return those that went down."""
        went_down = []
        for neighbour in self.neighbours.values():
            if neighbour.heard_until is not None and now >= neighbour.heard_until:
                neighbour.heard_until = None
                neighbour.lists_us = False
                if self._update(neighbour.id, False) is False:
                    went_down.append(neighbour.id)
        if self._next_hello_at is not None and now >= self._next_hello_at:
            self._next_hello_at = now + self._interval
            for neighbour_id in list(self.neighbours):
                self._send_hello(neighbour_id, now)
        return went_down

    # -- internals

    def _update(self, neighbour_id: str, up: bool) -> bool | None:
        if up == (neighbour_id in self._up):
            return None
        if up:
            self._up.add(neighbour_id)
        else:
            self._up.discard(neighbour_id)
        return up

    def _send_hello(self, neighbour_id: str, now: float) -> None:
        seen = tuple(sorted(n.id for n in self.neighbours.values() if n.is_heard(now)))
        self._send(neighbour_id, HELLO(self._id, self._instance, seen))
