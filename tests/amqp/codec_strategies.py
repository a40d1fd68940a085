"""Hypothesis strategies for typed AMQP values, and a typed equality for comparing them.

Shared by the codec, message and Proton differential tests.  Plain ``==`` is not enough
to check a round-trip: ``UInt(1) == ULong(1) == 1`` and ``Symbol("a") == "a"``, so
``assert_same`` also compares Python types, recursively, and treats NaN as equal to NaN.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from switchboard.amqp import spec
from switchboard.amqp.composite import Composite
from switchboard.amqp.message import Message
from switchboard.amqp.types import (
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

I64_MIN, I64_MAX = -(2**63), 2**63 - 1

# A message's attributes, as a user reads them (a compiled Message has no __slots__ to list).
MESSAGE_ATTRIBUTES = (
    "header",
    "delivery_annotations",
    "message_annotations",
    "properties",
    "application_properties",
    "body",
    "body_type",
    "footer",
)


def examples(count: int) -> settings:
    """Hypothesis settings for ``count`` examples, for a suite that must stay fast.

    No deadline and no "too slow" health check: generating messages is slow on a loaded
    machine, and neither says anything about the code under test.
    """
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )

ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=20)
# Surrogates cannot be encoded as UTF-8, so they are no AMQP string or char.
unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


def _repeated(short: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values of 256 to 300 units made by repeating a short one: long enough for the 32-bit
    encodings, and far cheaper to generate than that many random units."""
    return st.tuples(short.filter(len), st.integers(256, 300)).map(lambda t: (t[0] * 300)[: t[1]])


long_text = _repeated(unicode_text)

# One strategy per AMQP primitive type name, producing the Python type that decodes from it.
SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "ubyte": st.integers(0, 2**8 - 1).map(UByte),
    "ushort": st.integers(0, 2**16 - 1).map(UShort),
    "uint": st.integers(0, 2**32 - 1).map(UInt),
    "ulong": st.integers(0, 2**64 - 1).map(ULong),
    "byte": st.integers(-(2**7), 2**7 - 1).map(Byte),
    "short": st.integers(-(2**15), 2**15 - 1).map(Short),
    "int": st.integers(-(2**31), 2**31 - 1).map(Int),
    "long": st.integers(I64_MIN, I64_MAX),
    "float": st.floats(width=32).map(Float),
    "double": st.floats(),
    "decimal32": st.binary(min_size=4, max_size=4).map(Decimal32),
    "decimal64": st.binary(min_size=8, max_size=8).map(Decimal64),
    "decimal128": st.binary(min_size=16, max_size=16).map(Decimal128),
    "char": st.characters(blacklist_categories=("Cs",)).map(Char),
    "timestamp": st.integers(I64_MIN, I64_MAX).map(Timestamp),
    "uuid": st.uuids(),
    "binary": st.binary(max_size=20) | _repeated(st.binary(max_size=8)),
    "string": unicode_text | long_text,
    "symbol": ascii_text.map(Symbol) | _repeated(ascii_text).map(Symbol),
}

scalars = st.one_of(*SCALARS.values())

# Map keys must hash and compare sanely: no NaN, no lists.
map_keys = st.one_of(
    *(s for name, s in SCALARS.items() if name not in ("float", "double")),
    st.floats(allow_nan=False),
)

# Descriptors that no class of ours claims, so they decode back to ``Described``.
free_descriptors = st.one_of(
    st.integers(0x1_0000_0000, 2**64 - 1).map(ULong),
    st.from_regex(r"\Atest:[a-z]{1,12}\Z").map(Symbol),
)


_FIXED_WIDTH_TYPES = {"boolean", "ubyte", "ushort", "uint", "byte", "int", "long", "timestamp", "uuid"}


def arrays(elements: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Array]:
    """Arrays of any primitive element type (except null), small or over 255 bytes."""
    names = [n for n in SCALARS if n != "null"]

    def of_type(name: str) -> st.SearchStrategy[Array]:
        items = st.lists(SCALARS[name], max_size=6)
        if name in _FIXED_WIDTH_TYPES:
            # Enough elements to need the 32-bit array form.
            items |= st.lists(SCALARS[name], min_size=256, max_size=260)
        return items.map(lambda xs: Array(name, xs))

    strategies = [st.sampled_from(names).flatmap(of_type)]
    if elements is not None:
        strategies.append(st.lists(st.lists(elements, max_size=3), max_size=3).map(lambda xs: Array("list", xs)))
    return st.one_of(*strategies)


def _compounds(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        # Enough elements for the 32-bit list form.
        st.lists(st.sampled_from([None, True, UInt(7), Symbol("s")]), min_size=256, max_size=260),
        st.dictionaries(map_keys, children, max_size=5),
        arrays(children),
        st.builds(Described, free_descriptors, children),
    )


values = st.recursive(scalars, _compounds, max_leaves=30)
"""Any AMQP value, with lists, maps, arrays and described values nested in each other."""


# ---------------------------------------------------------------------------------------
# Composites from spec.py
# ---------------------------------------------------------------------------------------

COMPOSITE_CLASSES: list[type[Composite]] = sorted(
    (
        cls
        for cls in vars(spec).values()
        if isinstance(cls, type) and issubclass(cls, Composite) and cls is not Composite
    ),
    key=lambda cls: cls.__name__,
)

message_ids = st.one_of(
    st.integers(0, 2**64 - 1).map(ULong), st.uuids(), st.binary(max_size=16), unicode_text
)

symbol_keyed_maps = st.dictionaries(ascii_text.map(Symbol), scalars, max_size=4)

_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    **SCALARS,
    "map": st.dictionaries(map_keys, scalars, max_size=4),
    "fields": symbol_keyed_maps,
    "*": scalars,
}


def _field_value(cls: type[Composite], field: Any) -> st.SearchStrategy[Any]:
    if field.type == "error":
        strategy: st.SearchStrategy[Any] = composites(spec.Error)
    elif field.requires == "message-id":
        strategy = message_ids
    elif field.requires == "address":
        strategy = unicode_text
    elif field.requires in ("source", "target", "delivery-state", "outcome"):
        # Only the spec's own kinds: a decoder rejects anything else in these fields.
        providers = sorted(
            (c for c in COMPOSITE_CLASSES if field.requires in c.PROVIDES and c is not cls),
            key=lambda c: c.__name__,
        )
        strategy = st.sampled_from(providers).flatmap(lambda c: st.deferred(lambda: composites(c)))
    elif field.type in _FIELD_VALUES:
        strategy = _FIELD_VALUES[field.type]
    else:
        raise AssertionError(f"no strategy for field type {field.type!r}")
    if field.multiple:
        strategy = st.lists(strategy, max_size=4).map(lambda xs, t=field.type: Array(t, xs))
    if field.mandatory:
        return strategy.filter(lambda value: value is not None)
    return st.none() | strategy


def composites(cls: type[Composite]) -> st.SearchStrategy[Composite]:
    """Instances of ``cls`` with every field either null or a value of its declared type."""
    return st.builds(cls, **{f.name: _field_value(cls, f) for f in cls.FIELDS})


def with_defaults(value: Composite) -> Composite:
    """``value`` with null fields replaced by their defaults, as decoding fills them in."""
    cls = type(value)

    def filled(field: Any) -> Any:
        item = getattr(value, field.name)
        if item is None:
            return field.default
        return with_defaults(item) if isinstance(item, Composite) else item

    return cls(*(filled(f) for f in cls.FIELDS))


# ---------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------

addresses = st.none() | unicode_text

headers = st.builds(
    spec.Header,
    durable=st.none() | st.booleans(),
    priority=st.none() | SCALARS["ubyte"],
    ttl=st.none() | SCALARS["uint"],
    first_acquirer=st.none() | st.booleans(),
    delivery_count=st.none() | SCALARS["uint"],
)

properties = st.builds(
    spec.Properties,
    message_id=st.none() | message_ids,
    user_id=st.none() | st.binary(max_size=16),
    to=addresses,
    subject=st.none() | unicode_text,
    reply_to=addresses,
    correlation_id=st.none() | message_ids,
    content_type=st.none() | ascii_text.map(Symbol),
    content_encoding=st.none() | ascii_text.map(Symbol),
    absolute_expiry_time=st.none() | SCALARS["timestamp"],
    creation_time=st.none() | SCALARS["timestamp"],
    group_id=st.none() | unicode_text,
    group_sequence=st.none() | SCALARS["uint"],
    reply_to_group_id=st.none() | unicode_text,
)

# Smaller trees than ``values``: a message has several such sections to generate.
section_values = st.recursive(scalars, _compounds, max_leaves=8)
annotations = st.none() | st.dictionaries(ascii_text.map(Symbol), section_values, max_size=4)
application_properties = st.none() | st.dictionaries(unicode_text, scalars, max_size=5)

bodies = st.one_of(
    st.tuples(st.just("data"), st.binary(max_size=20) | _repeated(st.binary(max_size=8))),
    st.tuples(st.just("data"), st.lists(st.binary(max_size=50), min_size=2, max_size=4)),
    st.tuples(st.just("value"), section_values),
    st.tuples(st.just("sequence"), st.lists(st.lists(scalars, max_size=4), min_size=1, max_size=3)),
)


@st.composite
def messages(draw: Any, footer: bool = True) -> Message:
    body_type, body = draw(bodies)
    return Message(
        body,
        body_type=body_type,
        header=draw(st.none() | headers),
        delivery_annotations=draw(annotations),
        message_annotations=draw(annotations),
        properties=draw(st.none() | properties),
        application_properties=draw(application_properties),
        footer=draw(annotations) if footer else None,
    )


# ---------------------------------------------------------------------------------------
# Typed equality
# ---------------------------------------------------------------------------------------


def assert_same(actual: Any, expected: Any, path: str = "value") -> None:
    """Assert equal values of identical Python types, all the way down."""
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} {actual!r} != {type(expected).__name__} {expected!r}"
    if isinstance(expected, float):
        # Compare bit patterns: tells -0.0 from 0.0 and lets NaN equal NaN.
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r} != {expected!r}"
        else:
            fmt = ">f" if isinstance(expected, Float) else ">d"
            assert struct.pack(fmt, actual) == struct.pack(fmt, expected), f"{path}: {actual!r} != {expected!r}"
    elif isinstance(expected, list):
        if isinstance(expected, Array):
            assert actual.type == expected.type, f"{path}: array of {actual.type} != {expected.type}"
            assert_same(actual.descriptor, expected.descriptor, f"{path}.descriptor")
        assert len(actual) == len(expected), f"{path}: {len(actual)} elements != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]")
    elif isinstance(expected, dict):
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for (ak, av), (ek, ev) in zip(actual.items(), expected.items()):
            assert_same(ak, ek, f"{path} key")
            assert_same(av, ev, f"{path}[{ek!r}]")
    elif isinstance(expected, Described):
        assert_same(actual.descriptor, expected.descriptor, f"{path}.descriptor")
        assert_same(actual.value, expected.value, f"{path}.value")
    elif isinstance(expected, Composite):
        for f in expected.FIELDS:
            assert_same(getattr(actual, f.name), getattr(expected, f.name), f"{path}.{f.name}")
    elif isinstance(expected, Message):
        for name in MESSAGE_ATTRIBUTES:
            assert_same(getattr(actual, name), getattr(expected, name), f"{path}.{name}")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


__all__ = [
    "COMPOSITE_CLASSES",
    "examples",
    "SCALARS",
    "assert_same",
    "composites",
    "free_descriptors",
    "messages",
    "scalars",
    "values",
    "with_defaults",
]
