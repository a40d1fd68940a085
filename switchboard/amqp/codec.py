"""Encode and decode AMQP 1.0 values (spec part 1, "Types").

Decoding is a table of 256 functions indexed by the constructor byte.  Each takes
``(buf, offset, depth)`` with ``offset`` just past the constructor and returns
``(value, new_offset)``: no slicing of the input, no intermediate objects.  Hostile input
is bounded: element counts cannot exceed the bytes that carry them (and arrays of
zero-width elements are capped), nesting is capped, and truncation or any malformed byte
raises ``DecodeError``, never ``IndexError`` or ``struct.error``.

Encoding appends to one ``bytearray``.  The Python type of a value picks its AMQP type
(``types.py``); the smallest encoding that holds it is chosen.  Compound values reserve
the wide header, encode their elements in place, then shrink the header if the compact
form fits.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Callable

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
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
)

__all__ = [
    "MAX_COMPOUND_COUNT",
    "MAX_NESTING_DEPTH",
    "decode_value",
    "decode_all",
    "encode_value",
    "encode_as",
    "encode",
    "skip_value",
    "register_described",
]

MAX_NESTING_DEPTH = 64
"""Deepest nesting of lists, maps, arrays and described values accepted from a peer."""

MAX_COMPOUND_COUNT = 1 << 20
"""Most elements accepted in one list, map or array (also bounds zero-width arrays)."""

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_U32U32 = struct.Struct(">II")
_U8U8 = struct.Struct(">BB")

# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------

Decoder = Callable[[Any, int, int], "tuple[Any, int]"]

# Described types with a class of ours: descriptor (ulong code or symbol) -> factory taking
# the decoded described value.  Filled by spec.py at import.
_DESCRIBED: dict[Any, Callable[[Any], Any]] = {}


def register_described(code: int, name: str, factory: Callable[[Any], Any]) -> None:
    """Decode values described by ``code`` or ``name`` with ``factory(value)``."""
    _DESCRIBED[code] = factory
    _DESCRIBED[name] = factory


def _need(buf: Any, end: int) -> None:
    if end > len(buf):
        raise DecodeError(f"truncated value: needs {end} bytes, have {len(buf)}")


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


_UINT0 = UInt(0)
_ULONG0 = ULong(0)


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
        _need(buf, end)
        return cls(bytes(buf[off:end])), end

    return decode


def _d_char(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    code = _U32.unpack_from(buf, off)[0]
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise DecodeError(f"char is not a Unicode scalar value: {code:#x}")
    return Char(chr(code)), off + 4


def _d_timestamp(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return Timestamp(_I64.unpack_from(buf, off)[0]), off + 8


def _d_uuid(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    end = off + 16
    _need(buf, end)
    return uuid.UUID(bytes=bytes(buf[off:end])), end


def _d_vbin8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 1
    end = start + buf[off]
    _need(buf, end)
    return bytes(buf[start:end]), end


def _d_vbin32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 4
    end = start + _U32.unpack_from(buf, off)[0]
    _need(buf, end)
    return bytes(buf[start:end]), end


def _text(buf: Any, start: int, end: int) -> str:
    _need(buf, end)
    try:
        return str(buf[start:end], "utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"string is not valid UTF-8: {exc.reason}") from None


def _d_str8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 1
    end = start + buf[off]
    return _text(buf, start, end), end


def _d_str32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 4
    end = start + _U32.unpack_from(buf, off)[0]
    return _text(buf, start, end), end


def _symbol(buf: Any, start: int, end: int) -> Symbol:
    _need(buf, end)
    try:
        return Symbol(str(buf[start:end], "ascii"))
    except UnicodeDecodeError:
        raise DecodeError("symbol is not ASCII") from None


def _d_sym8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 1
    end = start + buf[off]
    return _symbol(buf, start, end), end


def _d_sym32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    start = off + 4
    end = start + _U32.unpack_from(buf, off)[0]
    return _symbol(buf, start, end), end


def _d_list0(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    return [], off


def _check_compound(buf: Any, body: int, end: int, count: int, depth: int) -> None:
    if end > len(buf):
        raise DecodeError(f"truncated compound: needs {end} bytes, have {len(buf)}")
    if count > end - body or count > MAX_COMPOUND_COUNT:
        raise DecodeError(f"compound claims {count} elements in {end - body} bytes")
    if depth >= MAX_NESTING_DEPTH:
        raise DecodeError(f"values nested deeper than {MAX_NESTING_DEPTH}")


def _list_items(buf: Any, off: int, end: int, count: int, depth: int) -> list[Any]:
    items = []
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
    size, count = _U8U8.unpack_from(buf, off)
    end = off + 1 + size
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
    for _ in range(count >> 1):
        key, off = table[buf[off]](buf, off + 1, depth)
        value, off = table[buf[off]](buf, off + 1, depth)
        try:
            result[key] = value
        except TypeError:
            raise DecodeError(f"map key of type {type(key).__name__} is not supported") from None
    if off != end:
        raise DecodeError(f"map size says it ends at {end}, its entries end at {off}")
    return result


def _d_map8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    size, count = _U8U8.unpack_from(buf, off)
    end = off + 1 + size
    body = off + 2
    _check_compound(buf, body, end, count, depth)
    return _map_items(buf, body, end, count, depth), end


def _d_map32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    size, count = _U32U32.unpack_from(buf, off)
    end = off + 4 + size
    body = off + 8
    _check_compound(buf, body, end, count, depth)
    return _map_items(buf, body, end, count, depth), end


def _array_items(buf: Any, off: int, end: int, count: int, depth: int) -> tuple[Any, int]:
    if depth >= MAX_NESTING_DEPTH:
        raise DecodeError(f"values nested deeper than {MAX_NESTING_DEPTH}")
    if count > MAX_COMPOUND_COUNT:
        raise DecodeError(f"array claims {count} elements (limit {MAX_COMPOUND_COUNT})")
    _need(buf, end)
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
    decode = _DECODERS[constructor]
    items = []
    append = items.append
    for _ in range(count):
        value, off = decode(buf, off, depth)
        append(value)
    if off != end:
        raise DecodeError(f"array size says it ends at {end}, its elements end at {off}")
    if descriptor is not None:
        factory = _DESCRIBED.get(descriptor)
        if factory is not None:
            items = [factory(v) for v in items]
        else:
            items = [Described(descriptor, v) for v in items]
    return Array(type_name, items, descriptor), end


def _d_array8(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    size, count = _U8U8.unpack_from(buf, off)
    return _array_items(buf, off + 2, off + 1 + size, count, depth)


def _d_array32(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    size, count = _U32U32.unpack_from(buf, off)
    return _array_items(buf, off + 8, off + 4 + size, count, depth)


def _d_described(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    if depth >= MAX_NESTING_DEPTH:
        raise DecodeError(f"values nested deeper than {MAX_NESTING_DEPTH}")
    depth += 1
    descriptor, off = _DECODERS[buf[off]](buf, off + 1, depth)
    value, off = _DECODERS[buf[off]](buf, off + 1, depth)
    factory = _DESCRIBED.get(descriptor)
    if factory is not None:
        return factory(value), off
    return Described(descriptor, value), off


def _d_invalid(buf: Any, off: int, depth: int) -> tuple[Any, int]:
    raise DecodeError(f"invalid constructor byte {buf[off - 1]:#04x}")


_DECODERS: list[Decoder] = [_d_invalid] * 256
_TYPE_NAME_BY_CONSTRUCTOR: dict[int, str] = {}


def _install(code: int, type_name: str, decoder: Decoder) -> None:
    _DECODERS[code] = decoder
    _TYPE_NAME_BY_CONSTRUCTOR[code] = type_name


for _code, _name, _decoder in (
    (0x40, "null", _d_null),
    (0x41, "boolean", _d_true),
    (0x42, "boolean", _d_false),
    (0x56, "boolean", _d_boolean),
    (0x50, "ubyte", _d_ubyte),
    (0x60, "ushort", _d_ushort),
    (0x70, "uint", _d_uint),
    (0x52, "uint", _d_smalluint),
    (0x43, "uint", _d_uint0),
    (0x80, "ulong", _d_ulong),
    (0x53, "ulong", _d_smallulong),
    (0x44, "ulong", _d_ulong0),
    (0x51, "byte", _d_byte),
    (0x61, "short", _d_short),
    (0x71, "int", _d_int),
    (0x54, "int", _d_smallint),
    (0x81, "long", _d_long),
    (0x55, "long", _d_smalllong),
    (0x72, "float", _d_float),
    (0x82, "double", _d_double),
    (0x74, "decimal32", _fixed_bytes(Decimal32, 4)),
    (0x84, "decimal64", _fixed_bytes(Decimal64, 8)),
    (0x94, "decimal128", _fixed_bytes(Decimal128, 16)),
    (0x73, "char", _d_char),
    (0x83, "timestamp", _d_timestamp),
    (0x98, "uuid", _d_uuid),
    (0xA0, "binary", _d_vbin8),
    (0xB0, "binary", _d_vbin32),
    (0xA1, "string", _d_str8),
    (0xB1, "string", _d_str32),
    (0xA3, "symbol", _d_sym8),
    (0xB3, "symbol", _d_sym32),
    (0x45, "list", _d_list0),
    (0xC0, "list", _d_list8),
    (0xD0, "list", _d_list32),
    (0xC1, "map", _d_map8),
    (0xD1, "map", _d_map32),
    (0xE0, "array", _d_array8),
    (0xF0, "array", _d_array32),
):
    _install(_code, _name, _decoder)
_DECODERS[0x00] = _d_described


def decode_value(buf: Any, offset: int = 0) -> tuple[Any, int]:
    """Decode one value at ``offset``; return it and the offset just past it."""
    try:
        return _DECODERS[buf[offset]](buf, offset + 1, 0)
    except DecodeError:
        raise
    except (struct.error, IndexError):
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

_FIXED_WIDTH: dict[int, int] = {}
for _code, _width in (
    (0x40, 0), (0x41, 0), (0x42, 0), (0x43, 0), (0x44, 0), (0x45, 0),
    (0x50, 1), (0x51, 1), (0x52, 1), (0x53, 1), (0x54, 1), (0x55, 1), (0x56, 1),
    (0x60, 2), (0x61, 2),
    (0x70, 4), (0x71, 4), (0x72, 4), (0x73, 4), (0x74, 4),
    (0x80, 8), (0x81, 8), (0x82, 8), (0x83, 8), (0x84, 8),
    (0x94, 16), (0x98, 16),
):
    _FIXED_WIDTH[_code] = _width


def skip_value(buf: Any, offset: int) -> int:
    """Return the offset just past the value at ``offset``, reading only its size fields."""
    try:
        code = buf[offset]
        offset += 1
        if code == 0x00:
            offset = skip_value(buf, offset)
            return skip_value(buf, offset)
        width = _FIXED_WIDTH.get(code)
        if width is not None:
            end = offset + width
        elif code in (0xA0, 0xA1, 0xA3, 0xC0, 0xC1, 0xE0):
            end = offset + 1 + buf[offset]
        elif code in (0xB0, 0xB1, 0xB3, 0xD0, 0xD1, 0xF0):
            end = offset + 4 + _U32.unpack_from(buf, offset)[0]
        else:
            raise DecodeError(f"invalid constructor byte {code:#04x}")
    except (struct.error, IndexError):
        raise DecodeError("truncated value") from None
    if end > len(buf):
        raise DecodeError("truncated value")
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
    out += b"\x50" + _U8.pack(value)


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


def _e_char(out: bytearray, value: Any) -> None:
    if len(value) != 1:
        raise EncodeError(f"AMQP char holds one code point, got {len(value)}")
    out += b"\x73" + _U32.pack(ord(value))


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


def _e_string(out: bytearray, value: Any) -> None:
    data = value.encode("utf-8")
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


_LIST32_HEADER = b"\xd0\x00\x00\x00\x00\x00\x00\x00\x00"


def _finish_compound(out: bytearray, start: int, count: int, compact: int, wide: int) -> None:
    """Fill in the header reserved at ``start``; shrink it to the 8-bit form if that fits."""
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
        _encode_any(out, item)
    _finish_compound(out, start, len(value), 0xC0, 0xD0)


def _e_map(out: bytearray, value: Any) -> None:
    start = len(out)
    out += _LIST32_HEADER
    for key, item in value.items():
        _encode_any(out, key)
        _encode_any(out, item)
    _finish_compound(out, start, 2 * len(value), 0xC1, 0xD1)


def _e_described(out: bytearray, value: Described) -> None:
    out.append(0x00)
    descriptor = value.descriptor
    if type(descriptor) is int:
        _e_ulong(out, descriptor)
    else:
        _encode_any(out, descriptor)
    _encode_any(out, value.value)


# Array elements share one constructor, so each type has one array form (the widest,
# except where a compact form always fits): a constructor byte and a value-only packer.
def _a_fixed(code: int, packer: struct.Struct, type_name: str) -> tuple[int, Callable[[bytearray, Any], None]]:
    def pack(out: bytearray, value: Any) -> None:
        try:
            out += packer.pack(value)
        except struct.error:
            raise _range_error(type_name, value) from None

    return code, pack


def _a_bytes(out: bytearray, value: Any) -> None:
    out += value


def _a_boolean(out: bytearray, value: Any) -> None:
    out.append(1 if value else 0)


def _a_char(out: bytearray, value: Any) -> None:
    out += _U32.pack(ord(value))


def _a_uuid(out: bytearray, value: Any) -> None:
    out += value.bytes


def _a_var32(encode_text: Callable[[Any], bytes]) -> Callable[[bytearray, Any], None]:
    def pack(out: bytearray, value: Any) -> None:
        data = encode_text(value)
        out += _U32.pack(len(data))
        out += data

    return pack


def _a_compound(encoder: Encoder) -> Callable[[bytearray, Any], None]:
    # The element constructor is written once for the array, so drop the one the full
    # encoder writes; a compound element is always encoded in its 32-bit form here.
    def pack(out: bytearray, value: Any) -> None:
        start = len(out)
        encoder(out, value)
        code = out[start]
        if code in (0xC0, 0xC1):
            size, count = out[start + 1], out[start + 2]
            out[start : start + 3] = _U32U32.pack(size + 3, count)
        elif code == 0x45:
            out[start : start + 1] = _U32U32.pack(4, 0)
        else:
            del out[start]

    return pack


def _a_array(out: bytearray, value: Any) -> None:
    start = len(out)
    _e_array(out, value)
    code = out[start]
    if code == 0xE0:
        size, count = out[start + 1], out[start + 2]
        out[start : start + 3] = _U32U32.pack(size + 3, count)
    else:
        del out[start]


_ARRAY_FORMS: dict[str, tuple[int, Callable[[bytearray, Any], None]]] = {
    "null": (0x40, lambda out, value: None),
    "boolean": (0x56, _a_boolean),
    "ubyte": _a_fixed(0x50, _U8, "ubyte"),
    "ushort": _a_fixed(0x60, _U16, "ushort"),
    "uint": _a_fixed(0x70, _U32, "uint"),
    "ulong": _a_fixed(0x80, _U64, "ulong"),
    "byte": _a_fixed(0x51, _I8, "byte"),
    "short": _a_fixed(0x61, _I16, "short"),
    "int": _a_fixed(0x71, _I32, "int"),
    "long": _a_fixed(0x81, _I64, "long"),
    "float": _a_fixed(0x72, _F32, "float"),
    "double": _a_fixed(0x82, _F64, "double"),
    "decimal32": (0x74, _a_bytes),
    "decimal64": (0x84, _a_bytes),
    "decimal128": (0x94, _a_bytes),
    "char": (0x73, _a_char),
    "timestamp": _a_fixed(0x83, _I64, "timestamp"),
    "uuid": (0x98, _a_uuid),
    "binary": (0xB0, _a_var32(bytes)),
    "string": (0xB1, _a_var32(lambda v: v.encode("utf-8"))),
    "symbol": (0xB3, _a_var32(lambda v: v.encode("ascii"))),
    "list": (0xD0, _a_compound(_e_list)),
    "map": (0xD1, _a_compound(_e_map)),
    "array": (0xF0, _a_array),
}

_SMALL_VAR8 = {"binary": 0xA0, "string": 0xA1, "symbol": 0xA3}


def _e_array(out: bytearray, value: Array) -> None:
    form = _ARRAY_FORMS.get(value.type)
    if form is None:
        raise EncodeError(f"no AMQP array of {value.type!r}")
    start = len(out)
    out += _LIST32_HEADER
    if value.descriptor is not None:
        out.append(0x00)
        _encode_any(out, value.descriptor)
    code, pack = form
    small = _SMALL_VAR8.get(value.type)
    if small is not None:
        encoded = [bytes(v) if value.type == "binary" else v.encode("utf-8" if value.type == "string" else "ascii") for v in value]
        if all(len(e) < 256 for e in encoded):
            out.append(small)
            for e in encoded:
                out.append(len(e))
                out += e
        else:
            out.append(code)
            for e in encoded:
                out += _U32.pack(len(e))
                out += e
    else:
        out.append(code)
        try:
            for item in value:
                if value.descriptor is not None and hasattr(item, "value") and isinstance(item, Described):
                    item = item.value
                pack(out, item)
        except (struct.error, TypeError, AttributeError) as exc:
            raise EncodeError(f"array of {value.type}: {exc}") from None
    size = len(out) - start - 9
    count = len(value)
    if count < 256 and size < 255:
        out[start] = 0xE0
        out[start + 1] = size + 1
        out[start + 2] = count
        del out[start + 3 : start + 9]
    else:
        out[start] = 0xF0
        _U32U32.pack_into(out, start + 1, size + 4, count)


_ENCODERS: dict[type, Encoder] = {
    type(None): _e_null,
    bool: _e_boolean,
    int: _e_long,
    float: _e_double,
    str: _e_string,
    bytes: _e_binary,
    bytearray: _e_binary,
    memoryview: _e_binary,
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
}

# Encoders by the spec's type name, for fields whose declared type decides the encoding.
TYPE_ENCODERS: dict[str, Encoder] = {
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
    "char": _e_char,
    "timestamp": _e_timestamp,
    "uuid": _e_uuid,
    "binary": _e_binary,
    "string": _e_string,
    "symbol": _e_symbol,
    "list": _e_list,
    "map": _e_map,
}


def register_encoder(cls: type, encoder: Encoder) -> None:
    """Encode instances of ``cls`` (exactly that class) with ``encoder``."""
    _ENCODERS[cls] = encoder


def _encode_any(out: bytearray, value: Any) -> None:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = _encoder_for_subclass(value)
    encoder(out, value)


def _encoder_for_subclass(value: Any) -> Encoder:
    for cls in type(value).__mro__[1:]:
        encoder = _ENCODERS.get(cls)
        if encoder is not None:
            return encoder
    raise EncodeError(f"no AMQP encoding for Python type {type(value).__name__}")


def encode_value(out: bytearray, value: Any) -> None:
    """Append the encoding of ``value`` (its AMQP type chosen by its Python type)."""
    try:
        _encode_any(out, value)
    except (struct.error, OverflowError) as exc:
        raise EncodeError(str(exc)) from None


def encode_as(out: bytearray, type_name: str, value: Any) -> None:
    """Append ``value`` encoded as the AMQP type ``type_name`` (``"uint"``, ``"symbol"``...)."""
    if value is None:
        out.append(0x40)
        return
    TYPE_ENCODERS[type_name](out, value)


def encode(value: Any) -> bytes:
    """Return the encoding of one value."""
    out = bytearray()
    encode_value(out, value)
    return bytes(out)
