"""Property tests of the AMQP type codec: round-trips, encoding widths, truncation, ranges."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codec_strategies import (
    COMPOSITE_CLASSES,
    SCALARS,
    ascii_text,
    assert_same,
    composites,
    examples,
    scalars,
    values,
    with_defaults,
)
from switchboard.amqp import codec, spec
from switchboard.amqp.errors import DecodeError, EncodeError
from switchboard.amqp.types import (
    Array,
    Byte,
    Char,
    Decimal32,
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

SETTINGS = examples(80)


def decode_exactly(data: bytes) -> Any:
    """Decode one value that must span all of ``data``."""
    value, end = codec.decode_value(data)
    assert end == len(data), f"decoded {end} of {len(data)} bytes"
    return value


# ---------------------------------------------------------------------------------------
# Every encoding of a value, built here by hand from the spec's tables, so that decoding is
# checked against widths our encoder never picks (uint 5 as 0x70, a short list as list32).
# ---------------------------------------------------------------------------------------


def _fixed(code: int, fmt: str, value: Any) -> bytes:
    return bytes([code]) + struct.pack(fmt, value)


def _variable(small: int, large: int, data: bytes) -> list[bytes]:
    forms = [bytes([large]) + struct.pack(">I", len(data)) + data]
    if len(data) < 256:
        forms.append(bytes([small, len(data)]) + data)
    return forms


def _compound(small: int, large: int, count: int, body: bytes) -> list[bytes]:
    forms = [bytes([large]) + struct.pack(">II", len(body) + 4, count) + body]
    if count < 256 and len(body) + 1 < 256:
        forms.append(bytes([small, len(body) + 1, count]) + body)
    return forms


def all_encodings(type_name: str, value: Any) -> list[bytes]:
    """Every valid encoding of ``value`` as the AMQP type ``type_name``."""
    if type_name == "null":
        return [b"\x40"]
    if type_name == "boolean":
        return [b"\x41" if value else b"\x42", b"\x56\x01" if value else b"\x56\x00"]
    if type_name in ("uint", "ulong"):
        zero, small, code, fmt = (0x43, 0x52, 0x70, ">I") if type_name == "uint" else (0x44, 0x53, 0x80, ">Q")
        forms = [_fixed(code, fmt, value)]
        if value < 256:
            forms.append(bytes([small, value]))
        if value == 0:
            forms.append(bytes([zero]))
        return forms
    if type_name in ("int", "long"):
        code, fmt, small = (0x71, ">i", 0x54) if type_name == "int" else (0x81, ">q", 0x55)
        forms = [_fixed(code, fmt, value)]
        if -128 <= value <= 127:
            forms.append(_fixed(small, ">b", value))
        return forms
    fixed = {
        "ubyte": (0x50, ">B"), "ushort": (0x60, ">H"), "byte": (0x51, ">b"),
        "short": (0x61, ">h"), "float": (0x72, ">f"), "double": (0x82, ">d"),
        "timestamp": (0x83, ">q"),
    }
    if type_name in fixed:
        return [_fixed(*fixed[type_name], value)]
    if type_name in ("decimal32", "decimal64", "decimal128"):
        return [bytes([{4: 0x74, 8: 0x84, 16: 0x94}[len(value)]]) + value]
    if type_name == "char":
        return [b"\x73" + value.encode("utf-32-be")]
    if type_name == "uuid":
        return [b"\x98" + value.bytes]
    if type_name == "binary":
        return _variable(0xA0, 0xB0, value)
    if type_name == "string":
        return _variable(0xA1, 0xB1, value.encode("utf-8"))
    if type_name == "symbol":
        return _variable(0xA3, 0xB3, value.encode("ascii"))
    raise AssertionError(type_name)


@pytest.mark.parametrize("type_name", sorted(SCALARS))
@SETTINGS
@given(data=st.data())
def test_every_encoding_of_a_primitive_decodes_to_the_same_typed_value(type_name: str, data: Any) -> None:
    value = data.draw(SCALARS[type_name])
    for encoding in all_encodings(type_name, value):
        assert_same(decode_exactly(encoding), value)


@SETTINGS
@given(st.lists(scalars, max_size=300))
def test_list_decodes_from_every_width(items: list[Any]) -> None:
    body = b"".join(codec.encode(item) for item in items)
    forms = _compound(0xC0, 0xD0, len(items), body)
    if not items:
        forms.append(b"\x45")
    for encoding in forms:
        assert_same(decode_exactly(encoding), items)


@SETTINGS
@given(st.dictionaries(SCALARS["symbol"] | SCALARS["ulong"], scalars, max_size=150))
def test_map_decodes_from_every_width(entries: dict[Any, Any]) -> None:
    body = b"".join(codec.encode(k) + codec.encode(v) for k, v in entries.items())
    for encoding in _compound(0xC1, 0xD1, 2 * len(entries), body):
        assert_same(decode_exactly(encoding), entries)


@SETTINGS
@given(st.lists(ascii_text.map(Symbol), max_size=40), st.booleans())
def test_array_decodes_from_every_width(symbols: list[Symbol], wide_elements: bool) -> None:
    if wide_elements:
        body = b"\xb3" + b"".join(struct.pack(">I", len(s)) + s.encode() for s in symbols)
    else:
        body = b"\xa3" + b"".join(bytes([len(s)]) + s.encode() for s in symbols)
    for encoding in _compound(0xE0, 0xF0, len(symbols), body):
        assert_same(decode_exactly(encoding), Array("symbol", symbols))


def test_array_of_each_fixed_width_type_decodes() -> None:
    cases = [
        (b"\x56", b"\x01\x00", Array("boolean", [True, False])),
        (b"\x41", b"", Array("boolean", [True, True])),
        (b"\x43", b"", Array("uint", [UInt(0), UInt(0)])),
        (b"\x52", b"\x01\xff", Array("uint", [UInt(1), UInt(255)])),
        (b"\x54", b"\xff\x7f", Array("int", [Int(-1), Int(127)])),
        (b"\x83", struct.pack(">qq", 1, -1), Array("timestamp", [Timestamp(1), Timestamp(-1)])),
    ]
    for constructor, elements, expected in cases:
        body = constructor + elements
        assert_same(decode_exactly(bytes([0xE0, len(body) + 1, 2]) + body), expected)


def test_described_array_decodes_with_its_descriptor() -> None:
    encoded = codec.encode(Array("symbol", [Symbol("a"), Symbol("b")], descriptor=Symbol("test:x")))
    decoded = decode_exactly(encoded)
    assert decoded.descriptor == Symbol("test:x")
    assert list(decoded) == [Described(Symbol("test:x"), Symbol("a")), Described(Symbol("test:x"), Symbol("b"))]


# ---------------------------------------------------------------------------------------
# Round-trips through our own encoder
# ---------------------------------------------------------------------------------------


@examples(250)
@given(values)
def test_any_value_round_trips_with_its_type(value: Any) -> None:
    encoded = codec.encode(value)
    assert_same(decode_exactly(encoded), value)
    assert_same(codec.decode_value(bytearray(encoded))[0], value)
    decoded, end = codec.decode_value(memoryview(b"junk" + encoded), 4)
    assert_same(decoded, value)
    assert end == len(encoded) + 4
    assert codec.skip_value(encoded + b"\x40", 0) == len(encoded)


@examples(50)
@given(values, values)
def test_decode_all_reads_consecutive_values(first: Any, second: Any) -> None:
    decoded = codec.decode_all(codec.encode(first) + codec.encode(second))
    assert_same(decoded, [first, second])


@pytest.mark.parametrize("cls", COMPOSITE_CLASSES, ids=lambda cls: cls.__name__)
@examples(40)
@given(data=st.data())
def test_every_composite_round_trips(cls: type, data: Any) -> None:
    value = data.draw(composites(cls))
    decoded = decode_exactly(value.encode())
    assert_same(decoded, with_defaults(value))


@pytest.mark.parametrize("cls", COMPOSITE_CLASSES, ids=lambda cls: cls.__name__)
def test_composite_decodes_from_its_symbolic_descriptor(cls: type) -> None:
    bare = cls(**{f.name: _minimal(f) for f in cls.FIELDS})
    by_code = bare.encode()
    assert by_code[:3] == bytes((0x00, 0x53, cls.DESCRIPTOR))
    by_name = b"\x00" + codec.encode(cls.NAME) + by_code[3:]
    assert decode_exactly(by_name) == decode_exactly(by_code) == with_defaults(bare)


def _minimal(field: Any) -> Any:
    if not field.mandatory:
        return None
    value = {
        "uint": UInt(1), "ulong": ULong(1), "ubyte": UByte(1), "boolean": True,
        "string": "x", "symbol": Symbol("x"), "binary": b"x", "*": b"x",
    }[field.type]
    return Array(field.type, [value]) if field.multiple else value


def test_composite_missing_a_mandatory_field_is_a_decode_error() -> None:
    # An attach with only its name.
    with pytest.raises(DecodeError, match="mandatory"):
        codec.decode_value(b"\x00\x53\x12\xc0\x03\x01\xa1\x00")


def test_composite_field_of_the_wrong_type_is_a_decode_error() -> None:
    # A begin whose next-outgoing-id (a uint) is the string "x".
    with pytest.raises(DecodeError, match="next_outgoing_id"):
        codec.decode_value(b"\x00\x53\x11\xc0\x07\x04\x40\xa1\x01x\x43\x43")


def test_multiple_field_holding_a_single_value_decodes_as_a_list() -> None:
    encoded = spec.Open(container_id="c", offered_capabilities=Symbol("ANONYMOUS-RELAY")).encode()
    assert decode_exactly(encoded).offered_capabilities == [Symbol("ANONYMOUS-RELAY")]


def test_composite_omits_trailing_null_and_default_fields() -> None:
    assert spec.Close().encode() == b"\x00\x53\x18\x45"
    assert spec.Flow(next_incoming_id=None, incoming_window=UInt(1), next_outgoing_id=UInt(2),
                     outgoing_window=UInt(3), drain=False).encode() == (
        b"\x00\x53\x13\xc0\x08\x04\x40\x52\x01\x52\x02\x52\x03"
    )


def test_composite_field_encodes_as_its_declared_type_whatever_the_python_type() -> None:
    # A plain int in a uint field is a uint, not a long.
    encoded = spec.Begin(remote_channel=None, next_outgoing_id=0, incoming_window=1,
                         outgoing_window=300).encode()
    assert encoded == b"\x00\x53\x11\xc0\x0a\x04\x40\x43\x52\x01\x70\x00\x00\x01\x2c"


def test_fields_map_keys_become_symbols() -> None:
    decoded = decode_exactly(spec.Open(container_id="c", properties={"product": "sb"}).encode())
    assert_same(decoded.properties, {Symbol("product"): "sb"})


def test_unregistered_descriptor_decodes_as_described() -> None:
    assert_same(decode_exactly(b"\x00\x53\x01\x41"), Described(ULong(1), True))
    assert_same(decode_exactly(b"\x00\xa3\x01x\x41"), Described(Symbol("x"), True))


def test_descriptor_of_an_unusual_type_decodes_as_described() -> None:
    # The spec reserves descriptors other than ulong and symbol; they must not crash us.
    assert_same(decode_exactly(b"\x00\x45\x41"), Described([], True))
    assert_same(decode_exactly(b"\x00\xa1\x10amqp:header:list\x45"), Described("amqp:header:list", []))


@examples(30)
@given(st.integers(0, 2**64 - 1), values)
def test_plain_int_descriptor_encodes_as_ulong(descriptor: int, value: Any) -> None:
    encoded = codec.encode(Described(descriptor, value))
    assert encoded == codec.encode(Described(ULong(descriptor), value))


# ---------------------------------------------------------------------------------------
# The smallest encoding is chosen
# ---------------------------------------------------------------------------------------

SMALLEST = [
    (None, b"\x40"),
    (True, b"\x41"),
    (False, b"\x42"),
    (UInt(0), b"\x43"),
    (UInt(5), b"\x52\x05"),
    (UInt(255), b"\x52\xff"),
    (UInt(256), b"\x70\x00\x00\x01\x00"),
    (ULong(0), b"\x44"),
    (ULong(255), b"\x53\xff"),
    (ULong(256), b"\x80" + struct.pack(">Q", 256)),
    (Int(-128), b"\x54\x80"),
    (Int(128), b"\x71\x00\x00\x00\x80"),
    (127, b"\x55\x7f"),
    (-129, b"\x81" + struct.pack(">q", -129)),
    (UByte(7), b"\x50\x07"),
    (UShort(7), b"\x60\x00\x07"),
    (Byte(-1), b"\x51\xff"),
    (Short(-1), b"\x61\xff\xff"),
    (Float(1.5), b"\x72" + struct.pack(">f", 1.5)),
    (1.5, b"\x82" + struct.pack(">d", 1.5)),
    (Char("é"), b"\x73\x00\x00\x00\xe9"),
    (Timestamp(1), b"\x83" + struct.pack(">q", 1)),
    (b"ab", b"\xa0\x02ab"),
    (b"a" * 256, b"\xb0\x00\x00\x01\x00" + b"a" * 256),
    ("é", b"\xa1\x02\xc3\xa9"),
    ("a" * 256, b"\xb1\x00\x00\x01\x00" + b"a" * 256),
    (Symbol("ab"), b"\xa3\x02ab"),
    (Symbol("a" * 256), b"\xb3\x00\x00\x01\x00" + b"a" * 256),
    ([], b"\x45"),
    ([None], b"\xc0\x02\x01\x40"),
    ({}, b"\xc1\x01\x00"),
    ({Symbol("a"): None}, b"\xc1\x05\x02\xa3\x01a\x40"),
    (Array("uint", [UInt(1)]), b"\xe0\x06\x01\x70\x00\x00\x00\x01"),
    (Array("symbol", [Symbol("a")]), b"\xe0\x04\x01\xa3\x01a"),
]


@pytest.mark.parametrize("value, expected", SMALLEST, ids=repr)
def test_smallest_encoding_is_chosen(value: Any, expected: bytes) -> None:
    assert codec.encode(value) == expected


def test_compounds_switch_to_32_bit_form_only_when_needed() -> None:
    # A list8's size byte counts its count byte too: at most 254 bytes of elements.
    assert codec.encode([None] * 254)[:3] == b"\xc0\xff\xfe"
    assert codec.encode([None] * 255)[0] == 0xD0
    assert codec.encode([None] * 300)[0] == 0xD0
    assert codec.encode(["a" * 251])[:2] == b"\xc0\xfe"
    assert codec.encode(["a" * 252])[0] == 0xC0
    assert codec.encode(["a" * 253])[0] == 0xD0
    assert codec.encode({UInt(i): None for i in range(60)})[0] == 0xC1
    assert codec.encode({UInt(i): None for i in range(128)})[0] == 0xD1
    # An array8 body holds the element constructor and the elements.
    assert codec.encode(Array("ubyte", [UByte(0)] * 253))[:3] == b"\xe0\xff\xfd"
    assert codec.encode(Array("ubyte", [UByte(0)] * 254))[0] == 0xF0


def _expected_int_width(type_name: str, value: int) -> int:
    if type_name in ("uint", "ulong"):
        return 1 if value == 0 else 2 if value < 256 else 5 if type_name == "uint" else 9
    return 2 if -128 <= value <= 127 else 5 if type_name == "int" else 9


@SETTINGS
@given(st.sampled_from(["uint", "ulong", "int", "long"]).flatmap(lambda t: st.tuples(st.just(t), SCALARS[t])))
def test_integers_use_their_smallest_width(case: tuple[str, int]) -> None:
    type_name, value = case
    assert len(codec.encode(value)) == _expected_int_width(type_name, value)


@SETTINGS
@given(st.lists(scalars, max_size=300))
def test_lists_use_list8_whenever_it_fits(items: list[Any]) -> None:
    encoded = codec.encode(items)
    body_size = sum(len(codec.encode(item)) for item in items)
    if not items:
        assert encoded == b"\x45"
    elif len(items) < 256 and body_size + 1 < 256:
        assert encoded[0] == 0xC0 and len(encoded) == body_size + 3
    else:
        assert encoded[0] == 0xD0 and len(encoded) == body_size + 9


# ---------------------------------------------------------------------------------------
# Hostile and broken input
# ---------------------------------------------------------------------------------------


def _assert_every_prefix_fails(encoded: bytes) -> None:
    for end in range(len(encoded)):
        with pytest.raises(DecodeError):
            codec.decode_value(encoded[:end])
        with pytest.raises(DecodeError):
            codec.skip_value(encoded[:end], 0)


@examples(100)
@given(values)
def test_every_truncation_of_a_value_is_a_decode_error(value: Any) -> None:
    _assert_every_prefix_fails(codec.encode(value))


@pytest.mark.parametrize("type_name", sorted(SCALARS))
@examples(20)
@given(data=st.data())
def test_every_truncation_of_every_width_is_a_decode_error(type_name: str, data: Any) -> None:
    for encoding in all_encodings(type_name, data.draw(SCALARS[type_name])):
        _assert_every_prefix_fails(encoding)


@pytest.mark.parametrize("cls", COMPOSITE_CLASSES, ids=lambda cls: cls.__name__)
@examples(10)
@given(data=st.data())
def test_every_truncation_of_a_composite_is_a_decode_error(cls: type, data: Any) -> None:
    _assert_every_prefix_fails(data.draw(composites(cls)).encode())


@examples(1000)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        value, end = codec.decode_value(data)
    except DecodeError:
        return
    assert 0 < end <= len(data)
    # Whatever decoded must survive the trip back out.
    codec.encode(value)


@examples(200)
@given(values, st.data())
def test_corrupted_encodings_decode_or_raise_decode_error(value: Any, data: Any) -> None:
    encoded = bytearray(codec.encode(value))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    try:
        codec.decode_value(bytes(encoded))
    except DecodeError:
        pass
    try:
        codec.skip_value(bytes(encoded), 0)
    except DecodeError:
        pass


@pytest.mark.parametrize(
    "encoded",
    [
        b"\x56\x02",  # boolean byte other than 0 or 1
        b"\x73\x00\x00\xd8\x00",  # char holding a surrogate
        b"\x73\x00\x11\x00\x00",  # char past U+10FFFF
        b"\xa1\x01\xff",  # string that is not UTF-8
        b"\xa3\x01\xe9",  # symbol that is not ASCII
        b"\xc1\x02\x01\x40",  # map with an odd element count
        b"\xc1\x03\x02\x45\x40",  # map keyed by a list
        b"\xc0\x03\x01\x40\x40",  # list whose size is larger than its elements
        b"\xc0\x01\x02\x40",  # list claiming more elements than bytes
        b"\xe0\x02\x01\x00",  # array with the invalid element constructor 0x00 0x..
        b"\x01",  # reserved constructor
        b"\xff",
    ],
)
def test_malformed_values_are_decode_errors(encoded: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode_value(encoded)


def test_decode_error_carries_the_decode_error_condition() -> None:
    with pytest.raises(DecodeError) as raised:
        codec.decode_value(b"\x70\x00")
    assert raised.value.condition == Symbol("amqp:decode-error")


# ---------------------------------------------------------------------------------------
# Values that have no encoding
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        UByte(256),
        UByte(-1),
        UShort(65536),
        UInt(-1),
        UInt(2**32),
        ULong(-1),
        ULong(2**64),
        Byte(128),
        Short(-32769),
        Int(2**31),
        2**63,
        -(2**63) - 1,
        Timestamp(2**63),
        Float(1e300),
        Symbol("é"),
        Char("ab"),
        Char("\ud800"),
        "\ud800",
        Array("symbol", [Symbol("é")]),
        Array("string", ["\udfff"]),
        Array("uint", [UInt(-1)]),
        Array("no-such-type", []),
        [UInt(2**32)],
        {Symbol("k"): ULong(-1)},
        Described(ULong(-1), None),
        object(),
    ],
    # Ids the same in every process (pytest-xdist's workers compare them): not object()'s address.
    ids=lambda value: "object()" if type(value) is object else repr(value),
)
def test_values_out_of_range_raise_encode_error(value: Any) -> None:
    with pytest.raises(EncodeError):
        codec.encode(value)


@pytest.mark.parametrize(
    "type_name, value",
    [("uint", -1), ("ubyte", 256), ("symbol", "é"), ("uint", "seven"), ("string", 7), ("long", 2**63)],
)
def test_encode_as_out_of_range_raises_encode_error(type_name: str, value: Any) -> None:
    with pytest.raises(EncodeError):
        codec.encode_as(bytearray(), type_name, value)


@pytest.mark.parametrize(
    "type_name, value, expected",
    [
        ("uint", 5, b"\x52\x05"),
        ("ulong", 0, b"\x44"),
        ("symbol", "a", b"\xa3\x01a"),
        ("ubyte", 2, b"\x50\x02"),
        ("uint", None, b"\x40"),
    ],
)
def test_encode_as_uses_the_named_type(type_name: str, value: Any, expected: bytes) -> None:
    out = bytearray()
    codec.encode_as(out, type_name, value)
    assert out == expected


def test_composite_field_out_of_range_names_the_field() -> None:
    with pytest.raises(EncodeError, match="Begin.incoming_window"):
        spec.Begin(next_outgoing_id=0, incoming_window=-1, outgoing_window=0).encode()


def test_subclass_of_a_supported_type_encodes_as_its_base() -> None:
    class Name(str):
        pass

    assert codec.encode(Name("a")) == b"\xa1\x01a"
    assert codec.encode(uuid.UUID(int=1)) == b"\x98" + (1).to_bytes(16, "big")
    assert codec.encode(Decimal32(b"\x01\x02\x03\x04")) == b"\x74\x01\x02\x03\x04"
