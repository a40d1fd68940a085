"""Input in budgeted batches, and session windows a receiver keeps at the size it chose.

* ``frame_budget`` lets the owner handle a connection's input a batch at a time
  (``input_pending`` / ``continue_input``) and must change nothing but the batching.
* ``Session.set_incoming_window`` holds the peer to a window (zero stops its transfers);
  the sender's engine reports ``SessionWindowOpened`` when it may send again, and a peer
  that sends beyond the window ends the session with ``window-violation``.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from switchboard.amqp import events as ev
from switchboard.amqp.errors import Condition
from switchboard.amqp.spec import Transfer

from helpers import frame, link_pair, of_type, one, pump, split_frames


def _deliveries_in_batches(budget: int | None, count: int, chunk: int | None) -> tuple[list[bytes], int]:
    p = link_pair(credit=count)
    p.receiver_conn.frame_budget = budget
    for i in range(count):
        p.sender.send(b"message-%d" % i)
    data = b"".join(bytes(c) for c in p.sender_conn.data_to_send())
    received: list[bytes] = []
    calls = 0
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        p.receiver_conn.receive_data(piece)
        calls += 1
        received += [e.delivery.payload for e in of_type(p.receiver_conn.take_events(), ev.DeliveryReceived)]
        while p.receiver_conn.input_pending:
            assert calls < 10_000
            p.receiver_conn.continue_input()
            calls += 1
            received += [e.delivery.payload for e in of_type(p.receiver_conn.take_events(), ev.DeliveryReceived)]
    return received, calls


def test_a_budget_hands_over_that_many_frames_per_call() -> None:
    p = link_pair(credit=10)
    p.receiver_conn.frame_budget = 3
    for i in range(10):
        p.sender.send(b"m%d" % i)
    data = b"".join(bytes(c) for c in p.sender_conn.data_to_send())

    p.receiver_conn.receive_data(data)
    first = of_type(p.receiver_conn.take_events(), ev.DeliveryReceived)
    assert [e.delivery.payload for e in first] == [b"m0", b"m1", b"m2"]
    assert p.receiver_conn.input_pending
    batches = [len(first)]
    while p.receiver_conn.input_pending:
        p.receiver_conn.continue_input()
        batches.append(len(of_type(p.receiver_conn.take_events(), ev.DeliveryReceived)))
    assert batches == [3, 3, 3, 1]


@settings(max_examples=60, deadline=None)
@given(budget=st.integers(1, 12), count=st.integers(1, 40), chunk=st.one_of(st.none(), st.integers(1, 300)))
def test_a_budget_changes_the_batching_and_nothing_else(budget: int, count: int, chunk: int | None) -> None:
    unbudgeted, _ = _deliveries_in_batches(None, count, chunk)
    budgeted, _ = _deliveries_in_batches(budget, count, chunk)
    assert budgeted == unbudgeted == [b"message-%d" % i for i in range(count)]


def test_a_window_of_zero_stops_the_sender_until_the_receiver_opens_it() -> None:
    p = link_pair(credit=20)
    p.server_session.set_incoming_window(0)
    pump(p.client, p.server)
    assert p.client_session.output_blocked
    for i in range(5):
        p.sender.send(b"w%d" % i)
    pump(p.client, p.server)
    assert of_type(p.server.take_events(), ev.DeliveryReceived) == []

    p.server_session.set_incoming_window(3)
    pump(p.client, p.server)
    opened = of_type(p.client.take_events(), ev.SessionWindowOpened)
    assert [e.session for e in opened] == [p.client_session]
    got = [e.delivery.payload for e in of_type(p.server.take_events(), ev.DeliveryReceived)]
    assert got == [b"w0", b"w1", b"w2", b"w3", b"w4"]  # the window is replenished at half


def test_a_transfer_beyond_the_window_ends_the_session_with_window_violation() -> None:
    p = link_pair(credit=20)
    p.server_session.set_incoming_window(0)
    pump(p.client, p.server)
    session = p.client_session
    # A peer that ignores the window: write the transfer ourselves.
    p.server.receive_data(frame(Transfer(handle=p.sender.handle, delivery_id=0, delivery_tag=b"t", settled=True),
                                channel=session.channel, payload=b"\x00Sw\xa1\x01x"))
    ended = one(p.server.take_events(), ev.SessionEnded)
    assert ended.error.condition == Condition.SESSION_WINDOW_VIOLATION


def _two_senders(max_partial_bytes: int):
    from switchboard.amqp.spec import Source, Target

    p = link_pair(credit=10, client_kwargs={"max_frame_size": 512}, server_kwargs={"max_frame_size": 512})
    p.server.max_partial_bytes = max_partial_bytes
    second = p.client_session.sender("second", source=Source(address="s2"), target=Target(address="t2"))
    pump(p.client, p.server)
    remote = one(p.server.take_events(), ev.LinkAttached).link
    remote.source, remote.target = remote.remote_source, remote.remote_target
    remote.attach()
    remote.flow(10)
    pump(p.client, p.server)
    return p, second, remote


def test_messages_in_progress_on_a_connection_are_bounded() -> None:
    p, second, second_remote = _two_senders(max_partial_bytes=2500)
    # Interleave the frames of two 2,000-byte messages: together they pass 2,500 bytes.
    p.sender.send(b"a" * 2000)
    second.send(b"b" * 2000)
    frames = split_frames(b"".join(bytes(c) for c in p.client.data_to_send()))
    first = [f for f in frames if f[2].handle == p.sender.handle]
    other = [f for f in frames if f[2].handle == second.handle]
    interleaved = first[:2] + other + first[2:]
    p.server.receive_data(b"".join(frame(perf, channel, payload) for _, channel, perf, payload in interleaved))
    received = of_type(p.server.take_events(), ev.DeliveryReceived)
    pump(p.client, p.server)
    detached = of_type(p.client.take_events(), ev.LinkDetached)
    assert [d.link for d in detached] == [second]
    assert detached[0].error.condition == Condition.RESOURCE_LIMIT_EXCEEDED
    assert "2500 bytes" in detached[0].error.description
    assert [r.delivery.payload for r in received] == [b"a" * 2000]
    assert p.server.partial_bytes == 0


def test_bytes_in_progress_are_given_back_on_completion_and_detach() -> None:
    p, second, second_remote = _two_senders(max_partial_bytes=1_000_000)
    p.sender.send(b"a" * 1500)
    pump(p.client, p.server)
    assert p.server.partial_bytes == 0
    # A delivery abandoned half-way when its link is detached.
    second.send(b"c" * 5000)
    frames = split_frames(b"".join(bytes(c) for c in p.client.data_to_send()))
    p.server.receive_data(b"".join(frame(perf, channel, payload) for _, channel, perf, payload in frames[:3]))
    assert p.server.partial_bytes > 0
    p.server.take_events()
    second_remote.detach()
    pump(p.client, p.server)
    assert p.server.partial_bytes == 0
