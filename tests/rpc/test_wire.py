"""The wire format and the dispatch rules, without a router."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.amqp.message import Message
from switchboard.rpc import NoSuchMethod, Target, UnsupportedVersion, version_is_compatible
from switchboard.rpc.dispatch import failure_from, find_method
from switchboard.rpc.wire import (
    Failure,
    Notification,
    PoolAnnouncement,
    Reply,
    Request,
    WireError,
    decode_announcement,
    decode_notification,
    decode_reply,
    decode_request,
    encode_announcement,
    encode_notification,
    encode_reply,
    encode_request,
    fanout_address,
    notification_address,
    pools_address,
    rpc_address,
)


def _over_the_wire(message: Message) -> Message:
    return Message.decode(message.encode())


def test_addresses_follow_the_documented_table() -> None:
    assert rpc_address("nova", "compute") == "rpc/nova/compute"
    assert rpc_address("nova", "compute", "host-1") == "rpc/nova/compute/host-1"
    assert fanout_address("nova", "compute") == "rpc-fanout/nova/compute"
    assert notification_address("nova", "notifications", "info") == "notify/nova/notifications.info"
    assert notification_address("nova", "notifications", "error", "ceilometer") == \
        "notify/nova/notifications.error/ceilometer"
    assert pools_address("nova") == "notify-pools/nova"
    assert Target(topic="compute").address() == "rpc/default/compute"
    assert Target(exchange="nova", topic="compute", server="h1", fanout=True).address() == "rpc-fanout/nova/compute"


def test_a_slash_in_a_name_cannot_be_taken_for_a_server() -> None:
    assert rpc_address("x", "a/b") == "rpc/x/a%2Fb"
    assert rpc_address("x", "a/b") != rpc_address("x", "a", "b")
    assert rpc_address("x", "100%") == "rpc/x/100%25"


@pytest.mark.parametrize("call", [
    lambda: rpc_address("x", ""),
    lambda: notification_address("x", "n", "verbose"),
    lambda: Target().address(),
])
def test_unusable_names_are_refused(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


def test_a_request_a_reply_and_a_failure_survive_the_wire() -> None:
    request = Request("resize", {"flavor": {"ram": 2048}, "ids": [1, 2]}, {"user": "alice"}, "compute", "5.1",
                      "id-1", "reply/xyz")
    message = _over_the_wire(encode_request(request))
    assert str(message.properties.content_type) == "application/json"
    assert decode_request(message) == request
    assert decode_request(message).is_call
    cast = decode_request(_over_the_wire(encode_request(Request("ping"))))
    assert not cast.is_call and cast.kwargs == {} and cast.version is None

    reply = decode_reply(_over_the_wire(encode_reply(Reply("id-1", result={"ok": True}), "reply/xyz")))
    assert reply == Reply("id-1", {"ok": True}, None)
    try:
        raise KeyError("flavor")
    except KeyError as exc:
        failure = failure_from(exc)
    failed = decode_reply(_over_the_wire(encode_reply(Reply("id-2", failure=failure), "reply/xyz")))
    assert failed.failure is not None
    assert (failed.failure.exc_type, failed.failure.module, failed.failure.args) == ("KeyError", "builtins", ["flavor"])
    assert failed.failure.traceback[0].startswith("Traceback")


def test_a_value_json_cannot_carry_is_refused_before_sending() -> None:
    with pytest.raises(TypeError, match="cannot send this request"):
        encode_request(Request("m", {"when": object()}))


@pytest.mark.parametrize("body, text", [
    (b"not json", "must be JSON"),
    (b"[1]", "JSON object"),
    (b'{"v": 2, "method": "m"}', "wire version 2"),
    (b'{"v": 1}', "'method'"),
    (b'{"v": 1, "method": "m", "args": [1]}', "'args' must be an object"),
])
def test_malformed_requests_are_named(body: bytes, text: str) -> None:
    with pytest.raises(WireError, match=text):
        decode_request(Message(body))


def test_notifications_and_announcements_survive_the_wire() -> None:
    notification = Notification("compute.h1", "compute.instance.exists", "sample", {"cpu": 0.5}, {"u": 1},
                                "m-1", "2026-12-03 13:30:24.123456")
    assert decode_notification(_over_the_wire(encode_notification(notification))) == notification
    announcement = PoolAnnouncement("nova", "metering", (("notifications", "info"), ("notifications", "error")))
    assert decode_announcement(_over_the_wire(encode_announcement(announcement))) == announcement
    with pytest.raises(WireError):
        decode_notification(Message(b'{"v": 1, "priority": "loud"}'))


@pytest.mark.parametrize("served, requested, ok", [
    ("1.0", "1.0", True), ("1.3", "1.2", True), ("1.3", "1.4", False), ("2.0", "1.0", False),
    ("1.3.2", "1.3.1", True), ("1.3", "1.3.1", False), ("1.3", "bogus", False),
])
def test_oslo_version_rules(served: str, requested: str, ok: bool) -> None:
    assert version_is_compatible(served, requested) is ok


def test_dispatch_finds_the_compatible_endpoint() -> None:
    class V1:
        target = Target(version="1.2")

        def ping(self, ctxt: Any) -> str:
            return "v1"

    class V2:
        target = Target(version="2.0")

        def ping(self, ctxt: Any) -> str:
            return "v2"

    endpoints = [V1(), V2()]
    assert find_method(endpoints, "ping", None, "2.0")({}) == "v2"
    assert find_method(endpoints, "ping", None, None)({}) == "v1"
    with pytest.raises(NoSuchMethod):
        find_method(endpoints, "pong", None, "1.1")
    with pytest.raises(UnsupportedVersion, match="served at version"):
        find_method(endpoints, "ping", None, "3.0")


def test_a_failure_survives_without_optional_fields() -> None:
    assert Failure.from_json({"class": "X"}) == Failure("X", "", "", [], [])


def test_a_request_names_its_method_where_a_router_reads_it_without_the_body() -> None:
    from switchboard.amqp.message import read_routing

    message = encode_request(Request("resize", {"size": 3}, msg_id="m1", reply_to="_dynamic/r/1"))
    message.properties.to = rpc_address("nova", "compute")
    payload = message.encode()
    routing = read_routing(payload)
    assert (routing.to, routing.subject, routing.reply_to) == ("rpc/nova/compute", "resize", "_dynamic/r/1")
    # A request without a subject (another implementation's) is still a request.
    message.properties.subject = None
    assert decode_request(_over_the_wire(message)).method == "resize"
    assert read_routing(message.encode()).subject is None
