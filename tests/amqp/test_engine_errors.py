"""Malformed and out-of-order input: the engine never raises out of ``receive_data``; it
answers with close (or end, or detach) carrying the spec's condition, which the other,
real engine receives as an event, and it sets ``transport_done`` for connection errors.

The last tests feed random mutations of a valid byte stream (bit flips, truncations,
inserted and deleted bytes) to a fresh engine, after h11's ``fuzz/afl-server.py``: the
only acceptable outcomes are processing it or closing with an error, and never
``amqp:internal-error`` (our catch-all for a bug in the engine).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import Recorder, frame, link_pair, names, of_type, one, open_pair, pump, serve, split_frames
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.errors import Condition
from switchboard.amqp.framing import AMQP_HEADER, SASL_HEADER
from switchboard.amqp.link import ReceiverLink
from switchboard.amqp.sasl import SaslClient, SaslServer
from switchboard.amqp.spec import (
    Accepted,
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Flow,
    Open,
    Role,
    SaslInit,
    Source,
    Target,
    Transfer,
)
from switchboard.amqp.types import Described, Symbol, UInt, ULong


def raw_frame(body: bytes, channel: int = 0, frame_type: int = 0, doff: int = 2, size: int | None = None) -> bytes:
    if size is None:
        size = 8 + len(body)
    return struct.pack(">IBBH", size, doff, frame_type, channel) + body


def assert_connection_failed(offender: Connection, victim: Connection, condition: Symbol) -> None:
    """``victim`` detected the violation: it closed with ``condition``, stopped reading,
    and ``offender`` (a real engine) heard the close."""
    closed = one(victim.take_events(), ev.ConnectionClosed)
    assert closed.error is not None and closed.error.condition == condition, closed.error
    assert not closed.by_peer
    assert victim.transport_done
    pump(offender, victim)
    heard = one(offender.take_events(), ev.ConnectionClosed)
    assert heard.by_peer
    assert heard.error.condition == condition
    assert offender.transport_done


# ------------------------------------------------------------------------------------
# Headers
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [b"HTTP/1.1", b"AMQP\x00\x01\x00\x01", b"AMQP\x02\x01\x00\x00", b"\x00" * 8])
def test_bad_protocol_header_to_a_server(header):
    server = Connection("server", server=True)
    server.receive_data(header + b"more bytes that are never read")
    closed = one(server.take_events(), ev.ConnectionClosed)
    assert closed.error is not None
    assert server.transport_done
    # The server answers with the header it does support, and nothing else.
    assert b"".join(bytes(c) for c in server.data_to_send()) == AMQP_HEADER


def test_bad_protocol_header_to_a_client():
    client = Connection("client")
    client.open()
    client.receive_data(b"AMQP\x01\x01\x00\x00")  # a TLS header
    closed = one(client.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.CONNECTION_FRAMING_ERROR
    assert client.transport_done


def test_header_in_pieces_then_garbage():
    server = Connection("server", server=True)
    for byte in b"AMQX\x00\x01\x00\x00":
        server.receive_data(bytes([byte]))
    assert server.transport_done
    assert names(server.take_events()) == ["ConnectionClosed"]


# ------------------------------------------------------------------------------------
# Framing
# ------------------------------------------------------------------------------------
def test_truncated_frame_then_connection_lost():
    client, server = open_pair()
    whole = frame(Begin(next_outgoing_id=0, incoming_window=10, outgoing_window=10))
    server.receive_data(whole[:-3])
    assert server.take_events() == []
    assert not server.transport_done
    server.connection_lost()
    closed = one(server.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.CONNECTION_FORCED
    assert server.transport_done


def test_oversized_frame():
    client, server = open_pair({}, {"max_frame_size": 1024})
    server.receive_data(struct.pack(">IBBH", 1025, 2, 0, 0))
    assert_connection_failed(client, server, Condition.CONNECTION_FRAMING_ERROR)


def test_oversized_frame_before_open_is_bounded_by_our_limit():
    server = Connection("server", server=True, max_frame_size=512)
    server.receive_data(AMQP_HEADER + struct.pack(">IBBH", 1 << 31, 2, 0, 0))
    closed = one(server.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.CONNECTION_FRAMING_ERROR
    assert server.transport_done


@pytest.mark.parametrize("size,doff", [(8, 1), (8, 0), (12, 4), (16, 5), (4, 2), (0, 2)])
def test_frame_with_bad_size_or_data_offset(size, doff):
    client, server = open_pair()
    server.receive_data(raw_frame(b"\x00" * max(0, size - 8), doff=doff, size=size))
    assert_connection_failed(client, server, Condition.CONNECTION_FRAMING_ERROR)


def test_extended_header_is_skipped():
    """A data offset beyond 2 words carries an extended header, which is ignored."""
    client, server = open_pair()
    body = Begin(next_outgoing_id=0, incoming_window=10, outgoing_window=10).encode()
    server.receive_data(raw_frame(b"\xee" * 4 + body, doff=3))
    assert names(server.take_events()) == ["SessionBegun"]


def test_sasl_frame_after_sasl():
    client, server = open_pair()
    server.receive_data(frame(SaslInit(mechanism=Symbol("ANONYMOUS")), frame_type=1))
    assert_connection_failed(client, server, Condition.CONNECTION_FRAMING_ERROR)


def test_unknown_frame_type():
    client, server = open_pair()
    server.receive_data(raw_frame(Close().encode(), frame_type=7))
    assert_connection_failed(client, server, Condition.CONNECTION_FRAMING_ERROR)


# ------------------------------------------------------------------------------------
# Bodies that are not performatives
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",
        b"\x00",  # a descriptor constructor and nothing after it
        b"\x00\x53\x12\xc0\x10",  # an attach list that claims more than is there
        b"\x00\x53\x10\xd0\xff\xff\xff\xff\x00\x00\x00\x01",  # huge list size
        b"\x00\x53\x10\x45",  # open with its mandatory container-id missing
        b"\x00\x53\x11\xc0\x03\x01\xa1\x00",  # begin whose next-outgoing-id is a string
        b"\xa1\x05hello",  # a plain string
        b"\x45",  # an empty list, undescribed
    ],
    ids=["garbage", "lone-descriptor", "truncated-list", "huge-list", "missing-mandatory",
         "wrong-field-type", "string", "list"],
)
def test_garbage_performative_is_a_decode_error(body):
    client, server = open_pair()
    server.receive_data(raw_frame(body))
    assert_connection_failed(client, server, Condition.DECODE_ERROR)


@pytest.mark.parametrize(
    "value",
    [Source(address="x"), Target(), Accepted(), Described(ULong(0x99), []),
     Described(Symbol("example:not-a-performative"), [1, 2])],
    ids=["source", "target", "accepted", "unknown-code", "unknown-symbol"],
)
def test_described_value_that_is_not_a_performative(value):
    from switchboard.amqp import codec

    client, server = open_pair()
    body = bytearray()
    codec.encode_value(body, value)
    server.receive_data(raw_frame(bytes(body)))
    assert_connection_failed(client, server, Condition.DECODE_ERROR)


# ------------------------------------------------------------------------------------
# Frames in the wrong state
# ------------------------------------------------------------------------------------
def test_open_twice():
    client, server = open_pair()
    server.receive_data(frame(Open(container_id="again")))
    assert_connection_failed(client, server, Condition.NOT_ALLOWED)


@pytest.mark.parametrize(
    "performative",
    [
        Begin(next_outgoing_id=0, incoming_window=1, outgoing_window=1),
        Attach(name="x", handle=0, role=Role.SENDER),
        Flow(incoming_window=1, next_outgoing_id=0, outgoing_window=1),
        Transfer(handle=0, delivery_id=0, delivery_tag=b"t"),
        Disposition(role=Role.RECEIVER, first=0),
        Detach(handle=0),
        End(),
        Close(),
    ],
    ids=lambda p: type(p).__name__,
)
def test_frames_before_open(performative):
    """A client that sends frames before its open: the server (whose owner has not opened
    yet either) opens, then closes with not-allowed; the client hears it."""
    server = Connection("server", server=True)
    server.receive_data(AMQP_HEADER + frame(performative))
    closed = one(server.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.NOT_ALLOWED
    assert server.transport_done
    sent = [type(p) for _, _, p, _ in split_frames(b"".join(bytes(c) for c in server.data_to_send()))]
    assert sent == [Open, Close]


def test_frames_before_open_reach_a_real_client():
    client = Connection("client")  # not opened: it only sent its header
    server = Connection("server", server=True)
    pump(client, server)
    client.receive_data(frame(Begin(next_outgoing_id=0, incoming_window=1, outgoing_window=1)))
    closed = one(client.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.NOT_ALLOWED
    pump(client, server)
    heard = of_type(server.take_events(), ev.ConnectionClosed)
    assert heard and heard[-1].error.condition == Condition.NOT_ALLOWED


def test_close_on_a_nonzero_channel_below_channel_max_is_still_a_close():
    client, server = open_pair()
    server.receive_data(frame(Close(), channel=3))
    assert one(server.take_events(), ev.ConnectionClosed).by_peer


def test_begin_answering_a_channel_without_a_begin():
    client, server = open_pair()
    server.receive_data(frame(Begin(remote_channel=5, next_outgoing_id=0, incoming_window=1, outgoing_window=1)))
    assert_connection_failed(client, server, Condition.NOT_ALLOWED)


def test_begin_on_a_channel_in_use():
    client, server = open_pair()
    client.begin_session()
    pump(client, server)
    server.take_events()
    client.take_events()
    server.receive_data(frame(Begin(next_outgoing_id=0, incoming_window=1, outgoing_window=1), channel=0))
    assert_connection_failed(client, server, Condition.NOT_ALLOWED)


def test_end_on_a_channel_without_a_session():
    client, server = open_pair()
    server.receive_data(frame(End(), channel=2))
    assert_connection_failed(client, server, Condition.NOT_ALLOWED)


# ------------------------------------------------------------------------------------
# Session- and link-level violations
# ------------------------------------------------------------------------------------
def _inject(p, performative, payload: bytes = b"") -> None:
    """Feed the server a frame as if the client had sent it on its session."""
    p.server.receive_data(frame(performative, channel=p.server_session.remote_channel, payload=payload))


def assert_session_failed(p, condition: Symbol) -> None:
    server_events = p.server.take_events()
    ended = one(server_events, ev.SessionEnded)
    assert ended.error.condition == condition
    assert not p.server.transport_done
    p.pump()
    client_ended = one(p.client.take_events(), ev.SessionEnded)
    assert client_ended.error.condition == condition
    # The server's session finishes when the client's end arrives, without a second event.
    assert of_type(p.server.take_events(), ev.SessionEnded) == []
    assert p.server.sessions == {} and p.client.sessions == {}
    # The connection carries on: a new session works.
    again = p.client.begin_session()
    p.pump()
    assert again.active
    assert not p.server.transport_done and not p.client.transport_done


def test_transfer_on_an_unattached_handle():
    p = link_pair()
    _inject(p, Transfer(handle=7, delivery_id=0, delivery_tag=b"t"), b"payload")
    assert_session_failed(p, Condition.SESSION_UNATTACHED_HANDLE)


def test_flow_on_an_unattached_handle():
    p = link_pair()
    _inject(p, Flow(incoming_window=10, next_outgoing_id=0, outgoing_window=10, handle=9, link_credit=1))
    assert_session_failed(p, Condition.SESSION_UNATTACHED_HANDLE)


def test_detach_of_an_unattached_handle():
    p = link_pair()
    _inject(p, Detach(handle=4))
    assert_session_failed(p, Condition.SESSION_UNATTACHED_HANDLE)


def test_attach_on_a_handle_in_use():
    p = link_pair()
    _inject(p, Attach(name="other", handle=p.sender.handle, role=Role.SENDER))
    assert_session_failed(p, Condition.SESSION_HANDLE_IN_USE)


def test_attach_beyond_handle_max_closes_the_connection():
    p = link_pair(server_kwargs={"handle_max": 3})
    _inject(p, Attach(name="far", handle=4, role=Role.SENDER))
    assert_connection_failed(p.client, p.server, Condition.CONNECTION_FRAMING_ERROR)


def test_transfer_on_a_link_where_we_are_the_sender():
    p = link_pair(client_sends=False)
    # The server holds the sender; the client pretends to send on it.
    p.server.receive_data(frame(Transfer(handle=p.receiver.handle, delivery_id=0, delivery_tag=b"t"),
                                channel=p.server_session.remote_channel, payload=b"x"))
    assert_session_failed(p, Condition.NOT_ALLOWED)


def test_first_transfer_without_delivery_id():
    p = link_pair()
    _inject(p, Transfer(handle=p.sender.handle, delivery_tag=b"t"), b"x")
    assert_session_failed(p, Condition.INVALID_FIELD)


@pytest.mark.parametrize("kind", ["close", "end", "detach"])
def test_error_field_that_is_not_an_error(kind):
    from switchboard.amqp import codec

    p = link_pair()
    descriptor = {"close": 0x18, "end": 0x17, "detach": 0x16}[kind]
    fields = [UInt(p.sender.handle), True, "not an error"] if kind == "detach" else ["not an error"]
    body = bytearray()
    codec.encode_value(body, Described(ULong(descriptor), fields))
    channel = 0 if kind == "close" else p.server_session.remote_channel
    p.server.receive_data(raw_frame(bytes(body), channel=channel))
    assert_connection_failed(p.client, p.server, Condition.DECODE_ERROR)


def test_disposition_for_unknown_deliveries_is_ignored():
    p = link_pair()
    _inject(p, Disposition(role=Role.SENDER, first=100, last=200, settled=True, state=Accepted()))
    assert p.server.take_events() == []
    assert p.server_session.active


def test_frames_for_a_session_we_are_ending_are_dropped():
    p = link_pair()
    p.server_session.end()
    _inject(p, Transfer(handle=p.sender.handle, delivery_id=0, delivery_tag=b"t"), b"late")
    assert p.server.take_events() == []
    p.pump()
    assert names(p.server.take_events()) == ["LinkDetached", "SessionEnded"]


# ------------------------------------------------------------------------------------
# Random mutations of a valid stream
# ------------------------------------------------------------------------------------
def _drive_server(server: Connection, discard: bool = True) -> list[ev.Event]:
    """A plain application: open back, accept links with credit, accept every message."""
    events = server.take_events()
    serve(server, events, credit=10)
    for event in events:
        if isinstance(event, ev.DeliveryReceived) and not event.delivery.settled and event.delivery.link.active:
            event.delivery.settle(Accepted())
    if discard:
        server.data_to_send()
    return events


def _client_config() -> Connection:
    return Connection("client", max_frame_size=512, sasl=SaslClient("user", "pw"))


def _server_config() -> Connection:
    return Connection("server", server=True, max_frame_size=512,
                      sasl=SaslServer(["PLAIN", "ANONYMOUS"], authenticate=lambda u, p: True))


def _drive_client(client: Connection, discard: bool = True) -> list[ev.Event]:
    """The client's application: once its sender has credit, send three messages;
    accept whatever arrives."""
    events = client.take_events()
    for event in events:
        if (isinstance(event, ev.CreditGranted) and event.link.active and event.link.credit >= 3
                and event.link.context is None):
            event.link.context = "sent"
            event.link.send(b"small")
            event.link.send(b"x" * 1500)
            event.link.send(b"presettled", settled=True)
        elif isinstance(event, ev.DeliveryReceived) and not event.delivery.settled and event.delivery.link.active:
            event.delivery.settle(Accepted())
    if discard:
        client.data_to_send()
    return events


def _start_client(client: Connection) -> tuple:
    client.open()
    session = client.begin_session()
    sender = session.sender("out", target=Target(address="q"), source=Source(address="me"))
    receiver = session.receiver("in", source=Source(address="q2"), credit=5)
    return session, sender, receiver


def _record_streams() -> tuple[bytes, bytes]:
    """What each side says in a full life: SASL, open, a session, a link each way,
    small, multi-frame and presettled messages, settlements, detach, end, close."""
    client, server = _client_config(), _server_config()
    to_server, to_client = Recorder(), Recorder()
    session, sender, receiver = _start_client(client)

    def step() -> None:
        for _ in range(5):
            pump(client, server, a_to_b=to_server, b_to_a=to_client)
            _drive_server(server, discard=False)
            _drive_client(client, discard=False)

    step()
    assert sender.active and receiver.active and sender.context == "sent"
    server_sender = server.sessions[0].links[1]
    server_sender.send(b"y" * 1200)
    server_sender.send(b"reply")
    step()
    assert len(receiver.unsettled) == 0 and receiver.delivery_count == 2
    sender.detach()
    step()
    session.end()
    step()
    client.close()
    step()
    assert client.closed and server.closed and server.error is None and client.error is None
    return bytes(to_server.data), bytes(to_client.data)


CLIENT_STREAM, SERVER_STREAM = _record_streams()


def _boundaries(stream: bytes) -> list[int]:
    """Where each protocol header and frame of the recorded stream ends."""
    ends, pos = [], 0
    while pos < len(stream):
        pos += 8 if stream[pos : pos + 4] == b"AMQP" else struct.unpack_from(">I", stream, pos)[0]
        ends.append(pos)
    return ends


FRAME_ENDS = _boundaries(CLIENT_STREAM)
SERVER_FRAME_ENDS = _boundaries(SERVER_STREAM)


def _feed(stream: bytes, cuts: list[int], to_client: bool = False) -> tuple[Connection, list[ev.Event]]:
    """Feed a (mutated) stream to a fresh server, or client, whose application runs
    between frames, as it would between reads from a socket: the credit it grants
    arrives before the transfers that use it."""
    if to_client:
        conn, drive, ends = _client_config(), _drive_client, SERVER_FRAME_ENDS
        _start_client(conn)
        conn.data_to_send()
    else:
        conn, drive, ends = _server_config(), _drive_server, FRAME_ENDS
    events: list[ev.Event] = []
    start = 0
    for cut in sorted(set(cuts) | set(ends)) + [len(stream)]:
        conn.receive_data(stream[start:cut])
        events += drive(conn)
        start = max(start, cut)
    return conn, events


def _check_outcome(server: Connection, events: list[ev.Event]) -> None:
    for event in events:
        error = getattr(event, "error", None)
        if error is not None:
            # getattr: a peer's close/end/detach whose error field is not an error list is
            # not rejected yet (see test_error_field_that_is_not_an_error below).
            assert getattr(error, "condition", None) != Condition.INTERNAL_ERROR, error.description
    closed = of_type(events, ev.ConnectionClosed)
    assert len(closed) <= 1
    if closed and not closed[0].by_peer:
        assert closed[0].error is not None and server.transport_done
    if server.transport_done:
        assert closed, "transport_done without ConnectionClosed"
    if closed:
        assert events[-1] is closed[0], "events after ConnectionClosed"
    ended = of_type(events, ev.SessionEnded)
    assert len({id(e.session) for e in ended}) == len(ended), "a session ended twice"
    detached = of_type(events, ev.LinkDetached)
    assert len({id(e.link) for e in detached}) == len(detached), "a link detached twice"


@pytest.mark.parametrize("to_client", [False, True], ids=["client-stream", "server-stream"])
def test_the_recorded_streams_are_valid_whole_and_byte_by_byte(to_client):
    stream = SERVER_STREAM if to_client else CLIENT_STREAM
    conn, events = _feed(stream, [], to_client)
    _check_outcome(conn, events)
    closed = one(events, ev.ConnectionClosed)
    assert closed.by_peer and closed.error is None
    assert len(of_type(events, ev.DeliveryReceived)) == (2 if to_client else 3)
    conn2, events2 = _feed(stream, list(range(1, len(stream))), to_client)
    assert names(events2) == names(events)


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 16)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.sampled_from([0, 0x40, 0x45, 0x53, 0xA1, 0xC0, 0xD0, 0xFF])),
)


def _mutate(stream: bytes, mutations: list) -> bytes:
    data = bytearray(stream)
    for kind, position, arg in mutations:
        if not data:
            break
        position %= len(data)
        if kind == "flip":
            data[position] ^= 1 << arg
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = arg
        elif kind == "delete":
            del data[position : position + arg]
        elif kind == "set":
            data[position] = arg
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(_mutation, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 1 << 12), max_size=4))
def test_mutated_client_stream_never_breaks_the_server(mutations, cuts):
    server, events = _feed(_mutate(CLIENT_STREAM, mutations), cuts)
    _check_outcome(server, events)
    # Whatever the server wrote is well-formed AMQP a real client could read.
    split_frames(b"".join(bytes(c) for c in server.data_to_send()))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(_mutation, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 1 << 12), max_size=4))
def test_mutated_server_stream_never_breaks_the_client(mutations, cuts):
    client, events = _feed(_mutate(SERVER_STREAM, mutations), cuts, to_client=True)
    _check_outcome(client, events)
    split_frames(b"".join(bytes(c) for c in client.data_to_send()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(to_client=st.booleans(), position=st.integers(0, 1 << 12), value=st.integers(0, 255))
def test_any_single_byte_changed(to_client, position, value):
    stream = bytearray(SERVER_STREAM if to_client else CLIENT_STREAM)
    stream[position % len(stream)] = value
    conn, events = _feed(bytes(stream), [], to_client)
    _check_outcome(conn, events)
