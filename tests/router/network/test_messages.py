"""Control messages: maps that survive our AMQP codec, and a neighbour's garbage refused with ValueError only."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.amqp.codec import decode_value, encode
from switchboard.amqp.types import Symbol, UInt
from switchboard.router.network import HELLO, LSR, LSU, MAR, MAU, PROTOCOL_VERSION, RA, RouterSummary, parse_message
from switchboard.router.network.engine import RouterNetwork

EXAMPLES = [
    HELLO("r1", 7, ("r2", "r3")),
    HELLO("r1", 7, ()),
    RA("r1", 7, 3, 5, (RouterSummary("r2", 9, 1, 0), RouterSummary("r3", 1, 12, 40))),
    LSR("r1", 7, ("r2", "r9")),
    LSU("r2", 9, 4, {"r1": 1, "r3": 10}),
    LSU("r2", 9, 1, {}),
    MAR("r1", 7, "r2", 9, 3),
    MAU("r2", 9, 4, False, ("rpc/compute.n1", "rpc/scheduler"), ("rpc/old",)),
    MAU("r2", 9, 4, True, ("rpc/compute.n1", "rpc/scheduler")),
    MAU("r2", 9, 0, True, ()),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_through_the_amqp_codec(message):
    body = message.to_map()
    assert body["op"] == message.OP and body["v"] == PROTOCOL_VERSION
    wire = encode(body)
    decoded, end = decode_value(wire, 0)
    assert end == len(wire)
    assert parse_message(decoded) == message
    assert type(message).from_map(decoded) == message


def test_typed_amqp_values_from_other_encoders_are_accepted():
    # another implementation may send symbols and uints: they are still strings and integers
    body = {Symbol("op"): Symbol("HELLO"), "v": UInt(1), "id": Symbol("r1"), "instance": UInt(3), "seen": [Symbol("r2")]}
    assert parse_message(body) == HELLO("r1", 3, ("r2",))


def good(kind: str) -> dict[str, Any]:
    return next(m for m in EXAMPLES if m.OP == kind).to_map()


def changed(kind: str, **fields: Any) -> dict[str, Any]:
    body = good(kind)
    for key, value in fields.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return body


MALFORMED = {
    "not a map": ["HELLO"],
    "unknown op": changed("HELLO", op="GOODBYE"),
    "op not a string": changed("HELLO", op=1),
    "no version": changed("HELLO", v=...),
    "future version": changed("HELLO", v=2),
    "version as bool": changed("HELLO", v=True),
    "no id": changed("LSU", id=...),
    "empty id": changed("HELLO", id=""),
    "long id": changed("HELLO", id="r" * 256),
    "id not a string": changed("HELLO", id=b"r1"),
    "instance as bool": changed("HELLO", instance=True),
    "negative instance": changed("HELLO", instance=-1),
    "instance too large": changed("HELLO", instance=1 << 63),
    "seen not a list": changed("HELLO", seen="r2"),
    "seen with a number": changed("HELLO", seen=["r2", 3]),
    "ls_seq as float": changed("LSU", ls_seq=1.0),
    "peers not a map": changed("LSU", peers=["r1"]),
    "peer cost zero": changed("LSU", peers={"r1": 0}),
    "peer cost negative": changed("LSU", peers={"r1": -3}),
    "peer cost as bool": changed("LSU", peers={"r1": True}),
    "peer key not a string": changed("LSU", peers={5: 1}),
    "RA entry too short": changed("RA", known=[["r2", 1, 1]]),
    "RA entry not a list": changed("RA", known=["r2"]),
    "RA entry negative": changed("RA", known=[["r2", 1, -1, 0]]),
    "LSR want missing": changed("LSR", want=...),
    "MAR origin missing": changed("MAR", origin=...),
    "MAR have_seq string": changed("MAR", have_seq="3"),
    "MAU delta with seq 0": changed("MAU", mobile_seq=0),
    "MAU delta without del": changed("MAU", **{"del": ...}),
    "MAU add with an empty address": changed("MAU", add=[""]),
    "MAU address too long": changed("MAU", add=["a" * 4097]),
    "MAU full and delta": changed("MAU", exist=["x"]),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_is_a_value_error(body):
    with pytest.raises(ValueError):
        parse_message(body)


plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 64), max_value=1 << 64) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=4) | st.sampled_from(["HELLO", "RA", "LSR", "LSU", "MAR", "MAU", "r1", "r2"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(plain_values)
def test_arbitrary_values_raise_only_value_error(body):
    try:
        parse_message(body)
    except ValueError:
        pass


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_a_valid_message_with_one_field_replaced_raises_only_value_error(message, data):
    body = message.to_map()
    key = data.draw(st.sampled_from(sorted(body)), label="field")
    body[key] = data.draw(plain_values, label="value")
    try:
        parsed = parse_message(body)
    except ValueError:
        return
    # what is accepted must survive the wire as it was read
    assert parse_message(decode_value(encode(parsed.to_map()), 0)[0]) == parsed


class _Quiet:
    def send_control(self, neighbour_id, message): pass
    def routes_changed(self, next_hops, costs): pass
    def address_added(self, address, router_id): pass
    def address_removed(self, address, router_id): pass
    def duplicate_router(self, router_id): pass


@settings(max_examples=300, deadline=None)
@given(st.lists(plain_values | st.sampled_from([m.to_map() for m in EXAMPLES]), max_size=6))
def test_the_engine_counts_and_drops_garbage_without_raising(bodies):
    network = RouterNetwork("r1", 7, _Quiet())
    network.neighbour_connected("r2", 9, 1, 0.0)
    for i, body in enumerate(bodies):
        network.handle("r2", body, float(i))
        network.tick(float(i))
    counters = network.view()["counters"]
    received = sum(count for name, count in counters.items() if name.startswith("received_"))
    assert received + counters.get("malformed", 0) == len(bodies)
