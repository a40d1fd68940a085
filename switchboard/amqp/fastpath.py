"""Specialised codec for the common transfer, disposition and flow performatives.

A router forwards one transfer in and one out per message, and nearly all of them have
the same shape: handle, delivery-id, an 8-byte tag, message-format 0, settled, and
nothing else.  ``read_transfer`` reads that shape straight from a frame body and
``write_transfer`` writes it straight into the output buffer, without the generic
``decode_value``/``Transfer.from_list`` and ``Transfer``/``encode_into`` round trips.

Both are strictly narrower than the generic codec: ``read_transfer`` returns None for
anything it does not recognise (an unexpected constructor, a field the engine would act
on such as ``state``, a truncated or inconsistent body), and the caller then takes the
generic path, which judges the input exactly as before.  The values it returns are the
ones the generic decoder would give, with the same types.  ``write_transfer`` produces
the same bytes as ``Transfer(...).encode_into`` for the fields it is given.

Dispositions and flows get the same treatment (``read_disposition``, ``read_flow``,
``write_disposition_frame``, ``write_flow_frame``): under load they come as ranges and
are rare, but with one request in flight each message brings its own, and the generic
codec then costs more per round trip than the transfers do.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from .delivery import ACCEPTED, RELEASED
from .spec import Accepted, Released

__all__ = [
    "TRANSFER_HEAD", "TRANSFER_OVERHEAD", "MAX_FAST_TAG", "read_transfer", "transfer_prefix", "write_transfer_fields",
    "DISPOSITION_HEAD", "FLOW_HEAD", "read_disposition", "read_flow", "fast_state", "write_disposition_frame",
    "write_flow_frame",
]

TRANSFER_HEAD: Final = b"\x00\x53\x14"
"""A described value with the small-ulong descriptor of ``amqp:transfer:list``."""

_U32: Final = struct.Struct(">I")
_unpack_u32: Final = _U32.unpack_from
_pack_u32: Final = _U32.pack
_U32U32: Final = struct.Struct(">II")
_FAST_ERRORS: Final = (IndexError, struct.error)

TRANSFER_OVERHEAD: Final = 8 + 64
"""Frame header plus a generous bound on an encoded transfer performative (without tag)."""

MAX_FAST_TAG: Final = 200
"""Longest tag ``write_transfer_fields`` takes: the performative then always fits a list8."""


def _list_start(body: bytes) -> tuple[int, int, int]:
    """(end, count, offset of the first field) of the list after a 3-byte descriptor;
    end -1: not a list8/list32, or longer than ``body``."""
    c = body[3]
    if c == 0xC0:
        end = 5 + body[4]
        count = body[5]
        p = 6
    elif c == 0xD0:
        size, count = _U32U32.unpack_from(body, 4)
        end = 8 + size
        p = 12
    else:
        return -1, 0, 0
    if end > len(body):
        return -1, 0, 0
    return end, count, p


def _read_uint(body: bytes, p: int) -> tuple[int, int]:
    """(value, next offset) of a uint0/smalluint/uint/null at ``p``; value -1 for null,
    -2 for any other constructor."""
    c = body[p]
    if c == 0x52:
        return body[p + 1], p + 2
    if c == 0x43:
        return 0, p + 1
    if c == 0x70:
        return _unpack_u32(body, p + 1)[0], p + 5
    if c == 0x40:
        return -1, p + 1
    return -2, p


def read_transfer(body: bytes) -> tuple[Any, ...] | None:
    """Read a transfer performative at the start of ``body``.

    Returns ``(handle, delivery_id, delivery_tag, message_format, settled, more, aborted,
    end)`` with ``end`` the offset of the payload (the numbers as plain ints), or None
    when the generic decoder must judge the body: any shape other than handle/delivery-id/message-format as
    uint0/smalluint/uint, tag as vbin8/vbin32, booleans as true/false (or null), with
    rcv-settle-mode, state null and resume, batchable null or false.
    """
    try:
        end, count, p = _list_start(body)
        if end < 0 or not 0 < count <= 11:
            return None
        handle, p = _read_uint(body, p)
        if handle < 0:
            return None  # null (a missing mandatory field) or a wrong type
        delivery_id: int | None = None
        message_format: int | None = None
        tag = settled = None
        more = aborted = False
        if count > 1:
            value, p = _read_uint(body, p)
            if value == -2:
                return None
            if value >= 0:
                delivery_id = value
        if count > 2:
            c = body[p]
            if c == 0xA0:
                start = p + 2
                p = start + body[p + 1]
                tag = body[start:p]
            elif c == 0xB0:
                start = p + 5
                p = start + _unpack_u32(body, p + 1)[0]
                tag = body[start:p]
            elif c == 0x40:
                p += 1
            else:
                return None
            if p > end:
                return None
        if count > 3:
            value, p = _read_uint(body, p)
            if value == -2:
                return None
            if value >= 0:
                message_format = value
        if count > 4:
            c = body[p]
            if c == 0x42:
                settled = False
            elif c == 0x41:
                settled = True
            elif c != 0x40:
                return None
            p += 1
        if count > 5:
            c = body[p]
            if c == 0x41:
                more = True
            elif c != 0x42 and c != 0x40:
                return None
            p += 1
            if count > 6:
                # rcv-settle-mode, state: the generic path takes anything but null.
                if body[p] != 0x40:
                    return None
                p += 1
                if count > 7:
                    if body[p] != 0x40:
                        return None
                    p += 1
                    if count > 8:
                        c = body[p]  # resume
                        if c != 0x40 and c != 0x42:
                            return None
                        p += 1
                        if count > 9:
                            c = body[p]
                            if c == 0x41:
                                aborted = True
                            elif c != 0x42 and c != 0x40:
                                return None
                            p += 1
                            if count > 10:
                                c = body[p]  # batchable
                                if c != 0x40 and c != 0x42:
                                    return None
                                p += 1
        if p != end:
            return None
    except _FAST_ERRORS:
        return None
    return handle, delivery_id, tag, message_format, settled, more, aborted, end


def _uint(value: int) -> bytes:
    if value == 0:
        return b"\x43"
    if value < 256:
        return bytes((0x52, value))
    return b"\x70" + _pack_u32(value)


def transfer_prefix(channel: int, handle: int) -> bytes:
    """A link's cached frame prefix: 8-byte frame header (size 0, to be patched), the
    transfer descriptor, a list8 header (size 0, to be patched; 5 fields) and the handle."""
    return (
        b"\x00\x00\x00\x00\x02\x00" + channel.to_bytes(2, "big")
        + b"\x00\x53\x14\xc0\x00\x05" + _uint(handle)
    )


_ID32_TAG8: Final = struct.Struct(">BIBB")
"""delivery-id as a uint, then the tag's vbin8 constructor and length."""
_FORMAT32_SETTLED: Final = struct.Struct(">BIB")
_FORMAT0_SETTLED: Final = b"\x43\x41"
"""message-format 0 (uint0), settled true."""
_FORMAT0_UNSETTLED: Final = b"\x43\x42"


def write_transfer_fields(
    out: bytearray, prefix: bytes, delivery_id: int, tag: bytes, message_format: int, settled: Any
) -> int:
    """Append a transfer frame up to its payload (prefix, delivery-id, tag, format,
    settled) to ``out``; return where the frame starts, for the caller to patch its size.

    The caller guarantees ``0 <= message_format <= 0xFFFFFFFF`` and ``len(tag) <=
    MAX_FAST_TAG``: the bytes are then those of ``Transfer(...).encode_into``.
    """
    start = len(out)
    out += prefix
    # A few joined writes rather than a byte at a time: this runs for every transfer.
    length = len(tag)
    if delivery_id >= 256:
        out += _ID32_TAG8.pack(0x70, delivery_id, 0xA0, length)
    elif delivery_id:
        out += bytes((0x52, delivery_id, 0xA0, length))
    else:
        out += bytes((0x43, 0xA0, length))
    out += tag
    if message_format == 0:
        out += _FORMAT0_SETTLED if settled else _FORMAT0_UNSETTLED
    elif message_format < 256:
        out += bytes((0x52, message_format, 0x41 if settled else 0x42))
    else:
        out += _FORMAT32_SETTLED.pack(0x70, message_format, 0x41 if settled else 0x42)
    # The list8 size counts the bytes after it: from the count byte to the end.
    out[start + 12] = len(out) - start - 13
    return start


# -- dispositions and flows ------------------------------------------------------------
# With one message in flight, every message brings its own disposition each way and a
# flow or two (nothing to coalesce them into ranges): the generic codec's cost, small per
# message under load, is then a large share of a request's round trip.

DISPOSITION_HEAD: Final = b"\x00\x53\x15"
"""A described value with the small-ulong descriptor of ``amqp:disposition:list``."""
FLOW_HEAD: Final = b"\x00\x53\x13"
"""A described value with the small-ulong descriptor of ``amqp:flow:list``."""

_ACCEPTED_LIST0: Final = b"\x00\x53\x24\x45"
_RELEASED_LIST0: Final = b"\x00\x53\x26\x45"
_ACCEPTED_LIST8: Final = b"\x00\x53\x24\xc0\x01\x00"
_RELEASED_LIST8: Final = b"\x00\x53\x26\xc0\x01\x00"


def read_disposition(body: bytes) -> tuple[Any, ...] | None:
    """Read a disposition performative at the start of ``body``.

    Returns ``(role, first, last, settled, state)``, ``last`` None when absent and
    ``state`` None, ``ACCEPTED`` or ``RELEASED`` (the shared instances: neither has
    fields), or None when the generic decoder must judge the body: any field of another
    type, any other state, more than the six fields the spec defines.  ``first`` and
    ``last`` are plain ints: the engine only counts with them.
    """
    try:
        end, count, p = _list_start(body)
        if end < 0 or not 2 <= count <= 6:
            return None
        c = body[p]
        if c == 0x41:
            role = True
        elif c == 0x42:
            role = False
        else:
            return None
        first, p = _read_uint(body, p + 1)
        if first < 0:
            return None  # null (a missing mandatory field) or a wrong type
        last: int | None = None
        settled = False
        state: Any = None
        if count > 2:
            value, p = _read_uint(body, p)
            if value == -2:
                return None
            if value >= 0:
                last = value
        if count > 3:
            c = body[p]
            if c == 0x41:
                settled = True
            elif c != 0x42 and c != 0x40:
                return None
            p += 1
        if count > 4:
            c = body[p]
            if c == 0x40:
                p += 1
            elif body.startswith(_ACCEPTED_LIST0, p):
                state = ACCEPTED
                p += 4
            elif body.startswith(_RELEASED_LIST0, p):
                state = RELEASED
                p += 4
            elif body.startswith(_ACCEPTED_LIST8, p):
                state = ACCEPTED
                p += 6
            elif body.startswith(_RELEASED_LIST8, p):
                state = RELEASED
                p += 6
            else:
                return None
        if count > 5:
            c = body[p]  # batchable: a hint, nothing to act on
            if c != 0x40 and c != 0x41 and c != 0x42:
                return None
            p += 1
        if p != end:
            return None
    except _FAST_ERRORS:
        return None
    return role, first, last, settled, state


def read_flow(body: bytes) -> tuple[Any, ...] | None:
    """Read a flow performative at the start of ``body``.

    Returns ``(next_incoming_id, incoming_window, next_outgoing_id, outgoing_window,
    handle, delivery_count, link_credit, available, drain, echo)``, the numbers as plain
    ints or None when null or absent, or None when the generic decoder must judge the
    body: a number of another type, a null mandatory field, any properties.
    """
    try:
        end, count, p = _list_start(body)
        if end < 0 or not 4 <= count <= 11:
            return None
        numbers: list[int | None] = [None, None, None, None, None, None, None, None]
        for i in range(min(count, 8)):
            value, p = _read_uint(body, p)
            if value == -2 or (value == -1 and 1 <= i <= 3):
                return None
            if value >= 0:
                numbers[i] = value
        drain = echo = False
        if count > 8:
            c = body[p]
            if c == 0x41:
                drain = True
            elif c != 0x42 and c != 0x40:
                return None
            p += 1
        if count > 9:
            c = body[p]
            if c == 0x41:
                echo = True
            elif c != 0x42 and c != 0x40:
                return None
            p += 1
        if count > 10:
            if body[p] != 0x40:
                return None  # properties: the generic path reads them
            p += 1
        if p != end:
            return None
    except _FAST_ERRORS:
        return None
    return (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4], numbers[5], numbers[6],
            numbers[7], drain, echo)


_BYTES: Final = [bytes((i,)) for i in range(256)]
_SMALL_UINTS: Final = [b"\x43"] + [bytes((0x52, i)) for i in range(1, 256)]


def _uint_bytes(value: int) -> bytes:
    """A uint's shortest encoding, as _e_uint writes it."""
    # An int, not an optional one: the compiled code then compares and indexes natively.
    if value < 256:
        return _SMALL_UINTS[value]
    return b"\x70" + _pack_u32(value)


def _channel_bytes(channel: int) -> bytes:
    if channel < 256:
        return b"\x00" + _BYTES[channel]
    return channel.to_bytes(2, "big")


def fast_state(state: Any) -> bool:
    """``write_disposition_frame`` can write ``state`` (none, accepted or released)."""
    return state is None or type(state) is Accepted or type(state) is Released


def write_disposition_frame(
    out: bytearray, channel: int, role: bool, first: int, last: int | None, settled: bool, state: Any
) -> None:
    """Append a whole disposition frame to ``out``: the bytes of ``Disposition(...)`` in
    ``Connection._write_frame``, for ``first``/``last`` in 0..2**32-1 and a state that
    ``fast_state`` accepts."""
    # Built as parts and joined: one append to ``out``, where byte-by-byte appends
    # would each be a method call.
    fields = [b"\x41" if role else b"\x42", _uint_bytes(first)]
    if state is not None or settled or last is not None:
        fields.append(b"\x40" if last is None else _uint_bytes(last))
        if state is not None or settled:
            fields.append(b"\x41" if settled else b"\x42")
            if state is not None:
                fields.append(_ACCEPTED_LIST0 if type(state) is Accepted else _RELEASED_LIST0)
    _append_frame(out, channel, DISPOSITION_HEAD, fields)


def _append_frame(out: bytearray, channel: int, descriptor: bytes, fields: list[bytes]) -> None:
    """Append a frame whose body is ``descriptor`` and a list8 of ``fields``, encoded."""
    body = b"".join(fields)
    size = len(body) + 1  # the list8 size counts the count byte too
    out += b"".join([
        b"\x00\x00\x00", _BYTES[size + 13], b"\x02\x00", _channel_bytes(channel), descriptor, b"\xc0",
        _BYTES[size], _BYTES[len(fields)], body,
    ])


def write_flow_frame(
    out: bytearray,
    channel: int,
    next_incoming_id: int | None,
    incoming_window: int,
    next_outgoing_id: int,
    outgoing_window: int,
    handle: int | None,
    delivery_count: int | None,
    link_credit: int | None,
    available: int | None,
    drain: bool,
) -> None:
    """Append a whole flow frame (echo false, no properties) to ``out``: the bytes of
    ``Flow(...)`` in ``Connection._write_frame``, for numbers in 0..2**32-1."""
    fields = [
        b"\x40" if next_incoming_id is None else _uint_bytes(next_incoming_id), _uint_bytes(incoming_window),
        _uint_bytes(next_outgoing_id), _uint_bytes(outgoing_window),
    ]
    # Trailing nulls and a false drain are left out, as the generic encoder does.
    if handle is not None or delivery_count is not None or link_credit is not None or available is not None or drain:
        fields.append(b"\x40" if handle is None else _uint_bytes(handle))
        if delivery_count is not None or link_credit is not None or available is not None or drain:
            fields.append(b"\x40" if delivery_count is None else _uint_bytes(delivery_count))
            if link_credit is not None or available is not None or drain:
                fields.append(b"\x40" if link_credit is None else _uint_bytes(link_credit))
                if available is not None or drain:
                    fields.append(b"\x40" if available is None else _uint_bytes(available))
                    if drain:
                        fields.append(b"\x41")
    _append_frame(out, channel, FLOW_HEAD, fields)
