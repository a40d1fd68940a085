"""Typed AMQP values, so that a value decoded and encoded again keeps its AMQP type.

Plain Python values map to one AMQP type each: ``None`` null, ``bool`` boolean, ``int``
long, ``float`` double, ``str`` string, ``bytes`` binary, ``uuid.UUID`` uuid, ``list``
list, ``dict`` map.  Every other AMQP type has a wrapper here.  The integer and string
wrappers subclass ``int`` and ``str``, so they compare and hash like the plain value.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = [
    "Array",
    "Byte",
    "Char",
    "Decimal32",
    "Decimal64",
    "Decimal128",
    "Described",
    "Float",
    "Int",
    "Short",
    "Symbol",
    "Timestamp",
    "UByte",
    "UInt",
    "ULong",
    "UShort",
]


class Symbol(str):
    """AMQP symbol: an ASCII name (capabilities, error conditions, annotation keys)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Symbol({str.__repr__(self)})"


class Char(str):
    """AMQP char: one Unicode code point, encoded as UTF-32."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Char({str.__repr__(self)})"


class _TypedInt(int):
    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int.__repr__(self)})"

    # int's str() and format() fall back on repr(): a number in a message is a number.
    __str__ = int.__repr__


class UByte(_TypedInt):
    """AMQP ubyte, 0..255."""

    __slots__ = ()


class UShort(_TypedInt):
    """AMQP ushort, 0..65535."""

    __slots__ = ()


class UInt(_TypedInt):
    """AMQP uint, 0..2**32-1."""

    __slots__ = ()


class ULong(_TypedInt):
    """AMQP ulong, 0..2**64-1."""

    __slots__ = ()


class Byte(_TypedInt):
    """AMQP byte, -128..127."""

    __slots__ = ()


class Short(_TypedInt):
    """AMQP short, -32768..32767."""

    __slots__ = ()


class Int(_TypedInt):
    """AMQP int, 32-bit signed."""

    __slots__ = ()


class Timestamp(_TypedInt):
    """AMQP timestamp: milliseconds since the Unix epoch, 64-bit signed."""

    __slots__ = ()


class Float(float):
    """AMQP float: IEEE 754 32-bit (a plain ``float`` is an AMQP double)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Float({float.__repr__(self)})"


class _Decimal(bytes):
    """IEEE 754 decimal, kept as its raw big-endian bytes: nothing here does arithmetic."""

    WIDTH = 0

    def __new__(cls, raw: bytes) -> "_Decimal":
        if len(raw) != cls.WIDTH:
            raise ValueError(f"{cls.__name__} needs exactly {cls.WIDTH} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({bytes.__repr__(self)})"


class Decimal32(_Decimal):
    WIDTH = 4


class Decimal64(_Decimal):
    WIDTH = 8


class Decimal128(_Decimal):
    WIDTH = 16


class Described:
    """A described value whose descriptor has no class of ours (or a restricted section)."""

    __slots__ = ("descriptor", "value")

    def __init__(self, descriptor: Any, value: Any) -> None:
        self.descriptor = descriptor
        self.value = value

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Described)
            and self.descriptor == other.descriptor
            and self.value == other.value
        )

    def __hash__(self) -> int:
        return hash((self.descriptor, repr(self.value)))

    def __repr__(self) -> str:
        return f"Described({self.descriptor!r}, {self.value!r})"


class PreEncoded(bytes):
    """An element of a described array, already encoded (with its constructor), for the codec.

    Here rather than in the codec: mypyc compiles the codec, and no subclass of ``bytes``.
    """


class Array(list):
    """AMQP array: elements of one AMQP type (named as in the spec: "symbol", "uint"...).

    ``descriptor`` is set for an array of described values, all with that descriptor.
    """

    __slots__ = ("type", "descriptor")

    def __init__(self, type: str, elements: Iterable[Any] = (), descriptor: Any = None) -> None:
        super().__init__(elements)
        self.type = type
        self.descriptor = descriptor

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Array):
            return (
                self.type == other.type
                and self.descriptor == other.descriptor
                and list.__eq__(self, other)
            )
        return list.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        desc = f", descriptor={self.descriptor!r}" if self.descriptor is not None else ""
        return f"Array({self.type!r}, {list.__repr__(self)}{desc})"
