"""Connection-level behaviour of two real engines: open/close handshakes, pipelining,
max-frame-size and channel-max negotiation, transport loss."""

from __future__ import annotations

import pytest

from helpers import (
    FrameLog,
    Recorder,
    frame,
    frame_sizes,
    link_pair,
    names,
    of_type,
    one,
    open_pair,
    pump,
    serve,
    split_frames,
)
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.errors import Condition, LocalProtocolError
from switchboard.amqp.framing import AMQP_HEADER
from switchboard.amqp.spec import Attach, Begin, Close, Error, Open, Role
from switchboard.amqp.states import ConnectionState

OPENED = ConnectionState.OPENED
END = ConnectionState.END


# ------------------------------------------------------------------------------------
# Open
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("buffer_size", [None, 1, 7])
def test_client_opens_server_answers(buffer_size):
    client = Connection("client", properties={"product": "test"}, offered_capabilities=["ANONYMOUS-RELAY"])
    server = Connection("server", server=True)
    client.open()
    pump(client, server, buffer_size)
    events = server.take_events()
    assert names(events) == ["ConnectionOpened"]
    assert server.state is ConnectionState.OPEN_RCVD
    assert server.remote_open.container_id == "client"
    assert server.remote_open.properties == {"product": "test"}
    assert list(server.remote_open.offered_capabilities) == ["ANONYMOUS-RELAY"]
    server.open()
    pump(client, server, buffer_size)
    assert names(client.take_events()) == ["ConnectionOpened"]
    assert client.remote_open.container_id == "server"
    assert client.state is OPENED and server.state is OPENED
    assert not client.transport_done and not server.transport_done


def test_server_opens_first_and_waits_for_the_header():
    server = Connection("server", server=True)
    server.open()
    assert server.data_to_send() == []  # nothing before the client's header
    client = Connection("client")
    client.open()
    pump(client, server)
    assert names(server.take_events()) == ["ConnectionOpened"]
    assert names(client.take_events()) == ["ConnectionOpened"]
    assert client.state is OPENED and server.state is OPENED


def test_client_open_is_pipelined_with_its_header():
    client = Connection("client")
    client.open()
    first_flight = b"".join(bytes(c) for c in client.data_to_send())
    assert first_flight.startswith(AMQP_HEADER)
    frames = split_frames(first_flight)
    assert [type(p) for _, _, p, _ in frames] == [Open]
    assert client.state is ConnectionState.OPEN_PIPE


def test_pipelined_open_begin_attach_in_one_flight():
    """The client writes header, open, begin and attach before hearing anything."""
    client = Connection("client")
    client.open()
    session = client.begin_session()
    session.sender("pipelined")
    server = Connection("server", server=True)
    flight = b"".join(bytes(c) for c in client.data_to_send())
    assert [type(p).__name__ for _, _, p, _ in split_frames(flight)] == ["Open", "Begin", "Attach"]
    server.receive_data(flight)
    events = server.take_events()
    assert names(events) == ["ConnectionOpened", "SessionBegun", "LinkAttached"]
    serve(server, events)
    pump(client, server)
    assert names(client.take_events()) == ["ConnectionOpened", "SessionBegun", "LinkAttached"]


def test_pipelined_open_and_close():
    """Open and close in the first flight (OC_PIPE): the server answers open then close."""
    client = Connection("client")
    client.open()
    client.close()
    assert client.state is ConnectionState.OC_PIPE
    server = Connection("server", server=True)
    log = Recorder()
    pump(client, server, b_to_a=log)
    server_events = server.take_events()
    assert names(server_events) == ["ConnectionOpened", "ConnectionClosed"]
    assert server_events[1].error is None and server_events[1].by_peer
    # The server must open before it closes, even though its owner never called open().
    assert [type(p).__name__ for _, _, p, _ in split_frames(log.data)] == ["Open", "Close"]
    client_events = client.take_events()
    assert names(client_events) == ["ConnectionOpened", "ConnectionClosed"]
    assert client_events[-1].error is None
    assert client.state is END and server.state is END
    assert client.transport_done and server.transport_done


def test_both_open_at_once():
    client = Connection("client")
    server = Connection("server", server=True)
    client.open()
    server.open()
    pump(client, server, buffer_size=3)
    assert client.state is OPENED and server.state is OPENED


def test_open_twice_is_harmless_locally():
    client, server = open_pair()
    client.open()
    pump(client, server)
    assert client.take_events() == [] and server.take_events() == []


def test_begin_session_before_open_raises():
    client = Connection("client")
    with pytest.raises(LocalProtocolError):
        client.begin_session()


@pytest.mark.parametrize("how", ["closed", "closing", "lost", "failed"])
def test_begin_session_after_close_raises(how):
    client, server = open_pair()
    if how == "closed":
        client.close()
        pump(client, server)
    elif how == "closing":
        client.close()
    elif how == "lost":
        client.connection_lost()
    else:
        client.receive_data(b"\x00\x00\x00\x08\x01\x02\x00\x00")  # bad data offset
    with pytest.raises(LocalProtocolError):
        client.begin_session()
    with pytest.raises(LocalProtocolError):
        server.begin_session() if how == "closed" else client.begin_session()


def test_constructor_rejects_misuse():
    from switchboard.amqp.sasl import SaslClient, SaslServer

    with pytest.raises(LocalProtocolError):
        Connection("c", max_frame_size=100)
    with pytest.raises(LocalProtocolError):
        Connection("c", server=True, sasl=SaslClient())
    with pytest.raises(LocalProtocolError):
        Connection("c", sasl=SaslServer())


# ------------------------------------------------------------------------------------
# Close
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("closer", ["client", "server"])
def test_close_handshake(closer):
    client, server = open_pair()
    a, b = (client, server) if closer == "client" else (server, client)
    a.close()
    assert a.state is ConnectionState.CLOSE_SENT
    pump(client, server)
    b_events = b.take_events()
    closed = one(b_events, ev.ConnectionClosed)
    assert closed.by_peer and closed.error is None
    a_closed = one(a.take_events(), ev.ConnectionClosed)
    assert a_closed.error is None
    assert a.state is END and b.state is END
    assert a.transport_done and b.transport_done
    assert a.closed and b.closed


@pytest.mark.parametrize("closer", ["client", "server"])
def test_close_with_error_reaches_the_peer(closer):
    client, server = open_pair()
    a, b = (client, server) if closer == "client" else (server, client)
    a.close(Error(condition=Condition.RESOURCE_LIMIT_EXCEEDED, description="too many", info={"limit": 3}))
    pump(client, server)
    closed = one(b.take_events(), ev.ConnectionClosed)
    assert closed.by_peer
    assert closed.error.condition == Condition.RESOURCE_LIMIT_EXCEEDED
    assert closed.error.description == "too many"
    assert closed.error.info == {"limit": 3}
    assert b.error == closed.error


def test_close_ends_sessions_and_links_on_both_sides():
    p = link_pair()
    p.client.close()
    p.pump()
    server_events = p.server.take_events()
    assert names(server_events) == ["LinkDetached", "SessionEnded", "ConnectionClosed"]
    client_events = p.client.take_events()
    assert names(client_events) == ["LinkDetached", "SessionEnded", "ConnectionClosed"]


def test_close_twice_is_harmless():
    client, server = open_pair()
    client.close()
    client.close()
    pump(client, server)
    assert len(of_type(client.take_events(), ev.ConnectionClosed)) == 1


def test_server_refuses_a_connection_before_opening():
    """A server that closes with an error instead of opening still sends open first,
    so the client learns why."""
    client = Connection("client")
    server = Connection("server", server=True)
    client.open()
    pump(client, server)
    assert names(server.take_events()) == ["ConnectionOpened"]
    server.close(Error(condition=Condition.UNAUTHORIZED_ACCESS, description="go away"))
    pump(client, server)
    client_events = client.take_events()
    assert names(client_events) == ["ConnectionOpened", "ConnectionClosed"]
    assert client_events[-1].error.condition == Condition.UNAUTHORIZED_ACCESS
    assert client.transport_done and server.transport_done
    assert names(server.take_events()) == ["ConnectionClosed"]


def test_close_during_sasl_ends_without_a_close_frame():
    """No open can precede a close before SASL is done: the connection just ends."""
    from switchboard.amqp.sasl import SaslClient

    client = Connection("client", sasl=SaslClient())
    client.open()
    client.close()
    assert client.transport_done
    assert names(client.take_events()) == ["ConnectionClosed"]
    assert split_frames(b"".join(bytes(c) for c in client.data_to_send())) == []


def test_close_before_hearing_from_the_server_pipelines_open_and_close():
    client = Connection("client")
    client.close()
    frames = split_frames(b"".join(bytes(c) for c in client.data_to_send()))
    assert [type(p) for _, _, p, _ in frames] == [Open, Close]
    assert client.state is ConnectionState.OC_PIPE


def test_data_after_close_is_ignored():
    client, server = open_pair()
    client.close()
    pump(client, server)
    server.take_events()
    server.receive_data(b"garbage that must not be read")
    assert server.take_events() == []


# ------------------------------------------------------------------------------------
# Max frame size
# ------------------------------------------------------------------------------------
def test_max_frame_size_negotiated_and_honoured():
    client, server = open_pair({"max_frame_size": 512}, {"max_frame_size": 4096})
    assert client.remote_max_frame_size == 4096
    assert server.remote_max_frame_size == 512
    assert server.remote_open.max_frame_size == 512


def test_max_frame_size_unset_means_unlimited():
    client = Connection("client")
    server = Connection("server", server=True)
    client.open()
    pump(client, server)
    server.open()
    pump(client, server)
    assert server.remote_max_frame_size == 65536


@pytest.mark.parametrize("client_max,server_max", [(512, 4096), (4096, 512), (512, 512)])
def test_every_frame_fits_the_peers_max_frame_size(client_max, server_max):
    to_server, to_client = Recorder(), Recorder()
    p = link_pair(credit=20, client_kwargs={"max_frame_size": client_max},
                  server_kwargs={"max_frame_size": server_max})
    p.sender.send(b"x" * 20000)
    p.receiver.flow(5)
    pump(p.client, p.server, a_to_b=to_server, b_to_a=to_client)
    assert max(frame_sizes(to_server.data)) <= server_max
    assert max(frame_sizes(to_client.data)) <= client_max
    assert [len(e.delivery.payload) for e in of_type(p.server.take_events(), ev.DeliveryReceived)] == [20000]


def test_a_frame_beyond_our_max_frame_size_closes_with_framing_error():
    client, server = open_pair({"max_frame_size": 512}, {"max_frame_size": 65536})
    session = server.begin_session()
    # The server lies to itself about the client's limit, so it sends oversized frames.
    server.remote_max_frame_size = 65536
    session.sender("big", properties={"padding": "p" * 2000})
    pump(client, server)
    client_closed = one(client.take_events(), ev.ConnectionClosed)
    assert client_closed.error.condition == Condition.CONNECTION_FRAMING_ERROR
    assert not client_closed.by_peer
    assert client.transport_done
    server_closed = one(server.take_events(), ev.ConnectionClosed)
    assert server_closed.error.condition == Condition.CONNECTION_FRAMING_ERROR
    assert server_closed.by_peer


# ------------------------------------------------------------------------------------
# Channel max
# ------------------------------------------------------------------------------------
def test_channel_max_negotiated_and_limits_local_sessions():
    client, server = open_pair({"channel_max": 10}, {"channel_max": 1})
    assert client.remote_channel_max == 1
    assert server.remote_channel_max == 10
    first = client.begin_session()
    second = client.begin_session()
    assert (first.channel, second.channel) == (0, 1)
    with pytest.raises(LocalProtocolError):
        client.begin_session()
    pump(client, server)
    assert names(server.take_events()) == ["SessionBegun", "SessionBegun"]


def test_channel_freed_by_end_is_reused():
    client, server = open_pair({}, {"channel_max": 0})
    session = client.begin_session()
    pump(client, server)
    session.end()
    pump(client, server)
    again = client.begin_session()
    assert again.channel == 0
    pump(client, server)
    assert names(server.take_events()) == ["SessionBegun", "SessionEnded", "SessionBegun"]


def test_begin_beyond_channel_max_closes_the_connection():
    client, server = open_pair({}, {"channel_max": 1})
    client.remote_channel_max = 10  # the client ignores the server's limit
    for _ in range(3):
        client.begin_session()
    pump(client, server)
    server_closed = one(server.take_events(), ev.ConnectionClosed)
    assert server_closed.error.condition == Condition.CONNECTION_FRAMING_ERROR
    assert server.transport_done
    client_closed = one(client.take_events(), ev.ConnectionClosed)
    assert client_closed.by_peer
    assert client_closed.error.condition == Condition.CONNECTION_FRAMING_ERROR


def test_frame_on_a_channel_beyond_channel_max_closes_with_framing_error():
    client, server = open_pair({}, {"channel_max": 3})
    server.receive_data(frame(Attach(name="x", handle=0, role=Role.SENDER), channel=7))
    closed = one(server.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.CONNECTION_FRAMING_ERROR
    pump(client, server)
    assert one(client.take_events(), ev.ConnectionClosed).error.condition == closed.error.condition


# ------------------------------------------------------------------------------------
# Transport loss and tracing
# ------------------------------------------------------------------------------------
def test_connection_lost_reports_forced_close():
    p = link_pair()
    p.client.connection_lost()
    events = p.client.take_events()
    assert names(events) == ["LinkDetached", "SessionEnded", "ConnectionClosed"]
    closed = events[-1]
    assert closed.error.condition == Condition.CONNECTION_FORCED
    assert p.client.transport_done
    p.client.connection_lost()  # idempotent
    assert p.client.take_events() == []


def test_connection_lost_after_close_reports_nothing_more():
    client, server = open_pair()
    client.close()
    pump(client, server)
    client.take_events()
    client.connection_lost()
    assert client.take_events() == []


def test_trace_sees_frames_both_ways():
    log = FrameLog()
    client = Connection("client", trace=log)
    server = Connection("server", server=True)
    client.open()
    pump(client, server)
    server.open()
    pump(client, server)
    assert [type(p) for p in log.sent()] == [Open]
    assert [type(p) for p in log.received()] == [Open]


def test_begin_answered_on_a_free_channel():
    """The server picks its own channel; the begin answers ours via remote-channel."""
    client, server = open_pair()
    server.begin_session()  # server's channel 0 is now taken
    pump(client, server)
    client.take_events()
    server.take_events()
    session = client.begin_session()
    log = Recorder()
    pump(client, server, b_to_a=log)
    answers = [(ch, p) for _, ch, p, _ in split_frames(log.data) if isinstance(p, Begin)]
    assert len(answers) == 1
    channel, begin = answers[0]
    assert begin.remote_channel == session.channel
    assert session.remote_channel == channel
    assert session.active


def test_close_writes_pending_settlements_and_credit_first():
    from switchboard.amqp.spec import Accepted

    p = link_pair()
    p.sender.send(b"m")
    p.pump()
    one(p.server.take_events(), ev.DeliveryReceived).delivery.settle(Accepted())
    p.receiver.add_credit(5)
    p.server.close()
    p.pump()
    events = p.client.take_events()
    assert names(events)[:2] == ["DeliveryUpdated", "CreditGranted"]
    assert events[0].delivery.remote_settled
    assert names(events)[-1] == "ConnectionClosed"
