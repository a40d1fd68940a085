"""AMQP messages: the bare message and its annotations, as sections (spec part 3.2).

Two ways in:

* ``Message``: build a message and ``encode()`` it; ``Message.decode(data)`` parses every
  section.  Used by clients.
* ``read_routing(data)``: what a router needs (``to``, ``reply-to``, ``ttl``,
  ``absolute-expiry-time``, priority, message annotations) read straight from the encoded
  bytes, skipping every field and section it does not need, and never touching the body.
  The router forwards the original bytes.
"""

from __future__ import annotations

from typing import Any

from . import codec
from .codec import _DECODERS, _U8U8, _U32U32, decode_value, skip_value
from .errors import DecodeError
from .spec import Descriptor, Header, Properties
from .types import Symbol

__all__ = ["Message", "Routing", "read_routing", "BODY_DATA", "BODY_VALUE", "BODY_SEQUENCE"]

BODY_DATA = "data"
BODY_VALUE = "value"
BODY_SEQUENCE = "sequence"

_SECTION_NAMES = {
    Symbol("amqp:header:list"): Descriptor.HEADER,
    Symbol("amqp:delivery-annotations:map"): Descriptor.DELIVERY_ANNOTATIONS,
    Symbol("amqp:message-annotations:map"): Descriptor.MESSAGE_ANNOTATIONS,
    Symbol("amqp:properties:list"): Descriptor.PROPERTIES,
    Symbol("amqp:application-properties:map"): Descriptor.APPLICATION_PROPERTIES,
    Symbol("amqp:data:binary"): Descriptor.DATA,
    Symbol("amqp:amqp-sequence:list"): Descriptor.AMQP_SEQUENCE,
    Symbol("amqp:amqp-value:*"): Descriptor.AMQP_VALUE,
    Symbol("amqp:footer:map"): Descriptor.FOOTER,
}
_BODY_SECTIONS = (Descriptor.DATA, Descriptor.AMQP_SEQUENCE, Descriptor.AMQP_VALUE)


def _section_header(code: int) -> bytes:
    return bytes((0x00, 0x53, code))


_H_DELIVERY_ANNOTATIONS = _section_header(Descriptor.DELIVERY_ANNOTATIONS)
_H_MESSAGE_ANNOTATIONS = _section_header(Descriptor.MESSAGE_ANNOTATIONS)
_H_APPLICATION_PROPERTIES = _section_header(Descriptor.APPLICATION_PROPERTIES)
_H_DATA = _section_header(Descriptor.DATA)
_H_SEQUENCE = _section_header(Descriptor.AMQP_SEQUENCE)
_H_VALUE = _section_header(Descriptor.AMQP_VALUE)
_H_FOOTER = _section_header(Descriptor.FOOTER)


def _symbol_keys(annotations: dict[Any, Any]) -> dict[Any, Any]:
    # Annotation keys are symbols (or ulongs); accept plain str for convenience.
    if any(type(k) is str for k in annotations):
        return {Symbol(k) if type(k) is str else k: v for k, v in annotations.items()}
    return annotations


def _read_descriptor(buf: Any, off: int) -> tuple[int, int]:
    """Read a section descriptor at ``off``; return (code, offset of the section's value)."""
    if buf[off] != 0x00:
        raise DecodeError(f"expected a described section at byte {off}, got {buf[off]:#04x}")
    if buf[off + 1] == 0x53:
        return buf[off + 2], off + 3
    descriptor, off = decode_value(buf, off + 1)
    if isinstance(descriptor, int):
        return int(descriptor), off
    code = _SECTION_NAMES.get(descriptor)
    if code is None:
        raise DecodeError(f"unknown message section {descriptor!r}")
    return code, off


class Message:
    """A message: its sections by name, and a body of one of three kinds.

    ``body_type`` is ``"data"`` (``body`` is ``bytes``, or a list of ``bytes`` for several
    data sections), ``"value"`` (one ``amqp-value``: any AMQP value) or ``"sequence"`` (a
    list of ``amqp-sequence`` lists).  Left as ``None`` it is ``"data"`` for bytes and
    ``"value"`` for anything else.
    """

    __slots__ = (
        "header",
        "delivery_annotations",
        "message_annotations",
        "properties",
        "application_properties",
        "body",
        "body_type",
        "footer",
    )

    def __init__(
        self,
        body: Any = None,
        *,
        body_type: str | None = None,
        header: Header | None = None,
        delivery_annotations: dict[Any, Any] | None = None,
        message_annotations: dict[Any, Any] | None = None,
        properties: Properties | None = None,
        application_properties: dict[str, Any] | None = None,
        footer: dict[Any, Any] | None = None,
    ) -> None:
        if body_type is None:
            body_type = BODY_DATA if isinstance(body, (bytes, bytearray, memoryview)) else BODY_VALUE
        if body_type not in (BODY_DATA, BODY_VALUE, BODY_SEQUENCE):
            raise ValueError(f"body_type must be data, value or sequence, not {body_type!r}")
        self.body = body
        self.body_type = body_type
        self.header = header
        self.delivery_annotations = delivery_annotations
        self.message_annotations = message_annotations
        self.properties = properties
        self.application_properties = application_properties
        self.footer = footer

    # Convenience accessors for the properties most code reads.
    @property
    def to(self) -> str | None:
        return self.properties.to if self.properties is not None else None

    @property
    def reply_to(self) -> str | None:
        return self.properties.reply_to if self.properties is not None else None

    @property
    def correlation_id(self) -> Any:
        return self.properties.correlation_id if self.properties is not None else None

    def encode(self) -> bytes:
        out = bytearray()
        self.encode_into(out)
        return bytes(out)

    def encode_into(self, out: bytearray) -> None:
        encode_value = codec.encode_value
        if self.header is not None:
            self.header.encode_into(out)
        if self.delivery_annotations is not None:
            out += _H_DELIVERY_ANNOTATIONS
            encode_value(out, _symbol_keys(self.delivery_annotations))
        if self.message_annotations is not None:
            out += _H_MESSAGE_ANNOTATIONS
            encode_value(out, _symbol_keys(self.message_annotations))
        if self.properties is not None:
            self.properties.encode_into(out)
        if self.application_properties is not None:
            out += _H_APPLICATION_PROPERTIES
            encode_value(out, self.application_properties)
        body = self.body
        if self.body_type == BODY_DATA:
            if isinstance(body, list):
                for chunk in body:
                    out += _H_DATA
                    encode_value(out, chunk)
            else:
                out += _H_DATA
                encode_value(out, b"" if body is None else body)
        elif self.body_type == BODY_SEQUENCE:
            for sequence in body or ([],):
                out += _H_SEQUENCE
                encode_value(out, list(sequence))
        else:
            out += _H_VALUE
            encode_value(out, body)
        if self.footer is not None:
            out += _H_FOOTER
            encode_value(out, _symbol_keys(self.footer))

    @classmethod
    def decode(cls, data: Any) -> "Message":
        """Parse every section of an encoded message; raise ``DecodeError`` if malformed."""
        message = cls()
        message.body_type = BODY_DATA
        data_chunks: list[bytes] = []
        sequences: list[list[Any]] = []
        value_seen = False
        off = 0
        end = len(data)
        try:
            while off < end:
                code, off = _read_descriptor(data, off)
                value, off = decode_value(data, off)
                if code == Descriptor.HEADER:
                    message.header = value if isinstance(value, Header) else Header.from_list(value)
                elif code == Descriptor.PROPERTIES:
                    message.properties = (
                        value if isinstance(value, Properties) else Properties.from_list(value)
                    )
                elif code == Descriptor.DATA:
                    if type(value) is not bytes:
                        raise DecodeError("a data section must hold binary")
                    data_chunks.append(value)
                elif code == Descriptor.AMQP_VALUE:
                    message.body = value
                    message.body_type = BODY_VALUE
                    value_seen = True
                elif code == Descriptor.AMQP_SEQUENCE:
                    if type(value) is not list:
                        raise DecodeError("an amqp-sequence section must hold a list")
                    sequences.append(value)
                elif code in (
                    Descriptor.DELIVERY_ANNOTATIONS,
                    Descriptor.MESSAGE_ANNOTATIONS,
                    Descriptor.APPLICATION_PROPERTIES,
                    Descriptor.FOOTER,
                ):
                    if value is not None and type(value) is not dict:
                        raise DecodeError("annotations and application-properties must be maps")
                    if code == Descriptor.DELIVERY_ANNOTATIONS:
                        message.delivery_annotations = value
                    elif code == Descriptor.MESSAGE_ANNOTATIONS:
                        message.message_annotations = value
                    elif code == Descriptor.APPLICATION_PROPERTIES:
                        message.application_properties = value
                    else:
                        message.footer = value
                else:
                    raise DecodeError(f"unknown message section {code:#04x}")
        except IndexError:
            raise DecodeError("truncated message") from None
        if sum((bool(data_chunks), bool(sequences), value_seen)) > 1:
            raise DecodeError("a message body has sections of more than one kind")
        if data_chunks:
            message.body = data_chunks[0] if len(data_chunks) == 1 else data_chunks
        elif sequences:
            message.body = sequences
            message.body_type = BODY_SEQUENCE
        return message

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in self.__slots__ if getattr(self, name) is not None]
        return f"Message({', '.join(parts)})"


class Routing:
    """What a router reads from a message; everything else stays encoded.

    ``body_offset`` is where the bare message's body sections begin (the message's length
    if it has none).  ``header_end`` and ``annotations_end`` are where the header and the
    message annotations end, so a router can splice in new annotations and forward the
    rest of the bytes untouched.
    """

    __slots__ = (
        "to",
        "reply_to",
        "ttl",
        "absolute_expiry_time",
        "priority",
        "durable",
        "message_annotations",
        "header_end",
        "annotations_start",
        "annotations_end",
        "body_offset",
    )

    def __init__(self) -> None:
        self.to: str | None = None
        self.reply_to: str | None = None
        self.ttl: int | None = None
        self.absolute_expiry_time: int | None = None
        self.priority: int | None = None
        self.durable: bool | None = None
        self.message_annotations: dict[Any, Any] | None = None
        self.header_end = 0
        self.annotations_start = 0
        self.annotations_end = 0
        self.body_offset = 0

    def __repr__(self) -> str:
        return "Routing(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def _list_bounds(buf: Any, off: int) -> tuple[int, int, int]:
    """Return (count, first element offset, end offset) of the list encoded at ``off``."""
    code = buf[off]
    if code == 0xC0:
        size, count = _U8U8.unpack_from(buf, off + 1)
        return count, off + 3, off + 2 + size
    if code == 0xD0:
        size, count = _U32U32.unpack_from(buf, off + 1)
        return count, off + 9, off + 5 + size
    if code == 0x45:
        return 0, off + 1, off + 1
    raise DecodeError(f"expected a list, got constructor {code:#04x}")


def _address(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise DecodeError(f"an address must be a string, got {type(value).__name__}")


def read_routing(buf: Any) -> Routing:
    """Read the routing fields of an encoded message without decoding its body.

    Raises ``DecodeError`` if the sections it reads are malformed.
    """
    routing = Routing()
    off = 0
    end = len(buf)
    try:
        while off < end:
            start = off
            code, off = _read_descriptor(buf, off)
            if code in _BODY_SECTIONS:
                routing.body_offset = start
                return routing
            if code == Descriptor.PROPERTIES:
                count, item, list_end = _list_bounds(buf, off)
                # message-id, user-id, to, subject, reply-to, correlation-id, content-type,
                # content-encoding, absolute-expiry-time: stop after the ninth field.
                for index in range(min(count, 9)):
                    constructor = buf[item]
                    if index == 2 and constructor != 0x40:
                        value, item = _DECODERS[constructor](buf, item + 1, 1)
                        routing.to = _address(value)
                    elif index == 4 and constructor != 0x40:
                        value, item = _DECODERS[constructor](buf, item + 1, 1)
                        routing.reply_to = _address(value)
                    elif index == 8 and constructor == 0x83:
                        value, item = _DECODERS[constructor](buf, item + 1, 1)
                        routing.absolute_expiry_time = int(value)
                    else:
                        item = skip_value(buf, item)
                if list_end > end:
                    raise DecodeError("truncated properties section")
                off = list_end
            elif code == Descriptor.HEADER:
                count, item, list_end = _list_bounds(buf, off)
                # durable, priority, ttl: the first three fields.
                for index in range(min(count, 3)):
                    constructor = buf[item]
                    if constructor == 0x40:
                        item += 1
                        continue
                    value, item = _DECODERS[constructor](buf, item + 1, 1)
                    if index == 0:
                        routing.durable = value is True
                    elif index == 1:
                        routing.priority = int(value)
                    else:
                        routing.ttl = int(value)
                if list_end > end:
                    raise DecodeError("truncated header section")
                off = list_end
                routing.header_end = off
            elif code == Descriptor.MESSAGE_ANNOTATIONS:
                routing.annotations_start = start
                value, off = decode_value(buf, off)
                if value is not None and type(value) is not dict:
                    raise DecodeError("message-annotations must be a map")
                routing.message_annotations = value
                routing.annotations_end = off
            else:
                off = skip_value(buf, off)
                if code == Descriptor.DELIVERY_ANNOTATIONS:
                    routing.header_end = off
    except IndexError:
        raise DecodeError("truncated message") from None
    except Exception as exc:  # struct.error and friends from a hostile message
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"malformed message: {exc}") from None
    routing.body_offset = end
    return routing
