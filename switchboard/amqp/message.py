"""AMQP messages: the bare message and its annotations, as sections (spec part 3.2).

Two ways in:

* ``Message``: build a message and ``encode()`` it; ``Message.decode(data)`` parses every
  section.  Used by clients.
* ``read_routing(data)``: what a router needs (``to``, ``reply-to``, ``ttl``,
  ``absolute-expiry-time``, priority, durable, message annotations) read straight from
  the encoded bytes, skipping every field and section it does not need, and never
  touching the body.  The router forwards the original bytes.

Sections come in the spec's order, which is also the order of their descriptor codes:
header (0x70), delivery-annotations, message-annotations, properties,
application-properties, the body (one or more data 0x75, one or more amqp-sequence 0x76,
or one amqp-value 0x77), footer (0x78).  Anything else is a ``DecodeError``.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from . import codec
from .codec import _DECODERS, _I64, _U32, _U32U32, TRUNCATION_ERRORS, skip_unchecked
from .errors import DecodeError
from .spec import Descriptor, Header, Properties
from .types import Symbol, ULong

__all__ = [
    "Message", "Routing", "read_routing", "message_annotations_section", "with_message_annotations", "with_redelivery", "BODY_DATA", "BODY_VALUE", "BODY_SEQUENCE",
]

BODY_DATA: Final = "data"
BODY_VALUE: Final = "value"
BODY_SEQUENCE: Final = "sequence"

_HEADER: Final = 0x70  # Descriptor.HEADER
_DELIVERY_ANNOTATIONS: Final = 0x71  # Descriptor.DELIVERY_ANNOTATIONS
_MESSAGE_ANNOTATIONS: Final = 0x72  # Descriptor.MESSAGE_ANNOTATIONS
_PROPERTIES: Final = 0x73  # Descriptor.PROPERTIES
_APPLICATION_PROPERTIES: Final = 0x74  # Descriptor.APPLICATION_PROPERTIES
_DATA: Final = 0x75  # Descriptor.DATA
_AMQP_SEQUENCE: Final = 0x76  # Descriptor.AMQP_SEQUENCE
_AMQP_VALUE: Final = 0x77  # Descriptor.AMQP_VALUE
_FOOTER: Final = 0x78  # Descriptor.FOOTER
_FIRST_SECTION: Final = 0x70  # Descriptor.HEADER
_LAST_SECTION: Final = 0x78  # Descriptor.FOOTER

_SECTION_NAMES: Final = {
    Symbol("amqp:header:list"): _HEADER,
    Symbol("amqp:delivery-annotations:map"): _DELIVERY_ANNOTATIONS,
    Symbol("amqp:message-annotations:map"): _MESSAGE_ANNOTATIONS,
    Symbol("amqp:properties:list"): _PROPERTIES,
    Symbol("amqp:application-properties:map"): _APPLICATION_PROPERTIES,
    Symbol("amqp:data:binary"): _DATA,
    Symbol("amqp:amqp-sequence:list"): _AMQP_SEQUENCE,
    Symbol("amqp:amqp-value:*"): _AMQP_VALUE,
    Symbol("amqp:footer:map"): _FOOTER,
}

# Message and Routing fields from annotations and application properties are maps (or, by
# a lenient reading of peers that send an empty section as null, None).
_MAP_SECTION_NAMES: Final = {
    _DELIVERY_ANNOTATIONS: "delivery-annotations",
    _MESSAGE_ANNOTATIONS: "message-annotations",
    _APPLICATION_PROPERTIES: "application-properties",
    _FOOTER: "footer",
}


def _section_header(code: int) -> bytes:
    return bytes((0x00, 0x53, code))


_H_DELIVERY_ANNOTATIONS: Final = _section_header(_DELIVERY_ANNOTATIONS)
_H_MESSAGE_ANNOTATIONS: Final = _section_header(_MESSAGE_ANNOTATIONS)
_H_APPLICATION_PROPERTIES: Final = _section_header(_APPLICATION_PROPERTIES)
_H_DATA: Final = _section_header(_DATA)
_H_SEQUENCE: Final = _section_header(_AMQP_SEQUENCE)
_H_VALUE: Final = _section_header(_AMQP_VALUE)
_H_FOOTER: Final = _section_header(_FOOTER)


def _symbol_keys(annotations: dict[Any, Any]) -> dict[Any, Any]:
    # Annotation keys are symbols (or ulongs); accept plain str for convenience.
    if any(type(k) is str for k in annotations):
        return {Symbol(k) if type(k) is str else k: v for k, v in annotations.items()}
    return annotations


def _misplaced(code: int, previous: int) -> DecodeError:
    if not _FIRST_SECTION <= code <= _LAST_SECTION:
        return DecodeError(f"unknown message section {code:#x}")
    return DecodeError(f"message section {code:#x} follows section {previous:#x}: out of order")


def _section_descriptor(buf: Any, off: int) -> tuple[int, int]:
    """Read a section descriptor at ``off``; return (code, offset of the section's value).

    Every section is described by a small ulong in practice (0x00 0x53 code), and the hot
    paths test for that inline; this is the general case: a ulong in any width, or the
    section's symbolic name.
    """
    if buf[off] != 0x00:
        raise DecodeError(f"expected a described section at byte {off}, got {buf[off]:#04x}")
    descriptor, off = _DECODERS[buf[off + 1]](buf, off + 2, 1)
    if type(descriptor) is ULong:
        code = int(descriptor)
    elif type(descriptor) is Symbol and descriptor in _SECTION_NAMES:
        code = _SECTION_NAMES[descriptor]
    else:
        raise DecodeError(f"unknown message section {descriptor!r}")
    if not _FIRST_SECTION <= code <= _LAST_SECTION:
        raise DecodeError(f"unknown message section {code:#x}")
    return code, off


# A message's attributes, named here because a compiled class has no ``__slots__`` to read.
_MESSAGE_FIELDS: Final = (
    "header",
    "delivery_annotations",
    "message_annotations",
    "properties",
    "application_properties",
    "body",
    "body_type",
    "footer",
)


class Message:
    """A message: its sections by name, and a body of one of three kinds.

    ``body_type`` is ``"data"`` (``body`` is ``bytes``, or a list of ``bytes`` for several
    data sections), ``"value"`` (one ``amqp-value``: any AMQP value) or ``"sequence"`` (a
    list of ``amqp-sequence`` lists).  Left as ``None`` it is ``"data"`` for bytes and
    ``"value"`` for anything else.
    """

    __slots__ = _MESSAGE_FIELDS

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
            sequence: Any
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
        header = delivery_annotations = message_annotations = properties = None
        application_properties = footer = body = None
        body_type = BODY_DATA
        data_chunks: list[bytes] = []
        sequences: list[list[Any]] = []
        previous = _FIRST_SECTION - 1
        off = 0
        end = len(data)
        try:
            while off < end:
                if data[off] == 0x00 and data[off + 1] == 0x53:
                    code = data[off + 2]
                    off += 3
                else:
                    code, off = _section_descriptor(data, off)
                if not previous < code <= _LAST_SECTION and not (
                    code == previous and (code == _DATA or code == _AMQP_SEQUENCE)
                ):
                    raise _misplaced(code, previous)
                if _DATA <= code <= _AMQP_VALUE and _DATA <= previous <= _AMQP_VALUE and code != previous:
                    raise DecodeError("a message body has sections of more than one kind")
                previous = code
                value, off = _DECODERS[data[off]](data, off + 1, 1)
                if code == _PROPERTIES:
                    properties = Properties.from_list(value)
                elif code == _DATA:
                    if type(value) is not bytes:
                        raise DecodeError("a data section must hold binary")
                    data_chunks.append(value)
                elif code == _APPLICATION_PROPERTIES:
                    if value is not None and type(value) is not dict:
                        raise DecodeError("application-properties must be a map")
                    application_properties = value
                elif code == _HEADER:
                    header = Header.from_list(value)
                elif code == _MESSAGE_ANNOTATIONS:
                    if value is not None and type(value) is not dict:
                        raise DecodeError("message-annotations must be a map")
                    message_annotations = value
                elif code == _AMQP_VALUE:
                    body = value
                    body_type = BODY_VALUE
                elif code == _AMQP_SEQUENCE:
                    if type(value) is not list:
                        raise DecodeError("an amqp-sequence section must hold a list")
                    sequences.append(value)
                elif code == _DELIVERY_ANNOTATIONS:
                    if value is not None and type(value) is not dict:
                        raise DecodeError("delivery-annotations must be a map")
                    delivery_annotations = value
                else:
                    if value is not None and type(value) is not dict:
                        raise DecodeError("footer must be a map")
                    footer = value
        except TRUNCATION_ERRORS:
            raise DecodeError("truncated message") from None
        except RecursionError:
            raise DecodeError("values nested too deeply") from None
        if off != end:
            raise DecodeError(f"message's last section ends at {off}, past its {end} bytes")
        if data_chunks:
            body = data_chunks[0] if len(data_chunks) == 1 else data_chunks
        elif sequences:
            body = sequences
            body_type = BODY_SEQUENCE
        return cls(
            body,
            body_type=body_type,
            header=header,
            delivery_annotations=delivery_annotations,
            message_annotations=message_annotations,
            properties=properties,
            application_properties=application_properties,
            footer=footer,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _MESSAGE_FIELDS)

    def __repr__(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in _MESSAGE_FIELDS if getattr(self, name) is not None]
        return f"Message({', '.join(parts)})"


class Routing(NamedTuple):
    """What a router reads from a message; everything else stays encoded.

    ``ttl`` and ``absolute_expiry_time`` are milliseconds (a duration and a time since the
    epoch).  ``durable`` and ``priority`` are None when the header leaves them out, as
    are the other fields when their section or field is absent.

    ``body_offset`` is where the bare message's body sections begin (the message's length
    if it has none).  ``header_end`` is where the header and delivery annotations end, and
    ``annotations_start``/``annotations_end`` delimit the message annotations section (both
    equal to ``header_end`` when there is none), so a router can splice in new annotations
    and forward the rest of the bytes untouched.

    ``subject`` is the properties' subject when it is a string (RPC requests name their
    method there); a subject that is not valid UTF-8 is read with replacement characters.
    """

    to: str | None
    reply_to: str | None
    ttl: int | None
    absolute_expiry_time: int | None
    priority: int | None
    durable: bool | None
    message_annotations: dict[Any, Any] | None
    header_end: int
    annotations_start: int
    annotations_end: int
    body_offset: int
    subject: str | None = None


# A router makes one Routing per message: read_routing builds the tuple directly (fields in
# declaration order), skipping the keyword handling of the generated Routing.__new__.
_new_routing: Final = tuple.__new__


def _list_header(buf: Any, off: int, end: int, section: str) -> tuple[int, int, int]:
    """(element count, first element offset, end offset) of the list at ``off``."""
    code = buf[off]
    if code == 0xC0:
        count = buf[off + 2]
        first = off + 3
        list_end = off + 2 + buf[off + 1]
    elif code == 0xD0:
        size, count = _U32U32.unpack_from(buf, off + 1)
        first = off + 9
        list_end = off + 5 + size
    elif code == 0x45:
        return 0, off + 1, off + 1
    else:
        raise DecodeError(f"the {section} section must be a list, got constructor {code:#04x}")
    if list_end > end:
        raise DecodeError(f"truncated {section} section")
    return count, first, list_end


def _read_address(buf: Any, off: int) -> tuple[str | None, int]:
    code = buf[off]
    if code == 0xA1:  # str8, the usual form, decoded inline
        end = off + 2 + buf[off + 1]
        text = buf[off + 2 : end]
        # bytes.decode() takes half the time of str(text, "utf-8"); memoryviews lack it.
        return (text.decode() if type(text) is not memoryview else str(text, "utf-8")), end
    if code == 0x40:
        return None, off + 1
    value, off = _DECODERS[code](buf, off + 1, 1)
    if not isinstance(value, str):
        raise DecodeError(f"an address must be a string, got {type(value).__name__}")
    return value, off


def _read_routing_properties(buf: Any, off: int, end: int) -> tuple[Any, Any, Any, Any, int]:
    """(to, subject, reply-to, absolute-expiry-time, end of section) from the properties
    at ``off``.

    The fields are message-id, user-id, to, subject, reply-to, correlation-id,
    content-type, content-encoding, absolute-expiry-time, ...: skip to the third, read
    the fourth and fifth, skip to the ninth, and stop.
    """
    count, item, list_end = _list_header(buf, off, end, "properties")
    to = subject = reply_to = expiry = None
    if count > 2:
        to, item = _read_address(buf, skip_unchecked(buf, skip_unchecked(buf, item)))
        if count > 3:
            code = buf[item]
            if code == 0x40:
                item += 1
            elif code == 0xA1:
                subject_end = item + 2 + buf[item + 1]
                text = buf[item + 2 : subject_end]
                subject = text.decode("utf-8", "replace") if type(text) is not memoryview else str(text, "utf-8", "replace")
                item = subject_end
            else:  # a long subject, or not a string: not routing's business
                item = skip_unchecked(buf, item)
        if count > 4:
            reply_to, item = _read_address(buf, item)
            if count > 8:
                item = skip_unchecked(buf, skip_unchecked(buf, skip_unchecked(buf, item)))
                code = buf[item]
                if code == 0x83:
                    expiry = _I64.unpack_from(buf, item + 1)[0]
                    item += 9
                elif code == 0x40:
                    item += 1
                else:
                    raise DecodeError(f"absolute-expiry-time must be a timestamp, got constructor {code:#04x}")
    if item > list_end:
        raise DecodeError("properties fields overrun their section")
    return to, subject, reply_to, expiry, list_end


def _read_routing_header(buf: Any, off: int, end: int) -> tuple[Any, Any, Any, int]:
    """(durable, priority, ttl, end of section) from the header at ``off``: its first three fields."""
    count, item, list_end = _list_header(buf, off, end, "header")
    durable = priority = ttl = None
    if count > 0:
        code = buf[item]
        if code == 0x40:
            item += 1
        elif code == 0x41 or code == 0x42:
            durable = code == 0x41
            item += 1
        elif code == 0x56 and buf[item + 1] <= 1:
            durable = buf[item + 1] == 1
            item += 2
        else:
            raise DecodeError(f"header durable must be a boolean, got constructor {code:#04x}")
        if count > 1:
            code = buf[item]
            if code == 0x50:
                priority = buf[item + 1]
                item += 2
            elif code == 0x40:
                item += 1
            else:
                raise DecodeError(f"header priority must be a ubyte, got constructor {code:#04x}")
            if count > 2:
                code = buf[item]
                if code == 0x52:
                    ttl = buf[item + 1]
                    item += 2
                elif code == 0x70:
                    ttl = _U32.unpack_from(buf, item + 1)[0]
                    item += 5
                elif code == 0x43:
                    ttl = 0
                    item += 1
                elif code == 0x40:
                    item += 1
                else:
                    raise DecodeError(f"header ttl must be a uint, got constructor {code:#04x}")
    if item > list_end:
        raise DecodeError("header fields overrun their section")
    return durable, priority, ttl, list_end


def message_annotations_section(annotations: dict[Any, Any]) -> bytes:
    """The encoded message-annotations section holding ``annotations`` (keys as symbols);
    empty bytes for none."""
    if not annotations:
        return b""
    out = bytearray(_H_MESSAGE_ANNOTATIONS)
    codec.encode_value(out, _symbol_keys(annotations))
    return bytes(out)


def with_message_annotations(buf: Any, routing: Routing, annotations: dict[Any, Any]) -> bytes:
    """``buf`` with its message-annotations section replaced by ``annotations`` (keys as
    symbols); every other byte is kept as it was.  ``routing`` is ``read_routing(buf)``."""
    out = bytearray(buf[: routing.annotations_start])
    if annotations:
        out += _H_MESSAGE_ANNOTATIONS
        codec.encode_value(out, _symbol_keys(annotations))
    out += buf[routing.annotations_end :]
    return bytes(out)


def with_redelivery(buf: Any, delivery_count: int) -> bytes:
    """``buf`` as it is sent again after failed deliveries: its header's delivery-count set
    and first-acquirer false (spec 3.2.1); every byte after the header kept as it was.  A
    message without a header gets one."""
    header = Header()
    rest = 0
    if len(buf) > 3 and buf[0] == 0x00:
        code, value_off = _section_descriptor(buf, 0)
        if code == _HEADER:
            fields, rest = codec.decode_value(buf, value_off)
            if not isinstance(fields, list):
                raise DecodeError("the header section must be a list")
            header = Header.from_list(fields)
    header.first_acquirer = False
    header.delivery_count = delivery_count
    out = bytearray()
    header.encode_into(out)
    out += buf[rest:]
    return bytes(out)


_ANNOTATIONS_SEEN: Final[dict[bytes, Any]] = {}
_ANNOTATIONS_SEEN_MAX: Final = 256
_ANNOTATIONS_SEEN_MAX_SIZE: Final = 256
_UNSEEN: Final[Any] = object()


def _read_annotations(buf: Any, start: int, end: int) -> Any:
    """The message-annotations map encoded in ``buf[start:end]`` (None for a null).

    Messages between routers carry the same few sections over and over (their ingress
    and the routers they passed), so each distinct small section is decoded once and
    the map shared: callers read it and copy it to change it.  The memory is bounded by
    the count and the size of the sections kept."""
    if end - start > _ANNOTATIONS_SEEN_MAX_SIZE:
        return _decode_annotations(buf, start, end)
    encoded = bytes(buf[start:end])
    annotations = _ANNOTATIONS_SEEN.get(encoded, _UNSEEN)
    if annotations is _UNSEEN:
        annotations = _decode_annotations(buf, start, end)
        if len(_ANNOTATIONS_SEEN) >= _ANNOTATIONS_SEEN_MAX:
            _ANNOTATIONS_SEEN.clear()
        _ANNOTATIONS_SEEN[encoded] = annotations
    return annotations


def _decode_annotations(buf: Any, start: int, end: int) -> Any:
    annotations, off = _DECODERS[buf[start]](buf, start + 1, 1)
    if annotations is not None and type(annotations) is not dict:
        raise DecodeError("message-annotations must be a map")
    if off != end:
        raise DecodeError("malformed message-annotations section")
    return annotations


def read_routing(buf: Any) -> Routing:
    """Read the routing fields of an encoded message without decoding its body.

    Raises ``DecodeError`` if the sections it reads are malformed; the body and the
    footer are not read at all.
    """
    to = subject = reply_to = ttl = expiry = priority = durable = annotations = None
    header_end = annotations_start = annotations_end = 0
    previous = _FIRST_SECTION - 1
    off = 0
    end = len(buf)
    try:
        while off < end:
            if buf[off] == 0x00 and buf[off + 1] == 0x53:
                code = buf[off + 2]
                value_off = off + 3
            else:
                code, value_off = _section_descriptor(buf, off)
            if not previous < code <= _LAST_SECTION:
                raise _misplaced(code, previous)
            previous = code
            if code == _PROPERTIES:
                to, subject, reply_to, expiry, off = _read_routing_properties(buf, value_off, end)
            elif code == _HEADER:
                durable, priority, ttl, off = _read_routing_header(buf, value_off, end)
                header_end = off
            elif code == _APPLICATION_PROPERTIES or code == _DELIVERY_ANNOTATIONS:
                off = skip_unchecked(buf, value_off)
                if off > end:
                    raise DecodeError(f"truncated {_MAP_SECTION_NAMES[code]} section")
                if code == _DELIVERY_ANNOTATIONS:
                    header_end = off
            elif code == _MESSAGE_ANNOTATIONS:
                annotations_start = off
                off = skip_unchecked(buf, value_off)
                if off > end:
                    raise DecodeError("truncated message-annotations section")
                annotations = _read_annotations(buf, value_off, off)
                annotations_end = off
            else:  # the body, or a footer after none
                break
    except TRUNCATION_ERRORS:
        raise DecodeError("truncated message") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"an address is not valid UTF-8: {exc.reason}") from None
    except RecursionError:
        raise DecodeError("values nested too deeply") from None
    if annotations_end == 0:
        annotations_start = annotations_end = header_end
    return _new_routing(Routing, (
        to, reply_to, ttl, expiry, priority, durable, annotations,
        header_end, annotations_start, annotations_end, off, subject,
    ))
