"""Protocol headers and frames (spec part 2.2 and 2.3): delimiting bytes into frames.

A frame is a 4-byte size, a data offset (in 4-byte words), a type (0 AMQP, 1 SASL), a
2-byte channel, optional extended header, then the body: one performative and, for a
transfer, the payload.  ``FrameReader`` accumulates bytes and hands out complete frames;
it deletes the consumed prefix once per batch (amortised O(1)), never per frame.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from .errors import FramingError

__all__ = [
    "AMQP_HEADER",
    "SASL_HEADER",
    "FRAME_AMQP",
    "FRAME_SASL",
    "MIN_MAX_FRAME_SIZE",
    "EMPTY_FRAME",
    "FrameReader",
    "frame_header",
]

AMQP_HEADER: Final = b"AMQP\x00\x01\x00\x00"
SASL_HEADER: Final = b"AMQP\x03\x01\x00\x00"
FRAME_AMQP: Final = 0
FRAME_SASL: Final = 1
MIN_MAX_FRAME_SIZE: Final = 512
EMPTY_FRAME: Final = b"\x00\x00\x00\x08\x02\x00\x00\x00"
"""An AMQP frame with no body: what a peer sends to keep an idle connection alive."""

_FRAME_HEADER: Final = struct.Struct(">IBBH")


def frame_header(size: int, frame_type: int, channel: int) -> bytes:
    """The 8-byte header of a frame of ``size`` bytes in all (doff 2, no extended header)."""
    return _FRAME_HEADER.pack(size, 2, frame_type, channel)


_COMPACT_AT: Final = 256 * 1024
"""Consumed bytes after which ``feed`` compacts even in the middle of a batch."""


class FrameReader:
    """Incremental frame delimiter over received bytes.

    ``feed(data)`` then call ``next_frame()`` for ``(frame_type, channel, body)`` tuples
    until it returns None; a frame with an empty body is a heartbeat (body ``b""``).  The
    protocol header is read separately with ``read_header()``, because SASL switches from
    frames back to a header once in a connection's life.
    """

    __slots__ = ("_buf", "_pos", "max_frame_size")

    def __init__(self, max_frame_size: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_frame_size = max_frame_size

    def feed(self, data: Any) -> None:
        if self._pos >= _COMPACT_AT:
            # Input is being handled a budget at a time (compact() waits for the end of a
            # batch): drop the consumed prefix now, or the buffer would only ever grow.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._buf) - self._pos

    def read_header(self) -> bytes | None:
        """Consume and return the 8-byte protocol header, or None if it has not all arrived."""
        if len(self._buf) - self._pos < 8:
            return None
        header = bytes(self._buf[self._pos : self._pos + 8])
        self._pos += 8
        return header

    def next_frame(self) -> tuple[int, int, bytes] | None:
        """Consume and return the next complete frame, or None if it has not all arrived.

        Raises ``FramingError`` for a frame whose size or data offset is impossible or
        larger than ``max_frame_size``.  Call ``compact()`` after each batch.
        """
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 8:
            return None
        size, doff, frame_type, channel = _FRAME_HEADER.unpack_from(buf, pos)
        if size > self.max_frame_size:
            raise FramingError(
                f"frame of {size} bytes exceeds the maximum frame size {self.max_frame_size}"
            )
        body_start = doff * 4
        if size < 8 or body_start < 8 or body_start > size:
            raise FramingError(f"malformed frame header (size {size}, data offset {doff})")
        if available < size:
            return None
        self._pos = pos + size
        return frame_type, channel, bytes(buf[pos + body_start : pos + size])

    @property
    def consumed(self) -> bool:
        """A whole header or frame was taken since the last ``compact()``."""
        return self._pos > 0

    def compact(self) -> bool:
        """Drop consumed bytes; called once per batch of frames.  True if any were: a
        whole header or frame arrived since the last call."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
            return True
        return False
