"""Idle timeout on a simulated clock: heartbeats at half the peer's idle-time-out, and a
silent peer closed with amqp:resource-limit-exceeded.  Time starts at 0.0 and steps.

After proton's ``IdleTimeoutTest`` and aioquic's simulated-time tests.
"""

from __future__ import annotations

from helpers import frame, names, of_type, one, open_pair, pump, split_frames
from switchboard.amqp import events as ev
from switchboard.amqp.connection import MIN_HEARTBEAT_INTERVAL, Connection
from switchboard.amqp.errors import Condition
from switchboard.amqp.framing import AMQP_HEADER, EMPTY_FRAME
from switchboard.amqp.spec import Open
from switchboard.amqp.types import Symbol, UInt


def _output(conn: Connection) -> bytes:
    return b"".join(bytes(c) for c in conn.data_to_send())


def _heartbeats(data: bytes) -> int:
    return sum(1 for _, _, p, _ in split_frames(data) if p is None)


def test_idle_time_out_is_advertised_in_milliseconds_at_half_our_threshold():
    """Spec 2.4.5: advertising half of the real threshold leaves a peer that sends just
    inside the advertised value a whole margin before our timer fires."""
    client, server = open_pair({"idle_timeout": 2.5}, {})
    assert server.remote_open.idle_time_out == 1250
    assert server.remote_idle_timeout == 1.25
    assert client.remote_idle_timeout is None


def test_no_timeouts_means_no_deadline():
    client, server = open_pair()
    assert client.tick(0.0) is None
    assert server.tick(1000.0) is None
    assert _output(server) == b""


def test_heartbeats_at_half_the_peers_idle_timeout():
    """The client (20 s threshold) advertises 10 s; the server, otherwise silent, writes an
    empty frame every 5 s and the client's idle timer never fires."""
    client, server = open_pair({"idle_timeout": 20.0}, {})
    now = 0.0
    client.tick(now)
    deadline = server.tick(now)
    assert deadline == 5.0
    beats = 0
    while now < 60.0:
        now += 0.5
        server.tick(now)
        data = _output(server)
        if data:
            assert data == EMPTY_FRAME
            beats += 1
            client.receive_data(data)
        client.tick(now)
        assert not client.transport_done, f"client timed out at {now}"
    assert beats == 12
    assert client.take_events() == []


def test_owner_ticking_only_at_deadlines_beats_on_time():
    """An owner that re-arms one timer at the returned deadline and writes the output
    after the tick (io/timers.py) gets a beat every interval, not every other one."""
    client, server = open_pair({"idle_timeout": 20.0}, {})
    client.tick(0.0)
    deadline = server.tick(0.0)
    beat_times = []
    while deadline is not None and deadline <= 60.0:
        now = deadline
        deadline = server.tick(now)
        data = _output(server)
        if data:
            beat_times.append(now)
            client.receive_data(data)
        client.tick(now)
        assert not client.transport_done
    assert beat_times == [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0]


def test_tick_returns_the_next_heartbeat_deadline():
    client, server = open_pair({"idle_timeout": 8.0}, {})
    assert server.tick(100.0) == 102.0
    assert server.tick(101.0) == 102.0
    assert _output(server) == b""
    assert server.tick(102.0) == 104.0
    assert _output(server) == EMPTY_FRAME


def test_traffic_postpones_the_heartbeat():
    p_client, p_server = open_pair({"idle_timeout": 8.0}, {})
    p_server.tick(0.0)
    p_server.begin_session()  # real traffic at t=1
    pump(p_client, p_server)
    assert p_server.tick(1.0) == 3.0
    assert _output(p_server) == b""


def test_silent_peer_is_closed_with_resource_limit_exceeded():
    client, server = open_pair({"idle_timeout": 3.0}, {})
    now = 0.0
    assert client.tick(now) == 3.0
    now = 2.9
    assert client.tick(now) == 3.0
    assert not client.transport_done
    now = 3.0
    assert client.tick(now) is None
    assert client.transport_done
    closed = one(client.take_events(), ev.ConnectionClosed)
    assert closed.error.condition == Condition.RESOURCE_LIMIT_EXCEEDED
    assert not closed.by_peer
    # The close goes out and the (real) peer hears why.
    pump(client, server)
    peer_closed = one(server.take_events(), ev.ConnectionClosed)
    assert peer_closed.by_peer
    assert peer_closed.error.condition == Condition.RESOURCE_LIMIT_EXCEEDED


def test_heartbeats_keep_both_sides_alive():
    """Both sides have a timeout and both tick: neither ever closes."""
    client, server = open_pair({"idle_timeout": 2.0}, {"idle_timeout": 3.0})
    now = 0.0
    for _ in range(400):
        client.tick(now)
        server.tick(now)
        pump(client, server)
        now += 0.25
    assert not client.transport_done and not server.transport_done
    assert client.take_events() == [] and server.take_events() == []


def test_a_received_frame_resets_our_idle_timer():
    client, server = open_pair({"idle_timeout": 3.0}, {})
    client.tick(0.0)
    server.begin_session()
    pump(client, server)
    client.tick(2.0)  # a frame arrived just before this tick
    assert client.tick(4.5) == 5.0
    assert not client.transport_done
    client.tick(5.0)
    assert client.transport_done


def test_peer_silent_through_a_whole_exchange_of_ticks_stops_the_deadline():
    client, server = open_pair({"idle_timeout": 1.0}, {})
    client.tick(0.0)
    client.tick(10.0)
    assert client.transport_done
    assert client.tick(11.0) is None
    assert len(of_type(client.take_events(), ev.ConnectionClosed)) == 1


def test_idle_timeout_only_runs_once_frames_flow():
    """Before the headers are exchanged the idle timer does not run; only the handshake
    timeout bounds the wait for the peer's open."""
    client = Connection("client", idle_timeout=1.0, handshake_timeout=None)
    client.open()
    assert client.tick(0.0) is None
    assert client.tick(100.0) is None
    assert not client.transport_done


def test_handshake_timeout_closes_a_peer_that_never_opens():
    server = Connection("server", server=True, handshake_timeout=5.0)
    assert server.tick(0.0) == 5.0
    assert server.tick(4.9) == 5.0
    assert not server.transport_done
    assert server.tick(5.0) is None
    assert server.transport_done
    closed = [e for e in server.take_events() if isinstance(e, ev.ConnectionClosed)]
    assert len(closed) == 1
    assert closed[0].error.condition == "amqp:resource-limit-exceeded"


def test_empty_frames_are_not_events():
    client, server = open_pair()
    client.receive_data(EMPTY_FRAME * 5)
    assert client.take_events() == []
    assert names(client.take_events()) == []


# ======================================================================================
# Idle time is judged on frames, not bytes
# ======================================================================================
# A frame header announcing 256 bytes (a begin would follow): what a peer trickles.
_PARTIAL = b"\x00\x00\x01\x00\x02\x00\x00\x00\x00\x53\x11"


def _closed_error(conn: Connection):
    closed = one(conn.take_events(), ev.ConnectionClosed)
    assert not closed.by_peer
    return closed.error


def test_bytes_of_an_unfinished_frame_are_not_liveness():
    """One byte a second into a frame: the idle timer runs from the last complete frame."""
    client, server = open_pair({"idle_timeout": 3.0}, {})
    assert client.tick(0.0) == 3.0
    for second, byte in enumerate(_PARTIAL[:2], start=1):
        client.receive_data(bytes([byte]))
        assert client.tick(float(second)) == 3.0
    client.receive_data(_PARTIAL[2:3])
    assert not client.transport_done
    assert client.tick(3.0) is None
    assert client.transport_done
    error = _closed_error(client)
    assert error.condition == Condition.RESOURCE_LIMIT_EXCEEDED
    assert "idle timeout" in error.description
    assert "3 bytes of an unfinished frame" in error.description
    pump(client, server)  # the peer is told why
    told = one(server.take_events(), ev.ConnectionClosed)
    assert told.by_peer and told.error.description == error.description


def test_a_heartbeat_is_liveness_once_complete():
    """Half a heartbeat at t=1 does not count; its second half at t=2.5 does."""
    client, server = open_pair({"idle_timeout": 3.0}, {})
    client.tick(0.0)
    client.receive_data(EMPTY_FRAME[:4])
    assert client.tick(1.0) == 3.0
    client.receive_data(EMPTY_FRAME[4:])
    assert client.tick(2.5) == 5.5
    assert client.tick(5.4) == 5.5
    assert not client.transport_done
    assert client.tick(5.5) is None
    assert "no frame from the peer for 3 s" in _closed_error(client).description


def test_without_an_idle_timeout_frame_timeout_bounds_an_unfinished_frame():
    """idle_timeout off: a complete frame may take up to frame_timeout from its first byte."""
    client, server = open_pair({"idle_timeout": None, "frame_timeout": 5.0}, {})
    assert client.tick(0.0) is None  # nothing buffered: no deadline at all
    client.receive_data(_PARTIAL[:1])
    assert client.tick(1.0) == 6.0
    for second in range(2, 6):
        client.receive_data(_PARTIAL[second - 1 : second])  # still trickling
        assert client.tick(float(second)) == 6.0
    assert not client.transport_done
    assert client.tick(6.0) is None
    error = _closed_error(client)
    assert error.condition == Condition.RESOURCE_LIMIT_EXCEEDED
    assert "frame timeout" in error.description and "5 bytes" in error.description


def test_frame_timeout_restarts_with_each_complete_frame():
    client, server = open_pair({"idle_timeout": None, "frame_timeout": 5.0}, {})
    client.tick(0.0)
    client.receive_data(EMPTY_FRAME[:4])
    assert client.tick(1.0) == 6.0
    client.receive_data(EMPTY_FRAME[4:] + EMPTY_FRAME[:2])  # one done, the next begun
    assert client.tick(4.0) == 9.0
    client.receive_data(EMPTY_FRAME[2:])
    assert client.tick(8.0) is None  # complete: nothing pending, no deadline
    assert client.tick(100.0) is None
    assert not client.transport_done


def test_frame_timeout_closes_a_header_left_half_sent():
    """Before the headers, no close frame can be sent: the connection just ends."""
    server = Connection("server", server=True, handshake_timeout=None, frame_timeout=2.0)
    server.tick(0.0)
    server.receive_data(b"AMQ")
    assert server.tick(1.0) == 3.0
    assert server.tick(3.0) is None
    assert server.transport_done
    assert "frame timeout" in _closed_error(server).description


def test_handshake_timeout_bounds_a_peer_that_trickles_its_open():
    """The header and open arrive one byte a second, each byte progress: still cut at 5 s."""
    client = Connection("client")
    client.open()
    handshake = b"".join(bytes(c) for c in client.data_to_send())
    server = Connection("server", server=True, handshake_timeout=5.0, idle_timeout=30.0, frame_timeout=30.0)
    assert server.tick(0.0) == 5.0
    for second in range(1, 5):
        server.receive_data(handshake[second - 1 : second])
        server.tick(float(second))
    assert not server.transport_done
    server.receive_data(handshake[4:5])
    assert server.tick(5.0) is None
    assert server.transport_done
    assert server.remote_open is None
    assert "within 5 s" in _closed_error(server).description


# ======================================================================================
# The heartbeat floor
# ======================================================================================
def _one_ms_open() -> bytes:
    return AMQP_HEADER + frame(Open(container_id="demanding", idle_time_out=1))


def test_heartbeats_no_more_often_than_the_floor_whatever_the_peer_asks():
    """A peer advertising 1 ms gets an empty frame every 0.5 s (the floor), not every 0.5 ms."""
    server = Connection("server", server=True, min_heartbeat_interval=0.5)
    server.receive_data(_one_ms_open())
    server.take_events()
    server.open()
    server.tick(0.0)
    _output(server)
    now, beats, deadline = 0.0, 0, server.tick(0.0)
    assert deadline == 0.5
    for _ in range(10_000):
        if deadline is None or deadline > 10.0:
            break
        now = deadline
        deadline = server.tick(now)
        beats += _heartbeats(_output(server))
    assert beats == 20
    assert not server.transport_done


def test_a_peer_asking_for_less_than_the_floor_is_beaten_at_half_its_timeout():
    """Above the floor the peer's own wish still rules: 8 s advertised, a beat every 4 s."""
    client, server = open_pair({"idle_timeout": 16.0}, {"min_heartbeat_interval": 0.5})
    assert server.tick(0.0) == 4.0


def test_the_open_says_how_often_heartbeats_may_come():
    client, server = open_pair({}, {"min_heartbeat_interval": 0.5})
    properties = client.remote_open.properties
    assert properties[MIN_HEARTBEAT_INTERVAL] == 500
    assert type(properties[MIN_HEARTBEAT_INTERVAL]) is UInt


def test_the_floor_joins_properties_the_owner_set():
    client, server = open_pair({}, {"min_heartbeat_interval": 2.0, "properties": {Symbol("product"): "x"}})
    assert client.remote_open.properties == {Symbol("product"): "x", MIN_HEARTBEAT_INTERVAL: 2000}


def test_without_a_floor_the_open_says_nothing_of_it():
    client, server = open_pair()
    assert client.remote_open.properties is None
