"""The inter-router conventions: identities in opens, annotations on messages, dynamic
addresses' owners."""

from __future__ import annotations

import pytest

from switchboard.amqp.message import Message, read_routing
from switchboard.amqp.spec import Properties
from switchboard.amqp.types import Symbol, UInt
from switchboard.router.interrouter import (
    DESTS, INGRESS, MAX_HOPS, TO, TRACE, annotate, destination, first_hop_section, identity, looped,
    multicast_dests, owner_of, peer_identity, strip_routing_annotations,
)


def test_owner_of_a_dynamic_address() -> None:
    assert owner_of("_dynamic/r1/17") == "r1"
    assert owner_of("_dynamic/site/r-2/3") == "site/r-2"
    assert owner_of("_dynamic/17") is None
    assert owner_of("orders") is None


def test_owner_of_a_routers_management() -> None:
    assert owner_of("$management/r1") == "r1"
    assert owner_of("$management/site/r-2") == "site/r-2"
    assert owner_of("$management") is None
    assert owner_of("$management/") is None


def test_identity_round_trips_and_bad_claims_are_refused() -> None:
    assert peer_identity(identity("r1", 7, cost=3)) == ("r1", 7, 3)
    assert peer_identity(identity("r1", 7)) == ("r1", 7, None)
    assert peer_identity({Symbol("product"): "other"}) is None
    with pytest.raises(ValueError, match="router-id"):
        peer_identity({Symbol("switchboard:inter-router"): True})
    with pytest.raises(ValueError, match="link-cost"):
        peer_identity({**identity("r1", 7), Symbol("switchboard:link-cost"): UInt(0)})


def test_annotations_grow_the_trace_and_keep_the_body() -> None:
    data = Message(b"payload").encode()
    first = annotate(data, read_routing(data), "A", first_hop=first_hop_section("A"))
    general = annotate(data, read_routing(data), "A")
    assert read_routing(first).message_annotations == read_routing(general).message_annotations  # same meaning
    second = annotate(first, read_routing(first), "B", to="svc", dests=["C", "D"])
    routing = read_routing(second)
    assert routing.message_annotations == {INGRESS: "A", TRACE: ["A", "B"], TO: "svc", DESTS: ["C", "D"]}
    assert Message.decode(second).body == b"payload"
    assert looped(routing, "B") and not looped(routing, "C")
    assert destination(routing) == "svc" and multicast_dests(routing) == ["C", "D"]
    long = Message(b"x", message_annotations={TRACE: [f"r{i}" for i in range(MAX_HOPS)]}).encode()
    assert looped(read_routing(long), "elsewhere")
    plain = read_routing(Message(b"x", properties=Properties(to="orders")).encode())
    assert not looped(plain, "A") and destination(plain) == "orders" and multicast_dests(plain) is None


def test_routing_annotations_from_a_client_are_dropped_and_others_kept() -> None:
    data = Message(b"x", message_annotations={TRACE: ["A"], INGRESS: "A", Symbol("x-app"): 1}).encode()
    clean = strip_routing_annotations(data, read_routing(data))
    assert read_routing(clean).message_annotations == {Symbol("x-app"): 1}


def test_annotating_many_messages_gives_each_the_section_made_for_it() -> None:
    # Replies to two callers, with and without annotations of their own, again and again:
    # each comes out as if annotated alone, body and other sections untouched.
    cases = [
        (Message(b"r1", properties=Properties(to="_dynamic/A/1", correlation_id="c1")), "_dynamic/A/1"),
        (Message(b"r2", properties=Properties(to="_dynamic/A/2")), "_dynamic/A/2"),
        (Message(b"r3", message_annotations={Symbol("x-app"): 7}, properties=Properties(to="_dynamic/C/1")), "_dynamic/C/1"),
        (Message(b"r4", message_annotations={TRACE: ["C"], INGRESS: "C"}), "svc"),
    ]
    for round_ in range(3):
        for message, to in cases:
            message.body = f"{message.body!r}-{round_}".encode()
            data = message.encode()
            annotated = annotate(data, read_routing(data), "B", to=to)
            decoded = Message.decode(annotated)
            expected = dict(message.message_annotations or {})
            expected[TRACE] = [*expected.get(TRACE, []), "B"]
            expected.setdefault(INGRESS, "B")
            expected[TO] = to
            assert decoded.message_annotations == expected
            assert decoded.body == message.body and decoded.properties == Message.decode(data).properties


def test_replies_to_more_callers_than_sections_are_kept_each_get_their_own_destination() -> None:
    # More distinct destinations than the router keeps made sections for: each reply
    # still carries its own, whatever was evicted before it.
    for i in range(700):
        data = Message(f"r{i}".encode(), properties=Properties(to=f"_dynamic/A/{i}")).encode()
        annotated = Message.decode(annotate(data, read_routing(data), "B", to=f"_dynamic/A/{i}"))
        assert annotated.message_annotations == {TRACE: ["B"], INGRESS: "B", TO: f"_dynamic/A/{i}"}
        assert annotated.body == f"r{i}".encode()
