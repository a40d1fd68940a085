"""Router-level cases that ``bench/fuzz.py`` found, each as a deterministic test.

The engine reads a whole batch of received frames before the router sees the events of
the batch, so when the router acts on an event, a later frame of the same batch may
already have ended the link, session or connection the event speaks of.  Each test here
sends such a batch in one write, to a real router process, and checks what a client
would: the outcome of its message, the conditions it was told, that its connection goes
on, and (the ``router`` fixture) that the router logged no traceback.
"""

from __future__ import annotations

import pytest

from system_support import RawPeer
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Released, Source, Target


def _batch(peer: RawPeer) -> None:
    """Send everything the engine has queued in one write (so it arrives as one read)."""
    peer.send_raw(b"".join(bytes(chunk) for chunk in peer.engine.data_to_send()))


@pytest.mark.parametrize("ending", ["detach", "end"])
def test_message_to_a_consumer_ended_in_the_same_batch(router, ending: str) -> None:
    """A message arrives for a consumer whose own detach (or session end) follows in the
    same read: the consumer is gone, so the message is released, and nobody's connection
    is closed for an internal error."""
    r = router()
    peer = RawPeer(r.port, Connection("same-batch", idle_timeout=None))
    try:
        engine = peer.engine
        engine.open()
        consumer_session = engine.begin_session()
        producer_session = engine.begin_session()
        consumer = consumer_session.receiver("consumer", source=Source(address="batch/one"), target=Target(address="me"), credit=5)
        producer = producer_session.sender("producer", source=Source(address="me"), target=Target(address="batch/one"))
        assert peer.pump(lambda: producer.credit > 0, timeout=10), peer.events

        delivery = producer.send(Message(b"for a consumer about to leave").encode())
        if ending == "detach":
            consumer.detach()
        else:
            consumer_session.end()
        _batch(peer)

        assert peer.pump(lambda: delivery.remote_settled, timeout=10), peer.events
        assert isinstance(delivery.remote_state, Released), delivery.remote_state
        assert not engine.closed, engine.error
        assert producer.active
        assert not [e for e in peer.events if isinstance(e, ev.DeliveryReceived)]
    finally:
        peer.close()


def test_multicast_copy_for_a_consumer_ended_in_the_same_batch(router) -> None:
    """The same for a multicast address: the copy for the leaving consumer is dropped, the
    sender's message is accepted (multicast settles at the router), the connection lives."""
    r = router()
    peer = RawPeer(r.port, Connection("same-batch-multicast", idle_timeout=None))
    try:
        engine = peer.engine
        engine.open()
        session = engine.begin_session()
        consumer = session.receiver("consumer", source=Source(address="multicast/batch"), target=Target(address="me"), credit=5)
        producer = session.sender("producer", source=Source(address="me"), target=Target(address="multicast/batch"))
        assert peer.pump(lambda: producer.credit > 0, timeout=10), peer.events

        delivery = producer.send(Message(b"a copy nobody will take").encode())
        consumer.detach()
        _batch(peer)

        assert peer.pump(lambda: delivery.remote_settled, timeout=10), peer.events
        assert type(delivery.remote_state).__name__ == "Accepted", delivery.remote_state
        assert not engine.closed, engine.error
        assert not [e for e in peer.events if isinstance(e, ev.DeliveryReceived)]
        assert not [e for e in peer.events if isinstance(e, ev.SessionEnded) and e.session is session]
    finally:
        peer.close()

