"""Specialised codec for the common transfer performative (the per-message hot path).

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
"""

from __future__ import annotations

import struct
from typing import Any, Final


__all__ = ["TRANSFER_HEAD", "TRANSFER_OVERHEAD", "MAX_FAST_TAG", "read_transfer", "transfer_prefix", "write_transfer_fields"]

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


def read_transfer(body: bytes) -> tuple[Any, ...] | None:
    """Read a transfer performative at the start of ``body``.

    Returns ``(handle, delivery_id, delivery_tag, message_format, settled, more, aborted,
    end)`` with ``end`` the offset of the payload (the numbers as plain ints), or None when the generic decoder must
    judge the body: any shape other than handle/delivery-id/message-format as
    uint0/smalluint/uint, tag as vbin8/vbin32, booleans as true/false (or null), with
    rcv-settle-mode, state null and resume, batchable null or false.
    """
    try:
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
            return None
        if end > len(body) or not 0 < count <= 11:
            return None
        c = body[p]
        if c == 0x52:
            handle = body[p + 1]
            p += 2
        elif c == 0x43:
            handle = 0
            p += 1
        elif c == 0x70:
            handle = _unpack_u32(body, p + 1)[0]
            p += 5
        else:
            return None  # null (a missing mandatory field) or a wrong type
        delivery_id = tag = message_format = settled = None
        more = aborted = False
        if count > 1:
            c = body[p]
            if c == 0x52:
                delivery_id = body[p + 1]
                p += 2
            elif c == 0x70:
                delivery_id = _unpack_u32(body, p + 1)[0]
                p += 5
            elif c == 0x43:
                delivery_id = 0
                p += 1
            elif c == 0x40:
                p += 1
            else:
                return None
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
            c = body[p]
            if c == 0x43:
                message_format = 0
                p += 1
            elif c == 0x52:
                message_format = body[p + 1]
                p += 2
            elif c == 0x70:
                message_format = _unpack_u32(body, p + 1)[0]
                p += 5
            elif c == 0x40:
                p += 1
            else:
                return None
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
    if delivery_id < 256:
        if delivery_id:
            out.append(0x52)
            out.append(delivery_id)
        else:
            out.append(0x43)
    else:
        out.append(0x70)
        out += _pack_u32(delivery_id)
    out.append(0xA0)
    out.append(len(tag))
    out += tag
    if message_format == 0:
        out.append(0x43)
    elif message_format < 256:
        out.append(0x52)
        out.append(message_format)
    else:
        out.append(0x70)
        out += _pack_u32(message_format)
    out.append(0x41 if settled else 0x42)
    # The list8 size counts the bytes after it: from the count byte to the end.
    out[start + 12] = len(out) - start - 13
    return start
