"""The transfer fast paths (``switchboard/amqp/fastpath.py``) against the generic codec.

The fast encoder must write exactly what ``Transfer(...).encode_into`` writes (so the
generic decoder and Proton read the same fields); the fast decoder must return the
generic decoder's field values, with their types, for every encoding of the shapes it
accepts, and return None for everything else so that the generic path judges it, errors
included.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.amqp import events as ev
from switchboard.amqp.codec import decode_value
from switchboard.amqp.errors import Condition, DecodeError
from switchboard.amqp.fastpath import MAX_FAST_TAG, read_transfer, transfer_prefix, write_transfer_fields
from switchboard.amqp.spec import Accepted, Flow, Received, Rejected, Transfer
from switchboard.amqp.types import UByte, UInt

from codec_strategies import assert_same, examples
from helpers import FrameLog, link_pair, split_frames

U32 = st.integers(0, 2**32 - 1)
UINT_EDGES = st.sampled_from([0, 1, 255, 256, 65535, 2**31, 2**32 - 1])
uints = st.one_of(UINT_EDGES, U32)
tags = st.binary(max_size=32)
_HEADER = struct.Struct(">IBBH")

FIELDS = ("handle", "delivery_id", "delivery_tag", "message_format", "settled", "more", "aborted")


def generic_frame(channel: int, transfer: Transfer, payload: bytes) -> bytes:
    out = bytearray(b"\x00\x00\x00\x00\x02\x00" + channel.to_bytes(2, "big"))
    transfer.encode_into(out)
    out += payload
    struct.pack_into(">I", out, 0, len(out))
    return bytes(out)


def fast_frame(channel: int, handle: int, delivery_id: int, tag: bytes, message_format: int,
               settled: bool, payload: bytes) -> bytes:
    out = bytearray(b"junk")  # the frame need not start the buffer
    start = write_transfer_fields(out, transfer_prefix(channel, handle), delivery_id, tag, message_format, settled)
    assert start == 4
    out += payload
    struct.pack_into(">I", out, start, len(out) - start)
    return bytes(out[start:])


# ------------------------------------------------------------------------------------
# Encoder
# ------------------------------------------------------------------------------------
@examples(300)
@given(channel=st.integers(0, 65535), handle=uints, delivery_id=uints, tag=tags, message_format=uints,
       settled=st.booleans(), payload=st.binary(max_size=64))
def test_fast_encoder_writes_the_generic_bytes(channel, handle, delivery_id, tag, message_format, settled, payload):
    transfer = Transfer(handle=handle, delivery_id=delivery_id, delivery_tag=tag,
                        message_format=message_format, settled=settled)
    fast = fast_frame(channel, handle, delivery_id, tag, message_format, settled, payload)
    assert fast == generic_frame(channel, transfer, payload)
    size, doff, frame_type, got_channel = _HEADER.unpack_from(fast)
    assert (size, doff, frame_type, got_channel) == (len(fast), 2, 0, channel)
    decoded, offset = decode_value(fast, 8)
    assert decoded == transfer
    assert fast[offset:] == payload


@examples(200)
@given(handle=uints, delivery_id=uints, tag=tags, message_format=uints, settled=st.booleans())
def test_proton_reads_the_fast_encoders_transfer(handle, delivery_id, tag, message_format, settled):
    proton = pytest.importorskip("proton")
    body = fast_frame(0, handle, delivery_id, tag, message_format, settled, b"")[8:]
    data = proton.Data()
    assert data.decode(body) == len(body)
    value = data.get_object()
    assert isinstance(value, proton.Described)
    assert value.descriptor == 0x14 and type(value.descriptor) is proton.ulong
    fields = list(value.value)
    assert [type(f) for f in fields] == [proton.uint, proton.uint, memoryview, proton.uint, bool]
    assert [int(fields[0]), int(fields[1]), bytes(fields[2]), int(fields[3]), fields[4]] == [
        handle, delivery_id, tag, message_format, settled]


# -- the engine: SenderLink.send takes the fast path, or the generic one when it must --
@pytest.mark.parametrize(
    "send",
    [
        {},
        {"settled": True},
        {"tag": b""},
        {"tag": b"t" * 32},
        {"tag": b"t" * MAX_FAST_TAG},
        {"tag": b"t" * (MAX_FAST_TAG + 1)},  # generic
        {"tag": bytearray(b"abc")},  # generic: not bytes
        {"message_format": 0x80013700},
        {"message_format": UInt(7)},
        {"payload": b"x" * 9000},  # own buffer
        {"payload": b"y" * 70000},  # several frames: generic
    ],
    ids=["plain", "settled", "empty-tag", "tag32", "tag-max", "tag-long", "bytearray-tag", "format",
         "uint-format", "large", "multi-frame"],
)
def test_send_fast_and_generic_paths_give_the_same_stream(send):
    """The bytes a sender writes are the same with the fast encoder as without it."""
    def stream(fast: bool) -> tuple[bytes, list[Any]]:
        p = link_pair(credit=5)
        if not fast:
            p.client.trace = _no_trace
        kwargs = dict(send)
        payload = kwargs.pop("payload", b"hello")
        for _ in range(3):
            p.sender.send(payload, **kwargs)
        out = b"".join(bytes(chunk) for chunk in p.client.data_to_send())
        p.server.receive_data(out)
        deliveries = [e.delivery for e in p.server.take_events() if isinstance(e, ev.DeliveryReceived)]
        return out, [(d.delivery_id, d.tag, d.payload, d.message_format, d.remote_settled) for d in deliveries]

    fast_out, fast_deliveries = stream(True)
    generic_out, generic_deliveries = stream(False)
    assert fast_out == generic_out
    assert fast_deliveries == generic_deliveries and len(fast_deliveries) == 3


def _no_trace(direction: str, channel: int, performative: Any, payload_size: int) -> None:
    """A connection being traced takes the generic paths, which build every performative."""


def test_send_with_a_closed_session_window_waits_for_it():
    p = link_pair(credit=5)
    session = p.sender.session
    session.remote_incoming_window = 0
    p.sender.send(b"one")
    assert len(session.blocked_transfers) == 1 and type(session.blocked_transfers[0][0]) is Transfer
    p.sender.send(b"two")  # queued behind the first, even with the window open again
    session.remote_incoming_window = 10
    assert len(session.blocked_transfers) == 2
    session._on_flow(Flow(next_incoming_id=session.next_outgoing_id, incoming_window=10, next_outgoing_id=0,
                          outgoing_window=10))
    p.pump()
    got = [e.delivery.payload for e in p.server.take_events() if isinstance(e, ev.DeliveryReceived)]
    assert got == [b"one", b"two"]


def test_send_with_a_trace_goes_through_the_traced_path():
    log = FrameLog()
    p = link_pair(credit=5)
    p.client.trace = log
    p.sender.send(b"traced")
    sent = log.sent(Transfer)
    assert len(sent) == 1 and sent[0].delivery_tag == (0).to_bytes(8, "big")


def test_prefix_follows_the_links_handle():
    p = link_pair(credit=5)
    p.sender.send(b"a")
    assert p.sender._transfer_prefix == transfer_prefix(p.sender.session.channel, p.sender.handle)
    p.sender._prefix_key = (-1, None)  # as if the handle had changed
    p.sender.send(b"b")
    frames = split_frames(b"".join(bytes(c) for c in p.client.data_to_send()))
    assert [f[2].handle for f in frames if type(f[2]) is Transfer] == [p.sender.handle] * 2


# ------------------------------------------------------------------------------------
# Decoder
# ------------------------------------------------------------------------------------
def _uint_encodings(value: int) -> list[bytes]:
    encodings = [b"\x70" + value.to_bytes(4, "big")]
    if value < 256:
        encodings.append(bytes((0x52, value)))
    if value == 0:
        encodings.append(b"\x43")
    return encodings


@st.composite
def transfer_bodies(draw: Any) -> tuple[bytes, int]:
    """A transfer performative in any width the spec allows for its fields (+ a payload),
    with the usual and unusual fields; returns (body, offset of the payload)."""
    fields: list[bytes | None] = []
    fields.append(draw(st.sampled_from(_uint_encodings(draw(uints)))))
    for kind in ("uint", "binary", "uint", "bool", "bool", "ubyte", "state", "bool", "bool", "bool"):
        if draw(st.booleans()) and draw(st.booleans()):
            fields.append(b"\x40")
            continue
        if kind == "uint":
            fields.append(draw(st.sampled_from(_uint_encodings(draw(uints)))))
        elif kind == "binary":
            tag = draw(tags)
            fields.append(draw(st.sampled_from([bytes((0xA0, len(tag))) + tag,
                                                b"\xb0" + len(tag).to_bytes(4, "big") + tag])))
        elif kind == "bool":
            fields.append(draw(st.sampled_from([b"\x41", b"\x42", b"\x56\x00", b"\x56\x01"])))
        elif kind == "ubyte":
            fields.append(bytes((0x50, draw(st.integers(0, 1)))))
        else:
            state = draw(st.sampled_from([Accepted(), Rejected(), Received(section_number=1, section_offset=2)]))
            fields.append(state.encode())
    count = draw(st.integers(1, len(fields)))
    items = b"".join(fields[:count])
    if draw(st.booleans()) and len(items) < 255:
        header = bytes((0xC0, len(items) + 1, count))
    else:
        header = b"\xd0" + (len(items) + 4).to_bytes(4, "big") + count.to_bytes(4, "big")
    head = b"\x00\x53\x14" + header + items
    return head + draw(st.binary(max_size=16)), len(head)


NUMBERS = ("handle", "delivery_id", "message_format")


def _generic(body: bytes) -> tuple[Transfer, int]:
    transfer, offset = decode_value(body, 0)
    assert type(transfer) is Transfer
    return transfer, offset


def _check_against_generic(body: bytes) -> Any:
    fast = read_transfer(body)
    try:
        transfer, offset = _generic(body)
    except DecodeError:
        assert fast is None
        return None
    if fast is not None:
        assert fast[-1] == offset
        for name, value in zip(FIELDS, fast):
            expected = getattr(transfer, name)
            if name in NUMBERS and expected is not None:
                # The fast path gives the router plain ints; the generic decoder, UInts.
                assert type(value) is int and value == expected, name
            else:
                assert_same(value, expected, name)
        # What it accepts has nothing the engine would act on beyond those fields.
        assert transfer.rcv_settle_mode is None and transfer.state is None
        assert transfer.resume is False and transfer.batchable is False
    return fast, transfer


@examples(500)
@given(transfer_bodies())
def test_fast_decoder_agrees_with_the_generic_decoder(generated):
    body, offset = generated
    result = _check_against_generic(body)
    assert result is not None  # well-formed: the generic decoder takes it
    fast, transfer = result
    unusual = (transfer.rcv_settle_mode is not None or transfer.state is not None
               or transfer.resume or transfer.batchable)
    uses_bool_byte = False
    if fast is None:
        # Only the unusual shapes (or fields it leaves to the generic path) fall back.
        uses_bool_byte = b"\x56" in body[:offset]
        assert unusual or uses_bool_byte
    else:
        assert not unusual


@examples(300)
@given(handle=uints, delivery_id=st.none() | uints, tag=st.none() | tags, message_format=st.none() | uints,
       settled=st.none() | st.booleans(), more=st.booleans(), aborted=st.booleans(),
       rcv_settle_mode=st.none() | st.sampled_from([UByte(0), UByte(1)]),
       state=st.none() | st.sampled_from([Accepted(), Received(section_number=0, section_offset=0)]),
       resume=st.booleans(), batchable=st.booleans())
def test_fast_decoder_on_generic_encodings(handle, delivery_id, tag, message_format, settled, more, aborted,
                                          rcv_settle_mode, state, resume, batchable):
    transfer = Transfer(handle=handle, delivery_id=delivery_id, delivery_tag=tag, message_format=message_format,
                        settled=settled, more=more, rcv_settle_mode=rcv_settle_mode, state=state, resume=resume,
                        aborted=aborted, batchable=batchable)
    body = transfer.encode() + b"payload"
    fast, decoded = _check_against_generic(body)
    assert decoded == transfer
    if rcv_settle_mode is not None or state is not None or resume or batchable:
        assert fast is None
    else:
        assert fast is not None
        assert body[fast[-1]:] == b"payload"


@examples(300)
@given(transfer_bodies(), st.data())
def test_truncated_or_garbled_bodies_fall_back(generated, data):
    body, offset = generated
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(0, offset - 1))]
        assert read_transfer(body) is None
        with pytest.raises(DecodeError):
            decode_value(body, 0)
    else:
        garbled = bytearray(body)
        for _ in range(data.draw(st.integers(1, 3))):
            garbled[data.draw(st.integers(3, max(3, offset - 1)))] = data.draw(st.integers(0, 255))
        _check_against_generic(bytes(garbled))


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x53\x14",
        b"\x00\x53\x14\xc0",
        b"\x00\x53\x14\xc0\x01",
        b"\x00\x53\x14\xc0\x01\x00",  # no handle
        b"\x00\x53\x14\x45",
        b"\x00\x53\x14\xc0\x02\x01\x40",  # null handle
        b"\x00\x53\x14\xc0\x03\x01\x52",  # truncated smalluint
        b"\x00\x53\x14\xc0\x05\x01\x70\x00\x00",  # truncated uint
        b"\x00\x53\x14\xc0\x04\x02\x43\xa0\x05",  # tag longer than the list
        b"\x00\x53\x14\xc0\x04\x02\x43\xa1\x00",  # string where a uint belongs
        b"\x00\x53\x14\xc0\x04\x03\x43\x43\xa1\x00",  # tag that is a string
        b"\x00\x53\x14\xc0\x02\x03\x43",  # count beyond the bytes
        b"\x00\x53\x14\xc0\x03\x01\x43\x43",  # bytes beyond the count
        b"\x00\x53\x14\xc0\x04\x01\x43\x43",  # list size beyond the body
        b"\x00\x53\x14\xd0\x00\x00\x00\x02\x00\x00\x00\x01",  # truncated list32
        b"\x00\x53\x14\xd0\xff\xff\xff\xff\x00\x00\x00\x01\x43",  # huge list32
        b"\x00\x53\x14\xc0\x06\x05\x43\x43\x40\x43\x56",  # truncated boolean byte
        b"\x00\x53\x14\xc0\x07\x05\x43\x43\x40\x43\x56\x02",  # bad boolean byte
    ],
)
def test_bad_transfer_bodies_are_decode_errors_on_both_paths(body):
    assert read_transfer(body) is None
    with pytest.raises(DecodeError):
        decode_value(body, 0)
    results = []
    for fast in (True, False):
        p = link_pair()
        if not fast:
            p.server.trace = _no_trace
        p.server.receive_data(struct.pack(">IBBH", 8 + len(body), 2, 0, p.server_session.remote_channel) + body)
        closed = [e for e in p.server.take_events() if isinstance(e, ev.ConnectionClosed)]
        assert len(closed) == 1 and closed[0].error.condition == Condition.DECODE_ERROR
        results.append((closed[0].error.description, bytes(b"".join(bytes(c) for c in p.server.data_to_send()))))
    assert results[0] == results[1]


@examples(200)
@given(transfer_bodies(), st.data())
def test_engine_behaves_the_same_with_and_without_the_fast_decoder(generated, data):
    """Any transfer body, valid or garbled, into a server: the same events and output."""
    body, offset = generated
    if data.draw(st.booleans()):
        garbled = bytearray(body)
        garbled[data.draw(st.integers(3, max(3, offset - 1)))] = data.draw(st.integers(0, 255))
        body = bytes(garbled)

    def run(fast: bool) -> Any:
        p = link_pair()
        if not fast:
            p.server.trace = _no_trace
        handle = p.receiver.remote_handle
        p.server.receive_data(struct.pack(">IBBH", 8 + len(body), 2, 0, p.server_session.remote_channel)
                              + body)
        out = b"".join(bytes(c) for c in p.server.data_to_send())
        events = []
        for e in p.server.take_events():
            if isinstance(e, (ev.DeliveryReceived, ev.DeliveryAborted)):
                d = e.delivery
                # Numbers compared as numbers: the fast path gives ints, the generic one UInts.
                events.append((type(e).__name__, d.delivery_id, d.tag, d.payload,
                               d.message_format, d.remote_settled, d.remote_state))
            elif isinstance(e, ev.ConnectionClosed):
                events.append(("closed", e.error.condition, e.error.description))
            elif isinstance(e, ev.SessionEnded):
                events.append(("ended", e.error.condition if e.error else None))
            else:
                events.append(type(e).__name__)
        return out, events, handle

    assert run(True) == run(False)


def test_received_fields_are_the_numbers_sent():
    # The fast path gives plain ints (no UInt per field on the hot path); they compare,
    # hash and encode as the numbers they are.
    p = link_pair()
    for delivery_id, fmt in ((0, 0), (5, 1), (300, 70000)):
        p.client_session._next_delivery_id = delivery_id
        p.sender.send(b"m", message_format=fmt)
    p.pump()
    deliveries = [e.delivery for e in p.server.take_events() if isinstance(e, ev.DeliveryReceived)]
    assert [d.delivery_id for d in deliveries] == [0, 5, 300]
    assert [d.message_format for d in deliveries] == [0, 1, 70000]
    assert all(isinstance(d.delivery_id, int) and isinstance(d.message_format, int) for d in deliveries)
