"""The failover plan on a simulated clock: which router is tried when, and when it ends."""

from __future__ import annotations

import pytest

from switchboard.client import Reconnect, Router
from switchboard.client.failover import AttemptPlan

R1, R2, R3 = Router("r1", 5672), Router("r2", 5672), Router("r3", 5672)


def _run(plan: AttemptPlan, now: float = 0.0, limit: int = 100) -> list[tuple[Router, float]]:
    """Every attempt of the plan, the clock moving by each delay (bounded)."""
    steps = []
    for _ in range(limit):
        step = plan.next_attempt(now)
        if step is None:
            return steps
        steps.append(step)
        now += step[1]
    raise AssertionError(f"the plan did not end within {limit} attempts")


def test_round_robin_from_the_router_after_the_lost_one() -> None:
    plan = AttemptPlan([R1, R2, R3], start=1, policy=Reconnect(max_attempts=7, jitter=0.0), now=0.0)
    steps = _run(plan)
    assert [router for router, _ in steps] == [R2, R3, R1, R2, R3, R1, R2]


def test_back_off_only_between_full_rounds_and_growing() -> None:
    policy = Reconnect(max_attempts=8, initial_delay=0.5, factor=2.0, max_delay=1.5, jitter=0.0)
    steps = _run(AttemptPlan([R1, R2], start=0, policy=policy, now=0.0))
    assert [delay for _, delay in steps] == [0.0, 0.0, 0.5, 0.0, 1.0, 0.0, 1.5, 0.0]


def test_jitter_keeps_each_delay_within_its_bounds() -> None:
    policy = Reconnect(max_attempts=12, initial_delay=1.0, factor=2.0, max_delay=4.0, jitter=0.25)
    delays = [delay for _, delay in _run(AttemptPlan([R1], start=0, policy=policy, now=0.0))][1:]
    for delay, base in zip(delays, [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]):
        assert base * 0.75 <= delay <= base * 1.25


def test_the_timeout_ends_the_plan_counted_from_its_start() -> None:
    policy = Reconnect(timeout=5.0, initial_delay=1.0, factor=2.0, max_delay=10.0, jitter=0.0)
    plan = AttemptPlan([R1, R2], start=0, policy=policy, now=100.0)
    steps = _run(plan, now=100.0)
    # Rounds at t=100, 101 and 103; the next would start at 107, past 105.
    assert [delay for _, delay in steps] == [0.0, 0.0, 1.0, 0.0, 2.0, 0.0]
    assert plan.time_left(104.0) == 1.0


def test_without_reconnect_one_round_only() -> None:
    steps = _run(AttemptPlan([R1, R2, R3], start=2, policy=None, now=0.0))
    assert steps == [(R3, 0.0), (R1, 0.0), (R2, 0.0)]


def test_forever_means_no_end() -> None:
    plan = AttemptPlan([R1, R2], start=0, policy=Reconnect(timeout=None, initial_delay=0.0), now=0.0)
    for _ in range(10_000):
        assert plan.next_attempt(0.0) is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"max_attempts": 0},
        {"initial_delay": 2.0, "max_delay": 1.0},
        {"factor": 0.5},
        {"jitter": 1.0},
    ],
)
def test_bad_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Reconnect(**kwargs)
