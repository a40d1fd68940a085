"""Deterministic cases the listener fuzzer (``test_fuzz_listener.py``) found.

The engine hands a whole batch of received frames to its owner at once, so an event may
describe an endpoint that a later frame of the same batch already ended.  An owner
answering such an event (``link.attach()``, ``link.refuse()``) must neither raise nor
put frames on the wire after the connection's close.
"""

from __future__ import annotations

import pytest

from interop_support import performatives
from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.framing import AMQP_HEADER
from switchboard.amqp.spec import Attach, Begin, Close, Error, Open, Role, Source, Target


def _frame(performative, channel: int = 0) -> bytes:
    body = bytearray()
    performative.encode_into(body)
    return (8 + len(body)).to_bytes(4, "big") + b"\x02\x00" + channel.to_bytes(2, "big") + bytes(body)


def _client_stream(*, then: bytes) -> bytes:
    """A client that attaches a sending link, then (in the same write) does ``then``."""
    return (
        AMQP_HEADER
        + _frame(Open(container_id="client"))
        + _frame(Begin(next_outgoing_id=0, incoming_window=100, outgoing_window=100))
        + _frame(Attach(name="link", handle=0, role=Role.SENDER, source=Source(address="a"), target=Target(address="q"), initial_delivery_count=0))
        + then
    )


@pytest.mark.parametrize("answer", ["attach", "refuse"])
@pytest.mark.parametrize(
    "ending",
    [
        _frame(Close()),  # the peer's close
        b"\x00\x00\x00\x08\x07\x00\x00\x00",  # a framing error (data offset 7 > size)
    ],
    ids=["peer-close", "framing-error"],
)
def test_answering_an_attach_whose_connection_already_ended(answer: str, ending: bytes) -> None:
    server = Connection("server", server=True)
    server.open()
    server.receive_data(_client_stream(then=ending))
    events = server.take_events()
    attached = [e for e in events if isinstance(e, ev.LinkAttached)]
    assert attached and isinstance(events[-1], ev.ConnectionClosed)
    before = b"".join(bytes(chunk) for chunk in server.data_to_send())
    assert isinstance(performatives(before)[-1], Close)

    link = attached[0].link
    if answer == "attach":
        link.attach()
    else:
        link.refuse(Error(condition="amqp:not-found"))

    after = b"".join(bytes(chunk) for chunk in server.data_to_send())
    assert after == b"", f"frames after our close: {performatives(after)}"


def test_output_taken_when_there_was_none_is_not_shared_with_later_output() -> None:
    """``data_to_send()`` with nothing to send returned the engine's own (empty) list,
    which later output then filled: the io layer's flush, taking output, ticking, and
    taking output again, wrote the idle-timeout close (or a heartbeat) twice.  Found by
    tests/io/test_io_protocol.py's idle-timeout test."""
    server = Connection("server", server=True, idle_timeout=1.0)
    server.open()
    server.receive_data(AMQP_HEADER + _frame(Open(container_id="client")))
    server.data_to_send()
    server.tick(0.0)
    server.data_to_send()

    nothing = server.data_to_send()
    assert nothing == []
    assert server.tick(5.0) is None  # the idle timeout: our close is written
    close = server.data_to_send()
    assert nothing == [], "the empty list handed out earlier was filled afterwards"
    assert [type(p) for p in performatives(b"".join(bytes(c) for c in close))] == [Close]


def test_descriptions_name_numbers_as_numbers() -> None:
    """The error descriptions a peer reads showed decoded numbers by their Python repr
    ("handle UInt(0) is already attached").  Found by bench/fuzz.py's histogram of the
    descriptions the router answers with."""
    server = Connection("server", server=True)
    server.open()
    attach = Attach(name="again", handle=0, role=Role.SENDER, source=Source(address="a"), target=Target(address="q"), initial_delivery_count=0)
    server.receive_data(_client_stream(then=_frame(attach)))
    ends = [p for p in performatives(b"".join(bytes(c) for c in server.data_to_send())) if type(p).__name__ == "End"]
    assert len(ends) == 1 and ends[0].error is not None
    assert ends[0].error.description == "handle 0 is already attached"


def _server_with_a_consumer() -> tuple[Connection, object]:
    """A server engine whose peer attached a receiving link and granted it 10 credit."""
    from switchboard.amqp.spec import Flow

    server = Connection("server", server=True)
    server.open()
    server.receive_data(
        AMQP_HEADER
        + _frame(Open(container_id="client"))
        + _frame(Begin(next_outgoing_id=0, incoming_window=100, outgoing_window=100))
        + _frame(Attach(name="consumer", handle=0, role=Role.RECEIVER, source=Source(address="q"), target=Target(address="c")))
    )
    link = next(e.link for e in server.take_events() if isinstance(e, ev.LinkAttached))
    link.attach()
    server.receive_data(_frame(Flow(next_incoming_id=0, incoming_window=100, next_outgoing_id=0, outgoing_window=100,
                                    handle=0, delivery_count=0, link_credit=10)))
    server.take_events()
    server.data_to_send()
    assert link.credit == 10
    return server, link


@pytest.mark.parametrize("ending", ["our close", "our end"])
def test_links_hold_no_credit_once_our_end_or_close_is_written(ending: str) -> None:
    """Nothing of ours may follow our end or close, so ``send`` refuses; the link must not
    show credit then, or an owner that sends wherever there is credit (the router's
    forwarders) meets the refusal as an exception.  Completes the fix for consumers
    detached in the same batch (tests/system/test_router_fuzz_findings.py)."""
    server, link = _server_with_a_consumer()
    if ending == "our close":
        server.close()
    else:
        link.session.end()
    assert link.credit == 0


def test_a_peers_frames_after_our_close_are_not_answered() -> None:
    """After our close only the peer's close (or its open) is read: its begin was
    answered, and reported, after our close.  Found by reading the engine while fixing
    the router's frames after the close of a refused connection."""
    server, _link = _server_with_a_consumer()
    server.close()
    closing = b"".join(bytes(chunk) for chunk in server.data_to_send())
    assert [type(p) for p in performatives(closing)] == [Close]
    server.receive_data(_frame(Begin(next_outgoing_id=0, incoming_window=100, outgoing_window=100), channel=1))
    assert server.take_events() == []
    assert server.data_to_send() == []
    server.receive_data(_frame(Close()))
    events = server.take_events()
    assert isinstance(events[-1], ev.ConnectionClosed)
    assert not [e for e in events if isinstance(e, ev.SessionBegun)]
    assert server.closed and server.transport_done
