"""Messages: full round-trips, and the router's read_routing view agreeing with them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_strategies import ascii_text, assert_same, examples, messages, with_defaults
from switchboard.amqp import codec
from switchboard.amqp.errors import DecodeError
from switchboard.amqp.message import Message, Routing, read_routing
from switchboard.amqp.spec import Header, Properties
from switchboard.amqp.types import Symbol, Timestamp, UByte, UInt, ULong

SETTINGS = examples(60)


def expected_after_decode(message: Message) -> Message:
    """What decoding ``message.encode()`` must give: defaults filled in, bytes as bytes."""
    expected = Message(
        message.body,
        body_type=message.body_type,
        header=with_defaults(message.header) if message.header is not None else None,
        delivery_annotations=message.delivery_annotations,
        message_annotations=message.message_annotations,
        properties=with_defaults(message.properties) if message.properties is not None else None,
        application_properties=message.application_properties,
        footer=message.footer,
    )
    if message.body_type == "data" and isinstance(message.body, (bytearray, memoryview)):
        expected.body = bytes(message.body)
    return expected


def section_boundaries(data: bytes) -> set[int]:
    """Offsets where a section starts or the message ends (every section is one value)."""
    boundaries = {0}
    off = 0
    while off < len(data):
        off = codec.skip_value(data, off)
        boundaries.add(off)
    return boundaries


def rpc_message(**overrides: Any) -> Message:
    fields: dict[str, Any] = dict(
        header=Header(durable=True, priority=UByte(7), ttl=UInt(30_000)),
        message_annotations={Symbol("x-opt-trace"): "abc"},
        properties=Properties(
            message_id=uuid.UUID(int=7),
            to="compute.node-1",
            reply_to="reply.abc",
            correlation_id=ULong(42),
            content_type=Symbol("application/json"),
            absolute_expiry_time=Timestamp(1_764_000_060_000),
            creation_time=Timestamp(1_764_000_000_000),
        ),
        application_properties={"method": "ping"},
    )
    fields.update(overrides)
    return Message(b'{"method": "ping"}', **fields)


# ---------------------------------------------------------------------------------------
# Full round-trips
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(messages())
def test_message_round_trips(message: Message) -> None:
    data = message.encode()
    expected = expected_after_decode(message)
    assert_same(Message.decode(data), expected)
    assert_same(Message.decode(bytearray(data)), expected)
    assert_same(Message.decode(memoryview(data)), expected)
    out = bytearray(b"prefix")
    message.encode_into(out)
    assert out == b"prefix" + data


def test_body_type_follows_the_body() -> None:
    assert Message(b"x").body_type == "data"
    assert Message("x").body_type == "value"
    assert Message({"a": 1}).body_type == "value"
    with pytest.raises(ValueError):
        Message(b"x", body_type="text")


@pytest.mark.parametrize(
    "message, body_sections",
    [
        (Message(b"abc"), b"\x00\x53\x75\xa0\x03abc"),
        (Message([b"a", b"b"], body_type="data"), b"\x00\x53\x75\xa0\x01a\x00\x53\x75\xa0\x01b"),
        (Message("abc"), b"\x00\x53\x77\xa1\x03abc"),
        (Message(None), b"\x00\x53\x77\x40"),
        (Message([[1], [2]], body_type="sequence"), b"\x00\x53\x76\xc0\x03\x01\x55\x01\x00\x53\x76\xc0\x03\x01\x55\x02"),
    ],
)
def test_body_sections_on_the_wire(message: Message, body_sections: bytes) -> None:
    assert message.encode() == body_sections


def test_sections_are_encoded_in_the_spec_order() -> None:
    data = rpc_message(delivery_annotations={"d": 1}, footer={"f": 2}).encode()
    codes = []
    off = 0
    while off < len(data):
        assert data[off : off + 2] == b"\x00\x53"
        codes.append(data[off + 2])
        off = codec.skip_value(data, off)
    assert codes == [0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x78]


def test_annotation_keys_given_as_str_are_sent_as_symbols() -> None:
    decoded = Message.decode(Message(b"", message_annotations={"x-opt-a": 1}).encode())
    assert_same(decoded.message_annotations, {Symbol("x-opt-a"): 1})


def test_plain_int_message_id_is_sent_as_ulong() -> None:
    decoded = Message.decode(Message(b"", properties=Properties(message_id=5, correlation_id=6)).encode())
    assert_same(decoded.properties.message_id, ULong(5))
    assert_same(decoded.properties.correlation_id, ULong(6))


def test_convenience_accessors_read_the_properties() -> None:
    message = rpc_message()
    assert (message.to, message.reply_to, message.correlation_id) == ("compute.node-1", "reply.abc", 42)
    assert (Message(b"").to, Message(b"").reply_to, Message(b"").correlation_id) == (None, None, None)


def test_message_without_a_body_section_decodes() -> None:
    # Qpid Proton sends one when its body is None.
    decoded = Message.decode(b"\x00\x53\x70\x45\x00\x53\x73\xc0\x05\x03\x40\x40\xa1\x00")
    assert decoded.body is None and decoded.properties.to == ""


def test_sections_with_symbolic_descriptors_decode() -> None:
    data = (
        b"\x00\xa3\x10amqp:header:list\xc0\x02\x01\x41"
        + b"\x00\x80" + (0x73).to_bytes(8, "big") + b"\xc0\x05\x03\x40\x40\xa1\x00"
        + b"\x00\xa3\x10amqp:data:binary\xa0\x01x"
    )
    decoded = Message.decode(data)
    assert decoded.header.durable is True and decoded.properties.to == "" and decoded.body == b"x"
    routing = read_routing(data)
    assert routing.durable is True and routing.to == "" and data[routing.body_offset :] == b"\x00\xa3\x10amqp:data:binary\xa0\x01x"


# ---------------------------------------------------------------------------------------
# read_routing agrees with a full decode
# ---------------------------------------------------------------------------------------


def assert_routing_matches(data: bytes) -> None:
    routing = read_routing(data)
    message = Message.decode(data)
    header = message.header or Header()
    properties = message.properties or Properties()
    assert routing.to == properties.to
    assert routing.reply_to == properties.reply_to
    assert routing.ttl == header.ttl
    assert routing.absolute_expiry_time == properties.absolute_expiry_time
    assert routing.priority == header.priority
    assert routing.durable == header.durable
    assert_same(routing.message_annotations, message.message_annotations)


@examples(100)
@given(messages())
def test_read_routing_agrees_with_a_full_decode(message: Message) -> None:
    assert_routing_matches(message.encode())


def test_read_routing_of_a_typical_rpc_message() -> None:
    routing = read_routing(rpc_message().encode())
    assert (routing.to, routing.reply_to, routing.ttl, routing.priority, routing.durable) == (
        "compute.node-1", "reply.abc", 30_000, 7, True,
    )
    assert routing.absolute_expiry_time == 1_764_000_060_000
    assert routing.message_annotations == {Symbol("x-opt-trace"): "abc"}


@SETTINGS
@given(messages(), st.binary(min_size=1, max_size=40))
def test_read_routing_never_reads_the_body(message: Message, garbage: bytes) -> None:
    data = message.encode()
    routing = read_routing(data)
    # The body sections (and footer) are exactly what follows body_offset.
    body_only = Message(message.body, body_type=message.body_type, footer=message.footer)
    assert data[routing.body_offset :] == body_only.encode()
    # Replace the body with garbage that starts like a data section: routing is unchanged,
    # though the message as a whole no longer decodes.
    mangled = data[: routing.body_offset] + b"\x00\x53\x75\xb0\xff\xff\xff\xff" + garbage
    assert_same_routing(read_routing(mangled), routing)
    with pytest.raises(DecodeError):
        Message.decode(mangled)


def assert_same_routing(actual: Routing, expected: Routing) -> None:
    for name in Routing._fields:
        assert_same(getattr(actual, name), getattr(expected, name), f"routing.{name}")


@SETTINGS
@given(messages(), st.dictionaries(ascii_text.map(Symbol), st.integers(-5, 5), max_size=3))
def test_router_can_splice_in_new_message_annotations(message: Message, annotations: dict[Any, Any]) -> None:
    data = message.encode()
    routing = read_routing(data)
    section = Message(None, message_annotations=annotations).encode()[: -len(b"\x00\x53\x77\x40")]
    spliced = data[: routing.annotations_start] + section + data[routing.annotations_end :]
    expected = expected_after_decode(message)
    expected.message_annotations = annotations
    assert_same(Message.decode(spliced), expected)


# ---------------------------------------------------------------------------------------
# Malformed messages
# ---------------------------------------------------------------------------------------


@examples(40)
@given(messages())
def test_every_truncation_decodes_only_at_a_section_boundary(message: Message) -> None:
    data = message.encode()
    boundaries = section_boundaries(data)
    body_offset = read_routing(data).body_offset
    for end in range(len(data)):
        prefix = data[:end]
        if end in boundaries:
            Message.decode(prefix)
            read_routing(prefix)
            continue
        with pytest.raises(DecodeError):
            Message.decode(prefix)
        if end < body_offset:
            with pytest.raises(DecodeError):
                read_routing(prefix)


@examples(500)
@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    for parse in (Message.decode, read_routing):
        try:
            parse(data)
        except DecodeError:
            pass


@examples(100)
@given(messages(footer=False), st.data())
def test_corrupted_messages_decode_or_raise_decode_error(message: Message, data: Any) -> None:
    encoded = bytearray(message.encode())
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    for parse in (Message.decode, read_routing):
        try:
            parse(bytes(encoded))
        except DecodeError:
            pass


HEADER = b"\x00\x53\x70\x45"
PROPERTIES_TO_A = b"\x00\x53\x73\xc0\x06\x03\x40\x40\xa1\x01a"
DATA_X = b"\x00\x53\x75\xa0\x01x"
VALUE_NULL = b"\x00\x53\x77\x40"


@pytest.mark.parametrize(
    "data, routing_too",
    [
        (PROPERTIES_TO_A + HEADER + DATA_X, True),  # header after properties
        (HEADER + HEADER + DATA_X, True),  # two headers
        (b"\x00\x53\x23\x45" + DATA_X, True),  # a section code the message format lacks
        (b"\x00\x53\x79\x45" + DATA_X, True),
        (b"\x00\xa3\x08amqp:foo\x45" + DATA_X, True),  # an unknown symbolic section
        (b"\x45" + DATA_X, True),  # not a described section
        (b"\x00\x53\x70\xa1\x01x" + DATA_X, True),  # header that is not a list
        (b"\x00\x53\x73\xc0\x06\x03\x40\x40\xa1\x01\xff" + DATA_X, True),  # to is not UTF-8
        (b"\x00\x53\x70\xc0\x02\x01\xa1" + DATA_X, True),  # durable a string overrunning its list
        (b"\x00\x53\x70\xc0\x04\x02\x40\x55\x01" + DATA_X, True),  # priority is a long
        (b"\x00\x53\x72\xc0\x01\x00" + DATA_X, True),  # message annotations that are a list
        (b"\x00\x53\x74\xa1\x01x" + DATA_X, False),  # application properties not a map
        (b"\x00\x53\x75\xa1\x01x", False),  # a data section holding a string
        (VALUE_NULL + VALUE_NULL, False),  # two amqp-value sections
        (DATA_X + VALUE_NULL, False),  # data then amqp-value
        (b"\x00\x53\x76\x40", False),  # an amqp-sequence that is not a list
        (DATA_X + b"\x00\x53\x78\x45", False),  # a footer that is not a map
        (DATA_X + b"\x00\x53\x70\x45", False),  # a header after the body
    ],
)
def test_malformed_messages_raise_decode_error(data: bytes, routing_too: bool) -> None:
    with pytest.raises(DecodeError):
        Message.decode(data)
    if routing_too:
        with pytest.raises(DecodeError):
            read_routing(data)


def test_routing_refuses_an_address_that_is_not_a_string() -> None:
    # A full decode keeps whatever a peer put in "to" (its type is "*" in the spec); a
    # router cannot route it.
    data = b"\x00\x53\x73\xc0\x05\x03\x40\x40\x55\x01" + DATA_X
    assert Message.decode(data).properties.to == 1
    with pytest.raises(DecodeError, match="address"):
        read_routing(data)


def test_routing_of_a_message_with_nothing_but_a_body() -> None:
    routing = read_routing(DATA_X)
    assert (routing.to, routing.ttl, routing.message_annotations, routing.body_offset) == (None, None, None, 0)
    assert read_routing(b"").body_offset == 0


def test_read_routing_accepts_bytearray_and_memoryview() -> None:
    data = rpc_message().encode()
    expected = read_routing(data)
    assert_same_routing(read_routing(bytearray(data)), expected)
    assert_same_routing(read_routing(memoryview(data)), expected)


@settings(max_examples=100, deadline=None)
@given(messages(), st.dictionaries(st.sampled_from(["x-opt-sb-trace", "x-opt-sb-ingress", "x-other"]),
                                   st.one_of(st.text(max_size=20), st.lists(st.text(max_size=8), max_size=4)),
                                   max_size=3))
def test_message_annotations_are_replaced_and_nothing_else_changes(message, annotations) -> None:
    from switchboard.amqp.message import with_message_annotations
    from switchboard.amqp.types import Symbol

    data = message.encode()
    spliced = with_message_annotations(data, read_routing(data), annotations)
    before, after = Message.decode(data), Message.decode(spliced)
    expected = {Symbol(k): v for k, v in annotations.items()} or None
    assert after.message_annotations == expected
    after.message_annotations = before.message_annotations
    assert after.encode() == data
    assert read_routing(spliced).message_annotations == expected


# ---------------------------------------------------------------------------------------
# Message annotations read again and again (every message between routers has some)
# ---------------------------------------------------------------------------------------


def _with_annotations(annotations: dict[Any, Any], body: bytes = b"x") -> bytes:
    return Message(body, message_annotations=annotations).encode()


def test_the_same_annotations_read_twice_give_the_same_map_and_changing_a_copy_changes_neither() -> None:
    annotations = {Symbol("x-opt-sb-ingress"): "a", Symbol("x-opt-sb-trace"): ["a"]}
    first = read_routing(_with_annotations(annotations, b"one"))
    changed = dict(first.message_annotations)
    changed[Symbol("x-opt-sb-trace")] = [*changed[Symbol("x-opt-sb-trace")], "b"]
    second = read_routing(_with_annotations(annotations, b"two"))
    assert second.message_annotations == annotations
    assert first.message_annotations == annotations


def test_many_distinct_annotation_sections_each_read_as_written() -> None:
    # More distinct sections than are kept decoded: every one still reads as written.
    for i in range(1000):
        annotations = {Symbol("x-opt-n"): i, Symbol("x-opt-sb-trace"): [f"r{i % 7}"]}
        assert read_routing(_with_annotations(annotations)).message_annotations == annotations


def test_a_large_annotation_section_reads_as_written() -> None:
    annotations = {Symbol("x-opt-big"): "y" * 5000}
    data = _with_annotations(annotations)
    assert read_routing(data).message_annotations == annotations
    assert read_routing(data).message_annotations == annotations


def test_bad_annotations_are_refused_every_time_they_are_read() -> None:
    # message-annotations whose value is a list, not a map: refused on each read.
    bad = b"\x00\x53\x72\xc0\x03\x01\x50\x01" + b"\x00\x53\x75\xa0\x01x"
    for _ in range(2):
        with pytest.raises(DecodeError):
            read_routing(bad)
    good = _with_annotations({Symbol("x-opt-a"): 1})
    routing = read_routing(good)
    truncated = good[: routing.annotations_end - 1]
    for _ in range(2):
        with pytest.raises(DecodeError):
            read_routing(truncated)


def test_section_codes_read_by_routing_are_the_specs() -> None:
    from switchboard.amqp import message as message_module
    from switchboard.amqp.spec import Descriptor

    for name in ("HEADER", "DELIVERY_ANNOTATIONS", "MESSAGE_ANNOTATIONS", "PROPERTIES",
                 "APPLICATION_PROPERTIES", "DATA", "AMQP_SEQUENCE", "AMQP_VALUE", "FOOTER"):
        assert getattr(message_module, f"_{name}") == getattr(Descriptor, name), name
