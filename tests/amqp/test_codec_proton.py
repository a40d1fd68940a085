"""Differential tests against Qpid Proton's codec, in both directions.

Proton is an independent implementation of the same spec, so agreeing with it on
generated values catches misreadings of the spec that round-trips through our own codec
cannot.  Where the two legitimately differ in the width they pick, values are compared
after decoding, never bytes.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

proton = pytest.importorskip("proton")
from proton import Data  # noqa: E402

from codec_strategies import (  # noqa: E402
    SCALARS,
    ascii_text,
    assert_same,
    composites,
    examples,
    messages,
    values,
)
from switchboard.amqp import codec, spec  # noqa: E402
from switchboard.amqp.message import Message, read_routing  # noqa: E402
from switchboard.amqp.types import (  # noqa: E402
    Array,
    Byte,
    Char,
    Decimal32,
    Decimal64,
    Decimal128,
    Described,
    Float,
    Int,
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
)

SETTINGS = examples(100)

# ---------------------------------------------------------------------------------------
# Our typed values <-> Proton's
# ---------------------------------------------------------------------------------------

_TO_PROTON_SCALAR: dict[type, Any] = {
    UByte: proton.ubyte,
    UShort: proton.ushort,
    UInt: proton.uint,
    ULong: proton.ulong,
    Byte: proton.byte,
    Short: proton.short,
    Int: proton.int32,
    Float: proton.float32,
    Char: proton.char,
    Timestamp: proton.timestamp,
    Symbol: proton.symbol,
    Decimal32: lambda raw: proton.decimal32(int.from_bytes(raw, "big")),
    Decimal64: lambda raw: proton.decimal64(int.from_bytes(raw, "big")),
    Decimal128: lambda raw: proton.decimal128(bytes(raw)),
}

_FROM_PROTON_SCALAR: dict[type, Any] = {
    proton.ubyte: UByte,
    proton.ushort: UShort,
    proton.uint: UInt,
    proton.ulong: ULong,
    proton.byte: Byte,
    proton.short: Short,
    proton.int32: Int,
    proton.float32: Float,
    proton.char: Char,
    proton.timestamp: Timestamp,
    proton.symbol: Symbol,
    proton.decimal32: lambda n: Decimal32(int(n).to_bytes(4, "big")),
    proton.decimal64: lambda n: Decimal64(int(n).to_bytes(8, "big")),
    proton.decimal128: lambda raw: Decimal128(bytes(raw)),
}

ARRAY_TYPES = {
    "null": Data.NULL, "boolean": Data.BOOL, "ubyte": Data.UBYTE, "ushort": Data.USHORT,
    "uint": Data.UINT, "ulong": Data.ULONG, "byte": Data.BYTE, "short": Data.SHORT,
    "int": Data.INT, "long": Data.LONG, "float": Data.FLOAT, "double": Data.DOUBLE,
    "decimal32": Data.DECIMAL32, "decimal64": Data.DECIMAL64, "decimal128": Data.DECIMAL128,
    "char": Data.CHAR, "timestamp": Data.TIMESTAMP, "uuid": Data.UUID, "binary": Data.BINARY,
    "string": Data.STRING, "symbol": Data.SYMBOL, "list": Data.LIST, "map": Data.MAP,
    "array": Data.ARRAY,
}
ARRAY_TYPE_NAMES = {code: name for name, code in ARRAY_TYPES.items()}


def to_proton(value: Any) -> Any:
    """Our typed value as the Python value Proton's Data.put_object encodes the same way."""
    convert = _TO_PROTON_SCALAR.get(type(value))
    if convert is not None:
        return convert(value)
    if isinstance(value, Array):
        elements = [e.value if isinstance(e, Described) else e for e in value]
        descriptor = proton.UNDESCRIBED if value.descriptor is None else to_proton(value.descriptor)
        return proton.Array(descriptor, ARRAY_TYPES[value.type], *map(to_proton, elements))
    if isinstance(value, list):
        return [to_proton(v) for v in value]
    if isinstance(value, dict):
        return {to_proton(k): to_proton(v) for k, v in value.items()}
    if isinstance(value, Described):
        return proton.Described(to_proton(value.descriptor), to_proton(value.value))
    return value


def from_proton(value: Any) -> Any:
    """Proton's decoded Python value as ours."""
    convert = _FROM_PROTON_SCALAR.get(type(value))
    if convert is not None:
        return convert(value)
    if isinstance(value, memoryview):  # how Proton's Data hands back binary
        return value.tobytes()
    if isinstance(value, proton.Array):
        descriptor = None if value.descriptor is proton.UNDESCRIBED else from_proton(value.descriptor)
        elements = [from_proton(e) for e in value.elements]
        if descriptor is not None:
            elements = [Described(descriptor, e) for e in elements]
        return Array(ARRAY_TYPE_NAMES[value.type], elements, descriptor)
    if isinstance(value, list):
        return [from_proton(v) for v in value]
    if isinstance(value, dict):
        return {from_proton(k): from_proton(v) for k, v in value.items()}
    if isinstance(value, proton.Described):
        return Described(from_proton(value.descriptor), from_proton(value.value))
    return value


def proton_decode(data: bytes) -> Any:
    """Decode with Proton, and convert to our types while its buffers are still alive
    (Proton hands back binary as memoryviews into them)."""
    decoder = Data()
    consumed = decoder.decode(data)
    assert consumed == len(data), f"Proton read {consumed} of {len(data)} bytes"
    decoder.rewind()
    assert decoder.next() is not None
    return from_proton(decoder.get_object())


def proton_encode(value: Any) -> bytes:
    encoder = Data()
    encoder.put_object(value)
    return encoder.encode()


# Where Proton's Python binding falls short, keep to what both can express: it has no way
# to put an array of arrays, nor a described array of lists or maps; a described value
# whose value is described comes back without the elements that follow it (Proton does this
# to its own encoding too); and binary, which it decodes as a memoryview, cannot be a key.
def _proton_can_express(value: Any) -> bool:
    if isinstance(value, Array):
        if value.type == "array" or (value.descriptor is not None and value.type in ("list", "map")):
            return False
        return all(_proton_can_express(v) for v in value)
    if isinstance(value, list):
        return all(_proton_can_express(v) for v in value)
    if isinstance(value, dict):
        return all(
            not isinstance(k, bytes) and _proton_can_express(k) and _proton_can_express(v)
            for k, v in value.items()
        )
    if isinstance(value, Described):
        if isinstance(value.value, Described):
            return False
        return _proton_can_express(value.descriptor) and _proton_can_express(value.value)
    return True


shared_values = values.filter(_proton_can_express)


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------


def test_the_conversions_are_inverse_on_every_scalar_type() -> None:
    samples = [UByte(1), UShort(2), UInt(3), ULong(4), Byte(-5), Short(-6), Int(-7), Float(0.5),
               Char("é"), Timestamp(8), Symbol("s"), Decimal32(b"\x01\x02\x03\x04"),
               Decimal64(bytes(range(8))), Decimal128(bytes(range(16))), uuid.UUID(int=9)]
    for value in samples:
        assert_same(from_proton(to_proton(value)), value)


@SETTINGS
@given(shared_values)
def test_proton_decodes_what_we_encode(value: Any) -> None:
    assert_same(proton_decode(codec.encode(value)), value)


@SETTINGS
@given(shared_values)
def test_we_decode_what_proton_encodes(value: Any) -> None:
    data = proton_encode(to_proton(value))
    decoded, end = codec.decode_value(data)
    assert end == len(data)
    assert_same(decoded, value)


@pytest.mark.parametrize("type_name", sorted(SCALARS))
@examples(25)
@given(data=st.data())
def test_every_scalar_type_agrees_both_ways(type_name: str, data: Any) -> None:
    value = data.draw(SCALARS[type_name])
    assert_same(proton_decode(codec.encode(value)), value)
    assert_same(codec.decode_value(proton_encode(to_proton(value)))[0], value)


@examples(60)
@given(st.sampled_from([c for c in sorted(SCALARS) if c != "null"]).flatmap(
    lambda t: st.lists(SCALARS[t], max_size=5).map(lambda xs, t=t: Array(t, xs))
))
def test_arrays_of_every_element_type_agree_both_ways(array: Array) -> None:
    assert_same(proton_decode(codec.encode(array)), array)
    assert_same(codec.decode_value(proton_encode(to_proton(array)))[0], array)


@pytest.mark.parametrize(
    "cls",
    [spec.Open, spec.Begin, spec.Attach, spec.Flow, spec.Transfer, spec.Disposition,
     spec.Detach, spec.End, spec.Close, spec.Source, spec.Target, spec.Rejected, spec.Modified],
    ids=lambda cls: cls.__name__,
)
@examples(25)
@given(data=st.data())
def test_proton_reads_our_composites_as_described_lists(cls: type, data: Any) -> None:
    value = data.draw(composites(cls).filter(_composite_expressible))
    decoded = proton_decode(value.encode())
    assert isinstance(decoded, Described)
    assert_same(decoded.descriptor, ULong(cls.DESCRIPTOR))
    fields = [getattr(value, f.name) for f in cls.FIELDS]
    assert len(decoded.value) <= len(fields)
    # Each field Proton sees has the type the spec declares for it.
    for field, sent, seen in zip(cls.FIELDS, fields, decoded.value):
        if sent is None:
            assert seen is None
        elif field.type in ("*", "error", "map", "fields"):
            continue
        else:
            # What Proton sees is the value encoded as the field's declared type.
            encoded = bytearray()
            if field.multiple:
                codec.encode_value(encoded, sent)
            else:
                codec.encode_as(encoded, field.type, sent)
            assert_same(seen, proton_decode(bytes(encoded)))


def _composite_expressible(value: Any) -> bool:
    # Nested composites (a source inside an attach) are checked field by field too.
    return all(
        _composite_expressible(item) if hasattr(item, "FIELDS") else _proton_can_express(item)
        for item in (getattr(value, f.name) for f in value.FIELDS)
    )


# ---------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------

# Proton's Message keeps one body section and no footer; its times are float seconds.
_MILLIS = st.integers(0, 2**41)
proton_friendly_messages = messages(footer=False).filter(
    lambda m: not (m.body_type in ("data", "sequence") and isinstance(m.body, list) and len(m.body) > 1)
    and all(_proton_can_express(v) for v in (m.body, m.delivery_annotations, m.message_annotations))
    and _fits_proton_message(m)
)


def _fits_proton_message(message: Message) -> bool:
    # Proton's Message reports times as float seconds, and reads its string properties as
    # C strings (cut at the first NUL) and its symbols as symbol(None) = "None" when empty.
    p = message.properties
    if p is None:
        return True
    strings = (p.to, p.subject, p.reply_to, p.group_id, p.reply_to_group_id, p.content_type, p.content_encoding)
    return (
        all(t is None or 0 <= t <= 2**41 for t in (p.absolute_expiry_time, p.creation_time))
        and not any(s is not None and "\x00" in s for s in strings)
        and p.content_type != "" and p.content_encoding != ""
    )


def _seconds_to_millis(seconds: float) -> int:
    return int(round(seconds * 1000))


def assert_same_message(ours: Message, theirs: Any) -> None:
    """Our message and Proton's carry the same header, properties, annotations and body.

    Proton fills in the spec's defaults (priority 4, durable false...) and reports absent
    strings as None and absent binary as b"", so compare with those applied.
    """
    header = ours.header or spec.Header()
    assert theirs.durable == bool(header.durable)
    assert theirs.priority == (4 if header.priority is None else header.priority)
    assert _seconds_to_millis(theirs.ttl) == (header.ttl or 0)
    assert theirs.first_acquirer == bool(header.first_acquirer)
    assert theirs.delivery_count == (header.delivery_count or 0)

    p = ours.properties or spec.Properties()
    assert_same(_message_id(theirs.id), p.message_id)
    assert theirs.user_id == (p.user_id or b"")
    assert theirs.address == p.to
    assert theirs.subject == p.subject
    assert theirs.reply_to == p.reply_to
    assert_same(_message_id(theirs.correlation_id), p.correlation_id)
    assert theirs.content_type == (p.content_type or "None")
    assert theirs.content_encoding == (p.content_encoding or "None")
    assert _seconds_to_millis(theirs.expiry_time) == (p.absolute_expiry_time or 0)
    assert _seconds_to_millis(theirs.creation_time) == (p.creation_time or 0)
    assert theirs.group_id == p.group_id
    assert theirs.group_sequence == (p.group_sequence or 0)
    assert theirs.reply_to_group_id == p.reply_to_group_id

    assert_same(from_proton(_plain(theirs.instructions)), ours.delivery_annotations)
    assert_same(from_proton(_plain(theirs.annotations)), ours.message_annotations)
    assert_same(from_proton(_plain(theirs.properties)), ours.application_properties)

    if ours.body is None:  # an amqp-value null, or (as Proton sends it) no body section
        assert theirs.body is None
    elif ours.body_type == "data":
        assert theirs.inferred and theirs.body == ours.body
    elif ours.body_type == "sequence":
        assert theirs.inferred
        assert_same(from_proton(theirs.body), ours.body[0])
    else:
        assert_same(from_proton(theirs.body), ours.body)


def _message_id(value: Any) -> Any:
    # Proton's Message hands back a ulong id as a plain int.
    return ULong(value) if type(value) is int else from_proton(value)


def _plain(value: Any) -> Any:
    # Proton hands annotations back as dict subclasses that restrict their keys.
    return dict(value) if isinstance(value, dict) else value


def to_proton_message(message: Message) -> Any:
    theirs = proton.Message()
    if message.header is not None:
        h = message.header
        theirs.durable = bool(h.durable)
        theirs.priority = 4 if h.priority is None else int(h.priority)
        theirs.ttl = (h.ttl or 0) / 1000
        theirs.first_acquirer = bool(h.first_acquirer)
        theirs.delivery_count = int(h.delivery_count or 0)
    if message.properties is not None:
        p = message.properties
        theirs.id = to_proton(p.message_id)
        theirs.user_id = p.user_id or b""
        theirs.address = p.to
        theirs.subject = p.subject
        theirs.reply_to = p.reply_to
        theirs.correlation_id = to_proton(p.correlation_id)
        theirs.content_type = p.content_type
        theirs.content_encoding = p.content_encoding
        theirs.expiry_time = (p.absolute_expiry_time or 0) / 1000
        theirs.creation_time = (p.creation_time or 0) / 1000
        theirs.group_id = p.group_id
        theirs.group_sequence = int(p.group_sequence or 0)
        theirs.reply_to_group_id = p.reply_to_group_id
    theirs.instructions = to_proton(message.delivery_annotations)
    theirs.annotations = to_proton(message.message_annotations)
    theirs.properties = to_proton(message.application_properties)
    if message.body_type == "sequence":
        theirs.body = to_proton(message.body[0])
        theirs.inferred = True
    else:
        theirs.body = to_proton(message.body)
        theirs.inferred = message.body_type == "data"
    return theirs


@examples(60)
@given(proton_friendly_messages)
def test_proton_decodes_messages_we_encode(message: Message) -> None:
    theirs = proton.Message()
    theirs.decode(message.encode())
    assert_same_message(message, theirs)


@examples(60)
@given(proton_friendly_messages)
def test_we_decode_messages_proton_encodes(message: Message) -> None:
    data = to_proton_message(message).encode()
    ours = Message.decode(data)
    # Proton always sends a header and properties, and no body section for a null body.
    expected = Message(
        message.body,
        body_type=message.body_type,
        header=ours.header,
        delivery_annotations=message.delivery_annotations,
        message_annotations=message.message_annotations,
        properties=ours.properties,
        application_properties=message.application_properties,
    )
    if message.body_type == "value" and message.body is None:
        expected.body_type = ours.body_type
    assert_same(ours, expected)
    # And the header and properties mean what we sent.
    theirs = proton.Message()
    theirs.decode(data)
    assert_same_message(ours, theirs)
    routing = read_routing(data)
    assert routing.to == (message.properties.to if message.properties else None)
    # Proton holds a TTL as float seconds and may truncate a millisecond on the way out
    # (1001 ms -> 1.001 s -> 1000 ms): the routing read must agree with the full decode of
    # the bytes Proton actually wrote.
    assert routing.ttl == (ours.header.ttl if ours.header and ours.header.ttl else None)


def test_a_typical_rpc_message_agrees_field_by_field() -> None:
    ours = Message(
        b'{"method": "ping"}',
        header=spec.Header(durable=True, priority=UByte(9), ttl=UInt(30_000)),
        properties=spec.Properties(
            message_id=uuid.UUID(int=1), to="compute.node-1", reply_to="reply.abc",
            correlation_id=ULong(7), content_type=Symbol("application/json"),
            creation_time=Timestamp(1_764_000_000_000),
        ),
        application_properties={"method": "ping", "retries": 3},
        message_annotations={Symbol("x-opt-route"): "r1"},
    )
    theirs = proton.Message()
    theirs.decode(ours.encode())
    assert (theirs.address, theirs.reply_to, theirs.priority, theirs.durable) == ("compute.node-1", "reply.abc", 9, True)
    assert math.isclose(theirs.ttl, 30.0) and theirs.properties == {"method": "ping", "retries": 3}
    assert theirs.annotations == {"x-opt-route": "r1"} and theirs.body == b'{"method": "ping"}'
    back = Message.decode(to_proton_message(ours).encode())
    assert back.properties.to == "compute.node-1" and back.header.ttl == 30_000
    assert back.body == ours.body and back.application_properties == ours.application_properties


@examples(50)
@given(st.dictionaries(ascii_text, st.sampled_from([0, 1.5, "s", True, None]), max_size=4))
def test_proton_application_properties_decode_with_string_keys(properties: dict[str, Any]) -> None:
    theirs = proton.Message(body=b"", properties=properties)
    theirs.inferred = True
    decoded = Message.decode(theirs.encode()).application_properties
    assert (decoded or {}) == properties
    assert all(type(k) is str for k in decoded or {})
