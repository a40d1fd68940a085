"""Multi-frame transfers: messages split to the peer's max-frame-size and reassembled,
large payloads over small frames, byte-at-a-time pumping, aborts.

After proton's ``MaxFrameTransferTest``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import FrameLog, Recorder, frame, frame_sizes, link_pair, of_type, one, open_pair, pump, serve
from switchboard.amqp import events as ev
from switchboard.amqp.spec import Accepted, Target, Transfer

MIB = 1 << 20


def _payload(size: int) -> bytes:
    pattern = bytes(range(256)) * (size // 256 + 1)
    return pattern[:size]


@pytest.mark.parametrize("max_frame_size", [512, 4096])
def test_a_mebibyte_over_small_frames(max_frame_size):
    log = FrameLog()
    to_server = Recorder()
    p = link_pair(client_kwargs={"max_frame_size": max_frame_size},
                  server_kwargs={"max_frame_size": max_frame_size, "trace": log})
    payload = _payload(MIB + 4321)
    delivery = p.sender.send(payload)
    pump(p.client, p.server, a_to_b=to_server)
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    assert got.payload == payload
    assert got.tag == delivery.tag
    transfers = log.received(Transfer)
    assert len(transfers) >= len(payload) // max_frame_size
    assert all(t.more for t in transfers[:-1]) and not transfers[-1].more
    assert transfers[0].delivery_id == 0 and all(t.delivery_id is None for t in transfers[1:])
    assert max(frame_sizes(to_server.data)) <= max_frame_size
    got.settle(Accepted())
    p.pump()
    assert one(p.client.take_events(), ev.DeliveryUpdated).delivery.remote_state == Accepted()


def test_several_large_messages_back_to_back():
    p = link_pair(client_kwargs={"max_frame_size": 4096}, server_kwargs={"max_frame_size": 4096})
    payloads = [_payload(n) for n in (100_000, 1, 4096, 70_000, 0)]
    got = p.transfer(payloads)
    assert [d.payload for d in got] == payloads


def test_large_messages_in_both_directions_at_once():
    client, server = open_pair({"max_frame_size": 512}, {"max_frame_size": 1024})
    session = client.begin_session()
    out = session.sender("out", target=Target(address="a"))
    back = session.receiver("back", target=Target(address="b"), credit=5)
    pump(client, server)
    events = server.take_events()
    serve(server, events, credit=5)
    pump(client, server)
    server_sender = [e.link for e in of_type(events, ev.LinkAttached) if e.link.is_sender][0]
    client.take_events()
    up, down = _payload(50_000), _payload(60_000)[::-1]
    out.send(up)
    server_sender.send(down)
    pump(client, server, buffer_size=1000)
    assert one(server.take_events(), ev.DeliveryReceived).delivery.payload == up
    assert one(client.take_events(), ev.DeliveryReceived).delivery.payload == down
    assert back.credit == 4


@pytest.mark.parametrize("buffer_size", [1, 2, 3, 5, 13])
def test_whole_exchange_in_tiny_pieces(buffer_size):
    """Handshake, attach, a multi-frame message, settlement and close, fed in pieces."""
    p = link_pair(client_kwargs={"max_frame_size": 512}, server_kwargs={"max_frame_size": 512},
                  buffer_size=buffer_size)
    payload = _payload(3000)
    got = p.transfer([payload, b"small"])
    assert [d.payload for d in got] == [payload, b"small"]
    for d in got:
        d.settle(Accepted())
    p.pump()
    assert len(of_type(p.client.take_events(), ev.DeliveryUpdated)) == 2
    p.client.close()
    p.pump()
    assert p.client.transport_done and p.server.transport_done


def test_two_links_on_one_session_keep_their_messages_apart():
    client, server = open_pair({"max_frame_size": 512}, {"max_frame_size": 512})
    session = client.begin_session()
    a = session.sender("a", target=Target(address="a"))
    b = session.sender("b", target=Target(address="b"))
    pump(client, server)
    serve(server, server.take_events(), credit=10)
    pump(client, server)
    for i in range(3):
        a.send(_payload(2000 + i))
        b.send(_payload(1500 + i)[::-1])
    pump(client, server, buffer_size=97)
    got = of_type(server.take_events(), ev.DeliveryReceived)
    by_link = {}
    for e in got:
        by_link.setdefault(e.delivery.link.remote_target.address, []).append(e.delivery.payload)
    assert by_link["a"] == [_payload(2000 + i) for i in range(3)]
    assert by_link["b"] == [_payload(1500 + i)[::-1] for i in range(3)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.one_of(st.integers(0, 3000), st.sampled_from([430, 431, 432, 433, 434, 440, 862, 863, 864, 865])),
    tag_size=st.integers(0, 32),
    max_frame_size=st.sampled_from([512, 600, 1000]),
)
def test_any_size_and_tag_reassembles_within_the_frame_limit(size, tag_size, max_frame_size):
    to_server = Recorder()
    p = link_pair(client_kwargs={"max_frame_size": max_frame_size},
                  server_kwargs={"max_frame_size": max_frame_size})
    payload = _payload(size)
    tag = b"t" * tag_size
    p.sender.send(payload, tag=tag)
    pump(p.client, p.server, a_to_b=to_server)
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    assert got.payload == payload and got.tag == tag
    assert max(frame_sizes(to_server.data)) <= max_frame_size


def test_aborted_delivery_is_reported_and_the_link_carries_on():
    p = link_pair()
    session = p.server_session
    first = Transfer(handle=p.sender.handle, delivery_id=0, delivery_tag=b"ab", more=True)
    p.server.receive_data(frame(first, channel=session.remote_channel, payload=b"partial"))
    p.server.receive_data(frame(Transfer(handle=p.sender.handle, aborted=True), channel=session.remote_channel))
    events = p.server.take_events()
    aborted = one(events, ev.DeliveryAborted)
    assert aborted.delivery.aborted and aborted.delivery.tag == b"ab"
    assert of_type(events, ev.DeliveryReceived) == []
    assert p.receiver.unsettled == {}
    got = p.transfer([b"after the abort"])
    assert [d.payload for d in got] == [b"after the abort"]


def test_continuation_naming_another_delivery_ends_the_session():
    p = link_pair()
    channel = p.server_session.remote_channel
    handle = p.sender.handle
    p.server.receive_data(frame(Transfer(handle=handle, delivery_id=0, delivery_tag=b"a", more=True),
                                channel=channel, payload=b"x"))
    p.server.receive_data(frame(Transfer(handle=handle, delivery_id=5, more=False), channel=channel, payload=b"y"))
    ended = one(p.server.take_events(), ev.SessionEnded)
    assert ended.error is not None
    p.pump()
    assert one(p.client.take_events(), ev.SessionEnded).error.condition == ended.error.condition


def test_delivery_state_on_the_first_transfer_is_kept():
    from switchboard.amqp.spec import Received

    p = link_pair()
    channel = p.server_session.remote_channel
    p.server.receive_data(frame(Transfer(handle=p.sender.handle, delivery_id=0, delivery_tag=b"s",
                                         state=Received(section_number=1, section_offset=2)),
                                channel=channel, payload=b"body"))
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    assert got.remote_state == Received(section_number=1, section_offset=2)
    assert got.payload == b"body"
