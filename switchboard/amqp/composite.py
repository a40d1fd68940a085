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

import operator
import uuid
from typing import Any, Callable, ClassVar, Self

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
    "uuid": (uuid.UUID,),
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


def _encode_message_id(out: bytearray, value: Any) -> None:
    # A message-id is a ulong, uuid, binary or string: a plain int means the ulong, where
    # the codec alone would pick long.
    if type(value) is int:
        codec.TYPE_ENCODERS["ulong"](out, value)
    else:
        codec.encode_value(out, value)


def _field_encoder(field: Field) -> Callable[[bytearray, Any], None]:
    if field.type == "fields":
        return _encode_fields_map
    if field.requires == "message-id":
        return _encode_message_id
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
    """Base of every described-list type.  Subclasses set DESCRIPTOR, NAME and FIELDS.

    From ``FIELDS`` each subclass gets, once, the tables its encoder and decoder run on:
    the encoder per field, the defaults, and the exact Python types a decoded field may
    have without a closer look.
    """

    __slots__ = ()
    DESCRIPTOR: ClassVar[int]
    NAME: ClassVar[Symbol]
    FIELDS: ClassVar[tuple[Field, ...]]
    _ENCODERS: ClassVar[tuple[Callable[[bytearray, Any], None], ...]]
    _HEADER: ClassVar[bytes]
    _GET_FIELDS: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _DEFAULTS: ClassVar[list[Any]]
    _EXACT_TYPES: ClassVar[tuple[frozenset[type] | set[type] | None, ...]]
    _MANDATORY_COUNT: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "FIELDS" not in cls.__dict__:
            return
        fields = cls.FIELDS
        cls._ENCODERS = tuple(_field_encoder(f) for f in fields)
        # Every descriptor code in the spec fits a smallulong.
        cls._HEADER = bytes((0x00, 0x53, cls.DESCRIPTOR))
        names = [f.name for f in fields]
        # attrgetter of several names returns a tuple; of one, the bare value.
        getter = operator.attrgetter(*names) if names else (lambda self: ())
        cls._GET_FIELDS = staticmethod(getter if len(names) != 1 else (lambda self: (getter(self),)))
        cls._DEFAULTS = [f.default for f in fields]
        cls._EXACT_TYPES = tuple(_exact_types(f) for f in fields)
        mandatory = [i for i, f in enumerate(fields) if f.mandatory]
        cls._MANDATORY_COUNT = mandatory[-1] + 1 if mandatory else 0
        codec.register_encoder(cls, _encode_composite)
        codec.register_described(cls.DESCRIPTOR, cls.NAME, cls.from_list)
        for archetype in (getattr(cls, "TYPE_NAME", None), *getattr(cls, "PROVIDES", ())):
            if archetype in _PROVIDERS:
                _PROVIDERS[archetype].add(cls)

    def encode_into(self, out: bytearray) -> None:
        """Append this value's encoding, omitting trailing fields that are null or default."""
        values = self._GET_FIELDS(self)  # type: ignore[call-arg]  # a staticmethod: not bound
        defaults = self._DEFAULTS
        count = len(values)
        while count:
            value = values[count - 1]
            if value is not None and value != defaults[count - 1]:
                break
            count -= 1
        out += self._HEADER
        if count == 0:
            out.append(0x45)
            return
        start = len(out)
        out += b"\xd0\x00\x00\x00\x00\x00\x00\x00\x00"
        encoders = self._ENCODERS
        i = 0
        try:
            for i in range(count):
                value = values[i]
                if value is None:
                    out.append(0x40)
                else:
                    encoders[i](out, value)
        except codec.ENCODER_ERRORS as exc:  # EncodeError is a ValueError
            raise EncodeError(f"{type(self).__name__}.{self.FIELDS[i].name}: {exc}") from None
        codec.finish_compound(out, start, count, 0xC0, 0xD0)

    def encode(self) -> bytes:
        out = bytearray()
        self.encode_into(out)
        return bytes(out)

    @classmethod
    def from_list(cls, values: Any) -> Self:
        """Build from a decoded described value, checking what the spec requires.

        A null or missing field takes its default; a missing mandatory field, or a field
        of the wrong type, is a ``DecodeError``.
        """
        if type(values) is not list:
            raise DecodeError(f"{cls.NAME} must be a list, got {type(values).__name__}")
        present = len(values)
        if present < cls._MANDATORY_COUNT:
            missing = cls.FIELDS[present]
            for field in cls.FIELDS[present:]:
                if field.mandatory:
                    missing = field
                    break
            raise DecodeError(f"{cls.NAME}: mandatory field {missing.name!r} is missing")
        defaults = cls._DEFAULTS
        if present < len(defaults):
            args = values + defaults[present:]
        else:
            # Fields past the last one we know belong to a later version: ignored.
            args = values[: len(defaults)]
            present = len(defaults)
        exact_types = cls._EXACT_TYPES
        for i in range(present):
            value = args[i]
            if value is None:
                args[i] = defaults[i]
                if cls.FIELDS[i].mandatory:
                    raise DecodeError(f"{cls.NAME}: mandatory field {cls.FIELDS[i].name!r} is missing")
            else:
                expected = exact_types[i]
                if expected is not None and type(value) not in expected:
                    args[i] = _checked_field(cls, cls.FIELDS[i], value)
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


# Composite classes by the type name they have and the archetypes they provide
# ("error"; "source", "target", "delivery-state", "outcome"), filled as spec.py defines
# them.  (Addresses stay lenient: a message whose "to" is not a string still decodes.)  Fields typed by one of these accept only its classes: a peer's detach whose
# error is a string, or an attach whose source is a number, is a decode error here
# rather than a crash in whoever reads the event.
_PROVIDERS: dict[str, set[type]] = {
    "error": set(),
    "source": set(),
    "target": set(),
    "delivery-state": set(),
    "outcome": set(),
}


def _exact_types(field: Field) -> "frozenset[type] | set[type] | None":
    """Types a decoded value of ``field`` may have to pass without a closer look.

    None for fields that accept anything; an empty set sends every value of a
    ``multiple`` field to ``_checked_field``, which wraps single values in a list.
    """
    expected = _DECODED_TYPES.get(field.type)
    if field.multiple:
        return frozenset()
    if expected is None:
        # The live set: classes defined later in spec.py join it.
        return _PROVIDERS.get(field.type if field.type != "*" else (field.requires or ""))
    return frozenset(expected)


def _checked_field(cls: type[Composite], field: Field, value: Any) -> Any:
    """``value`` for ``field`` if its type is acceptable (wrapped in a list if it is a single
    value of a multiple field); raise ``DecodeError`` otherwise."""
    providers = _PROVIDERS.get(field.type if field.type != "*" else (field.requires or ""))
    if providers is not None and not field.multiple:
        if not isinstance(value, tuple(providers)):
            wanted = field.type if field.type != "*" else field.requires
            raise DecodeError(f"{cls.NAME}: field {field.name!r} must be {wanted}, got {type(value).__name__}")
        return value
    expected = _DECODED_TYPES.get(field.type)
    if field.multiple and type(value) is not Array:
        value = [value]
    if expected is not None:
        for item in value if field.multiple else (value,):
            if not isinstance(item, expected) or (type(item) is bool and bool not in expected):
                raise DecodeError(
                    f"{cls.NAME}: field {field.name!r} must be {field.type}, got {type(item).__name__}"
                )
    return value
