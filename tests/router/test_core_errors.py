"""A bug met while handling one connection's events closes that connection only."""

from __future__ import annotations

import pytest

from switchboard.amqp import events as ev
from switchboard.amqp.delivery import ACCEPTED
from switchboard.amqp.errors import Condition

from router_harness import RouterHarness, message


@pytest.mark.internal_errors_close
def test_an_internal_error_closes_only_the_connection_that_met_it() -> None:
    harness = RouterHarness()
    core = harness.core
    attach = core._handlers[ev.LinkAttached]

    def attach_with_a_bug(conn, event):
        if conn.container_id == "unlucky":
            raise RuntimeError("a bug in the router")
        attach(conn, event)

    core._handlers[ev.LinkAttached] = attach_with_a_bug
    unlucky = harness.connect("unlucky")
    unlucky.receiver("svc", credit=1)
    harness.run()
    closed = unlucky.take(ev.ConnectionClosed)
    assert [c.error.condition for c in closed] == [Condition.INTERNAL_ERROR]

    consumer = harness.connect("consumer")
    consumer.receiver("svc", credit=5)
    producer = harness.connect("producer")
    sender = producer.sender("svc")
    harness.run()
    delivery = sender.send(message(b"still routing"))
    harness.run()
    for event in consumer.take(ev.DeliveryReceived):
        event.delivery.settle(ACCEPTED)
    harness.run()
    assert delivery.remote_state == ACCEPTED
