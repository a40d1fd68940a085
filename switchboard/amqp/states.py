"""The connection, session and link state machines of the spec (part 2.4.6, 2.5.5, 2.6).

Rules:

1. Every legal transition is one entry in a table below: ``(state, input) -> next``.
   States carry the spec's names.  Nothing else in the engine assigns a state.
2. An input absent from the table is illegal in that state.  For an input from the peer
   (``RECV_*``) that is the peer's protocol violation, which the engine answers with the
   spec's error; for our own input (``SEND_*``) it is a caller bug and raises
   ``LocalProtocolError``.
3. The tables say nothing of what a transition sends: the endpoint classes do that.

``docs/state-machines.md`` is rendered from these tables by ``tools/render_states.py``.
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

from .errors import LocalProtocolError

__all__ = [
    "ConnectionState",
    "SessionState",
    "LinkState",
    "Input",
    "CONNECTION_TRANSITIONS",
    "SESSION_TRANSITIONS",
    "LINK_TRANSITIONS",
    "StateMachine",
]


class ConnectionState(enum.Enum):
    START = "START"
    HDR_RCVD = "HDR_RCVD"
    HDR_SENT = "HDR_SENT"
    HDR_EXCH = "HDR_EXCH"
    OPEN_PIPE = "OPEN_PIPE"
    OC_PIPE = "OC_PIPE"
    OPEN_RCVD = "OPEN_RCVD"
    OPEN_SENT = "OPEN_SENT"
    CLOSE_PIPE = "CLOSE_PIPE"
    OPENED = "OPENED"
    CLOSE_RCVD = "CLOSE_RCVD"
    CLOSE_SENT = "CLOSE_SENT"
    DISCARDING = "DISCARDING"
    END = "END"


class SessionState(enum.Enum):
    UNMAPPED = "UNMAPPED"
    BEGIN_SENT = "BEGIN_SENT"
    BEGIN_RCVD = "BEGIN_RCVD"
    MAPPED = "MAPPED"
    END_SENT = "END_SENT"
    END_RCVD = "END_RCVD"
    DISCARDING = "DISCARDING"


class LinkState(enum.Enum):
    DETACHED = "DETACHED"
    ATTACH_SENT = "ATTACH_SENT"
    ATTACH_RCVD = "ATTACH_RCVD"
    ATTACHED = "ATTACHED"
    DETACH_SENT = "DETACH_SENT"
    DETACH_RCVD = "DETACH_RCVD"


class Input(enum.Enum):
    SEND_HEADER = "send header"
    RECV_HEADER = "recv header"
    SEND_OPEN = "send open"
    RECV_OPEN = "recv open"
    SEND_CLOSE = "send close"
    RECV_CLOSE = "recv close"
    SEND_BEGIN = "send begin"
    RECV_BEGIN = "recv begin"
    SEND_END = "send end"
    RECV_END = "recv end"
    SEND_ATTACH = "send attach"
    RECV_ATTACH = "recv attach"
    SEND_DETACH = "send detach"
    RECV_DETACH = "recv detach"
    # The transport is gone or unusable: every state may take it.
    TRANSPORT_LOST = "transport lost"
    # We sent close (or end) for an error and ignore all but the peer's close (or end).
    SEND_CLOSE_FOR_ERROR = "send close for error"
    SEND_END_FOR_ERROR = "send end for error"


C = ConnectionState
CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, Input], ConnectionState] = {
    (C.START, Input.SEND_HEADER): C.HDR_SENT,
    (C.START, Input.RECV_HEADER): C.HDR_RCVD,
    (C.HDR_RCVD, Input.SEND_HEADER): C.HDR_EXCH,
    (C.HDR_SENT, Input.RECV_HEADER): C.HDR_EXCH,
    (C.HDR_SENT, Input.SEND_OPEN): C.OPEN_PIPE,
    (C.HDR_EXCH, Input.SEND_OPEN): C.OPEN_SENT,
    (C.HDR_EXCH, Input.RECV_OPEN): C.OPEN_RCVD,
    (C.OPEN_PIPE, Input.RECV_HEADER): C.OPEN_SENT,
    (C.OPEN_PIPE, Input.SEND_CLOSE): C.OC_PIPE,
    (C.OC_PIPE, Input.RECV_HEADER): C.CLOSE_PIPE,
    (C.CLOSE_PIPE, Input.RECV_OPEN): C.CLOSE_SENT,
    (C.OPEN_RCVD, Input.SEND_OPEN): C.OPENED,
    (C.OPEN_SENT, Input.RECV_OPEN): C.OPENED,
    (C.OPEN_SENT, Input.SEND_CLOSE): C.CLOSE_PIPE,
    (C.OPENED, Input.SEND_CLOSE): C.CLOSE_SENT,
    (C.OPENED, Input.RECV_CLOSE): C.CLOSE_RCVD,
    (C.CLOSE_RCVD, Input.SEND_CLOSE): C.END,
    (C.CLOSE_SENT, Input.RECV_CLOSE): C.END,
    # The peer may close without opening when it refuses us (after its open only, per
    # spec, but peers send close right after open; both reach CLOSE_RCVD).
    (C.OPEN_RCVD, Input.RECV_CLOSE): C.CLOSE_RCVD,
    (C.OPEN_SENT, Input.RECV_CLOSE): C.CLOSE_RCVD,
    (C.OPEN_RCVD, Input.SEND_CLOSE): C.CLOSE_SENT,
    (C.DISCARDING, Input.RECV_CLOSE): C.END,
}
# An error can be reported from any state in which a close can be written (after our
# header); from there only the peer's close is read.
for _state in (C.HDR_EXCH, C.HDR_SENT, C.HDR_RCVD, C.OPEN_PIPE, C.OPEN_RCVD, C.OPEN_SENT, C.OPENED, C.CLOSE_RCVD):
    CONNECTION_TRANSITIONS[(_state, Input.SEND_CLOSE_FOR_ERROR)] = C.DISCARDING
for _state in C:
    CONNECTION_TRANSITIONS[(_state, Input.TRANSPORT_LOST)] = C.END

S = SessionState
SESSION_TRANSITIONS: dict[tuple[SessionState, Input], SessionState] = {
    (S.UNMAPPED, Input.SEND_BEGIN): S.BEGIN_SENT,
    (S.UNMAPPED, Input.RECV_BEGIN): S.BEGIN_RCVD,
    (S.BEGIN_SENT, Input.RECV_BEGIN): S.MAPPED,
    (S.BEGIN_RCVD, Input.SEND_BEGIN): S.MAPPED,
    (S.MAPPED, Input.SEND_END): S.END_SENT,
    (S.MAPPED, Input.RECV_END): S.END_RCVD,
    (S.END_SENT, Input.RECV_END): S.UNMAPPED,
    (S.END_RCVD, Input.SEND_END): S.UNMAPPED,
    (S.BEGIN_SENT, Input.RECV_END): S.END_RCVD,
    (S.MAPPED, Input.SEND_END_FOR_ERROR): S.DISCARDING,
    (S.BEGIN_RCVD, Input.SEND_END_FOR_ERROR): S.DISCARDING,
    (S.DISCARDING, Input.RECV_END): S.UNMAPPED,
}
for _session_state in S:
    SESSION_TRANSITIONS[(_session_state, Input.TRANSPORT_LOST)] = S.UNMAPPED

L = LinkState
LINK_TRANSITIONS: dict[tuple[LinkState, Input], LinkState] = {
    (L.DETACHED, Input.SEND_ATTACH): L.ATTACH_SENT,
    (L.DETACHED, Input.RECV_ATTACH): L.ATTACH_RCVD,
    (L.ATTACH_SENT, Input.RECV_ATTACH): L.ATTACHED,
    (L.ATTACH_RCVD, Input.SEND_ATTACH): L.ATTACHED,
    (L.ATTACHED, Input.SEND_DETACH): L.DETACH_SENT,
    (L.ATTACHED, Input.RECV_DETACH): L.DETACH_RCVD,
    (L.DETACH_SENT, Input.RECV_DETACH): L.DETACHED,
    (L.DETACH_RCVD, Input.SEND_DETACH): L.DETACHED,
    # A peer refusing our attach answers with attach then detach; an attach in flight
    # can also be detached by either side before the answer arrives.
    (L.ATTACH_SENT, Input.RECV_DETACH): L.DETACH_RCVD,
    (L.ATTACH_SENT, Input.SEND_DETACH): L.DETACH_SENT,
    (L.ATTACH_RCVD, Input.SEND_DETACH): L.DETACH_SENT,
    (L.DETACH_SENT, Input.RECV_ATTACH): L.DETACH_SENT,
}
for _link_state in L:
    LINK_TRANSITIONS[(_link_state, Input.TRANSPORT_LOST)] = L.DETACHED
del C, S, L


StateT = TypeVar("StateT", bound=enum.Enum)


class StateMachine(Generic[StateT]):
    """The current state of one endpoint, moved only through its table."""

    __slots__ = ("state", "_table")

    def __init__(self, table: dict[tuple[StateT, Input], StateT], initial: StateT) -> None:
        self._table = table
        self.state = initial

    def can(self, event: Input) -> bool:
        return (self.state, event) in self._table

    def local(self, event: Input) -> None:
        """Apply one of our own inputs; an illegal one is a caller bug."""
        try:
            self.state = self._table[(self.state, event)]
        except KeyError:
            raise LocalProtocolError(f"cannot {event.value} in state {self.state.value}") from None

    def remote(self, event: Input) -> bool:
        """Apply a peer's input; return False (state unchanged) if it is illegal now."""
        next_state = self._table.get((self.state, event))
        if next_state is None:
            return False
        self.state = next_state
        return True
