"""Encode and decode AMQP 1.0 values (spec part 1, "Types").

Decoding is a table of 256 functions indexed by the constructor byte.  Each takes
``(buf, offset, depth)`` with ``offset`` just past the constructor and returns
``(value, new_offset)``: no slicing of the input beyond the bytes a value owns, no
intermediate objects.  Hostile input is bounded: element counts cannot exceed the bytes
that carry them (and arrays of zero-width elements are capped), nesting is capped, and
truncation or any malformed byte raises ``DecodeError``, never ``IndexError`` or
``struct.error``.  The decoders themselves let ``IndexError`` and ``struct.error`` fly
on truncation (checking every read would double their cost); the public entry points
turn them into ``DecodeError``.

Encoding appends to one ``bytearray``.  The Python type of a value picks its AMQP type
(``types.py``); the smallest encoding that holds it is chosen.  Compound values reserve
the wide header, encode their elements in place, then shrink the header if the compact
form fits.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Callable, Final

from .errors import DecodeError, EncodeError
from .types import (
    Array,
    Byte,
    Char,
    Decimal32,
    Decimal64,
    Decimal128,
    Described,
    Float,
    Int,
    PreEncoded,
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
)

__all__ = [
    "ENCODER_ERRORS",
    "MAX_COMPOUND_COUNT",
    "MAX_NESTING_DEPTH",
    "TRUNCATION_ERRORS",
    "TYPE_ENCODERS",
    "decode_value",
    "decode_all",
    "encode_value",
    "encode_as",
    "encode",
    "finish_compound",
    "skip_unchecked",
    "skip_value",
    "register_described",
    "register_encoder",
]

MAX_NESTING_DEPTH: Final = 64
"""Deepest nesting of lists, maps, arrays and described values accepted from a peer."""

MAX_COMPOUND_COUNT: Final = 1 << 20
"""Most elements accepted in one list, map or array (also bounds zero-width arrays)."""

_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_I8: Final = struct.Struct(">b")
_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")
_F32: Final = struct.Struct(">f")
_F64: Final = struct.Struct(">d")
_U32U32: Final = struct.Struct(">II")
_U8U8: Final = struct.Struct(">BB")

# Errors a decoder raises on truncated or mangled input, before the entry point turns them
# into DecodeError.
TRUNCATION_ERRORS: Final = (IndexError, struct.error)

# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------

Decoder = Callable[[Any, int, int], "tuple[Any, int]"]

# Described types with a class of ours: descriptor (ulong code or symbol) -> factory taking
# the decoded described value.  Filled by composite.py as spec.py defines its classes.
_DESCRIBED: Final[dict[Any, Callable[[Any], Any]]] = {}
# The same factories indexed by a descriptor code below 256, the form every descriptor in
# the spec takes on the wire (0x00 0x53 code): one list index instead of a ULong and a hash.
_DESCRIBED_BY_SMALL_CODE: Final[list[Callable[[Any], Any] | None]] = [None] * 256


def register_described(code: int, name: str, factory: Callable[[Any], Any]) -> None:
    """Decode values described by ``code`` or ``name`` with ``factory(value)``."""
    _DESCRIBED[code] = factory
    _DESCRIBED[Symbol(name)] = factory
    if code < 256:
        _DESCRIBED_BY_SMALL_CODE[code] = factory


def _factory_for(descriptor: Any) -> Callable[[Any], Any] | None:
    # Only ulong and symbol descriptors name a type; the spec reserves every other kind,
    # and those (a list, say) may not even hash.
    if type(descriptor) is ULong or type(descriptor) is Symbol:
        return _DESCRIBED.get(descriptor)
    return None


def _truncated(buf: Any, end: int) -> DecodeError:
    return DecodeError(f"truncated value: needs {end} bytes, have {len(buf)}")


def _d_null(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return None, off


def _d_true(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return True, off


def _d_false(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return False, off


def _d_boolean(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    b = buf[off]
    if b > 1:
        raise DecodeError(f"boolean byte must be 0 or 1, got {b}")
    return b == 1, off + 1


def _d_ubyte(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return UByte(buf[off]), off + 1


def _d_ushort(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return UShort(_U16.unpack_from(buf, off)[0]), off + 2


def _d_uint(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return UInt(_U32.unpack_from(buf, off)[0]), off + 4


def _d_smalluint(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return UInt(buf[off]), off + 1


_UINT0: Final = UInt(0)
_ULONG0: Final = ULong(0)


def _d_uint0(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return _UINT0, off


def _d_ulong(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return ULong(_U64.unpack_from(buf, off)[0]), off + 8


def _d_smallulong(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return ULong(buf[off]), off + 1


def _d_ulong0(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return _ULONG0, off


def _d_byte(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return Byte(_I8.unpack_from(buf, off)[0]), off + 1


def _d_short(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return Short(_I16.unpack_from(buf, off)[0]), off + 2


def _d_int(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return Int(_I32.unpack_from(buf, off)[0]), off + 4


def _d_smallint(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return Int(_I8.unpack_from(buf, off)[0]), off + 1


def _d_long(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return _I64.unpack_from(buf, off)[0], off + 8


def _d_smalllong(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return _I8.unpack_from(buf, off)[0], off + 1


def _d_float(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return Float(_F32.unpack_from(buf, off)[0]), off + 4


def _d_double(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return _F64.unpack_from(buf, off)[0], off + 8


def _fixed_bytes(cls: type, width: int) -> Decoder:
    def decode(buf: Any, off: int, depth: int) -> tuple[Any, int]:
        end = off + width
        if end > len(buf):
            raise _truncated(buf, end)
        return cls(bytes(buf[off:end])), end

    return decode


def _d_char(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    code = _U32.unpack_from(buf, off)[0]
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise DecodeError(f"char is not a Unicode scalar value: {code:#x}")
    return Char(chr(code)), off + 4


def _d_timestamp(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return Timestamp(_I64.unpack_from(buf, off)[0]), off + 8


# uuid.UUID(bytes=...) validates its arguments at length, three times slower than the
# decode it serves; build the (immutable, slotted) object directly.
_UUID: Final = uuid.UUID
_new_uuid = uuid.UUID.__new__
_set_uuid_int = uuid.UUID.__dict__["int"].__set__
_set_uuid_is_safe = uuid.UUID.__dict__["is_safe"].__set__
_UUID_SAFETY_UNKNOWN: Final = uuid.SafeUUID.unknown
_from_bytes = int.from_bytes


def _d_uuid(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    end = off + 16
    if end > len(buf):
        raise _truncated(buf, end)
    value = _new_uuid(_UUID)
    _set_uuid_int(value, _from_bytes(buf[off:end], "big"))
    _set_uuid_is_safe(value, _UUID_SAFETY_UNKNOWN)
    return value, end


def _d_vbin8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 1
    end = start + buf[off]
    if end > len(buf):
        raise _truncated(buf, end)
    return bytes(buf[start:end]), end


def _d_vbin32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 4
    end = start + _U32.unpack_from(buf, off)[0]
    if end > len(buf):
        raise _truncated(buf, end)
    return bytes(buf[start:end]), end


def _d_str8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 1
    end = start + buf[off]
    if end > len(buf):
        raise _truncated(buf, end)
    data = buf[start:end]
    try:
        # bytes.decode() takes half the time of str(data, "utf-8"); memoryviews lack it.
        return (data.decode() if type(data) is not memoryview else str(data, "utf-8")), end
    except UnicodeDecodeError as exc:
        raise DecodeError(f"string is not valid UTF-8: {exc.reason}") from None


def _d_str32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 4
    end = start + _U32.unpack_from(buf, off)[0]
    if end > len(buf):
        raise _truncated(buf, end)
    data = buf[start:end]
    try:
        # bytes.decode() takes half the time of str(data, "utf-8"); memoryviews lack it.
        return (data.decode() if type(data) is not memoryview else str(data, "utf-8")), end
    except UnicodeDecodeError as exc:
        raise DecodeError(f"string is not valid UTF-8: {exc.reason}") from None


def _d_sym8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 1
    end = start + buf[off]
    if end > len(buf):
        raise _truncated(buf, end)
    try:
        return Symbol(str(buf[start:end], "ascii")), end
    except UnicodeDecodeError:
        raise DecodeError("symbol is not ASCII") from None


def _d_sym32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 4
    end = start + _U32.unpack_from(buf, off)[0]
    if end > len(buf):
        raise _truncated(buf, end)
    try:
        return Symbol(str(buf[start:end], "ascii")), end
    except UnicodeDecodeError:
        raise DecodeError("symbol is not ASCII") from None


def _d_list0(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return [], off


def _check_compound(buf: Any, body: int, end: int, count: int, depth: int) -> None:
    if end > len(buf):
        raise DecodeError(f"truncated compound: needs {end} bytes, have {len(buf)}")
    # Every list or map element takes at least its constructor byte.
    if count > end - body or count > MAX_COMPOUND_COUNT:
        raise DecodeError(f"compound claims {count} elements in {end - body} bytes")
    if depth >= MAX_NESTING_DEPTH:
        raise DecodeError(f"values nested deeper than {MAX_NESTING_DEPTH}")


def _list_items(buf: Any, off: int, end: int, count: int, depth: int) -> list[Any]:
    items: list[Any] = []
    append = items.append
    table = _DECODERS
    depth += 1
    for _ in range(count):
        value, off = table[buf[off]](buf, off + 1, depth)
        append(value)
    if off != end:
        raise DecodeError(f"compound size says it ends at {end}, its elements end at {off}")
    return items


def _d_list8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    end = off + 1 + buf[off]
    count = buf[off + 1]
    body = off + 2
    _check_compound(buf, body, end, count, depth)
    return _list_items(buf, body, end, count, depth), end


def _d_list32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    size, count = _U32U32.unpack_from(buf, off)
    end = off + 4 + size
    body = off + 8
    _check_compound(buf, body, end, count, depth)
    return _list_items(buf, body, end, count, depth), end


def _map_items(buf: Any, off: int, end: int, count: int, depth: int) -> dict[Any, Any]:
    if count & 1:
        raise DecodeError(f"map has an odd element count ({count})")
    result = {}
    table = _DECODERS
    depth += 1
    try:
        for _ in range(count >> 1):
            key, off = table[buf[off]](buf, off + 1, depth)
            result[key], off = table[buf[off]](buf, off + 1, depth)
    except TypeError:
        raise DecodeError(f"map key of type {type(key).__name__} is not supported") from None
    if off != end:
        raise DecodeError(f"map size says it ends at {end}, its entries end at {off}")
    return result


def _d_map8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    end = off + 1 + buf[off]
    count = buf[off + 1]
    body = off + 2
    _check_compound(buf, body, end, count, depth)
    return _map_items(buf, body, end, count, depth), end


def _d_map32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    size, count = _U32U32.unpack_from(buf, off)
    end = off + 4 + size
    body = off + 8
    _check_compound(buf, body, end, count, depth)
    return _map_items(buf, body, end, count, depth), end


def _array_items(buf: Any, off: int, end: int, count: int, depth: int) -> Array:
    if depth >= MAX_NESTING_DEPTH:
        raise DecodeError(f"values nested deeper than {MAX_NESTING_DEPTH}")
    if count > MAX_COMPOUND_COUNT:
        raise DecodeError(f"array claims {count} elements (limit {MAX_COMPOUND_COUNT})")
    if end > len(buf):
        raise _truncated(buf, end)
    depth += 1
    descriptor = None
    constructor = buf[off]
    off += 1
    if constructor == 0x00:
        descriptor, off = _DECODERS[buf[off]](buf, off + 1, depth)
        constructor = buf[off]
        off += 1
    type_name = _TYPE_NAME_BY_CONSTRUCTOR.get(constructor)
    if type_name is None:
        raise DecodeError(f"array element constructor {constructor:#04x} is not valid")
    if count * _MIN_WIDTH[constructor] > end - off:
        raise DecodeError(f"array claims {count} elements in {end - off} bytes")
    decode = _DECODERS[constructor]
    items: list[Any] = []
    append = items.append
    for _ in range(count):
        value, off = decode(buf, off, depth)
        append(value)
    if off != end:
        raise DecodeError(f"array size says it ends at {end}, its elements end at {off}")
    if descriptor is not None:
        factory = _factory_for(descriptor)
        if factory is not None:
            items = [factory(v) for v in items]
        else:
            items = [Described(descriptor, v) for v in items]
    return Array(type_name, items, descriptor)


def _d_array8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    end = off + 1 + buf[off]
    count = buf[off + 1]
    return _array_items(buf, off + 2, end, count, depth), end


def _d_array32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    size, count = _U32U32.unpack_from(buf, off)
    end = off + 4 + size
    return _array_items(buf, off + 8, end, count, depth), end


def _d_described(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    if depth >= MAX_NESTING_DEPTH:
        raise DecodeError(f"values nested deeper than {MAX_NESTING_DEPTH}")
    depth += 1
    if buf[off] == 0x53:
        # A small ulong descriptor: every composite in the spec is sent this way.
        code = buf[off + 1]
        value, off = _DECODERS[buf[off + 2]](buf, off + 3, depth)
        factory = _DESCRIBED_BY_SMALL_CODE[code]
        if factory is not None:
            return factory(value), off
        return Described(ULong(code), value), off
    descriptor, off = _DECODERS[buf[off]](buf, off + 1, depth)
    value, off = _DECODERS[buf[off]](buf, off + 1, depth)
    factory = _factory_for(descriptor)
    if factory is not None:
        return factory(value), off
    return Described(descriptor, value), off


def _d_invalid(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    raise DecodeError(f"invalid constructor byte {buf[off - 1]:#04x}")


_DECODERS: Final[list[Decoder]] = [_d_invalid] * 256
_TYPE_NAME_BY_CONSTRUCTOR: Final[dict[int, str]] = {}
# Fewest bytes one value takes after its constructor: bounds an array's element count.
_MIN_WIDTH: Final[list[int]] = [0] * 256

for _code, _name, _decoder, _width in (
    (0x40, "null", _d_null, 0),
    (0x41, "boolean", _d_true, 0),
    (0x42, "boolean", _d_false, 0),
    (0x56, "boolean", _d_boolean, 1),
    (0x50, "ubyte", _d_ubyte, 1),
    (0x60, "ushort", _d_ushort, 2),
    (0x70, "uint", _d_uint, 4),
    (0x52, "uint", _d_smalluint, 1),
    (0x43, "uint", _d_uint0, 0),
    (0x80, "ulong", _d_ulong, 8),
    (0x53, "ulong", _d_smallulong, 1),
    (0x44, "ulong", _d_ulong0, 0),
    (0x51, "byte", _d_byte, 1),
    (0x61, "short", _d_short, 2),
    (0x71, "int", _d_int, 4),
    (0x54, "int", _d_smallint, 1),
    (0x81, "long", _d_long, 8),
    (0x55, "long", _d_smalllong, 1),
    (0x72, "float", _d_float, 4),
    (0x82, "double", _d_double, 8),
    (0x74, "decimal32", _fixed_bytes(Decimal32, 4), 4),
    (0x84, "decimal64", _fixed_bytes(Decimal64, 8), 8),
    (0x94, "decimal128", _fixed_bytes(Decimal128, 16), 16),
    (0x73, "char", _d_char, 4),
    (0x83, "timestamp", _d_timestamp, 8),
    (0x98, "uuid", _d_uuid, 16),
    (0xA0, "binary", _d_vbin8, 1),
    (0xB0, "binary", _d_vbin32, 4),
    (0xA1, "string", _d_str8, 1),
    (0xB1, "string", _d_str32, 4),
    (0xA3, "symbol", _d_sym8, 1),
    (0xB3, "symbol", _d_sym32, 4),
    (0x45, "list", _d_list0, 0),
    (0xC0, "list", _d_list8, 2),
    (0xD0, "list", _d_list32, 8),
    (0xC1, "map", _d_map8, 2),
    (0xD1, "map", _d_map32, 8),
    (0xE0, "array", _d_array8, 3),
    (0xF0, "array", _d_array32, 9),
):
    _DECODERS[_code] = _decoder
    _TYPE_NAME_BY_CONSTRUCTOR[_code] = _name
    _MIN_WIDTH[_code] = _width
_DECODERS[0x00] = _d_described


def decode_value(buf: Any, offset: int = 0) -> tuple[Any, int]:
    """Decode one value at ``offset``; return it and the offset just past it."""
    try:
        return _DECODERS[buf[offset]](buf, offset + 1, 0)
    except TRUNCATION_ERRORS:
        raise DecodeError("truncated value") from None
    except RecursionError:
        raise DecodeError("values nested too deeply") from None


def decode_all(buf: Any) -> list[Any]:
    """Decode every value in ``buf`` (a sequence of encoded values, as in a message)."""
    values = []
    offset = 0
    end = len(buf)
    while offset < end:
        value, offset = decode_value(buf, offset)
        values.append(value)
    return values


# ---------------------------------------------------------------------------------------
# Skipping: find where an encoded value ends without building it (routing reads this way).
# ---------------------------------------------------------------------------------------

_SKIP_VAR8: Final = -1  # a one-byte size follows the constructor
_SKIP_VAR32: Final = -2  # a four-byte size follows the constructor
_SKIP_DESCRIBED: Final = -3
_SKIP_INVALID: Final = -4

# What follows each constructor: a fixed width (>= 0) or one of the kinds above.
_SKIP: Final[list[int]] = [_SKIP_INVALID] * 256
for _code, _width in (
    (0x40, 0), (0x41, 0), (0x42, 0), (0x43, 0), (0x44, 0), (0x45, 0),
    (0x50, 1), (0x51, 1), (0x52, 1), (0x53, 1), (0x54, 1), (0x55, 1), (0x56, 1),
    (0x60, 2), (0x61, 2),
    (0x70, 4), (0x71, 4), (0x72, 4), (0x73, 4), (0x74, 4),
    (0x80, 8), (0x81, 8), (0x82, 8), (0x83, 8), (0x84, 8),
    (0x94, 16), (0x98, 16),
):
    _SKIP[_code] = _width
for _code in (0xA0, 0xA1, 0xA3, 0xC0, 0xC1, 0xE0):
    _SKIP[_code] = _SKIP_VAR8
for _code in (0xB0, 0xB1, 0xB3, 0xD0, 0xD1, 0xF0):
    _SKIP[_code] = _SKIP_VAR32
_SKIP[0x00] = _SKIP_DESCRIBED


def skip_unchecked(buf: Any, offset: int) -> int:
    """Return the offset just past the value at ``offset``, or beyond ``len(buf)``.

    For callers that check the result against the end of what contains the value (a
    section, a list): the end is not compared with ``len(buf)`` here.  Raises
    ``DecodeError`` for an invalid constructor, and ``IndexError`` or ``struct.error``
    when a size field itself is cut off.
    """
    kind = _SKIP[buf[offset]]
    if kind >= 0:
        return offset + 1 + kind
    if kind == _SKIP_VAR8:
        return offset + 2 + buf[offset + 1]
    if kind == _SKIP_VAR32:
        return offset + 5 + _U32.unpack_from(buf, offset + 1)[0]
    if kind == _SKIP_DESCRIBED:
        return _skip_described(buf, offset)
    raise DecodeError(f"invalid constructor byte {buf[offset]:#04x}")


def _skip_described(buf: Any, offset: int) -> int:
    # A described value is two values (descriptor, value), either of which may itself be
    # described: count the values still to skip instead of recursing, so that a peer
    # cannot exhaust the stack with a chain of 0x00 bytes.
    pending = 1
    described = 0
    while pending:
        kind = _SKIP[buf[offset]]
        if kind >= 0:
            offset += 1 + kind
        elif kind == _SKIP_VAR8:
            offset += 2 + buf[offset + 1]
        elif kind == _SKIP_VAR32:
            offset += 5 + _U32.unpack_from(buf, offset + 1)[0]
        elif kind == _SKIP_DESCRIBED:
            described += 1
            if described > MAX_NESTING_DEPTH:
                raise DecodeError(f"described values nested deeper than {MAX_NESTING_DEPTH}")
            offset += 1
            pending += 1  # this value becomes a descriptor and a value
            continue
        else:
            raise DecodeError(f"invalid constructor byte {buf[offset]:#04x}")
        pending -= 1
    return offset


def skip_value(buf: Any, offset: int) -> int:
    """Return the offset just past the value at ``offset``, reading only its size fields."""
    try:
        end = skip_unchecked(buf, offset)
    except TRUNCATION_ERRORS:
        raise DecodeError("truncated value") from None
    if end > len(buf):
        raise _truncated(buf, end)
    return end


# ---------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------

Encoder = Callable[[bytearray, Any], None]


def _e_null(out: bytearray, value: Any) -> None:
    out.append(0x40)


def _e_boolean(out: bytearray, value: Any) -> None:
    out.append(0x41 if value else 0x42)


def _range_error(type_name: str, value: Any) -> EncodeError:
    return EncodeError(f"{value!r} is out of range for AMQP {type_name}")


def _e_ubyte(out: bytearray, value: Any) -> None:
    if not 0 <= value <= 0xFF:
        raise _range_error("ubyte", value)
    out.append(0x50)
    out.append(value)


def _e_ushort(out: bytearray, value: Any) -> None:
    if not 0 <= value <= 0xFFFF:
        raise _range_error("ushort", value)
    out += b"\x60" + _U16.pack(value)


def _e_uint(out: bytearray, value: Any) -> None:
    if value == 0:
        out.append(0x43)
    elif 0 < value < 256:
        out.append(0x52)
        out.append(value)
    elif 0 < value <= 0xFFFFFFFF:
        out += b"\x70" + _U32.pack(value)
    else:
        raise _range_error("uint", value)


def _e_ulong(out: bytearray, value: Any) -> None:
    if value == 0:
        out.append(0x44)
    elif 0 < value < 256:
        out.append(0x53)
        out.append(value)
    elif 0 < value <= 0xFFFFFFFFFFFFFFFF:
        out += b"\x80" + _U64.pack(value)
    else:
        raise _range_error("ulong", value)


def _e_byte(out: bytearray, value: Any) -> None:
    if not -128 <= value <= 127:
        raise _range_error("byte", value)
    out += b"\x51" + _I8.pack(value)


def _e_short(out: bytearray, value: Any) -> None:
    if not -32768 <= value <= 32767:
        raise _range_error("short", value)
    out += b"\x61" + _I16.pack(value)


def _e_int(out: bytearray, value: Any) -> None:
    if -128 <= value <= 127:
        out += b"\x54" + _I8.pack(value)
    elif -0x80000000 <= value <= 0x7FFFFFFF:
        out += b"\x71" + _I32.pack(value)
    else:
        raise _range_error("int", value)


def _e_long(out: bytearray, value: Any) -> None:
    if -128 <= value <= 127:
        out += b"\x55" + _I8.pack(value)
    elif -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
        out += b"\x81" + _I64.pack(value)
    else:
        raise _range_error("long", value)


def _e_float(out: bytearray, value: Any) -> None:
    try:
        out += b"\x72" + _F32.pack(value)
    except OverflowError:
        raise _range_error("float", value) from None


def _e_double(out: bytearray, value: Any) -> None:
    out += b"\x82" + _F64.pack(value)


def _e_decimal32(out: bytearray, value: Any) -> None:
    out += b"\x74" + value


def _e_decimal64(out: bytearray, value: Any) -> None:
    out += b"\x84" + value


def _e_decimal128(out: bytearray, value: Any) -> None:
    out += b"\x94" + value


def _char_code(value: Any) -> int:
    if len(value) != 1:
        raise EncodeError(f"AMQP char holds one code point, got {len(value)}")
    code = ord(value)
    if 0xD800 <= code <= 0xDFFF:
        raise EncodeError(f"AMQP char is a Unicode scalar value, not the surrogate {code:#x}")
    return code


def _e_char(out: bytearray, value: Any) -> None:
    out += b"\x73" + _U32.pack(_char_code(value))


def _e_timestamp(out: bytearray, value: Any) -> None:
    if not -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
        raise _range_error("timestamp", value)
    out += b"\x83" + _I64.pack(value)


def _e_uuid(out: bytearray, value: Any) -> None:
    out += b"\x98" + value.bytes


def _e_binary(out: bytearray, value: Any) -> None:
    size = len(value)
    if size < 256:
        out.append(0xA0)
        out.append(size)
    else:
        out += b"\xb0" + _U32.pack(size)
    out += value


def _e_memoryview(out: bytearray, value: memoryview) -> None:
    # len() of a memoryview counts items, which are not bytes for every format.
    _e_binary(out, value.cast("B") if value.format != "B" or value.ndim != 1 else value)


def _utf8(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError(f"AMQP strings are Unicode text, without surrogates: {value!r}") from None


def _ascii(value: str) -> bytes:
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError(f"AMQP symbols are ASCII: {value!r}") from None


def _e_string(out: bytearray, value: Any) -> None:
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError(f"AMQP strings are Unicode text, without surrogates: {value!r}") from None
    size = len(data)
    if size < 256:
        out.append(0xA1)
        out.append(size)
    else:
        out += b"\xb1" + _U32.pack(size)
    out += data


def _e_symbol(out: bytearray, value: Any) -> None:
    try:
        data = value.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError(f"AMQP symbols are ASCII: {value!r}") from None
    size = len(data)
    if size < 256:
        out.append(0xA3)
        out.append(size)
    else:
        out += b"\xb3" + _U32.pack(size)
    out += data


_LIST32_HEADER: Final = b"\xd0\x00\x00\x00\x00\x00\x00\x00\x00"


def finish_compound(out: bytearray, start: int, count: int, compact: int, wide: int) -> None:
    """Fill in the 9-byte header reserved at ``start``; shrink it to the 8-bit form if that fits.

    ``compact`` and ``wide`` are the two constructors (0xC0 and 0xD0 for a list).
    """
    size = len(out) - start - 9
    if count < 256 and size < 255:
        out[start] = compact
        out[start + 1] = size + 1
        out[start + 2] = count
        del out[start + 3 : start + 9]
    else:
        out[start] = wide
        _U32U32.pack_into(out, start + 1, size + 4, count)


def _e_list(out: bytearray, value: Any) -> None:
    if not value:
        out.append(0x45)
        return
    start = len(out)
    out += _LIST32_HEADER
    for item in value:
        encoder = _ENCODERS.get(type(item)) or _encoder_for_subclass(item)
        encoder(out, item)
    finish_compound(out, start, len(value), 0xC0, 0xD0)


def _e_map(out: bytearray, value: Any) -> None:
    start = len(out)
    out += _LIST32_HEADER
    encoders = _ENCODERS
    for key, item in value.items():
        encoder = encoders.get(type(key)) or _encoder_for_subclass(key)
        encoder(out, key)
        encoder = encoders.get(type(item)) or _encoder_for_subclass(item)
        encoder(out, item)
    finish_compound(out, start, 2 * len(value), 0xC1, 0xD1)


def _e_descriptor(out: bytearray, descriptor: Any) -> None:
    # A plain int descriptor is a descriptor code: the spec's numeric descriptors are ulongs.
    if type(descriptor) is int:
        _e_ulong(out, descriptor)
    else:
        _encode_any(out, descriptor)


def _e_described(out: bytearray, value: Described) -> None:
    out.append(0x00)
    _e_descriptor(out, value.descriptor)
    _encode_any(out, value.value)


# ---- arrays --------------------------------------------------------------------------
# Array elements share one constructor, written once for the whole array, so each element
# type has one array form: the widest, except where a compact form always fits (variable-
# width types use their 8-bit form when every element fits it).  A packer writes one
# element without its constructor.


def _widen_compound_element(out: bytearray, start: int) -> None:
    """Rewrite the list, map or array encoded at ``start`` as a 32-bit array element.

    Array elements of a compound type all use the 32-bit form, and carry no constructor.
    """
    code = out[start]
    if code in (0xC0, 0xC1, 0xE0):
        size, count = out[start + 1], out[start + 2]
        out[start : start + 3] = _U32U32.pack(size + 3, count)
    elif code == 0x45:
        out[start : start + 1] = _U32U32.pack(4, 0)
    else:
        del out[start]


def _fixed_packer(packer: struct.Struct, type_name: str) -> Encoder:
    pack = packer.pack

    def pack_element(out: bytearray, value: Any) -> None:
        try:
            out += pack(value)
        except (struct.error, OverflowError):
            raise _range_error(type_name, value) from None

    return pack_element


def _compound_packer(encoder: Encoder) -> Encoder:
    def pack_element(out: bytearray, value: Any) -> None:
        start = len(out)
        encoder(out, value)
        _widen_compound_element(out, start)

    return pack_element


def _pack_decimal(width: int) -> Encoder:
    def pack_element(out: bytearray, value: Any) -> None:
        if len(value) != width:
            raise EncodeError(f"decimal{width * 8} is {width} bytes, got {len(value)}")
        out += value

    return pack_element


_ARRAY_FIXED_FORMS: Final[dict[str, tuple[int, Encoder]]] = {
    "null": (0x40, lambda out, value: None),
    "boolean": (0x56, lambda out, value: out.append(1 if value else 0)),
    "ubyte": (0x50, _fixed_packer(_U8, "ubyte")),
    "ushort": (0x60, _fixed_packer(_U16, "ushort")),
    "uint": (0x70, _fixed_packer(_U32, "uint")),
    "ulong": (0x80, _fixed_packer(_U64, "ulong")),
    "byte": (0x51, _fixed_packer(_I8, "byte")),
    "short": (0x61, _fixed_packer(_I16, "short")),
    "int": (0x71, _fixed_packer(_I32, "int")),
    "long": (0x81, _fixed_packer(_I64, "long")),
    "float": (0x72, _fixed_packer(_F32, "float")),
    "double": (0x82, _fixed_packer(_F64, "double")),
    "decimal32": (0x74, _pack_decimal(4)),
    "decimal64": (0x84, _pack_decimal(8)),
    "decimal128": (0x94, _pack_decimal(16)),
    "char": (0x73, lambda out, value: out.extend(_U32.pack(_char_code(value)))),
    "timestamp": (0x83, _fixed_packer(_I64, "timestamp")),
    "uuid": (0x98, lambda out, value: out.extend(value.bytes)),
    "list": (0xD0, _compound_packer(_e_list)),
    "map": (0xD1, _compound_packer(_e_map)),
    "array": (0xF0, _compound_packer(lambda out, value: _e_array(out, value))),
}

# Variable-width element types: (8-bit constructor, 32-bit constructor, to bytes).
_ARRAY_VARIABLE_FORMS: Final[dict[str, tuple[int, int, Callable[[Any], bytes]]]] = {
    "binary": (0xA0, 0xB0, bytes),
    "string": (0xA1, 0xB1, _utf8),
    "symbol": (0xA3, 0xB3, _ascii),
}


def _undescribed_elements(value: Array, descriptor_bytes: bytes | bytearray) -> list[Any]:
    """The elements of a described array, without their (common) descriptor.

    An element is a ``Described``, a value that encodes as described (one of our composite
    classes), or a bare value.  A composite's encoding must start with the array's
    descriptor; the rest is kept, already encoded, as a ``PreEncoded``.
    """
    elements = []
    prefix = b"\x00" + descriptor_bytes
    for item in value:
        if isinstance(item, Described):
            encoded = bytearray()
            _e_descriptor(encoded, item.descriptor)
            if encoded != descriptor_bytes:
                raise EncodeError(f"array element {item!r} does not have the array's descriptor")
            elements.append(item.value)
            continue
        encoded = bytearray()
        _encode_any(encoded, item)
        if encoded[0] != 0x00:
            elements.append(item)
        elif encoded.startswith(prefix):
            elements.append(PreEncoded(encoded[len(prefix) :]))
        else:
            raise EncodeError(f"array element {item!r} does not have the array's descriptor")
    return elements


def _e_pre_encoded(out: bytearray, value: PreEncoded) -> None:
    out += value


def _e_array(out: bytearray, value: Array) -> None:
    type_name = value.type
    start = len(out)
    out += _LIST32_HEADER
    elements: Any = value
    if value.descriptor is not None:
        descriptor_bytes = bytearray()
        _e_descriptor(descriptor_bytes, value.descriptor)
        out.append(0x00)
        out += descriptor_bytes
        elements = _undescribed_elements(value, descriptor_bytes)
    variable = _ARRAY_VARIABLE_FORMS.get(type_name)
    if variable is not None:
        compact, wide, to_bytes = variable
        if any(type(e) is PreEncoded for e in elements):
            raise EncodeError(f"a described {type_name} array cannot hold composite values")
        encoded = [to_bytes(e) for e in elements]
        if all(len(e) < 256 for e in encoded):
            out.append(compact)
            for e in encoded:
                out.append(len(e))
                out += e
        else:
            out.append(wide)
            for e in encoded:
                out += _U32.pack(len(e))
                out += e
    else:
        form = _ARRAY_FIXED_FORMS.get(type_name)
        if form is None:
            raise EncodeError(f"no AMQP array of {type_name!r}")
        code, pack = form
        out.append(code)
        for item in elements:
            if type(item) is PreEncoded:
                if code not in (0xD0, 0xD1):
                    raise EncodeError(f"a described {type_name} array cannot hold {item!r}")
                element_start = len(out)
                out += item
                _widen_compound_element(out, element_start)
            else:
                pack(out, item)
    finish_compound(out, start, len(value), 0xE0, 0xF0)


_ENCODERS: Final[dict[type, Encoder]] = {
    type(None): _e_null,
    bool: _e_boolean,
    int: _e_long,
    float: _e_double,
    str: _e_string,
    bytes: _e_binary,
    bytearray: _e_binary,
    memoryview: _e_memoryview,
    list: _e_list,
    tuple: _e_list,
    dict: _e_map,
    uuid.UUID: _e_uuid,
    Symbol: _e_symbol,
    Char: _e_char,
    UByte: _e_ubyte,
    UShort: _e_ushort,
    UInt: _e_uint,
    ULong: _e_ulong,
    Byte: _e_byte,
    Short: _e_short,
    Int: _e_int,
    Timestamp: _e_timestamp,
    Float: _e_float,
    Decimal32: _e_decimal32,
    Decimal64: _e_decimal64,
    Decimal128: _e_decimal128,
    Described: _e_described,
    Array: _e_array,
    PreEncoded: _e_pre_encoded,
}

TYPE_ENCODERS: Final[dict[str, Encoder]] = {
    "null": _e_null,
    "boolean": _e_boolean,
    "ubyte": _e_ubyte,
    "ushort": _e_ushort,
    "uint": _e_uint,
    "ulong": _e_ulong,
    "byte": _e_byte,
    "short": _e_short,
    "int": _e_int,
    "long": _e_long,
    "float": _e_float,
    "double": _e_double,
    "decimal32": _e_decimal32,
    "decimal64": _e_decimal64,
    "decimal128": _e_decimal128,
    "char": _e_char,
    "timestamp": _e_timestamp,
    "uuid": _e_uuid,
    "binary": _e_binary,
    "string": _e_string,
    "symbol": _e_symbol,
    "list": _e_list,
    "map": _e_map,
    "array": _e_array,
}
"""Encoders by the spec's type name, for fields whose declared type decides the encoding."""


def register_encoder(cls: type, encoder: Encoder) -> None:
    """Encode instances of ``cls`` (exactly that class) with ``encoder``."""
    _ENCODERS[cls] = encoder


def _encode_any(out: bytearray, value: Any) -> None:
    encoder = _ENCODERS.get(type(value)) or _encoder_for_subclass(value)
    encoder(out, value)


def _encoder_for_subclass(value: Any) -> Encoder:
    for cls in type(value).__mro__[1:]:
        encoder = _ENCODERS.get(cls)
        if encoder is not None:
            return encoder
    raise EncodeError(f"no AMQP encoding for Python type {type(value).__name__}")


# What an encoder raises when handed a value it cannot encode as its type (a str where a
# uint belongs, a float too large for a float32...), before the entry point names it.
ENCODER_ERRORS: Final = (struct.error, OverflowError, TypeError, AttributeError, ValueError)


def encode_value(out: bytearray, value: Any) -> None:
    """Append the encoding of ``value`` (its AMQP type chosen by its Python type)."""
    try:
        _encode_any(out, value)
    except EncodeError:
        raise
    except ENCODER_ERRORS as exc:
        raise EncodeError(f"cannot encode {value!r}: {exc}") from None


def encode_as(out: bytearray, type_name: str, value: Any) -> None:
    """Append ``value`` encoded as the AMQP type ``type_name`` (``"uint"``, ``"symbol"``...)."""
    if value is None:
        out.append(0x40)
        return
    try:
        TYPE_ENCODERS[type_name](out, value)
    except EncodeError:
        raise
    except ENCODER_ERRORS as exc:
        raise EncodeError(f"cannot encode {value!r} as AMQP {type_name}: {exc}") from None


def encode(value: Any) -> bytes:
    """Return the encoding of one value."""
    out = bytearray()
    encode_value(out, value)
    return bytes(out)
