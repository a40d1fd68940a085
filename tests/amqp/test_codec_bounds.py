"""Caps on what a peer can make the decoder build: nesting depth and element counts, each
tested at the limit and one past it, and "bombs" (a few bytes claiming huge values) that
must fail fast, without allocating what they claim."""

from __future__ import annotations

import struct
import time
import tracemalloc
from typing import Any, Callable

import pytest

from switchboard.amqp import codec
from switchboard.amqp.codec import MAX_COMPOUND_COUNT, MAX_NESTING_DEPTH
from switchboard.amqp.errors import DecodeError
from switchboard.amqp.message import Message, read_routing
from switchboard.amqp.types import Array, Described, Symbol

# ---------------------------------------------------------------------------------------
# Nesting depth
# ---------------------------------------------------------------------------------------


def nested_lists(levels: int) -> bytes:
    """``levels`` lists, each holding the next, the innermost holding a null."""
    data = b"\x40"
    for _ in range(levels):
        data = b"\xd0" + struct.pack(">II", len(data) + 4, 1) + data
    return data


def nested_maps(levels: int) -> bytes:
    """``levels`` maps, each the value of the next's only key (a null)."""
    data = b"\x40"
    for _ in range(levels):
        body = b"\x40" + data
        data = b"\xd1" + struct.pack(">II", len(body) + 4, 2) + body
    return data


def nested_arrays(levels: int) -> bytes:
    """``levels`` arrays, each the only element of the next, the innermost of one ubyte."""
    element = b"\x50"  # constructor of the innermost array's elements
    body = b"\x07"
    for _ in range(levels):
        array_body = element + body
        body = struct.pack(">II", len(array_body) + 4, 1) + array_body
        element = b"\xf0"
    return b"\xf0" + body


def _described_chain(levels: int) -> bytes:
    """``levels`` described values, each the value of the next."""
    descriptor = b"\x80" + struct.pack(">Q", 0x1_0000_0001)  # no class of ours claims it
    return (b"\x00" + descriptor) * levels + b"\x40"


def nested_descriptors(levels: int) -> bytes:
    """A described value whose descriptor is described, ``levels`` deep."""
    return b"\x00" * levels + b"\xa3\x01x" + b"\x40" * levels


NESTINGS: dict[str, Callable[[int], bytes]] = {
    "lists": nested_lists,
    "maps": nested_maps,
    "arrays": nested_arrays,
    "described values": _described_chain,
    "descriptors": nested_descriptors,
}


@pytest.mark.parametrize("make", NESTINGS.values(), ids=list(NESTINGS))
def test_nesting_at_the_limit_decodes(make: Callable[[int], bytes]) -> None:
    data = make(MAX_NESTING_DEPTH)
    value, end = codec.decode_value(data)
    assert end == len(data)
    for _ in range(MAX_NESTING_DEPTH):
        assert value is not None
        value = _inner(value)
    assert value in (None, 7)


def _inner(value: Any) -> Any:
    if isinstance(value, dict):
        return value[None]
    if isinstance(value, Described):
        return value.descriptor if isinstance(value.descriptor, Described) else value.value
    return value[0]


@pytest.mark.parametrize("make", NESTINGS.values(), ids=list(NESTINGS))
def test_nesting_one_past_the_limit_is_a_decode_error(make: Callable[[int], bytes]) -> None:
    with pytest.raises(DecodeError, match="nested"):
        codec.decode_value(make(MAX_NESTING_DEPTH + 1))


def test_skip_follows_described_chains_to_the_limit_and_no_further() -> None:
    at_limit = nested_descriptors(MAX_NESTING_DEPTH)
    assert codec.skip_value(at_limit, 0) == len(at_limit)
    with pytest.raises(DecodeError, match="nested"):
        codec.skip_value(nested_descriptors(MAX_NESTING_DEPTH + 1), 0)


def test_our_encoder_round_trips_values_nested_to_the_limit() -> None:
    value: Any = None
    for _ in range(MAX_NESTING_DEPTH):
        value = [value]
    assert codec.decode_value(codec.encode(value))[0] == value
    with pytest.raises(DecodeError):
        codec.decode_value(codec.encode([value]))


# ---------------------------------------------------------------------------------------
# Element counts
# ---------------------------------------------------------------------------------------


def list_of_nulls(count: int) -> bytes:
    return b"\xd0" + struct.pack(">II", count + 4, count) + b"\x40" * count


def map_of_nulls(count: int) -> bytes:
    return b"\xd1" + struct.pack(">II", count + 4, count) + b"\x40" * count


def array_of_nulls(count: int) -> bytes:
    # Zero-width elements: the count is all there is, so only the cap bounds it.
    return b"\xf0" + struct.pack(">II", 5, count) + b"\x40"


def array_of_trues(count: int) -> bytes:
    return b"\xf0" + struct.pack(">II", 5, count) + b"\x41"


COUNTS: dict[str, Callable[[int], bytes]] = {
    "list": list_of_nulls,
    "map": map_of_nulls,
    "array of nulls": array_of_nulls,
    "array of trues": array_of_trues,
}


@pytest.mark.parametrize("make", COUNTS.values(), ids=list(COUNTS))
def test_element_count_at_the_limit_decodes(make: Callable[[int], bytes]) -> None:
    value, _ = codec.decode_value(make(MAX_COMPOUND_COUNT))
    assert len(value) == (1 if isinstance(value, dict) else MAX_COMPOUND_COUNT)


@pytest.mark.parametrize("make", COUNTS.values(), ids=list(COUNTS))
def test_element_count_one_past_the_limit_is_a_decode_error(make: Callable[[int], bytes]) -> None:
    with pytest.raises(DecodeError, match="claims"):
        codec.decode_value(make(MAX_COMPOUND_COUNT + 1))


# ---------------------------------------------------------------------------------------
# Bombs: a few bytes that claim a lot
# ---------------------------------------------------------------------------------------

HUGE = 2**32 - 1


def deeply_nested_lists(levels: int) -> bytes:
    """``levels`` list32 headers whose sizes are all consistent: only depth stops them."""
    headers = []
    for level in range(levels):
        inner = (levels - level - 1) * 9 + 1
        headers.append(b"\xd0" + struct.pack(">II", inner + 4, 1))
    return b"".join(headers) + b"\x40"


BOMBS: dict[str, bytes] = {
    "list32 of 2**32-1 elements in 10 bytes": b"\xd0" + struct.pack(">II", 5, HUGE) + b"\x40",
    "map32 of 2**32-1 elements": b"\xd1" + struct.pack(">II", 5, HUGE - 1) + b"\x40",
    "array32 of 2**32-1 nulls": b"\xf0" + struct.pack(">II", 5, HUGE) + b"\x40",
    "array8 of 255 nulls, nested": b"\xe0\x02\xff\xe0" * 40 + b"\x40",
    "array32 of 2**32-1 uuids in 10 bytes": b"\xf0" + struct.pack(">II", 5, HUGE) + b"\x98",
    "list32 claiming 4 GiB of bytes": b"\xd0" + struct.pack(">II", HUGE, 1) + b"\x40",
    "binary claiming 4 GiB": b"\xb0" + struct.pack(">I", HUGE) + b"x",
    "string claiming 4 GiB": b"\xb1" + struct.pack(">I", HUGE) + b"x",
    "symbol claiming 4 GiB": b"\xb3" + struct.pack(">I", HUGE) + b"x",
    "100000 nested lists": deeply_nested_lists(100_000),
    "a million 0x00 descriptors": b"\x00" * 1_000_000 + b"\x40",
    "list8 nested 100000 deep": b"\xc0\xff\x01" * 100_000,
}


def _assert_fails_fast(parse: Callable[[bytes], Any], data: bytes) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(DecodeError):
            parse(data)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    # Nothing of the size claimed: at most a little more than the input itself.
    assert peak < len(data) + 1_000_000, f"allocated {peak} bytes"


@pytest.mark.parametrize("data", BOMBS.values(), ids=list(BOMBS))
def test_bomb_fails_fast_with_decode_error(data: bytes) -> None:
    _assert_fails_fast(codec.decode_value, data)


@pytest.mark.parametrize("data", BOMBS.values(), ids=list(BOMBS))
def test_bomb_in_a_message_fails_fast_with_decode_error(data: bytes) -> None:
    # As the value of message annotations (read by routers) and of an amqp-value body.
    annotations = b"\x00\x53\x72" + data + b"\x00\x53\x77\x40"
    _assert_fails_fast(Message.decode, annotations)
    _assert_fails_fast(read_routing, annotations)
    _assert_fails_fast(Message.decode, b"\x00\x53\x77" + data)


def test_bomb_is_skipped_unread_by_routing_when_in_the_body() -> None:
    body = b"\x00\x53\x77" + BOMBS["list32 of 2**32-1 elements in 10 bytes"]
    message = b"\x00\x53\x73\xc0\x06\x03\x40\x40\xa1\x01a" + body
    routing = read_routing(message)
    assert routing.to == "a" and message[routing.body_offset :] == body


def test_described_array_cannot_claim_more_elements_than_its_bytes_hold() -> None:
    descriptor = Symbol("test:d")
    value, _ = codec.decode_value(codec.encode(Array("symbol", [Symbol("")] * 10, descriptor=descriptor)))
    assert value == [Described(descriptor, Symbol(""))] * 10
    # A sym8 element takes at least its size byte: 1000 of them cannot fit in none.
    for count in (1000, MAX_COMPOUND_COUNT + 1):
        claim = b"\xf0" + struct.pack(">II", 14, count) + b"\x00\xa3\x06test:d\xa3"
        with pytest.raises(DecodeError, match="claims"):
            codec.decode_value(claim)


def test_ulong_descriptor_bomb_in_skip_is_bounded() -> None:
    chain = (b"\x00" + b"\x80" + struct.pack(">Q", 1)) * 10_000 + b"\x40"
    _assert_fails_fast(lambda data: codec.skip_value(data, 0), chain)
    _assert_fails_fast(lambda data: codec.skip_value(data, 0), BOMBS["a million 0x00 descriptors"])
