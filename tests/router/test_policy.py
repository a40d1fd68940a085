"""The policy: the pattern matcher, groups, connection limits, caching and the denial log."""

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.amqp.errors import Condition
from switchboard.router.config import parse_config
from switchboard.router.core import Counters
from switchboard.router.policy import Patterns, Policy

addresses = st.text(alphabet="ab/.-_*x", max_size=12)


@pytest.mark.parametrize(
    "patterns, address, allowed",
    [
        (["*"], "anything/at/all", True),
        (["*"], "", True),
        (["rpc/*"], "rpc/compute", True),
        (["rpc/*"], "rpc/", True),
        (["rpc/*"], "rpc", False),
        (["rpc/*"], "xrpc/compute", False),
        (["status"], "status", True),
        (["status"], "status/x", False),
        (["status"], "statu", False),
        (["a/*", "b"], "b", True),
        (["a/*", "b"], "a/1", True),
        (["a/*", "b"], "c", False),
        ([], "anything", False),
    ],
)
def test_pattern_examples(patterns: list[str], address: str, allowed: bool) -> None:
    assert Patterns(patterns).matches(address) is allowed


@given(prefix=addresses.filter(lambda a: "*" not in a), rest=addresses)
def test_a_prefix_pattern_matches_exactly_what_starts_with_the_prefix(prefix: str, rest: str) -> None:
    pattern = Patterns([prefix + "*"])
    assert pattern.matches(prefix + rest)
    assert pattern.matches(rest) == rest.startswith(prefix)


@given(name=addresses.filter(lambda a: "*" not in a), other=addresses)
def test_an_exact_pattern_matches_only_itself(name: str, other: str) -> None:
    assert Patterns([name]).matches(other) == (other == name)


@given(patterns=st.lists(addresses.filter(lambda a: "*" not in a[:-1] and a), max_size=5), address=addresses)
def test_a_list_matches_when_any_of_its_patterns_does(patterns: list[str], address: str) -> None:
    assert Patterns(patterns).matches(address) == any(Patterns([p]).matches(address) for p in patterns)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _policy(policy_table: dict) -> tuple[Policy, Counters, Clock]:
    config = parse_config({"policy": policy_table})
    counters, clock = Counters(), Clock()
    distribution = lambda address: "multicast" if address.startswith("multicast/") else "balanced"  # noqa: E731
    return Policy(config.policy, distribution, counters, clock), counters, clock


GROUPS = {
    "anonymous_group": "guests",
    "groups": {
        "ops": {"users": ["alice"], "send": ["*"], "receive": ["*"], "dynamic": True,
                "send_multicast": True, "receive_multicast": True},
        "agents": {"users": ["bob", "carol"], "send": ["rpc/*", "multicast/*"], "receive": ["rpc/agent", "multicast/*"],
                   "max_connections": 3, "max_connections_per_user": 2},
        "guests": {"receive": ["public/*"]},
    },
}


def test_no_policy_allows_everything() -> None:
    policy = Policy(None, lambda a: "balanced", Counters(), Clock())
    assert policy.admit("anyone") == (None, None)
    assert policy.admit(None) == (None, None)


def test_rules_of_a_group() -> None:
    policy, counters, _ = _policy(GROUPS)
    bob, refused = policy.admit("bob")
    assert refused is None
    assert bob.send_refusal("rpc/compute") is None
    assert bob.receive_refusal("rpc/agent") is None
    denied = bob.send_refusal("admin/reboot")
    assert denied.condition == Condition.UNAUTHORIZED_ACCESS
    assert denied.description == "user 'bob' (group 'agents') may not send to 'admin/reboot'"
    assert "may not receive from 'rpc/other'" in bob.receive_refusal("rpc/other").description
    assert "may not send to multicast address 'multicast/x'" in bob.send_refusal("multicast/x").description
    assert "may not receive from multicast address 'multicast/x'" in bob.receive_refusal("multicast/x").description
    assert "may not create dynamic addresses" in bob.dynamic_refusal().description
    assert bob.receive_refusal("") is None  # the core refuses a missing address itself
    assert counters.policy_denied == 5
    alice, _ = policy.admit("alice")
    assert alice.send_refusal("multicast/x") is None and alice.dynamic_refusal() is None


def test_anonymous_clients_are_in_the_anonymous_group() -> None:
    policy, _, _ = _policy(GROUPS)
    for user in (None, "anonymous"):
        guest, refused = policy.admit(user)
        assert refused is None and guest.user == "anonymous" and guest.group.name == "guests"
        assert guest.receive_refusal("public/news") is None
        assert "user 'anonymous' (group 'guests') may not send to 'public/news'" == guest.send_refusal("public/news").description


def test_users_in_no_group_are_refused_unless_a_default_group_is_set() -> None:
    policy, counters, _ = _policy(GROUPS)
    grant, refused = policy.admit("dave")
    assert grant is None
    assert refused.condition == Condition.UNAUTHORIZED_ACCESS
    assert "user 'dave' is in no policy group" in refused.description
    assert counters.policy_denied == 1
    policy, _, _ = _policy({"default_group": "ops", "groups": GROUPS["groups"]})
    grant, refused = policy.admit("dave")
    assert refused is None and grant.group.name == "ops"
    _, refused = policy.admit(None)
    assert "anonymous clients are in no policy group" in refused.description


def test_connection_limits_per_user_and_per_group() -> None:
    policy, counters, _ = _policy(GROUPS)
    bob1, _ = policy.admit("bob")
    bob2, _ = policy.admit("bob")
    _, refused = policy.admit("bob")
    assert refused.condition == Condition.RESOURCE_LIMIT_EXCEEDED
    assert refused.description == "user 'bob' has reached max_connections_per_user (2) of group 'agents'"
    carol1, refused = policy.admit("carol")
    assert refused is None
    _, refused = policy.admit("carol")
    assert refused.description == "group 'agents' has reached its max_connections (3); user 'carol' refused"
    policy.release(bob1)
    carol2, refused = policy.admit("carol")
    assert refused is None
    policy.release(bob2)
    policy.release(carol1)
    policy.release(carol2)
    assert [policy.admit(u)[1] for u in ("bob", "bob", "carol")] == [None, None, None]
    assert counters.policy_denied == 2


def test_relay_decisions_are_cached_per_group_and_bounded() -> None:
    from switchboard.router import policy as policy_module

    policy, counters, _ = _policy(GROUPS)
    bob, _ = policy.admit("bob")
    assert bob.may_send_to("rpc/a") and not bob.may_send_to("admin/x") and not bob.may_send_to("multicast/m")
    assert counters.policy_denied == 0  # asking is free; a denial is counted when acted on
    assert bob.relay_refusal("admin/x") == "user 'bob' (group 'agents') may not send to 'admin/x'"
    assert counters.policy_denied == 1
    carol, _ = policy.admit("carol")
    assert carol.group.send_cache is bob.group.send_cache
    for i in range(policy_module.MAX_CACHED_DECISIONS + 10):
        carol.may_send_to(f"rpc/{i}")
    assert len(bob.group.send_cache) <= policy_module.MAX_CACHED_DECISIONS


def test_denials_are_logged_once_per_cause_and_period(caplog) -> None:
    from switchboard.router.policy import DENIAL_LOG_SECONDS

    policy, counters, clock = _policy(GROUPS)
    bob, _ = policy.admit("bob")
    with caplog.at_level(logging.WARNING, logger="switchboard.router.policy"):
        for _ in range(100):
            bob.send_refusal("admin/x")
        bob.send_refusal("admin/y")
        clock.now += DENIAL_LOG_SECONDS
        bob.send_refusal("admin/x")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert sum("'admin/x'" in line for line in lines) == 2
    assert counters.policy_denied == 102
