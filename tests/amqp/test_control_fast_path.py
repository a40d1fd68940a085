"""The disposition and flow fast paths (``switchboard/amqp/fastpath.py``) against the
generic codec.

The fast encoders must write exactly the frames ``Connection._write_frame`` writes for a
``Disposition`` or ``Flow`` (so the generic decoder and Proton read the same fields); the
fast decoders must return the generic decoder's field values for every encoding of the
shapes they accept, and None for everything else so that the generic path judges it,
errors included.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.amqp import events as ev
from switchboard.amqp.codec import decode_value
from switchboard.amqp.delivery import ACCEPTED, RELEASED
from switchboard.amqp.errors import DecodeError
from switchboard.amqp.fastpath import read_disposition, read_flow, write_disposition_frame, write_flow_frame
from switchboard.amqp.spec import Accepted, Disposition, Error, Flow, Modified, Rejected, Released
from switchboard.amqp.types import Symbol, UInt

from codec_strategies import examples
from helpers import link_pair

U32 = st.integers(0, 2**32 - 1)
uints = st.one_of(st.sampled_from([0, 1, 255, 256, 65535, 2**31, 2**32 - 1]), U32)
optional_uints = st.one_of(st.none(), uints)
fast_states = st.sampled_from([None, Accepted(), Released()])


def generic_frame(channel: int, performative: Any) -> bytes:
    out = bytearray(b"\x00\x00\x00\x00\x02\x00" + channel.to_bytes(2, "big"))
    performative.encode_into(out)
    struct.pack_into(">I", out, 0, len(out))
    return bytes(out)


def list32(body: bytes) -> bytes:
    """The same performative with its list written as a list32."""
    assert body[3] == 0xC0
    size, count = body[4], body[5]
    return body[:3] + b"\xd0" + struct.pack(">II", size + 3, count) + body[6:]


# ------------------------------------------------------------------------------------
# Encoders
# ------------------------------------------------------------------------------------
@examples(300)
@given(channel=st.integers(0, 65535), role=st.booleans(), first=uints, last=optional_uints,
       settled=st.booleans(), state=fast_states)
def test_disposition_encoder_writes_the_generic_bytes(channel, role, first, last, settled, state):
    out = bytearray(b"junk")  # the frame need not start the buffer
    write_disposition_frame(out, channel, role, first, last, settled, state)
    disposition = Disposition(role=role, first=first, last=last, settled=settled, state=state)
    assert bytes(out[4:]) == generic_frame(channel, disposition)
    assert decode_value(bytes(out[12:]), 0)[0] == disposition


@examples(300)
@given(channel=st.integers(0, 65535), next_incoming_id=optional_uints, windows=st.tuples(uints, uints, uints),
       link=st.one_of(st.none(), st.tuples(uints, uints, uints, st.one_of(st.none(), st.just(0)), st.booleans())))
def test_flow_encoder_writes_the_generic_bytes(channel, next_incoming_id, windows, link):
    incoming_window, next_outgoing_id, outgoing_window = windows
    handle, delivery_count, link_credit, available, drain = link if link is not None else (None,) * 4 + (False,)
    out = bytearray(b"junk")
    write_flow_frame(out, channel, next_incoming_id, incoming_window, next_outgoing_id, outgoing_window,
                     handle, delivery_count, link_credit, available, drain)
    flow = Flow(next_incoming_id=next_incoming_id, incoming_window=incoming_window, next_outgoing_id=next_outgoing_id,
                outgoing_window=outgoing_window, handle=handle, delivery_count=delivery_count,
                link_credit=link_credit, available=available, drain=drain)
    assert bytes(out[4:]) == generic_frame(channel, flow)
    assert decode_value(bytes(out[12:]), 0)[0] == flow


def test_proton_reads_the_fast_disposition_and_flow():
    proton = pytest.importorskip("proton")
    out = bytearray()
    write_disposition_frame(out, 0, True, 7, 300, True, ACCEPTED)
    data = proton.Data()
    assert data.decode(bytes(out[8:])) == len(out) - 8
    value = data.get_object()
    assert value.descriptor == 0x15
    assert list(value.value)[:4] == [True, 7, 300, True]
    assert list(value.value)[4].descriptor == 0x24
    out = bytearray()
    write_flow_frame(out, 0, 5, 2048, 9, 2048, 1, 100, 50, 0, True)
    data = proton.Data()
    assert data.decode(bytes(out[8:])) == len(out) - 8
    value = data.get_object()
    assert value.descriptor == 0x13
    assert [int(v) for v in list(value.value)[:8]] == [5, 2048, 9, 2048, 1, 100, 50, 0]
    assert list(value.value)[8] is True


# ------------------------------------------------------------------------------------
# Decoders
# ------------------------------------------------------------------------------------
def _disposition_fields(d: Disposition) -> tuple[Any, ...]:
    return d.role, d.first, d.last, d.settled, d.state


def _flow_fields(f: Flow) -> tuple[Any, ...]:
    return (f.next_incoming_id, f.incoming_window, f.next_outgoing_id, f.outgoing_window, f.handle,
            f.delivery_count, f.link_credit, f.available, f.drain, f.echo)


@examples(300)
@given(role=st.booleans(), first=uints, last=optional_uints, settled=st.booleans(), state=fast_states,
       batchable=st.booleans(), wide=st.booleans())
def test_disposition_decoder_reads_what_the_generic_one_reads(role, first, last, settled, state, batchable, wide):
    body = Disposition(role=role, first=first, last=last, settled=settled, state=state, batchable=batchable).encode()
    if wide:
        body = list32(body)
    generic = decode_value(body, 0)[0]
    assert read_disposition(body) == _disposition_fields(generic)


@examples(300)
@given(numbers=st.tuples(optional_uints, uints, uints, uints, optional_uints, optional_uints, optional_uints,
                         optional_uints), drain=st.booleans(), echo=st.booleans(), wide=st.booleans())
def test_flow_decoder_reads_what_the_generic_one_reads(numbers, drain, echo, wide):
    body = Flow(*numbers, drain=drain, echo=echo).encode()
    if wide:
        body = list32(body)
    generic = decode_value(body, 0)[0]
    assert read_flow(body) == _flow_fields(generic)


@pytest.mark.parametrize("body", [
    Disposition(role=True, first=1, settled=True, state=Rejected(error=Error(condition=Symbol("x:y")))).encode(),
    Disposition(role=True, first=1, settled=True, state=Modified(delivery_failed=True)).encode(),
    b"\x00\x53\x15\xc0\x03\x02\x41\x40",  # first null: the generic path reports it missing
    b"\x00\x53\x15\xc0\x04\x02\x41\x71\x00",  # first an int, not a uint
    b"\x00\x53\x15\xc0\x04\x02\x56\x01\x43",  # role as a one-byte boolean
    b"\x00\x53\x15\xc0\x03\x02\x41",  # truncated
    b"\x00\x53\x15\x45",  # list0
], ids=["rejected", "modified", "null-first", "int-first", "boolean-role", "truncated", "empty"])
def test_disposition_decoder_leaves_other_shapes_to_the_generic_path(body):
    assert read_disposition(body) is None


@pytest.mark.parametrize("body", [
    Flow(incoming_window=1, next_outgoing_id=2, outgoing_window=3, properties={Symbol("k"): 1}).encode(),
    b"\x00\x53\x13\xc0\x04\x03\x40\x43\x43",  # three fields: mandatory outgoing-window missing
    b"\x00\x53\x13\xc0\x05\x04\x40\x40\x43\x43",  # incoming-window null
    b"\x00\x53\x13\xc0\x06\x04\x40\x53\x01\x43\x43",  # a ulong where a uint belongs
    b"\x00\x53\x13\xc0\x09\x04\x40\x43\x43",  # shorter than its size
], ids=["properties", "three-fields", "null-window", "ulong", "truncated"])
def test_flow_decoder_leaves_other_shapes_to_the_generic_path(body):
    assert read_flow(body) is None


def test_a_null_mandatory_field_is_still_an_error():
    """Input the fast decoder declines is judged by the generic path, as before."""
    with pytest.raises(DecodeError):
        decode_value(b"\x00\x53\x15\xc0\x03\x02\x41\x40", 0)


# -- the engine: settling and granting credit give the same frames either way ---------
def _exchange(traced: bool, state: Any) -> tuple[bytes, bytes, list[Any]]:
    """Send three messages, settle them with ``state``, grant more credit; return the
    receiver's and the sender's bytes and what the sender learnt."""
    p = link_pair(credit=5)
    if traced:
        p.client.trace = p.server.trace = _no_trace
    for _ in range(3):
        p.sender.send(b"m")
    p.server.receive_data(b"".join(bytes(c) for c in p.client.data_to_send()))
    deliveries = [e.delivery for e in p.server.take_events() if isinstance(e, ev.DeliveryReceived)]
    deliveries[1].settle(state)  # not a range with the others: three dispositions
    deliveries[0].settle(state)
    deliveries[2].settle(ACCEPTED)
    p.receiver.flow(20, drain=True)
    back = b"".join(bytes(c) for c in p.server.data_to_send())
    p.client.receive_data(back)
    p.sender.send(b"n")
    forth = b"".join(bytes(c) for c in p.client.data_to_send())
    learnt = [(type(e).__name__, getattr(e, "delivery", None) and (e.delivery.delivery_id, e.delivery.remote_state,
                                                                      e.delivery.remote_settled))
              for e in p.client.take_events()]
    return back, forth, learnt + [p.sender.credit, p.sender.drain]


def _no_trace(direction: str, channel: int, performative: Any, payload_size: int) -> None:
    """A connection being traced takes the generic paths, which build every performative."""


@pytest.mark.parametrize("state", [ACCEPTED, RELEASED, Rejected(), Modified(delivery_failed=True)],
                         ids=["accepted", "released", "rejected", "modified"])
def test_settling_gives_the_same_frames_and_outcomes_with_and_without_the_fast_paths(state):
    fast = _exchange(False, state)
    generic = _exchange(True, state)
    assert fast == generic
    back, _, learnt = fast
    assert back.count(b"\x00\x53\x15") == 3 and back.count(b"\x00\x53\x13") == 1
    assert [entry for entry in learnt if isinstance(entry, tuple) and entry[0] == "DeliveryUpdated"] == [
        ("DeliveryUpdated", (1, state, True)), ("DeliveryUpdated", (0, state, True)),
        ("DeliveryUpdated", (2, ACCEPTED, True)),
    ]
    assert learnt[-2:] == [19, True]


def test_a_fast_read_flow_for_a_handle_never_attached_still_ends_the_session():
    p = link_pair(credit=5)
    out = bytearray()
    write_flow_frame(out, 0, 0, 100, 0, 100, UInt(7), 0, 10, None, False)
    assert read_flow(bytes(out[8:])) is not None  # the fast path reads it
    p.server.receive_data(bytes(out))
    p.pump()
    ended = [e for e in p.client.take_events() if isinstance(e, ev.SessionEnded)]
    assert len(ended) == 1 and ended[0].error.condition == "amqp:session:unattached-handle"
