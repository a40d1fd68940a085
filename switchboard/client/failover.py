"""Which router to try next, and when: the reconnect policy and its plan of attempts.

After a loss (or at the start) the client goes round the list starting with the router
after the one it was on, so a dead router is not tried first again.  A full round
without success is followed by a back-off delay (exponential, capped, with jitter, from
``io.connector.backoff_delays``) before the next round; within a round, the next router
is tried at once.  The plan ends when the policy's bound is reached: a number of
attempts, or a time since the outage began, or never.

The plan only decides; the client makes the attempts.  Time is an argument, so the
schedule is tested without sockets or sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from ..io.connector import backoff_delays
from .urls import Router

__all__ = ["Reconnect", "AttemptPlan"]


@dataclass(frozen=True)
class Reconnect:
    """How a client fails over.

    ``timeout``: seconds from the start of an outage (or of ``Client.connect``) after
    which the client gives up, failing what waits; None retries for ever.
    ``max_attempts``: connection attempts per outage before giving up (None: no limit).
    The delay between rounds starts at ``initial_delay``, grows by ``factor`` up to
    ``max_delay``, each delay varied by +/- ``jitter`` (a fraction) so that the clients of
    a restarted router do not all come back in the same instant.
    """

    timeout: float | None = 60.0
    max_attempts: int | None = None
    initial_delay: float = 0.1
    max_delay: float = 10.0
    factor: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"Reconnect.timeout must be positive or None: {self.timeout}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"Reconnect.max_attempts must be at least 1 or None: {self.max_attempts}")
        if not 0 <= self.initial_delay <= self.max_delay:
            raise ValueError("Reconnect delays need 0 <= initial_delay <= max_delay")
        if self.factor < 1:
            raise ValueError(f"Reconnect.factor must be at least 1: {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"Reconnect.jitter must be in [0, 1): {self.jitter}")


class AttemptPlan:
    """The attempts of one outage: ``next_attempt(now)`` says which router to try and how
    long to wait first, or None once the policy's bound is reached.

    ``policy`` None means no reconnecting: one round through the list, then the end.
    """

    def __init__(self, routers: Sequence[Router], start: int, policy: Reconnect | None, now: float) -> None:
        if not routers:
            raise ValueError("no routers to connect to")
        self.routers = tuple(routers)
        self.policy = policy
        self.started_at = now
        self.attempts = 0
        self.round = 0
        self._index = start % len(self.routers)
        self._tried_this_round = 0
        self._delays: Iterator[float] | None = None
        if policy is not None:
            self._delays = backoff_delays(policy.initial_delay, policy.max_delay, policy.factor, policy.jitter)

    def next_attempt(self, now: float) -> tuple[Router, float] | None:
        """The next router and the delay before trying it; None: give up.

        A delay that would run past the policy's timeout is not waited for.
        """
        delay = 0.0
        if self._tried_this_round == len(self.routers):
            if self._delays is None:
                return None  # not reconnecting: one round only
            self.round += 1
            self._tried_this_round = 0
            delay = next(self._delays)
        policy = self.policy
        if policy is not None:
            if policy.max_attempts is not None and self.attempts >= policy.max_attempts:
                return None
            if policy.timeout is not None and now + delay >= self.started_at + policy.timeout:
                return None
        router = self.routers[self._index]
        self._index = (self._index + 1) % len(self.routers)
        self._tried_this_round += 1
        self.attempts += 1
        return router, delay

    def time_left(self, now: float) -> float | None:
        """Seconds until the policy's timeout (None: no timeout)."""
        if self.policy is None or self.policy.timeout is None:
            return None
        return max(0.0, self.started_at + self.policy.timeout - now)
