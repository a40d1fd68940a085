"""Whatever consumers and senders do, what the router holds stays within its limits.

Each test joins real engines to one ``RouterCore`` in-process (``harness.py``) and plays
a careless or hostile peer: a consumer that grants huge credit and stops reading, one that
closes its session window, a multicast consumer that falls behind, senders whose messages
grow.  Each asserts the bound, that senders were held back by credit (not by silent
drops), and that once the peer behaves every accepted message arrives.
"""

from __future__ import annotations

from switchboard.amqp import events as ev
from switchboard.amqp.delivery import ACCEPTED
from switchboard.amqp.spec import SenderSettleMode, Source
from switchboard.router.config import Limits, MiB
from switchboard.router.credit import DEFAULT_WINDOW as WINDOW

from router_harness import Client, RouterHarness, message

KiB = 1024

TIGHT = Limits(
    max_memory=16 * MiB,
    max_address_bytes=1 * MiB,
    max_address_messages=500,
    max_link_unsettled=100,
    max_connection_output=64 * KiB,
)


def send_while_credit(harness: RouterHarness, link, payload: bytes, rounds: int = 200, limit: int = 100_000) -> list:
    """Send whenever the router gives credit, until it stops giving any; the deliveries."""
    sent = []
    for _ in range(rounds):
        if link.credit <= 0:
            break
        while link.credit > 0 and len(sent) < limit:
            sent.append(link.send(payload))
        harness.run()
    return sent


def accept_everything(harness: RouterHarness, client: Client, rounds: int = 500) -> int:
    """Read and accept all the client is sent, until nothing more comes; how many."""
    client.reading = True
    count = 0
    for _ in range(rounds):
        harness.run()
        received = client.take(ev.DeliveryReceived)
        if not received:
            break
        for event in received:
            if not event.delivery.settled:
                event.delivery.settle(ACCEPTED)
            count += 1
    harness.run()
    return count


def outcomes(deliveries) -> list:
    return [type(d.remote_state).__name__ if d.remote_settled else "unsettled" for d in deliveries]


def test_a_consumer_granting_a_million_credit_and_not_reading_gets_only_what_bounds_allow() -> None:
    harness = RouterHarness(TIGHT)
    hog = harness.connect("hog")
    hog_link = hog.receiver("work", credit=1_000_000)
    harness.run()
    hog.reading = False
    producer = harness.connect("producer")
    sender = producer.sender("work")
    harness.run()

    sent = send_while_credit(harness, sender, message(b"x" * 1000))

    # The router stopped granting credit once the consumer stopped taking messages; it
    # wrote the consumer no more than its unsettled bound and holds (nearly) nothing.
    assert sender.credit == 0
    assert hog_link.active
    out_link = next(iter(harness.core.addresses.find("work").consumers)).link
    assert len(out_link.unsettled) <= TIGHT.max_link_unsettled
    assert len(sent) <= TIGHT.max_link_unsettled + WINDOW
    address = harness.core.addresses.find("work")
    assert address.held_bytes <= TIGHT.max_address_bytes
    assert harness.core.memory.used <= TIGHT.max_memory
    assert harness.core.counters.released_for_memory == 0
    assert "Released" not in outcomes(sent) and "Rejected" not in outcomes(sent)

    # Once it reads and settles, everything sent arrives and is accepted end to end,
    # and the sender gets credit again.
    delivered = accept_everything(harness, hog, rounds=2000)
    assert delivered == len(sent)
    assert outcomes(sent) == ["Accepted"] * len(sent)
    assert sender.credit > 0


def test_a_presettled_consumer_that_stops_reading_is_bounded_by_its_connection_output() -> None:
    harness = RouterHarness(TIGHT)
    hog = harness.connect("hog")
    session = hog.begin()
    hog_link = session.receiver("hog", source=Source(address="feed"), credit=1_000_000,
                                snd_settle_mode=SenderSettleMode.SETTLED)
    harness.run()
    assert hog_link.active
    hog.reading = False
    producer = harness.connect("producer")
    sender = producer.sender("feed")
    harness.run()

    sent = send_while_credit(harness, sender, message(b"y" * 2000), rounds=500)

    assert sender.credit == 0
    assert hog.port.write_paused
    # What the router wrote and the consumer did not read: one output bound plus what was
    # already granted when the bound was crossed.
    assert len(hog.port.unread) <= TIGHT.max_connection_output + WINDOW * 2100
    address = harness.core.addresses.find("feed")
    assert address.held_messages <= WINDOW
    assert harness.core.memory.used <= TIGHT.max_memory

    delivered = accept_everything(harness, hog, rounds=2000)
    assert delivered == len(sent)
    assert outcomes(sent) == ["Accepted"] * len(sent)


def test_a_consumer_whose_session_window_is_closed_gives_its_senders_no_credit() -> None:
    harness = RouterHarness(TIGHT)
    consumer = harness.connect("closed-window")
    session = consumer.begin()
    session.set_incoming_window(0)
    link = consumer.receiver("jobs", credit=1_000_000)
    harness.run()
    producer = harness.connect("producer")
    sender = producer.sender("jobs")
    harness.run()

    assert link.active
    assert sender.credit == 0
    assert harness.core.addresses.find("jobs").held_messages == 0

    # The window opens: credit flows and every message arrives.
    session.set_incoming_window(50)
    harness.run()
    assert sender.credit > 0
    sent = [sender.send(message(b"job")) for _ in range(sender.credit)]
    delivered = accept_everything(harness, consumer)
    assert delivered == len(sent)
    assert outcomes(sent) == ["Accepted"] * len(sent)


def test_a_window_closed_after_credit_was_granted_holds_only_what_was_granted() -> None:
    harness = RouterHarness(TIGHT)
    consumer = harness.connect("consumer")
    session = consumer.begin()
    consumer.receiver("jobs", credit=1_000_000)
    harness.run()
    producer = harness.connect("producer")
    sender = producer.sender("jobs")
    harness.run()
    granted = sender.credit
    assert granted > 0
    session.set_incoming_window(0)
    harness.run()

    sent = send_while_credit(harness, sender, message(b"z" * 100), rounds=100)

    # Nothing beyond the first grant: the router held those and granted no more.
    assert len(sent) == granted
    assert sender.credit == 0
    assert harness.core.addresses.find("jobs").held_messages == granted
    session.set_incoming_window(1000)
    assert accept_everything(harness, consumer) == granted
    assert outcomes(sent) == ["Accepted"] * granted


def test_a_slow_multicast_consumer_holds_back_only_its_own_copies() -> None:
    harness = RouterHarness(TIGHT)
    fast = harness.connect("fast")
    fast_link = fast.receiver("multicast/news", credit=1000)
    slow = harness.connect("slow")
    slow.receiver("multicast/news", credit=1_000_000)
    harness.run()
    slow.reading = False
    producer = harness.connect("producer")
    sender = producer.sender("multicast/news")
    harness.run()

    total = 3000
    sent = []
    for _ in range(1000):
        while sender.credit > 0 and len(sent) < total:
            sent.append(sender.send(message(b"n" * 1000)))
        harness.run()
        for event in fast.take(ev.DeliveryReceived):
            event.delivery.settle(ACCEPTED)
        fast_link.flow(1000)
        if len(sent) >= total:
            break
    harness.run()

    # The fast consumer was not held back by the slow one: the sender sent everything.
    assert len(sent) == total
    assert outcomes(sent) == ["Accepted"] * total
    address = harness.core.addresses.find("multicast/news")
    assert address.held_bytes <= TIGHT.max_address_bytes
    assert address.held_messages <= TIGHT.max_address_messages
    assert harness.core.counters.copies_dropped > 0
    assert harness.core.memory.used <= TIGHT.max_memory


def test_router_memory_pressure_withholds_credit_and_relief_restores_it() -> None:
    limits = Limits(
        max_memory=16 * MiB,
        max_address_bytes=4 * MiB,
        max_address_messages=100_000,
        max_link_unsettled=100,
        max_connection_output=64 * KiB,
    )
    harness = RouterHarness(limits)
    slow_consumers = []
    senders = []
    for index in range(6):
        consumer = harness.connect(f"slow-{index}")
        consumer.receiver(f"multicast/feed-{index}", credit=1_000_000)
        harness.run()
        consumer.reading = False
        slow_consumers.append(consumer)
        producer = harness.connect(f"producer-{index}")
        senders.append(producer.sender(f"multicast/feed-{index}"))
    harness.run()

    payload = message(b"m" * 16 * KiB)
    for _ in range(400):
        progressed = False
        for sender in senders:
            while sender.credit > 0:
                sender.send(payload)
                progressed = True
        harness.run()
        if not progressed:
            break

    memory = harness.core.memory
    assert all(sender.credit == 0 for sender in senders)
    assert memory.used <= limits.max_memory
    assert memory.used >= memory.low_water  # it was memory, not the addresses, that ran out

    for consumer in slow_consumers:
        accept_everything(harness, consumer, rounds=2000)
    harness.advance(1.0)
    assert memory.relieved
    assert all(sender.credit > 0 for sender in senders)


def test_messages_larger_than_the_credit_assumed_are_released_to_their_sender_at_the_bound() -> None:
    harness = RouterHarness(TIGHT)
    consumer = harness.connect("consumer")
    session = consumer.begin()
    consumer.receiver("big", credit=1_000_000)
    harness.run()
    producer = harness.connect("producer")
    sender = producer.sender("big")
    harness.run()
    session.set_incoming_window(0)
    harness.run()
    assert sender.credit > 0

    # Credit was sized for small messages; 64 KiB ones overflow the address's 1 MiB bound.
    sent = [sender.send(message(b"B" * 64 * KiB)) for _ in range(sender.credit)]
    harness.run()

    states = outcomes(sent)
    address = harness.core.addresses.find("big")
    assert address.held_bytes <= TIGHT.max_address_bytes
    assert "Released" in states
    assert set(states) <= {"Released", "unsettled"}
    assert harness.core.counters.released_for_memory == states.count("Released")
    # What was held is delivered once the consumer takes it; nothing is left unanswered.
    session.set_incoming_window(1000)
    accept_everything(harness, consumer)
    assert set(outcomes(sent)) <= {"Released", "Accepted"}
    assert outcomes(sent).count("Accepted") == len(sent) - states.count("Released")


def test_the_anonymous_relay_holds_at_most_its_window_for_a_consumer_that_stops_reading() -> None:
    harness = RouterHarness(TIGHT)
    consumer = harness.connect("consumer")
    session = consumer.begin()
    consumer.receiver("svc", credit=1_000_000)
    harness.run()
    session.set_incoming_window(0)
    harness.run()
    producer = harness.connect("producer")
    relay = producer.sender(None)
    harness.run()

    sent = send_while_credit(harness, relay, message(b"r", to="svc"), rounds=200)

    assert relay.credit == 0
    assert harness.core.addresses.find("svc").held_messages <= WINDOW
    assert len(sent) <= WINDOW
    session.set_incoming_window(1000)
    accept_everything(harness, consumer)
    assert outcomes(sent) == ["Accepted"] * len(sent)
