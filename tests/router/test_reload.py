"""Configuration reload: what may change without a restart, and how a running core takes it."""

from __future__ import annotations

import re

import pytest

from switchboard.amqp import events as ev
from switchboard.amqp.spec import Rejected
from switchboard.router.config import ConfigError, RouterConfig, parse_config
from switchboard.router.reload import plan_reload

from router_harness import RouterHarness, message

BASE = {
    "router": {"id": "r1"},
    "addresses": [
        {"prefix": "work/", "distribution": "balanced"},
        {"prefix": "jobs/", "distribution": "queue", "max_messages": 100, "message_ttl": 60},
    ],
    "limits": {"max_links_per_connection": 100},
}


def config(**changes: object) -> RouterConfig:
    data = {key: value for key, value in BASE.items()}
    data.update(changes)
    return parse_config(data)


def test_the_same_file_changes_nothing() -> None:
    assert plan_reload(config(), config()) == []


def test_reloadable_changes_are_listed() -> None:
    new = config(
        addresses=[
            {"prefix": "work/", "distribution": "multicast"},
            {"prefix": "jobs/", "distribution": "queue", "max_messages": 5, "message_ttl": 60},
            {"prefix": "new/", "distribution": "closest"},
        ],
        limits={"max_links_per_connection": 10},
        policy={"anonymous_group": "guests", "groups": {"guests": {"send": ["*"]}}},
    )
    changes = plan_reload(config(), new)
    assert "address prefix 'work/': distribution balanced -> multicast" in changes
    assert "address prefix 'jobs/': max_messages 100 -> 5" in changes
    assert "address prefix 'new/' added (closest)" in changes
    assert "limits.max_links_per_connection: 100 -> 10" in changes
    assert "policy: enabled" in changes


@pytest.mark.parametrize("changes, key", [
    ({"router": {"id": "r2"}}, "router.id"),
    ({"listeners": [{"port": 5999}]}, "listeners[0].port"),
    ({"limits": {"frames_per_turn": 64}}, "limits.frames_per_turn"),
    ({"store": {"fsync": "always"}}, "store.fsync"),
    ({"admin": {"port": 9999}}, "admin.port"),
    ({"addresses": [{"prefix": "jobs/", "distribution": "queue", "host": "r9"}]}, "addresses[0].host"),
])
def test_a_change_that_needs_a_restart_is_refused_by_its_key(changes: dict, key: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(f"{key}: changes need a restart")):
        plan_reload(config(), config(**changes))


def test_the_first_queue_this_router_hosts_needs_a_restart() -> None:
    no_queues = config(addresses=[{"prefix": "notify/", "distribution": "balanced"}])
    with pytest.raises(ConfigError, match=r"^addresses\[1\]\.distribution: the first queue prefix"):
        plan_reload(no_queues, config(addresses=[{"prefix": "notify/", "distribution": "balanced"},
                                                 {"prefix": "jobs/", "distribution": "queue"}]))


# -- a running core ----------------------------------------------------------------------
def test_addresses_in_use_keep_an_unsafe_distribution_until_their_links_detach() -> None:
    harness = RouterHarness(config=config())
    client = harness.connect()
    receiver = client.receiver("work/a", credit=10)
    harness.run()
    kept = harness.core.reconfigure(config(addresses=[{"prefix": "work/", "distribution": "multicast"}]))
    assert kept == ["work/a stays balanced until its links detach (now multicast)"]
    assert harness.core.addresses.find("work/a").distribution == "balanced"
    assert harness.core.addresses.get("work/b").distribution == "multicast"
    assert harness.core.addresses.prefix_of("work/a").distribution == "multicast"
    assert harness.core.addresses.generation == 1
    receiver.detach()
    harness.run()
    assert harness.core.addresses.get("work/a").distribution == "multicast"


def test_balanced_and_closest_switch_in_place() -> None:
    harness = RouterHarness(config=config())
    client = harness.connect()
    client.receiver("work/a", credit=10)
    harness.run()
    kept = harness.core.reconfigure(config(addresses=[{"prefix": "work/", "distribution": "closest"}]))
    assert kept == []
    assert harness.core.addresses.find("work/a").distribution == "closest"


def test_a_reloaded_policy_governs_the_next_attach_of_an_open_connection() -> None:
    both = {"anonymous_group": "guests", "groups": {"guests": {"send": ["work/*"], "receive": ["work/*"]}}}
    harness = RouterHarness(config=config(policy=both))
    client = harness.connect()
    receiver = client.receiver("work/a", credit=10)
    sender = client.sender("work/a")
    harness.run()
    narrower = {"anonymous_group": "guests", "groups": {"guests": {"send": ["work/*"], "receive": ["other/*"]}}}
    harness.core.reconfigure(config(policy=narrower))
    refused = client.receiver("work/b", credit=1)
    harness.run()
    detached = [e for e in client.take(ev.LinkDetached) if e.link is refused]
    assert detached and "may not receive from 'work/b'" in detached[0].error.description
    # The links attached before the reload still work.
    sender.send(message(b"kept", to="work/a"))
    harness.run()
    assert [d.payload for d in client.received(receiver)] and not client.closed


def test_lowering_a_queue_bound_keeps_stored_messages_and_refuses_new_ones(tmp_path) -> None:
    harness = RouterHarness(config=config(), store_path=tmp_path / "store.db")
    client = harness.connect()
    sender = client.sender("jobs/a")
    harness.run()
    for i in range(3):
        sender.send(message(f"m{i}", to="jobs/a"))
    harness.settle()
    lower = config(addresses=[{"prefix": "jobs/", "distribution": "queue", "max_messages": 2}])
    harness.core.reconfigure(lower)
    assert harness.core.queues.queues["jobs/a"].settings.max_messages == 2
    delivery = sender.send(message("m3", to="jobs/a"))
    harness.settle()
    assert isinstance(delivery.remote_state, Rejected)
    assert "is full" in delivery.remote_state.error.description
    assert harness.core.queues.queues["jobs/a"].depth == 3
    # A prefix that is no longer a queue: its queue stays, with the settings it had.
    kept = harness.core.reconfigure(config(addresses=[{"prefix": "jobs/", "distribution": "balanced"}]))
    assert kept == ["queue jobs/a keeps its settings: its prefix is no longer a queue this router hosts"]
    assert harness.core.addresses.find("jobs/a").distribution == "queue"


def test_a_connection_whose_user_left_every_group_keeps_its_links_but_attaches_no_more() -> None:
    guests = {"anonymous_group": "guests", "groups": {"guests": {"send": ["*"], "receive": ["*"]}}}
    harness = RouterHarness(config=config(policy=guests))
    client = harness.connect()
    receiver = client.receiver("work/a", credit=10)
    sender = client.sender("work/a")
    harness.run()
    harness.core.reconfigure(config(policy={"groups": {"ops": {"users": ["alice"], "send": ["*"]}}}))
    refused = client.sender("work/b")
    harness.run()
    detached = [e for e in client.take(ev.LinkDetached) if e.link is refused]
    assert detached and "(group '(none)') may not send to 'work/b'" in detached[0].error.description
    sender.send(message(b"kept", to="work/a"))
    harness.run()
    assert len(client.received(receiver)) == 1 and not client.closed
    # A new connection of that user is refused by the new policy.
    assert harness.connect().closed
