"""Authorization policy against a real router, with our client and Qpid Proton.

The policy under test (users from the credentials file; anonymous clients are guests)::

    group   users        send                      receive                dynamic  multicast     connections
    ops     alice        *                         *                      yes      send+receive  -
    agents  bob, carol   rpc/*, multicast/*,       rpc/agent, multicast/*  no       receive only  3 (2 per user)
                         _dynamic/*
    guests  (anonymous)  -                         public/*               no       -             2
    (dave is in the credentials file but in no group)

Every rule is tried allowed and denied; a denied attach leaves the connection working.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from proton import Message as ProtonMessage

from system_support import HOST, ProtonClient, run_async, run_proton, wait_until
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted
from switchboard.client.connection import Client, ClientError
from switchboard.router.credentials import Credentials

PASSWORDS = {"alice": "a-pw", "bob": "b-pw", "carol": "c-pw", "dave": "d-pw"}

POLICY_CONFIG = f"""
[[listeners]]
host = "{HOST}"
port = 0
sasl_mechanisms = ["PLAIN", "ANONYMOUS"]

[authentication]
credentials_file = "users.creds"

[policy]
anonymous_group = "guests"

[policy.groups.ops]
users = ["alice"]
send = ["*"]
receive = ["*"]
dynamic = true
send_multicast = true
receive_multicast = true

[policy.groups.agents]
users = ["bob", "carol"]
send = ["rpc/*", "multicast/*", "_dynamic/*"]
receive = ["rpc/agent", "multicast/*"]
receive_multicast = true
max_connections = 3
max_connections_per_user = 2

[policy.groups.guests]
receive = ["public/*"]
max_connections = 2
"""


@pytest.fixture
def policy_router(router, tmp_path: Path) -> Any:
    credentials = Credentials()
    for name, password in PASSWORDS.items():
        credentials.set_password(name, password)
    credentials.save(tmp_path / "users.creds")
    return router(POLICY_CONFIG, listen=False)


def url(r: Any, user: str | None = None) -> str:
    userinfo = f"{user}:{PASSWORDS[user]}@" if user else ""
    return f"amqp://{userinfo}{HOST}:{r.port}"


async def refused_sender(client: Client, address: str) -> Any:
    """Attach a sender the policy refuses; return the error the link was detached with."""
    sender = await client.sender(address)
    await wait_until(lambda: sender.error is not None, 10, f"the sender to {address!r} to be refused")
    return sender.error


async def refused_receiver(client: Client, address: str | None, dynamic: bool = False) -> Any:
    try:
        await client.receiver(address, dynamic=dynamic)
    except ClientError as exc:
        return exc.error
    raise AssertionError(f"a receiver from {address!r} was allowed")


async def round_trip(sender_client: Client, receiver_client: Client, address: str) -> Any:
    """One message from one client to the other through ``address``; its outcome."""
    receiver = await receiver_client.receiver(address, credit=1)
    sender = await sender_client.sender(address)
    outcome = await sender.send(Message(f"to {address}"), wait=False)
    item = await receiver.receive(timeout=10)
    item.accept()
    return await outcome


def assert_unauthorized(error: Any, description: str) -> None:
    assert error is not None
    assert str(error.condition) == "amqp:unauthorized-access"
    assert error.description == description


def test_send_and_receive_allowed_and_denied(policy_router) -> None:
    r = policy_router

    async def scenario():
        async with await Client.connect(url(r, "bob")) as bob, await Client.connect(url(r, "alice")) as alice:
            send_denied = await refused_sender(bob, "admin/reboot")
            receive_denied = await refused_receiver(bob, "rpc/other")
            # Denials leave the connection working: allowed links on it still carry messages.
            sent = await round_trip(bob, alice, "rpc/compute")
            received = await round_trip(alice, bob, "rpc/agent")
            return send_denied, receive_denied, sent, received

    send_denied, receive_denied, sent, received = run_async(scenario)
    assert_unauthorized(send_denied, "user 'bob' (group 'agents') may not send to 'admin/reboot'")
    assert_unauthorized(receive_denied, "user 'bob' (group 'agents') may not receive from 'rpc/other'")
    assert isinstance(sent, Accepted) and isinstance(received, Accepted)


def test_dynamic_addresses_allowed_and_denied(policy_router) -> None:
    r = policy_router

    async def scenario():
        async with await Client.connect(url(r, "alice")) as alice, await Client.connect(url(r, "bob")) as bob:
            denied = await refused_receiver(bob, None, dynamic=True)
            reply = await alice.receiver(None, dynamic=True)
            address = reply.link.remote_source.address
            # bob may send to reply addresses (_dynamic/*): the usual RPC answer path.
            sender = await bob.sender(str(address))
            outcome = await sender.send(Message("the answer"), wait=False)
            item = await reply.receive(timeout=10)
            item.accept()
            return denied, str(address), await outcome

    denied, address, outcome = run_async(scenario)
    assert_unauthorized(denied, "user 'bob' (group 'agents') may not create dynamic addresses")
    assert address.startswith("_dynamic/")
    assert isinstance(outcome, Accepted)


def test_multicast_allowed_and_denied_in_each_direction(policy_router) -> None:
    r = policy_router

    async def scenario():
        async with await Client.connect(url(r, "alice")) as alice, await Client.connect(url(r, "bob")) as bob:
            send_denied = await refused_sender(bob, "multicast/events")
            delivered = await round_trip(alice, bob, "multicast/events")  # bob may receive multicast
            async with await Client.connect(url(r)) as guest:
                guest_denied = await refused_receiver(guest, "multicast/events")
            return send_denied, delivered, guest_denied

    send_denied, delivered, guest_denied = run_async(scenario)
    assert_unauthorized(send_denied, "user 'bob' (group 'agents') may not send to multicast address 'multicast/events'")
    assert isinstance(delivered, Accepted)
    assert_unauthorized(guest_denied, "user 'anonymous' (group 'guests') may not receive from 'multicast/events'")


def test_anonymous_clients_get_their_groups_narrow_policy(policy_router) -> None:
    r = policy_router

    async def scenario():
        async with await Client.connect(url(r)) as guest, await Client.connect(url(r, "alice")) as alice:
            delivered = await round_trip(alice, guest, "public/news")
            send_denied = await refused_sender(guest, "public/news")
            return delivered, send_denied

    delivered, send_denied = run_async(scenario)
    assert isinstance(delivered, Accepted)
    assert_unauthorized(send_denied, "user 'anonymous' (group 'guests') may not send to 'public/news'")


class ProtonRelay(ProtonClient):
    """bob on the anonymous relay: one message per address; records each one's outcome."""

    def __init__(self, url: str, addresses: list[str]) -> None:
        super().__init__()
        self.url = url
        self.waiting = deque(enumerate(addresses))
        self.sent: dict[Any, int] = {}
        self.outcomes: dict[int, tuple[str, str | None, str | None]] = {}
        self.expected = len(addresses)

    def on_start(self, event):
        conn = self.connect(event.container, self.url, user="bob", password=PASSWORDS["bob"],
                            allowed_mechs="PLAIN", allow_insecure_mechs=True)
        self.relay = event.container.create_sender(conn, None)

    def on_sendable(self, event):
        while self.waiting and self.relay.credit > 0:
            index, address = self.waiting.popleft()
            self.sent[self.relay.send(ProtonMessage(address=address, body=f"to {address}"))] = index

    def on_accepted(self, event):
        self._outcome(event, "accepted")

    def on_rejected(self, event):
        self._outcome(event, "rejected")

    def on_released(self, event):
        self._outcome(event, "released")

    def _outcome(self, event, name):
        condition = event.delivery.remote.condition
        index = self.sent[event.delivery]
        self.outcomes[index] = (name, condition.name if condition else None, condition.description if condition else None)
        if len(self.outcomes) == self.expected:
            self.finish()


def test_anonymous_relay_is_checked_per_message(policy_router) -> None:
    r = policy_router
    addresses = ["rpc/a", "admin/reboot", "multicast/events", "rpc/a", "admin/reboot"]

    async def scenario():
        async with await Client.connect(url(r, "alice")) as alice:
            receiver = await alice.receiver("rpc/a", credit=10)

            async def consume() -> list[Any]:
                bodies = []
                for _ in range(2):
                    item = await receiver.receive(timeout=20)
                    item.accept()  # the relayed sender's outcome waits for this
                    bodies.append(item.message().body)
                return bodies

            consumer = asyncio.create_task(consume())
            relay = await asyncio.to_thread(run_proton, ProtonRelay(url(r), addresses), 30)
            return relay.outcomes, await consumer

    outcomes, bodies = run_async(scenario, timeout=60)
    denied = ("rejected", "amqp:unauthorized-access")
    assert [outcomes[i][:2] for i in range(len(addresses))] == [("accepted", None), denied, denied, ("accepted", None), denied]
    assert outcomes[1][2] == "user 'bob' (group 'agents') may not send to 'admin/reboot'"
    assert outcomes[2][2] == "user 'bob' (group 'agents') may not send to multicast address 'multicast/events'"
    assert bodies == ["to rpc/a", "to rpc/a"]


def test_a_proton_attach_denied_leaves_its_connection_open(policy_router) -> None:
    r = policy_router

    class Attacher(ProtonClient):
        def __init__(self) -> None:
            super().__init__()
            self.link_error: tuple[str, str] | None = None
            self.allowed_opened = False

        def on_start(self, event):
            self.conn = self.connect(event.container, url(r), user="bob", password=PASSWORDS["bob"],
                                     allowed_mechs="PLAIN", allow_insecure_mechs=True)
            event.container.create_receiver(self.conn, "admin/logs", name="denied")

        def on_link_error(self, event):
            condition = event.link.remote_condition
            self.link_error = (condition.name, condition.description)
            event.link.close()
            event.container.create_receiver(self.conn, "rpc/agent", name="allowed")

        def on_link_opened(self, event):
            if event.link.name == "allowed" and event.link.remote_source.address == "rpc/agent":
                self.allowed_opened = True
                self.finish()

    attacher = run_proton(Attacher(), timeout=30)
    assert attacher.link_error == ("amqp:unauthorized-access", "user 'bob' (group 'agents') may not receive from 'admin/logs'")
    assert attacher.allowed_opened
    assert not any(e.startswith(("connection", "transport")) for e in attacher.errors), attacher.errors


async def connect_result(target: str) -> Client | ClientError:
    try:
        return await Client.connect(target, timeout=10)
    except ClientError as exc:
        return exc


def test_connection_limits_per_user_and_per_group(policy_router) -> None:
    r = policy_router

    async def scenario():
        bob1, bob2 = await connect_result(url(r, "bob")), await connect_result(url(r, "bob"))
        bob3 = await connect_result(url(r, "bob"))  # past max_connections_per_user
        carol1 = await connect_result(url(r, "carol"))  # the group's third
        carol2 = await connect_result(url(r, "carol"))  # past the group's max_connections
        await bob1.close()
        carol3 = await connect_result(url(r, "carol"))  # a place was freed
        alice = await connect_result(url(r, "alice"))  # other groups are not affected
        opened = [bob2, carol1, carol3, alice]
        for client in opened:
            await client.close()
        return bob3, carol2, [isinstance(c, Client) for c in opened]

    bob3, carol2, opened = run_async(scenario, timeout=60)
    assert opened == [True] * 4
    for refused, description in (
        (bob3, "user 'bob' has reached max_connections_per_user (2) of group 'agents'"),
        (carol2, "group 'agents' has reached its max_connections (3); user 'carol' refused"),
    ):
        assert isinstance(refused, ClientError), refused
        assert refused.condition == "amqp:resource-limit-exceeded"
        assert refused.error.description == description


def test_anonymous_group_connection_limit(policy_router) -> None:
    r = policy_router

    async def scenario():
        first, second = await connect_result(url(r)), await connect_result(url(r))
        third = await connect_result(url(r))
        await first.close()
        fourth = await connect_result(url(r))
        for client in (second, fourth):
            await client.close()
        return third, isinstance(fourth, Client)

    third, fourth_opened = run_async(scenario, timeout=60)
    assert isinstance(third, ClientError) and third.condition == "amqp:resource-limit-exceeded"
    assert third.error.description == "group 'guests' has reached its max_connections (2); user 'anonymous' refused"
    assert fourth_opened


def test_a_user_in_no_group_is_refused_and_denials_are_logged_once(policy_router) -> None:
    r = policy_router

    async def scenario():
        dave = await connect_result(url(r, "dave"))
        async with await Client.connect(url(r, "bob")) as bob:
            errors = [await refused_sender(bob, "admin/reboot") for _ in range(5)]
        return dave, errors

    dave, errors = run_async(scenario)
    assert isinstance(dave, ClientError) and dave.condition == "amqp:unauthorized-access"
    assert dave.error.description == "user 'dave' is in no policy group, so may not connect"
    assert all(e.description == "user 'bob' (group 'agents') may not send to 'admin/reboot'" for e in errors)
    assert r.wait_log(r"policy denied: user 'bob' \(group 'agents'\) may not send to 'admin/reboot'", 10)
    assert r.wait_log(r"policy denied: user 'dave' is in no policy group", 10)
    log = r.stderr.text()
    assert len(re.findall(r"policy denied: user 'bob' .* 'admin/reboot'", log)) == 1, log
