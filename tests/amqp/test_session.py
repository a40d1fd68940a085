"""Sessions between two real engines: begin/end both ways, errors, and incoming windows."""

from __future__ import annotations

import pytest

from helpers import FrameLog, Recorder, frame, link_pair, names, of_type, one, open_pair, pump, serve, split_frames
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.errors import Condition, LocalProtocolError
from switchboard.amqp.framing import AMQP_HEADER
from switchboard.amqp.spec import (
    Accepted,
    Attach,
    Begin,
    Error,
    Flow,
    Open,
    Role,
    Source,
    Target,
    Transfer,
)
from switchboard.amqp.states import SessionState


# ------------------------------------------------------------------------------------
# Begin and end
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("initiator", ["client", "server"])
def test_begin_and_end_both_directions(initiator):
    client, server = open_pair()
    a, b = (client, server) if initiator == "client" else (server, client)
    session = a.begin_session()
    assert session.state is SessionState.BEGIN_SENT
    pump(client, server)
    assert one(a.take_events(), ev.SessionBegun).session is session
    remote = one(b.take_events(), ev.SessionBegun).session
    assert session.active and remote.active
    assert remote.remote_channel == session.channel
    session.end()
    assert session.state is SessionState.END_SENT
    pump(client, server)
    ended = one(b.take_events(), ev.SessionEnded)
    assert ended.session is remote and ended.error is None
    assert one(a.take_events(), ev.SessionEnded).session is session
    assert session.state is SessionState.UNMAPPED and remote.state is SessionState.UNMAPPED
    assert a.sessions == {} and b.sessions == {}


def test_end_with_error_reaches_the_peer():
    client, server = open_pair()
    session = client.begin_session()
    pump(client, server)
    server.take_events()
    session.end(Error(condition=Condition.SESSION_ERRANT_LINK, description="bye"))
    pump(client, server)
    ended = one(server.take_events(), ev.SessionEnded)
    assert ended.error.condition == Condition.SESSION_ERRANT_LINK
    assert ended.error.description == "bye"
    # The connection carries on.
    assert client.state.value == "OPENED" and server.state.value == "OPENED"


def test_end_detaches_links_on_both_sides():
    p = link_pair()
    p.client_session.end()
    p.pump()
    assert names(p.server.take_events()) == ["LinkDetached", "SessionEnded"]
    assert names(p.client.take_events()) == ["LinkDetached", "SessionEnded"]
    assert not p.sender.active and not p.receiver.active


def test_end_writes_pending_settlements_first():
    """Dispositions queued before end() go out before the end, not into the void."""
    p = link_pair()
    p.sender.send(b"m")
    p.pump()
    delivery = one(p.server.take_events(), ev.DeliveryReceived).delivery
    delivery.settle(Accepted())
    p.server_session.end()
    p.pump()
    events = p.client.take_events()
    assert names(events) == ["DeliveryUpdated", "LinkDetached", "SessionEnded"]
    assert events[0].delivery.remote_state == Accepted()
    assert events[0].delivery.remote_settled


def test_end_twice_is_harmless():
    client, server = open_pair()
    session = client.begin_session()
    pump(client, server)
    session.end()
    session.end()
    pump(client, server)
    assert len(of_type(server.take_events(), ev.SessionEnded)) == 1
    assert len(of_type(client.take_events(), ev.SessionEnded)) == 1


def test_both_end_at_once():
    client, server = open_pair()
    session = client.begin_session()
    pump(client, server)
    remote = one(server.take_events(), ev.SessionBegun).session
    client.take_events()
    session.end()
    remote.end()
    pump(client, server)
    assert names(client.take_events()) == ["SessionEnded"]
    assert names(server.take_events()) == ["SessionEnded"]
    assert client.sessions == {} and server.sessions == {}


def test_many_sessions_with_links_each():
    client, server = open_pair()
    sessions = [client.begin_session() for _ in range(5)]
    links = [s.sender(f"l{i}", target=Target(address=f"q{i}")) for i, s in enumerate(sessions)]
    pump(client, server)
    events = server.take_events()
    assert len(of_type(events, ev.SessionBegun)) == 5
    attached = of_type(events, ev.LinkAttached)
    assert sorted(e.link.remote_target.address for e in attached) == [f"q{i}" for i in range(5)]
    assert all(link.state.value == "ATTACH_SENT" for link in links)


def test_attach_on_an_unbegun_session_raises():
    client, server = open_pair()
    session = client.begin_session()
    pump(client, server)
    session.end()
    with pytest.raises(LocalProtocolError):
        session.sender("late")


def test_handle_max_limits_local_links():
    client = Connection("client", handle_max=1)
    server = Connection("server", server=True, handle_max=0)
    client.open()
    pump(client, server)
    server.open()
    session = client.begin_session()
    pump(client, server)
    session.sender("a")
    with pytest.raises(LocalProtocolError):
        session.sender("b")


# ------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------
class ScriptedReceiver:
    """A peer written frame by frame: accepts our client's session and sender link,
    advertising a small incoming window, and reports what our engine wrote."""

    def __init__(self, client: Connection, window: int, credit: int = 100, max_frame_size: int = 65536) -> None:
        self.client = client
        self.received_ids = 0
        client.receive_data(AMQP_HEADER + frame(Open(container_id="scripted", max_frame_size=max_frame_size)))
        self.take()
        client.receive_data(frame(Begin(remote_channel=0, next_outgoing_id=0, incoming_window=window,
                                        outgoing_window=0x7FFFFFFF)))
        self.take()
        client.receive_data(frame(Attach(name="l", handle=0, role=Role.RECEIVER,
                                         source=Source(address="s"), target=Target(address="t"))))
        client.receive_data(frame(Flow(next_incoming_id=0, incoming_window=window, next_outgoing_id=0,
                                       outgoing_window=0x7FFFFFFF, handle=0, delivery_count=0,
                                       link_credit=credit)))

    def take(self) -> list:
        data = b"".join(bytes(c) for c in self.client.data_to_send())
        frames = [p for _, _, p, _ in split_frames(data)] if data else []
        self.received_ids += sum(1 for p in frames if isinstance(p, Transfer))
        return frames

    def open_window(self, window: int) -> None:
        self.client.receive_data(frame(Flow(next_incoming_id=self.received_ids, incoming_window=window,
                                            next_outgoing_id=0, outgoing_window=0x7FFFFFFF)))


def _scripted_client(window, **kwargs):
    client = Connection("client", **kwargs)
    client.open()
    session = client.begin_session()
    sender = session.sender("l", source=Source(address="s"), target=Target(address="t"))
    client.data_to_send()
    peer = ScriptedReceiver(client, window, max_frame_size=kwargs.get("peer_max_frame_size", 65536))
    client.take_events()
    assert sender.credit == 100
    return client, session, sender, peer


def test_sender_blocks_on_a_closed_window_and_resumes_when_it_opens():
    client, session, sender, peer = _scripted_client(window=1)
    for i in range(4):
        sender.send(b"m%d" % i)
    transfers = [p for p in peer.take() if isinstance(p, Transfer)]
    assert [t.delivery_id for t in transfers] == [0]
    assert session.remote_incoming_window == 0
    peer.open_window(2)
    transfers = [p for p in peer.take() if isinstance(p, Transfer)]
    assert [t.delivery_id for t in transfers] == [1, 2]
    peer.open_window(10)
    transfers = [p for p in peer.take() if isinstance(p, Transfer)]
    assert [t.delivery_id for t in transfers] == [3]
    assert session.remote_incoming_window == 9


def test_window_counts_frames_not_deliveries():
    """A delivery split over several frames needs a window slot per frame."""
    client = Connection("client")
    client.open()
    session = client.begin_session()
    sender = session.sender("l", source=Source(address="s"), target=Target(address="t"))
    client.data_to_send()
    peer = ScriptedReceiver(client, window=2, max_frame_size=512)
    client.take_events()
    sender.send(b"x" * 2000)  # five frames at 512 bytes
    transfers = [p for p in peer.take() if isinstance(p, Transfer)]
    assert len(transfers) == 2
    assert transfers[0].more and transfers[1].more
    peer.open_window(100)
    rest = [p for p in peer.take() if isinstance(p, Transfer)]
    assert len(rest) >= 3
    assert all(t.more for t in rest[:-1]) and not rest[-1].more
    assert all(t.delivery_id is None for t in rest)


def test_small_window_between_real_engines_still_delivers_everything():
    """The receiver advertises a window of one frame; its engine reopens the window as
    frames arrive, so the sender blocks and resumes until all is through."""
    p = link_pair(credit=50)
    p.server_session.incoming_window = 1
    p.server_session._request_flow(None)
    p.pump()
    assert p.client_session.remote_incoming_window == 1
    for i in range(10):
        p.sender.send(b"m%d" % i)
    first = b"".join(bytes(c) for c in p.client.data_to_send())
    assert sum(isinstance(f[2], Transfer) for f in split_frames(first)) == 1
    p.server.receive_data(first)
    p.pump()
    got = [e.delivery.payload for e in of_type(p.server.take_events(), ev.DeliveryReceived)]
    assert got == [b"m%d" % i for i in range(10)]


def test_flow_echo_on_the_session_is_answered():
    p = link_pair()
    session = p.server_session
    log = Recorder()
    p.client.receive_data(frame(Flow(next_incoming_id=session.next_incoming_id, incoming_window=1000,
                                     next_outgoing_id=session.next_outgoing_id, outgoing_window=1000,
                                     echo=True), channel=p.server_session.channel))
    pump(p.client, p.server, a_to_b=log)
    flows = [f for _, _, f, _ in split_frames(log.data) if isinstance(f, Flow)]
    assert len(flows) == 1 and flows[0].handle is None


def test_transfer_ids_advance_per_frame():
    trace = FrameLog()
    p = link_pair(client_kwargs={"max_frame_size": 512}, server_kwargs={"max_frame_size": 512, "trace": trace})
    p.sender.send(b"y" * 1500)
    p.pump()
    frames = len(trace.received(Transfer))
    assert frames >= 3
    assert p.client_session.next_outgoing_id == frames
    assert p.server_session.next_incoming_id == frames


def test_more_sessions_than_the_peer_can_number_closes_with_resource_limit():
    """Both sides begin sessions at once, more than one of them can number within the
    other's channel-max: a clean resource-limit close, not an internal error."""
    client, server = open_pair({"channel_max": 1}, {"channel_max": 1})
    for _ in range(2):
        server.begin_session()
        client.begin_session()
    pump(client, server)
    closed = of_type(server.take_events() + client.take_events(), ev.ConnectionClosed)
    assert len(closed) == 2
    assert all(e.error.condition == Condition.RESOURCE_LIMIT_EXCEEDED for e in closed)


def test_more_links_than_the_peer_can_number_ends_the_session_with_resource_limit():
    client = Connection("client", handle_max=3)
    server = Connection("server", server=True, handle_max=1)
    client.open()
    pump(client, server)
    server.open()
    pump(client, server)
    session = client.begin_session()
    pump(client, server)
    remote = one(server.take_events(), ev.SessionBegun).session
    client.take_events()
    for i in range(2):
        remote.sender(f"s{i}", source=Source(address="x"))  # handles 0, 1
        session.sender(f"c{i}", target=Target(address="y"))  # handles 0, 1
    pump(client, server)
    ended = of_type(server.take_events() + client.take_events(), ev.SessionEnded)
    assert len(ended) == 2
    assert all(e.error.condition == Condition.RESOURCE_LIMIT_EXCEEDED for e in ended)
    assert not client.transport_done and not server.transport_done


@pytest.mark.xfail(strict=True, reason="known limitation: sessions begun before the peer's open are numbered"
                   " without knowing its channel-max; the engine does not hold their begins back")
def test_sessions_begun_before_the_peers_open_respect_its_channel_max():
    client = Connection("client")
    server = Connection("server", server=True, channel_max=0)
    client.open()
    client.begin_session()
    client.begin_session()  # channel 1: beyond what the server will announce
    pump(client, server)
    serve(server, server.take_events())
    pump(client, server)
    assert not server.transport_done


@pytest.mark.xfail(strict=True, reason="known limitation: links attached before the peer's begin are numbered"
                   " without knowing its handle-max; the engine does not hold their attaches back")
def test_links_attached_before_the_peers_begin_respect_its_handle_max():
    client, server = open_pair({}, {"handle_max": 0})
    session = client.begin_session()
    session.sender("a")
    session.sender("b")  # handle 1: beyond the server's handle-max
    pump(client, server)
    assert of_type(server.take_events(), ev.ConnectionClosed) == []
