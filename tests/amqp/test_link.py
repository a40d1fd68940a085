"""Links between two real engines: attach/detach, credit and drain, tags, settlement,
dispositions over ranges, outcomes, refusal, dynamic termini, message-size limits.

After proton's ``python/tests/proton_tests/engine.py`` CreditTest and SettlementTest.
"""

from __future__ import annotations

import pytest

from helpers import (  # noqa: F401  (pair is a fixture)
    FrameLog,
    Recorder,
    frame,
    link_pair,
    names,
    of_type,
    one,
    open_pair,
    pair,
    pump,
    serve,
    split_frames,
)
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.errors import Condition, LocalProtocolError
from switchboard.amqp.spec import (
    Accepted,
    Detach,
    Disposition,
    Error,
    Flow,
    Modified,
    Received,
    ReceiverSettleMode,
    Rejected,
    Released,
    SenderSettleMode,
    Source,
    Target,
    Transfer,
)
from switchboard.amqp.states import LinkState
from switchboard.amqp.types import Symbol


# ------------------------------------------------------------------------------------
# Attach and detach
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("client_sends", [True, False])
def test_attach_carries_termini_and_modes(client_sends):
    client, server = open_pair()
    session = client.begin_session()
    kwargs = dict(source=Source(address="from-here", durable=1), target=Target(address="to-there"),
                  properties={"owner": "test"}, desired_capabilities=["queue"])
    if client_sends:
        link = session.sender("L", snd_settle_mode=SenderSettleMode.UNSETTLED,
                              rcv_settle_mode=ReceiverSettleMode.SECOND, **kwargs)
    else:
        link = session.receiver("L", **kwargs)
    pump(client, server)
    events = server.take_events()
    remote = one(events, ev.LinkAttached).link
    assert remote.remote_initiated
    assert remote.is_sender is not client_sends
    assert remote.state is LinkState.ATTACH_RCVD
    assert remote.remote_source.address == "from-here"
    assert remote.remote_source.durable == 1
    assert remote.remote_target.address == "to-there"
    assert remote.remote_attach.properties == {"owner": "test"}
    assert list(remote.remote_attach.desired_capabilities) == ["queue"]
    if client_sends:
        assert remote.remote_attach.snd_settle_mode == SenderSettleMode.UNSETTLED
        assert remote.rcv_settle_mode == ReceiverSettleMode.SECOND
    serve(server, events)
    pump(client, server)
    attached = one(client.take_events(), ev.LinkAttached)
    assert attached.link is link and not link.remote_initiated
    assert link.active and remote.active
    assert link.remote_target.address == "to-there"


@pytest.mark.parametrize("closed", [True, False])
@pytest.mark.parametrize("detacher", ["sender", "receiver"])
def test_detach_with_error_reaches_the_peer(detacher, closed):
    p = link_pair()
    a, b = (p.sender, p.receiver) if detacher == "sender" else (p.receiver, p.sender)
    a.detach(Error(condition=Condition.LINK_DETACH_FORCED, description="admin"), closed=closed)
    assert a.state is LinkState.DETACH_SENT
    p.pump()
    b_events = b.session.connection.take_events()
    detached = one(b_events, ev.LinkDetached)
    assert detached.link is b
    assert detached.closed is closed
    assert detached.error.condition == Condition.LINK_DETACH_FORCED
    assert detached.error.description == "admin"
    a_detached = one(a.session.connection.take_events(), ev.LinkDetached)
    assert a_detached.link is a and a_detached.closed is closed
    assert a.state is LinkState.DETACHED and b.state is LinkState.DETACHED
    assert a.session.links == {} and b.session.links == {}


def test_both_detach_at_once():
    p = link_pair()
    p.sender.detach()
    p.receiver.detach()
    p.pump()
    assert names(p.client.take_events()) == ["LinkDetached"]
    assert names(p.server.take_events()) == ["LinkDetached"]
    assert p.sender.state is LinkState.DETACHED and p.receiver.state is LinkState.DETACHED


def test_handles_are_reused_after_detach():
    p = link_pair()
    handle = p.sender.handle
    p.sender.detach()
    p.pump()
    again = p.client_session.sender("again", target=Target(address="x"))
    assert again.handle == handle
    p.pump()
    serve(p.server, p.server.take_events())
    p.pump()
    assert again.active


def test_refused_link_reaches_the_initiator_as_attached_then_detached():
    client, server = open_pair()
    session = client.begin_session()
    link = session.sender("nope", target=Target(address="forbidden"))
    pump(client, server)
    client.take_events()
    remote = one(server.take_events(), ev.LinkAttached).link
    remote.refuse(Error(condition=Condition.UNAUTHORIZED_ACCESS, description="not for you"))
    pump(client, server)
    events = client.take_events()
    assert names(events) == ["LinkAttached", "LinkDetached"]
    assert link.remote_target is None  # a refusal attaches with no terminus
    assert events[1].error.condition == Condition.UNAUTHORIZED_ACCESS
    assert events[1].error.description == "not for you"
    assert link.state is LinkState.DETACHED
    assert names(server.take_events()) == ["LinkDetached"]
    assert remote.state is LinkState.DETACHED


def test_refuse_is_only_for_links_the_peer_is_attaching():
    p = link_pair()
    with pytest.raises(LocalProtocolError):
        p.sender.refuse(Error(condition=Condition.NOT_ALLOWED))


def test_dynamic_source_gets_an_address_from_the_server():
    client, server = open_pair()
    session = client.begin_session()
    link = session.receiver("reply", source=Source(dynamic=True), target=Target(address="me"), credit=5)
    pump(client, server)
    remote = one(server.take_events(), ev.LinkAttached).link
    assert remote.remote_source.dynamic is True
    assert remote.remote_source.address is None
    remote.source = Source(address="dynamic/reply-1", dynamic=True)
    remote.target = remote.remote_target
    remote.attach()
    pump(client, server)
    assert one(client.take_events(), ev.LinkAttached).link is link
    assert link.remote_source.address == "dynamic/reply-1"
    assert remote.credit == 5


def test_send_on_a_link_not_yet_attached_raises():
    client, server = open_pair()
    link = client.begin_session().sender("early")
    with pytest.raises(LocalProtocolError):
        link.send(b"too soon")


# ------------------------------------------------------------------------------------
# Credit
# ------------------------------------------------------------------------------------
def test_credit_flows_and_is_consumed():
    p = link_pair(credit=3)
    assert p.sender.credit == 3
    assert isinstance(p.client_events[-1], ev.CreditGranted)
    p.transfer([b"a", b"b"])
    assert p.sender.credit == 1
    assert p.receiver.credit == 1
    assert p.sender.delivery_count == 2 and p.receiver.delivery_count == 2


def test_send_without_credit_raises():
    p = link_pair(credit=1)
    p.sender.send(b"one")
    with pytest.raises(LocalProtocolError):
        p.sender.send(b"two")
    p.pump()
    assert len(of_type(p.server.take_events(), ev.DeliveryReceived)) == 1


def test_credit_is_replenished_by_add_credit_and_set_by_flow():
    p = link_pair(credit=2)
    p.transfer([b"1", b"2"])
    assert p.sender.credit == 0
    p.receiver.add_credit(5)
    p.pump()
    assert p.sender.credit == 5
    assert names(p.client.take_events()) == ["CreditGranted"]
    p.receiver.flow(1)  # absolute: lowers it
    p.pump()
    assert p.sender.credit == 1


def test_flow_lowered_below_what_is_in_flight_leaves_no_credit():
    p = link_pair(credit=5)
    p.sender.send(b"1")
    p.sender.send(b"2")  # in flight while the receiver lowers its credit to 0
    p.receiver.flow(0)
    p.pump()
    # Both messages were sent under credit the receiver had granted: they are accepted,
    # not punished with transfer-limit-exceeded.
    assert len(of_type(p.server.take_events(), ev.DeliveryReceived)) == 2
    assert p.sender.active and p.receiver.active
    assert p.sender.credit == 0 and p.receiver.credit == 0
    assert p.sender.delivery_count == p.receiver.delivery_count == 2
    with pytest.raises(LocalProtocolError):
        p.sender.send(b"3")
    p.receiver.flow(1)
    p.pump()
    assert p.sender.credit == 1


def test_transfer_beyond_every_grant_detaches_even_after_credit_was_lowered():
    p = link_pair(credit=2)
    p.receiver.flow(0)
    p.pump()
    p.sender.credit = 3  # misbehaving: beyond the original grant of 2
    for i in range(3):
        p.sender.send(b"%d" % i)
    p.pump()
    assert len(of_type(p.server.take_events(), ev.DeliveryReceived)) == 2
    detached = one(p.client.take_events(), ev.LinkDetached)
    assert detached.error.condition == Condition.LINK_TRANSFER_LIMIT_EXCEEDED


def test_many_credit_changes_coalesce_into_one_flow():
    log = FrameLog()
    p = link_pair(credit=1, server_kwargs={"trace": log})
    log.clear()
    for _ in range(50):
        p.receiver.add_credit(1)
    p.pump()
    flows = log.sent(Flow)
    assert len(flows) == 1 and flows[0].link_credit == 51
    assert p.sender.credit == 51


def test_transfer_without_credit_detaches_with_transfer_limit_exceeded():
    p = link_pair(credit=1)
    p.sender.send(b"fine")
    p.sender.credit = 5  # the sender misbehaves: it believes it has credit
    p.sender.send(b"not fine")
    p.pump()
    server_events = p.server.take_events()
    assert names(server_events)[0] == "DeliveryReceived"
    assert len(of_type(server_events, ev.DeliveryReceived)) == 1
    detached = one(p.client.take_events(), ev.LinkDetached)
    assert detached.link is p.sender
    assert detached.error.condition == Condition.LINK_TRANSFER_LIMIT_EXCEEDED
    assert p.sender.state is LinkState.DETACHED and p.receiver.state is LinkState.DETACHED


# ------------------------------------------------------------------------------------
# Drain and echo
# ------------------------------------------------------------------------------------
def test_drain_with_messages_then_drained():
    p = link_pair(credit=0)
    p.receiver.flow(10, drain=True)
    p.pump()
    granted = one(p.client.take_events(), ev.CreditGranted)
    assert granted.link.drain and p.sender.credit == 10
    p.sender.send(b"a")
    p.sender.send(b"b")
    p.sender.drained()
    assert p.sender.credit == 0
    p.pump()
    events = p.server.take_events()
    assert names(events) == ["DeliveryReceived", "DeliveryReceived", "LinkFlowReceived"]
    assert p.receiver.credit == 0
    assert not p.receiver.drain
    assert p.receiver.delivery_count == p.sender.delivery_count == 10


def test_drain_with_nothing_to_send():
    p = link_pair(credit=0)
    p.receiver.flow(4, drain=True)
    p.pump()
    p.client.take_events()
    p.sender.drained()
    p.pump()
    assert names(p.server.take_events()) == ["LinkFlowReceived"]
    assert p.receiver.credit == 0 and p.sender.credit == 0
    # Fresh credit afterwards is ordinary credit, not another drain.
    p.receiver.add_credit(2)
    p.pump()
    assert p.sender.credit == 2 and not p.sender.drain


def test_drain_completed_by_sending_everything():
    """The sender spends all the credit of a drain on messages, then says drained(): the
    receiver still hears the sender's flow, and the drain is over on both ends."""
    p = link_pair(credit=0)
    p.receiver.flow(2, drain=True)
    p.pump()
    p.client.take_events()
    p.sender.send(b"a")
    p.sender.send(b"b")
    assert p.sender.credit == 0
    p.sender.drained()
    p.pump()
    assert names(p.server.take_events()) == ["DeliveryReceived", "DeliveryReceived", "LinkFlowReceived"]
    assert p.receiver.credit == 0 and not p.receiver.drain
    p.sender.drained()  # answered already: nothing more goes out
    p.pump()
    assert p.server.take_events() == []
    p.receiver.add_credit(3)  # ordinary credit now, not another drain
    p.pump()
    assert p.sender.credit == 3 and not p.sender.drain


def test_drain_ends_when_transfers_use_up_the_credit():
    p = link_pair(credit=0)
    p.receiver.flow(1, drain=True)
    p.pump()
    p.sender.send(b"only")
    p.pump()
    assert p.receiver.credit == 0 and not p.receiver.drain
    p.receiver.add_credit(2)
    p.pump()
    assert p.sender.credit == 2 and not p.sender.drain


def test_drained_without_a_drain_does_nothing():
    p = link_pair(credit=3)
    p.sender.drained()
    p.pump()
    assert p.sender.credit == 3
    assert p.server.take_events() == []


def test_flow_echo_is_answered_with_the_links_state():
    p = link_pair(credit=3)
    log = Recorder()
    session = p.server_session
    echo = Flow(next_incoming_id=session.next_incoming_id, incoming_window=1000,
                next_outgoing_id=session.next_outgoing_id, outgoing_window=1000,
                handle=p.receiver.handle, delivery_count=0, link_credit=3, echo=True)
    p.client.receive_data(frame(echo, channel=session.channel))
    assert names(p.client.take_events()) == ["CreditGranted"]
    pump(p.client, p.server, a_to_b=log)
    flows = [f for _, _, f, _ in split_frames(log.data) if isinstance(f, Flow)]
    assert len(flows) == 1
    assert flows[0].handle == p.sender.handle
    assert flows[0].delivery_count == 0 and flows[0].link_credit == 3
    assert names(p.server.take_events()) == ["LinkFlowReceived"]


# ------------------------------------------------------------------------------------
# Delivery tags and formats
# ------------------------------------------------------------------------------------
def test_delivery_tags_are_unique_and_arrive(pair):
    p = pair
    sent = [p.sender.send(b"m") for _ in range(10)]
    assert len({d.tag for d in sent}) == 10
    p.pump()
    got = [e.delivery for e in of_type(p.server.take_events(), ev.DeliveryReceived)]
    assert [d.tag for d in got] == [d.tag for d in sent]
    assert [d.delivery_id for d in got] == [d.delivery_id for d in sent]


def test_caller_chosen_tags_and_message_format_arrive():
    p = link_pair()
    p.sender.send(b"x", tag=b"tag-\x00\xff", message_format=0x1234)
    p.sender.send(b"y", tag=b"t" * 32)
    p.pump()
    got = [e.delivery for e in of_type(p.server.take_events(), ev.DeliveryReceived)]
    assert [d.tag for d in got] == [b"tag-\x00\xff", b"t" * 32]
    assert got[0].message_format == 0x1234


# ------------------------------------------------------------------------------------
# Settlement
# ------------------------------------------------------------------------------------
def test_presettled_deliveries_need_no_disposition():
    log = FrameLog()
    p = link_pair(sender_kwargs={"snd_settle_mode": SenderSettleMode.SETTLED}, client_kwargs={"trace": log})
    delivery = p.sender.send(b"fire and forget")
    assert delivery.settled
    assert p.sender.unsettled == {}
    p.pump()
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    assert got.remote_settled
    assert p.receiver.unsettled == {}
    got.settle(Accepted())
    p.pump()
    assert log.received(Disposition) == []
    assert p.client.take_events() == []


def test_receiver_settles_first(pair):
    p = pair
    delivery = p.sender.send(b"m")
    assert not delivery.settled
    assert p.sender.unsettled == {delivery.delivery_id: delivery}
    p.pump()
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    assert not got.remote_settled
    assert p.receiver.unsettled == {got.delivery_id: got}
    got.settle(Accepted())
    assert p.receiver.unsettled == {}
    p.pump()
    updated = one(p.client.take_events(), ev.DeliveryUpdated)
    assert updated.delivery is delivery
    assert delivery.remote_state == Accepted()
    assert delivery.remote_settled
    assert p.sender.unsettled == {}
    delivery.settle()  # the sender forgets it; nothing more goes out
    p.pump()
    assert p.server.take_events() == []


def test_receiver_settle_mode_second():
    log = FrameLog()
    p = link_pair(sender_kwargs={"rcv_settle_mode": ReceiverSettleMode.SECOND},
                  receiver_kwargs={"rcv_settle_mode": ReceiverSettleMode.SECOND},
                  server_kwargs={"trace": log})
    assert p.sender.rcv_settle_mode == ReceiverSettleMode.SECOND
    delivery = p.sender.send(b"m")
    p.pump()
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    got.update(Accepted())  # the receiver states the outcome, unsettled
    p.pump()
    updated = one(p.client.take_events(), ev.DeliveryUpdated).delivery
    assert updated is delivery
    assert delivery.remote_state == Accepted() and not delivery.remote_settled
    assert p.sender.unsettled == {delivery.delivery_id: delivery}
    delivery.settle(Accepted())  # the sender settles second...
    p.pump()
    final = one(p.server.take_events(), ev.DeliveryUpdated).delivery
    assert final is got and got.remote_settled
    assert p.receiver.unsettled == {}
    log.clear()
    got.settle()  # ...and the receiver settles last, silently
    p.pump()
    assert log.sent(Disposition) == []
    assert p.sender.unsettled == {} and p.client_session._outgoing_unsettled == {}
    assert p.server_session._incoming_unsettled == {}


def test_update_after_settle_raises():
    p = link_pair()
    p.sender.send(b"m")
    p.pump()
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    got.settle(Accepted())
    with pytest.raises(LocalProtocolError):
        got.update(Released())


def test_received_state_is_reported_without_settling():
    p = link_pair()
    delivery = p.sender.send(b"m" * 100)
    p.pump()
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    got.update(Received(section_number=0, section_offset=50))
    p.pump()
    one(p.client.take_events(), ev.DeliveryUpdated)
    assert delivery.remote_state == Received(section_number=0, section_offset=50)
    assert not delivery.remote_settled


def test_sender_settles_first():
    p = link_pair()
    delivery = p.sender.send(b"m")
    p.pump()
    got = one(p.server.take_events(), ev.DeliveryReceived).delivery
    delivery.settle(Released())
    p.pump()
    one(p.server.take_events(), ev.DeliveryUpdated)
    assert got.remote_settled and got.remote_state == Released()
    assert p.receiver.unsettled == {}


def test_sender_settle_mode_settled_enforced():
    p = link_pair(sender_kwargs={"snd_settle_mode": SenderSettleMode.SETTLED})
    with pytest.raises(LocalProtocolError):
        p.sender.send(b"m", settled=False)
    assert p.sender.send(b"m").settled


def test_sender_settle_mode_unsettled_enforced():
    p = link_pair(sender_kwargs={"snd_settle_mode": SenderSettleMode.UNSETTLED})
    with pytest.raises(LocalProtocolError):
        p.sender.send(b"m", settled=True)
    assert not p.sender.send(b"m").settled


def test_sender_settle_mode_mixed_allows_both():
    p = link_pair()
    assert p.sender.snd_settle_mode == SenderSettleMode.MIXED
    a = p.sender.send(b"a", settled=True)
    b = p.sender.send(b"b", settled=False)
    c = p.sender.send(b"c")
    assert a.settled and not b.settled and not c.settled
    p.pump()
    got = [e.delivery for e in of_type(p.server.take_events(), ev.DeliveryReceived)]
    assert [d.remote_settled for d in got] == [True, False, False]
    assert set(p.receiver.unsettled) == {b.delivery_id, c.delivery_id}


def test_a_rejected_send_does_not_consume_credit_or_ids():
    p = link_pair(credit=2, sender_kwargs={"snd_settle_mode": SenderSettleMode.SETTLED})
    with pytest.raises(LocalProtocolError):
        p.sender.send(b"m", settled=False)
    assert p.sender.credit == 2 and p.sender.delivery_count == 0
    d = p.sender.send(b"ok")
    assert d.delivery_id == 0


# ------------------------------------------------------------------------------------
# Dispositions over ranges, outcomes
# ------------------------------------------------------------------------------------
def test_settling_a_hundred_deliveries_sends_few_ranged_dispositions():
    log = FrameLog()
    p = link_pair(credit=100, client_kwargs={"trace": log})
    sent = [p.sender.send(b"%d" % i) for i in range(100)]
    p.pump()
    got = [e.delivery for e in of_type(p.server.take_events(), ev.DeliveryReceived)]
    assert len(got) == 100
    log.clear()
    for delivery in got:
        delivery.settle(Accepted())
    p.pump()
    dispositions = log.received(Disposition)
    assert 1 <= len(dispositions) <= 2
    assert dispositions[0].first == 0 and dispositions[-1].last == 99
    assert all(d.settled and d.state == Accepted() for d in dispositions)
    updated = [e.delivery for e in of_type(p.client.take_events(), ev.DeliveryUpdated)]
    assert updated == sent
    assert all(d.remote_settled and d.remote_state == Accepted() for d in sent)
    assert p.sender.unsettled == {}


def test_ranges_split_where_the_outcome_changes():
    log = FrameLog()
    p = link_pair(credit=30, client_kwargs={"trace": log})
    sent = [p.sender.send(b"m") for _ in range(30)]
    p.pump()
    got = [e.delivery for e in of_type(p.server.take_events(), ev.DeliveryReceived)]
    log.clear()
    for delivery in got[:10]:
        delivery.settle(Accepted())
    for delivery in got[10:20]:
        delivery.settle(Released())
    for delivery in got[20:]:
        delivery.settle(Accepted())
    p.pump()
    dispositions = log.received(Disposition)
    assert [(d.first, d.last) for d in dispositions] == [(0, 9), (10, 19), (20, 29)]
    assert [d.remote_state for d in sent] == [Accepted()] * 10 + [Released()] * 10 + [Accepted()] * 10


def test_settling_out_of_order_still_settles_everything():
    p = link_pair(credit=20)
    sent = [p.sender.send(b"m") for _ in range(20)]
    p.pump()
    got = [e.delivery for e in of_type(p.server.take_events(), ev.DeliveryReceived)]
    for delivery in got[::2] + got[1::2]:
        delivery.settle(Accepted())
    p.pump()
    assert len(of_type(p.client.take_events(), ev.DeliveryUpdated)) == 20
    assert all(d.remote_settled for d in sent)


@pytest.mark.parametrize(
    "outcome",
    [
        Accepted(),
        Released(),
        Rejected(error=Error(condition=Condition.DECODE_ERROR, description="bad body", info={"offset": 12})),
        Rejected(),
        Modified(delivery_failed=True, undeliverable_here=True,
                 message_annotations={Symbol("x-opt-reason"): "busy", Symbol("x-count"): 3}),
        Modified(delivery_failed=True),
    ],
    ids=["accepted", "released", "rejected-error", "rejected", "modified-annotations", "modified"],
)
def test_outcomes_arrive_intact(outcome):
    p = link_pair()
    delivery = p.sender.send(b"m")
    p.pump()
    one(p.server.take_events(), ev.DeliveryReceived).delivery.settle(outcome)
    p.pump()
    one(p.client.take_events(), ev.DeliveryUpdated)
    assert delivery.remote_state == outcome
    assert type(delivery.remote_state) is type(outcome)


def test_dispositions_for_deliveries_on_several_links_of_one_session():
    client, server = open_pair()
    session = client.begin_session()
    senders = [session.sender(f"s{i}", target=Target(address=f"q{i}")) for i in range(3)]
    pump(client, server)
    serve(server, server.take_events(), credit=10)
    pump(client, server)
    sent = [s.send(b"%d" % i) for i in range(3) for s in senders]
    pump(client, server)
    got = [e.delivery for e in of_type(server.take_events(), ev.DeliveryReceived)]
    for delivery in got:
        delivery.settle(Accepted())
    pump(client, server)
    assert len(of_type(client.take_events(), ev.DeliveryUpdated)) == 9
    assert all(d.remote_settled for d in sent)
    assert all(s.unsettled == {} for s in senders)


# ------------------------------------------------------------------------------------
# Limits and loss
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_frame_size", [65536, 512])
def test_message_larger_than_max_message_size_detaches(max_frame_size):
    p = link_pair(receiver_kwargs={"max_message_size": 1000},
                  client_kwargs={"max_frame_size": max_frame_size},
                  server_kwargs={"max_frame_size": max_frame_size})
    p.sender.send(b"x" * 1000)  # at the limit: fine
    p.sender.send(b"x" * 1001)
    p.pump()
    server_events = p.server.take_events()
    assert [len(e.delivery.payload) for e in of_type(server_events, ev.DeliveryReceived)] == [1000]
    detached = one(p.client.take_events(), ev.LinkDetached)
    assert detached.error.condition == Condition.LINK_MESSAGE_SIZE_EXCEEDED
    assert p.receiver.state is LinkState.DETACHED


def test_max_message_size_is_announced():
    p = link_pair(sender_kwargs={"max_message_size": 2048})
    assert p.receiver.remote_max_message_size == 2048


def test_connection_lost_mid_transfer_keeps_unsettled_deliveries_visible():
    p = link_pair(client_kwargs={"max_frame_size": 512}, server_kwargs={"max_frame_size": 512})
    settled_one = p.sender.send(b"done")
    p.pump()
    one(p.server.take_events(), ev.DeliveryReceived).delivery.settle(Accepted())
    p.pump()
    p.client.take_events()
    pending = [p.sender.send(b"x" * 5000) for _ in range(3)]
    half = b"".join(bytes(c) for c in p.client.data_to_send())
    p.server.receive_data(half[: len(half) // 2])
    partial_events = p.server.take_events()
    p.client.connection_lost()
    p.server.connection_lost()
    events = p.client.take_events()
    assert names(events) == ["LinkDetached", "SessionEnded", "ConnectionClosed"]
    assert events[0].link is p.sender
    assert events[2].error.condition == Condition.CONNECTION_FORCED
    assert list(p.sender.unsettled.values()) == pending
    assert settled_one.delivery_id not in p.sender.unsettled
    assert all(not d.remote_settled for d in pending)
    server_events = p.server.take_events()
    assert names(server_events) == ["LinkDetached", "SessionEnded", "ConnectionClosed"]
    received = len(of_type(partial_events, ev.DeliveryReceived))
    assert len(p.receiver.unsettled) == received


def test_blocked_transfers_of_a_detached_link_are_not_sent():
    p = link_pair(credit=10)
    p.server_session.incoming_window = 1
    p.server_session._request_flow(None)
    p.pump()
    for _ in range(3):
        p.sender.send(b"m")
    p.sender.detach()
    p.pump()
    server_events = p.server.take_events()
    assert len(of_type(server_events, ev.DeliveryReceived)) <= 1
    assert one(server_events, ev.LinkDetached).error is None
    # The session is intact: no transfer arrived on a detached handle.
    assert p.client_session.active and p.server_session.active
    assert of_type(p.client.take_events(), ev.SessionEnded) == []


@pytest.mark.parametrize("answer", ["attach", "refuse"])
def test_peer_detaching_before_we_answer_its_attach(answer):
    """The client gives up on a link before the server's owner has answered the attach:
    the owner still answers (attach or refuse) and then both ends finish the detach."""
    client, server = open_pair()
    session = client.begin_session()
    link = session.sender("impatient", target=Target(address="q"))
    link.detach()
    pump(client, server)
    events = server.take_events()
    assert names(events) == ["SessionBegun", "LinkAttached"]
    remote = events[1].link
    assert remote.state is LinkState.ATTACH_RCVD
    if answer == "attach":
        remote.source, remote.target = remote.remote_source, remote.remote_target
        remote.attach()
    else:
        remote.refuse(Error(condition=Condition.NOT_FOUND))
    pump(client, server)
    assert names(server.take_events()) == ["LinkDetached"]
    assert remote.state is LinkState.DETACHED
    client_events = client.take_events()
    assert names(client_events) == ["SessionBegun", "LinkAttached", "LinkDetached"]
    assert link.state is LinkState.DETACHED
    assert session.links == {} and session._remote_handles == {}
    remote_session = remote.session
    assert remote_session.links == {} and remote_session._remote_handles == {}
    # The handle is free again on both sides.
    again = session.sender("again", target=Target(address="q"))
    pump(client, server)
    serve(server, server.take_events())
    pump(client, server)
    assert again.active


@pytest.mark.parametrize("how", ["end", "close"])
def test_nothing_follows_our_end_or_close(how):
    """After session.end() (or connection.close()) no transfer, detach or attach of ours
    may follow on the wire: send and new links raise; detach, and answering the peer's
    attach, are implied by the end."""
    log = Recorder()
    p = link_pair()
    client, server = p.client, p.server
    p.server_session.receiver("late", source=Source(address="s"))  # the client must answer it
    p.pump()
    remote_late = one(client.take_events(), ev.LinkAttached).link
    if how == "end":
        p.client_session.end()
    else:
        client.close()
    with pytest.raises(LocalProtocolError):
        p.sender.send(b"too late")
    remote_late.attach()  # answering too late: the end answers for us, nothing is written
    with pytest.raises(LocalProtocolError):
        p.client_session.sender("new")
    p.sender.detach()  # implied by the end: nothing is written
    pump(client, server, a_to_b=log)
    sent = [type(f).__name__ for _, _, f, _ in split_frames(log.data)]
    assert sent == (["End"] if how == "end" else ["Close"])
    server_events = server.take_events()
    assert all(getattr(e, "error", None) is None for e in server_events), server_events
    assert of_type(client.take_events(), ev.LinkDetached)


# --------------------------------------------------------------------------------------
# A link that ends inside a batch of input has no credit left
# --------------------------------------------------------------------------------------
# An owner handles a batch's events after the whole batch was read: a delivery early in
# the batch must not be sent to a link that a later frame of the same batch ended.
@pytest.mark.parametrize(
    "ending",
    [
        pytest.param(b"\x00\x00\x00\x08\x01\x00\x00\x00", id="connection-framing-error"),
        pytest.param(frame(Detach(handle=0, closed=True)), id="peer-detach"),
    ],
)
def test_a_link_ended_by_the_batch_has_no_credit(ending: bytes) -> None:
    p = link_pair(credit=5, client_sends=False)  # the server sends; the client grants
    assert p.sender.credit == 5
    p.server.receive_data(ending)
    events = p.server.take_events()
    assert one(events, ev.LinkDetached).link is p.sender
    assert p.sender.credit == 0
