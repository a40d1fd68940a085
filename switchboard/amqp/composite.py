"""Composite types (performatives, sections, delivery states, termini) from field tables.

Each composite class in ``spec.py`` declares its fields once, as ``FIELDS``: name, the
AMQP type that encodes it, whether it is mandatory or multiple, and its default.  This
module turns that table into the encoder and the decoder, so no performative is ever
read or written by position.

Decoding is strict where a wrong type would otherwise surface later as a crash deep in
the engine: each field's decoded type is checked against its declared type, and a
missing mandatory field is an error, both raised as ``DecodeError``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from . import codec
from .errors import DecodeError, EncodeError
from .types import (
    Array,
    Byte,
    Char,
    Decimal32,
    Decimal64,
    Decimal128,
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

__all__ = ["Composite", "Field"]


class Field:
    """One field of a composite type, as the spec declares it."""

    __slots__ = ("name", "type", "mandatory", "multiple", "default", "requires")

    def __init__(
        self,
        name: str,
        type: str,
        mandatory: bool = False,
        multiple: bool = False,
        default: Any = None,
        requires: str | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.mandatory = mandatory
        self.multiple = multiple
        self.default = default
        # For a field of any type ("*"), the archetype its value must provide.
        self.requires = requires

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.type!r})"


# Python types a decoded field of each declared AMQP type may have.  "*" and composite
# field types accept anything the codec produces.
_DECODED_TYPES: dict[str, tuple[type, ...]] = {
    "boolean": (bool,),
    "ubyte": (UByte,),
    "ushort": (UShort,),
    "uint": (UInt,),
    "ulong": (ULong,),
    "byte": (Byte,),
    "short": (Short,),
    "int": (Int,),
    "long": (int,),
    "float": (Float,),
    "double": (float,),
    "decimal32": (Decimal32,),
    "decimal64": (Decimal64,),
    "decimal128": (Decimal128,),
    "char": (Char,),
    "timestamp": (Timestamp,),
    "binary": (bytes,),
    "string": (str,),
    "symbol": (Symbol,),
    "list": (list,),
    "map": (dict,),
    "fields": (dict,),
}


def _encode_fields_map(out: bytearray, value: Any) -> None:
    # Keys of a ``fields`` map are symbols by definition; accept plain str for convenience.
    if any(type(k) is str for k in value):
        value = {Symbol(k) if type(k) is str else k: v for k, v in value.items()}
    codec.encode_value(out, value)


def _field_encoder(field: Field) -> Callable[[bytearray, Any], None]:
    if field.type == "fields":
        return _encode_fields_map
    typed = codec.TYPE_ENCODERS.get(field.type)
    if typed is None:
        return codec.encode_value
    if field.multiple:
        type_name = field.type

        def encode_multiple(out: bytearray, value: Any) -> None:
            if isinstance(value, (list, tuple)):
                codec.encode_value(out, value if isinstance(value, Array) else Array(type_name, value))
            else:
                typed(out, value)

        return encode_multiple
    return typed


def _encode_composite(out: bytearray, value: "Composite") -> None:
    value.encode_into(out)


class Composite:
    """Base of every described-list type.  Subclasses set DESCRIPTOR, NAME and FIELDS."""

    __slots__ = ()
    DESCRIPTOR: ClassVar[int]
    NAME: ClassVar[Symbol]
    FIELDS: ClassVar[tuple[Field, ...]]
    _ENCODERS: ClassVar[tuple[Callable[[bytearray, Any], None], ...]]
    _HEADER: ClassVar[bytes]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "FIELDS" not in cls.__dict__:
            return
        cls._ENCODERS = tuple(_field_encoder(f) for f in cls.FIELDS)
        # Every descriptor code in the spec fits a smallulong.
        cls._HEADER = bytes((0x00, 0x53, cls.DESCRIPTOR))
        codec.register_encoder(cls, _encode_composite)
        codec.register_described(cls.DESCRIPTOR, cls.NAME, cls.from_list)

    def encode_into(self, out: bytearray) -> None:
        """Append this value's encoding, omitting trailing fields that are null or default."""
        fields = self.FIELDS
        values = [getattr(self, f.name) for f in fields]
        count = len(values)
        while count:
            value = values[count - 1]
            if value is not None and value != fields[count - 1].default:
                break
            count -= 1
        out += self._HEADER
        if count == 0:
            out.append(0x45)
            return
        start = len(out)
        out += b"\xd0\x00\x00\x00\x00\x00\x00\x00\x00"
        encoders = self._ENCODERS
        try:
            for i in range(count):
                value = values[i]
                if value is None:
                    out.append(0x40)
                else:
                    encoders[i](out, value)
        except EncodeError as exc:
            raise EncodeError(f"{type(self).__name__}.{fields[i].name}: {exc}") from None
        except (TypeError, AttributeError) as exc:
            raise EncodeError(f"{type(self).__name__}.{fields[i].name}: {exc}") from None
        codec._finish_compound(out, start, count, 0xC0, 0xD0)

    def encode(self) -> bytes:
        out = bytearray()
        self.encode_into(out)
        return bytes(out)

    @classmethod
    def from_list(cls, values: Any) -> "Composite":
        """Build from a decoded described value, checking what the spec requires."""
        if type(values) is not list:
            raise DecodeError(f"{cls.NAME} must be a list, got {type(values).__name__}")
        fields = cls.FIELDS
        args = []
        for i, field in enumerate(fields):
            value = values[i] if i < len(values) else None
            if value is None:
                if field.mandatory:
                    raise DecodeError(f"{cls.NAME}: mandatory field {field.name!r} is missing")
                value = field.default
            else:
                expected = _DECODED_TYPES.get(field.type)
                if field.multiple and type(value) is not Array:
                    value = [value]
                if expected is not None:
                    items = value if field.multiple else (value,)
                    for item in items:
                        if not isinstance(item, expected) or (
                            type(item) is bool and bool not in expected
                        ):
                            raise DecodeError(
                                f"{cls.NAME}: field {field.name!r} must be {field.type},"
                                f" got {type(item).__name__}"
                            )
            args.append(value)
        return cls(*args)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self.FIELDS)

    def __hash__(self) -> int:
        return hash((type(self), tuple(repr(getattr(self, f.name)) for f in self.FIELDS)))

    def __repr__(self) -> str:
        parts = []
        for f in self.FIELDS:
            value = getattr(self, f.name)
            if value is not None and value != f.default:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
