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
