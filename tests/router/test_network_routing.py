"""Routing across a network of real router cores, in-process, on a simulated clock.

Each test draws its topology; routers are joined by in-memory inter-router connections
(``network_harness.py``) and clients are our engine.  What a client sees is what is
asserted: which messages arrive where, the outcomes senders get, the credit they get.
"""

from __future__ import annotations

from typing import Any

from switchboard.amqp import events as ev
from switchboard.amqp.delivery import ACCEPTED
from switchboard.amqp.errors import Condition
from switchboard.amqp.message import Message, read_routing
from switchboard.amqp.spec import Modified, Properties, Released
from switchboard.router.interrouter import TRACE
from switchboard.router.plane import LINK_IDLE_SECONDS

from network_harness import Fabric
from router_harness import Client, RouterHarness, message
from switchboard.router.config import RouterConfig

CONVERGE = 3.0
"""Simulated seconds within which a small network has converged."""


def fabric_of(*router_ids: str, links: list[tuple[str, str]] | None = None, **config) -> Fabric:
    fabric = Fabric()
    for router_id in router_ids:
        fabric.router(router_id, **config)
    for a, b in links or []:
        fabric.connect(a, b)
    fabric.advance(CONVERGE)
    return fabric


def accept_all(client: Client) -> list[bytes]:
    bodies = []
    for event in client.take(ev.DeliveryReceived):
        bodies.append(Message.decode(event.delivery.payload).body)
        if not event.delivery.settled:
            event.delivery.settle(ACCEPTED)
    return bodies


def test_a_message_crosses_two_routers_and_its_sender_hears_the_consumers_outcome() -> None:
    """
        producer ── A ── B ── consumer
    """
    fabric = fabric_of("A", "B", links=[("A", "B")])
    consumer = fabric.routers["B"].connect("consumer")
    consumer.receiver("svc", credit=10)
    fabric.advance(CONVERGE)
    producer = fabric.routers["A"].connect("producer")
    sender = producer.sender("svc")
    fabric.advance(CONVERGE)
    assert sender.credit > 0

    delivery = sender.send(message(b"across"))
    fabric.run()
    received = consumer.take(ev.DeliveryReceived)
    assert [Message.decode(e.delivery.payload).body for e in received] == [b"across"]
    assert read_routing(received[0].delivery.payload).message_annotations[TRACE] == ["A"]
    assert delivery.remote_state is None  # not settled until the consumer says so
    received[0].delivery.settle(ACCEPTED)
    fabric.run()
    assert delivery.remote_state == ACCEPTED


def test_credit_follows_the_remote_consumers_capacity() -> None:
    """
        producer ── A ── B ── consumer (credit 5, reads nothing)
    """
    fabric = fabric_of("A", "B", links=[("A", "B")])
    consumer = fabric.routers["B"].connect("consumer")
    consumer.receiver("work", credit=5)
    fabric.advance(CONVERGE)
    producer = fabric.routers["A"].connect("producer")
    sender = producer.sender("work")
    fabric.advance(CONVERGE)
    sent = []
    for _ in range(20):
        while sender.credit > 0:
            sent.append(sender.send(message(b"w")))
        fabric.run()
    assert len(sent) == 5  # no more than the consumer on B can take
    assert accept_all(consumer) == [b"w"] * 5
    fabric.run()
    assert all(d.remote_state == ACCEPTED for d in sent)


def test_a_line_of_three_routers_carries_messages_through_the_middle() -> None:
    """
        producer ── A ── B ── C ── consumer
    """
    fabric = fabric_of("A", "B", "C", links=[("A", "B"), ("B", "C")])
    consumer = fabric.routers["C"].connect("consumer")
    consumer.receiver("far", credit=10)
    fabric.advance(CONVERGE)
    producer = fabric.routers["A"].connect("producer")
    sender = producer.sender("far")
    fabric.advance(CONVERGE)
    sent = [sender.send(message(b"m%d" % i)) for i in range(min(3, sender.credit))]
    fabric.run()
    received = consumer.take(ev.DeliveryReceived)
    assert len(received) == 3
    assert read_routing(received[0].delivery.payload).message_annotations[TRACE] == ["A", "B"]
    for event in received:
        event.delivery.settle(ACCEPTED)
    fabric.run()
    assert [d.remote_state for d in sent] == [ACCEPTED] * 3


def test_multicast_reaches_every_consumer_exactly_once_in_a_ring() -> None:
    """
          A
         / \\        a consumer on each router; the producer on A
        B ─ C
    """
    fabric = fabric_of("A", "B", "C", links=[("A", "B"), ("B", "C"), ("C", "A")])
    consumers = {}
    for router_id in "ABC":
        client = fabric.routers[router_id].connect(f"listener-{router_id}")
        client.receiver("multicast/news", credit=100)
        consumers[router_id] = client
    fabric.advance(CONVERGE)
    producer = fabric.routers["A"].connect("producer")
    sender = producer.sender("multicast/news")
    fabric.advance(CONVERGE)
    for i in range(10):
        sender.send(message(b"n%d" % i))
    fabric.run()
    for router_id, client in consumers.items():
        assert accept_all(client) == [b"n%d" % i for i in range(10)], router_id


def test_replies_to_a_dynamic_address_find_their_way_back() -> None:
    """
        client (dynamic reply address) ── A ── B ── C ── server
    """
    fabric = fabric_of("A", "B", "C", links=[("A", "B"), ("B", "C")])
    server = fabric.routers["C"].connect("server")
    server.receiver("rpc", credit=10)
    replier = server.sender(None)
    fabric.advance(CONVERGE)
    client = fabric.routers["A"].connect("client")
    replies = client.receiver("", credit=10, dynamic=True)
    requests = client.sender("rpc")
    fabric.advance(CONVERGE)
    reply_to = replies.remote_source.address
    assert reply_to.startswith("_dynamic/A/")

    requests.send(Message(b"ping", properties=Properties(reply_to=reply_to)).encode())
    fabric.run()
    (request,) = server.take(ev.DeliveryReceived)
    request.delivery.settle(ACCEPTED)
    answer = replier.send(message(b"pong", to=reply_to))
    fabric.run()
    assert accept_all(client) == [b"pong"]
    fabric.run()
    assert answer.remote_state == ACCEPTED


def test_balanced_spreads_across_routers_with_consumers() -> None:
    """
             ┌─ B ── consumer
        A ───┤
             └─ C ── consumer
    """
    fabric = fabric_of("A", "B", "C", links=[("A", "B"), ("A", "C")])
    consumers = []
    for router_id in "BC":
        client = fabric.routers[router_id].connect(f"worker-{router_id}")
        client.receiver("jobs", credit=50)
        consumers.append(client)
    fabric.advance(CONVERGE)
    producer = fabric.routers["A"].connect("producer")
    sender = producer.sender("jobs")
    fabric.advance(CONVERGE)
    for i in range(60):
        assert sender.credit > 0
        sender.send(message(b"j"))
        fabric.run()
        for client in consumers:
            accept_all(client)
    counts = [c.engine.sessions[0].links[0].delivery_count for c in consumers]
    assert sum(counts) == 60
    assert min(counts) >= 15, counts


def test_a_cut_link_fails_what_was_in_flight_and_traffic_takes_the_other_way() -> None:
    """
          A ─── B       the producer on A, the consumer on C; A─B is cut with messages
          │     │       in flight through it; A─C (cost 3) takes over
          C ────┘
    """
    fabric = Fabric()
    for router_id in "ABC":
        fabric.router(router_id)
    ab = fabric.connect("A", "B")
    fabric.connect("B", "C")
    fabric.connect("A", "C", cost=3)
    fabric.advance(CONVERGE)
    consumer = fabric.routers["C"].connect("consumer")
    consumer.receiver("svc", credit=100)
    fabric.advance(CONVERGE)
    producer = fabric.routers["A"].connect("producer")
    sender = producer.sender("svc")
    fabric.advance(CONVERGE)
    in_flight = [sender.send(message(b"before")) for _ in range(3)]
    fabric.run()
    assert len(consumer.take(ev.DeliveryReceived)) == 3  # via B, not yet settled
    ab.cut()
    for delivery in in_flight:
        assert isinstance(delivery.remote_state, Modified) and delivery.remote_state.delivery_failed
    fabric.advance(CONVERGE)
    assert sender.credit > 0
    after = sender.send(message(b"after"))
    fabric.run()
    assert accept_all(consumer) == [b"after"]
    fabric.run()
    assert after.remote_state == ACCEPTED


def test_a_router_with_an_id_already_in_the_network_is_refused() -> None:
    """
        A ── B ── A'      A' is configured with A's id: B refuses it, A keeps its place
    """
    fabric = Fabric()
    fabric.router("A")
    fabric.router("B")
    first = fabric.connect("A", "B")
    impostor = RouterHarness(None, RouterConfig(router_id="A"))
    impostor.fabric = fabric
    fabric.routers["A-again"] = impostor
    second = fabric.connect("A-again", "B")
    fabric.advance(CONVERGE)
    assert not first.port_a.gone
    assert second.port_a.gone and second.port_b.gone
    refusal = second.port_a.engine.error
    assert refusal is not None and refusal.condition == Condition.NOT_ALLOWED
    assert "already connected" in refusal.description


def test_released_when_no_router_has_a_consumer() -> None:
    fabric = fabric_of("A", "B", links=[("A", "B")])
    producer = fabric.routers["A"].connect("producer")
    relay = producer.sender(None)
    fabric.advance(CONVERGE)
    delivery = relay.send(message(b"nobody", to="nowhere"))
    fabric.run()
    assert isinstance(delivery.remote_state, Released)


def test_routing_annotations_a_client_copies_into_its_reply_do_not_mislead_the_routers() -> None:
    """
        client ── A ── B ── server, which answers by sending the request back, its
                             annotations (x-opt-sb-trace ["A"]) and all
    """
    fabric = fabric_of("A", "B", links=[("A", "B")])
    server = fabric.routers["B"].connect("server")
    server.receiver("echo", credit=10)
    replier = server.sender(None)
    fabric.advance(CONVERGE)
    client = fabric.routers["A"].connect("client")
    replies = client.receiver("", credit=10, dynamic=True)
    requests = client.sender("echo")
    fabric.advance(CONVERGE)
    reply_to = replies.remote_source.address
    requests.send(Message(b"ping", properties=Properties(reply_to=reply_to)).encode())
    fabric.run()
    (request,) = server.take(ev.DeliveryReceived)
    request.delivery.settle(ACCEPTED)
    echoed = Message.decode(request.delivery.payload)
    assert echoed.message_annotations[TRACE] == ["A"]
    echoed.properties = Properties(to=reply_to)
    answer = replier.send(echoed.encode())
    fabric.run()
    (reply,) = client.take(ev.DeliveryReceived)
    assert read_routing(reply.delivery.payload).message_annotations[TRACE] == ["B"]
    reply.delivery.settle(ACCEPTED)
    fabric.run()
    assert answer.remote_state == ACCEPTED


def test_local_consumers_with_room_come_first_and_closest_keeps_to_the_nearest() -> None:
    """
             ┌─(1)─ B ── consumer
        A ───┤                        a consumer on A too, for "balanced"
             └─(5)─ C ── consumer
    """
    fabric = Fabric()
    for router_id in "ABC":
        fabric.router(router_id)
    fabric.connect("A", "B", cost=1)
    fabric.connect("A", "C", cost=5)
    fabric.advance(CONVERGE)
    consumers = {}
    for router_id in "ABC":
        client = fabric.routers[router_id].connect(f"worker-{router_id}")
        client.receiver("work", credit=100)
        client.receiver("closest/work", credit=100)
        consumers[router_id] = client
    fabric.advance(CONVERGE)
    producer = fabric.routers["A"].connect("producer")
    balanced = producer.sender("work")
    closest = producer.sender("closest/work")
    fabric.advance(CONVERGE)
    for _ in range(20):
        balanced.send(message(b"b"))
    fabric.run()
    got = {rid: accept_all(client) for rid, client in consumers.items()}
    assert got == {"A": [b"b"] * 20, "B": [], "C": []}  # the local consumer had room

    fabric.routers["A"].clients.remove(consumers["A"])
    consumers["A"].port.abort()
    fabric.advance(CONVERGE)
    for _ in range(20):
        closest.send(message(b"c"))
    fabric.run()
    got = {rid: accept_all(client) for rid, client in consumers.items() if rid != "A"}
    assert got == {"B": [b"c"] * 20, "C": []}  # the nearest router only


def relay_to_a_consumer_across(fabric: Fabric) -> tuple[Client, Any]:
    """A consumer of ``svc`` at A; a client of B sending on the anonymous relay (as the
    oslo.messaging driver sends its calls).  The clock starts past LINK_IDLE_SECONDS, as a
    router's monotonic clock is on a machine that has been up a minute."""
    consumer = fabric.routers["A"].connect("consumer")
    consumer.receiver("svc", credit=10)
    producer = fabric.routers["B"].connect("producer")
    relay = producer.sender(None)
    fabric.advance(LINK_IDLE_SECONDS + CONVERGE)
    return consumer, relay


def test_the_link_a_relayed_message_opened_to_another_router_stays_while_in_use() -> None:
    """
        consumer ── A ── B ── producer (anonymous relay)
    The link B opens to A for the address on the first message is not taken for idle a
    second later: the second message goes on it."""
    fabric = fabric_of("A", "B", links=[("A", "B")])
    consumer, relay = relay_to_a_consumer_across(fabric)
    view_of_b = fabric.routers["B"].core.plane.view
    first = relay.send(message(b"first", to="svc"))
    fabric.run()
    assert accept_all(consumer) == [b"first"]
    fabric.run()
    assert first.remote_state == ACCEPTED
    fabric.advance(2.0)
    assert [n["address_links"] for n in view_of_b()["neighbours"]] == [1]
    second = relay.send(message(b"second", to="svc"))
    fabric.run()
    assert accept_all(consumer) == [b"second"]
    assert [n["delivered_out"] for n in view_of_b()["neighbours"]] >= [2]
    fabric.run()
    assert second.remote_state == ACCEPTED


def test_a_message_arriving_while_the_idle_link_for_its_address_detaches_goes_on_a_new_one() -> None:
    """
        consumer ── A ── B ── producer (anonymous relay)
    B takes its link to A for ``svc`` for idle and detaches it; a message for ``svc``
    reaches B before A has answered the detach.  It waits for a new link, not for ever."""
    fabric = fabric_of("A", "B", links=[("A", "B")])
    consumer, relay = relay_to_a_consumer_across(fabric)
    first = relay.send(message(b"first", to="svc"))
    fabric.run()
    assert accept_all(consumer) == [b"first"]
    fabric.run()
    assert first.remote_state == ACCEPTED
    router_b = fabric.routers["B"]
    deadline = fabric.now + LINK_IDLE_SECONDS + CONVERGE
    while True:
        assert fabric.now < deadline, "B kept its idle link"
        fabric.now += 0.1
        for router in fabric.routers.values():
            router.tick()
        if router_b.core.addresses.find("svc") is None:
            break  # idle: B retired its link, and its detach is written, not yet carried to A
        fabric.run()
    late = relay.send(message(b"late", to="svc"))
    fabric.run()
    fabric.advance(1.0)
    assert accept_all(consumer) == [b"late"]
    fabric.run()
    assert late.remote_state == ACCEPTED


def test_a_link_detaching_when_its_connection_is_cut_is_not_made_again() -> None:
    """
        consumer ── A ──✂── B ── producer (anonymous relay)
    B's idle link to A for ``svc`` is detaching when the connection to A breaks: B does
    not try to attach another on the lost session, and routes again once A is back."""
    fabric = fabric_of("A", "B", links=[("A", "B")])
    consumer, relay = relay_to_a_consumer_across(fabric)
    relay.send(message(b"first", to="svc"))
    fabric.run()
    assert accept_all(consumer) == [b"first"]
    fabric.run()
    router_b = fabric.routers["B"]
    deadline = fabric.now + LINK_IDLE_SECONDS + CONVERGE
    while router_b.core.addresses.find("svc") is not None:
        assert fabric.now < deadline, "B kept its idle link"
        fabric.now += 0.1
        for router in fabric.routers.values():
            router.tick()
        if router_b.core.addresses.find("svc") is not None:
            fabric.run()
    relay.send(message(b"held", to="svc"))
    while router_b.step():
        pass  # the message reaches B, and waits there for a link to A: nothing moves between the routers
    assert router_b.core.addresses.find("svc").held_messages == 1
    fabric.pipes[0].cut()
    fabric.advance(CONVERGE)
    assert [n["address_links"] for n in router_b.core.plane.view()["neighbours"]] == []
    fabric.connect("A", "B")
    fabric.advance(CONVERGE)
    again = relay.send(message(b"again", to="svc"))
    fabric.run()
    assert b"again" in accept_all(consumer)
    fabric.run()
    assert again.remote_state == ACCEPTED
