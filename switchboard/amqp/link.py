"""Links (spec part 2.6): attach/detach, credit and drain, deliveries and their settlement.

Credit is the spec's arithmetic (2.6.7): the receiver owns ``link-credit``; the sender
derives its own as ``delivery-count(rcv) + link-credit(rcv) - delivery-count(snd)`` from
each flow.  A sender may not send without credit (``LocalProtocolError``); a peer that
does has its link detached with ``amqp:link:transfer-limit-exceeded``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .delivery import Delivery
from .errors import Condition, LocalProtocolError
from .events import CreditGranted, LinkDetached, LinkFlowReceived
from .spec import Attach, Detach, Error, Flow, ReceiverSettleMode, Role, SenderSettleMode
from .states import LINK_TRANSITIONS, Input, LinkState, StateMachine

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Link", "SenderLink", "ReceiverLink"]

_SEQ_MOD: Final = 1 << 32
# Enum members and spec constants read for every frame, as module constants: from
# compiled code, reading one off its class is a generic attribute lookup (an enum
# class's through its metaclass's __getattr__ hook), dearer than the rest of the check.
_ATTACHED: Final = LinkState.ATTACHED
_ATTACH_SENT: Final = LinkState.ATTACH_SENT
_SND_SETTLED: Final[int] = SenderSettleMode.SETTLED
_SND_UNSETTLED: Final[int] = SenderSettleMode.UNSETTLED
_SENDER: Final = False  # Role.SENDER


class Link:
    """One end of a link.  ``role`` is ours: ``Role.SENDER`` (False) or ``Role.RECEIVER``."""

    role: bool

    def __init__(
        self,
        session: "Session",
        name: str,
        *,
        source: Any = None,
        target: Any = None,
        snd_settle_mode: int = SenderSettleMode.MIXED,
        rcv_settle_mode: int = ReceiverSettleMode.FIRST,
        max_message_size: int | None = None,
        properties: dict[Any, Any] | None = None,
        offered_capabilities: list[str] | None = None,
        desired_capabilities: list[str] | None = None,
    ) -> None:
        self.session = session
        self.name = name
        self.handle: int | None = None
        self.remote_handle: int | None = None
        self.source = source
        self.target = target
        self.snd_settle_mode = snd_settle_mode
        self.rcv_settle_mode = rcv_settle_mode
        self.max_message_size = max_message_size
        self.properties = properties
        self.offered_capabilities = offered_capabilities
        self.desired_capabilities = desired_capabilities
        self.remote_attach: Attach | None = None
        self.remote_initiated = False
        self.machine: StateMachine[LinkState] = StateMachine(LINK_TRANSITIONS, LinkState.DETACHED)
        self.delivery_count = 0
        self.credit = 0
        self.available = 0
        self.drain = False
        self.unsettled: dict[int, Delivery] = {}
        """Deliveries not yet settled by both ends, by delivery id, oldest first."""
        self.context: Any = None
        """Free for the owner (the router keeps its per-link record here)."""
        self._early_detach: Detach | None = None

    # -- what the peer said ------------------------------------------------------------
    @property
    def state(self) -> LinkState:
        return self.machine.state

    @property
    def is_sender(self) -> bool:
        return not self.role  # Role.SENDER is False

    @property
    def remote_source(self) -> Any:
        return self.remote_attach.source if self.remote_attach else None

    @property
    def remote_target(self) -> Any:
        return self.remote_attach.target if self.remote_attach else None

    @property
    def remote_max_message_size(self) -> int | None:
        size = self.remote_attach.max_message_size if self.remote_attach else None
        return size or None

    @property
    def active(self) -> bool:
        return self.machine.state is _ATTACHED

    # -- our own actions ---------------------------------------------------------------
    def attach(self) -> None:
        """Send our attach: open a link we created, or accept one the peer created."""
        if self._answered_too_late():
            return
        if self.session._ending:
            if self.remote_initiated:
                return  # answering too late: our end (or close) answers for us
            raise LocalProtocolError("cannot attach: the session (or connection) is ending")
        self.machine.local(Input.SEND_ATTACH)
        self.session._send_attach(self)
        early = self._early_detach
        if early is not None:
            self._early_detach = None
            self._on_detach(early)

    def refuse(self, error: Error) -> None:
        """Refuse a link the peer created: attach with no terminus, then detach with ``error``."""
        if self._answered_too_late():
            return
        if not self.remote_initiated or self.machine.state is not LinkState.ATTACH_RCVD:
            raise LocalProtocolError("only a link the peer is attaching can be refused")
        if self.role is _SENDER:
            self.source = None
        else:
            self.target = None
        self.attach()
        self.detach(error)

    def _answered_too_late(self) -> bool:
        """Is the owner answering the peer's attach after the link already ended?

        Events come a batch at a time: the peer's attach and the end of its session or
        connection can arrive together, and then there is no one left to answer.
        """
        return self.remote_initiated and self.machine.state is LinkState.DETACHED

    def detach(self, error: Error | None = None, closed: bool = True) -> None:
        """Send our detach (closing the link unless ``closed`` is False)."""
        if self.machine.state in (LinkState.DETACHED, LinkState.DETACH_SENT) or self.session._ending:
            return  # an ending session (or connection) detaches its links without a detach
        self.machine.local(Input.SEND_DETACH)
        self.credit = 0
        self.session._send_detach(self, Detach(handle=self.handle, closed=closed, error=error))
        if self.machine.state is LinkState.DETACHED:
            self.session._link_gone(self)

    # -- called by the session ---------------------------------------------------------
    def _on_flow(self, flow: Flow) -> None:
        self._on_flow_fields(flow.delivery_count, flow.link_credit, flow.available, flow.drain, flow.echo)

    def _on_flow_fields(self, delivery_count: Any, link_credit: Any, available: Any, drain: Any, echo: Any) -> None:
        raise NotImplementedError

    # A link that is no longer attached has no credit: its owner may still hold it (the
    # events of a batch reach the owner after all of the batch's frames were read, so a
    # later frame can end a link the owner is about to send on), and credit is what the
    # owner checks before sending.
    def _on_detach(self, detach: Detach) -> None:
        if self.machine.state is LinkState.ATTACH_RCVD:
            # The peer gave up before we answered its attach.  Our answer (attach() or
            # refuse()) must precede our detach, so the detach waits for the owner's.
            self._early_detach = detach
            return
        if not self.machine.remote(Input.RECV_DETACH):
            return
        self.credit = 0
        events = self.session.connection._events
        if self.machine.state is LinkState.DETACH_RCVD:
            self.machine.local(Input.SEND_DETACH)
            self.session._send_detach(self, Detach(handle=self.handle, closed=detach.closed))
        self.session._link_gone(self)
        events.append(LinkDetached(self, detach.error, bool(detach.closed)))

    def _lost(self, error: Error | None) -> None:
        """The session or connection went; the link ends without a detach exchange."""
        was = self.machine.state
        self.machine.remote(Input.TRANSPORT_LOST)
        self.credit = 0  # as in _on_detach
        if was is not LinkState.DETACHED:
            self.session.connection._events.append(LinkDetached(self, error, False))

    def _delivery_settled(self, delivery: Delivery) -> None:
        self.unsettled.pop(delivery.delivery_id, None)
        self.session._forget(self, delivery)
        if not delivery.remote_settled:
            self.session._queue_disposition(self.role, delivery.delivery_id, True, delivery.state)

    def _delivery_updated(self, delivery: Delivery) -> None:
        self.session._queue_disposition(self.role, delivery.delivery_id, False, delivery.state)

    def _attach_fields(self) -> dict[str, Any]:
        """The attach fields that depend on the role."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, handle={self.handle}, state={self.state.value})"


class SenderLink(Link):
    """Our end sends: messages out, outcomes back."""

    role: bool = False  # Role.SENDER: a literal, the only class-level default mypyc keeps

    # Per-instance state with its initial value here rather than in an ``__init__`` that
    # forwards ``**kwargs`` to ``Link.__init__``, which mypyc miscompiles.
    _next_tag: int = 0

    def send(
        self,
        payload: bytes | bytearray | memoryview,
        *,
        tag: bytes | bytearray | None = None,
        settled: bool | None = None,
        message_format: int = 0,
    ) -> Delivery:
        """Send one message (split into as many frames as the peer's max frame size needs).

        ``settled`` defaults from the link's sender-settle-mode (presettled only in mode
        ``settled``).  Raises ``LocalProtocolError`` without credit or when not attached.
        """
        if self.machine.state is not _ATTACHED:
            raise LocalProtocolError(f"cannot send on a link in state {self.machine.state.value}")
        if self.session._ending:
            raise LocalProtocolError("cannot send: the session (or connection) is ending")
        if self.credit <= 0:
            raise LocalProtocolError("cannot send without link credit")
        if settled is None:
            settled = self.snd_settle_mode == _SND_SETTLED
        elif settled and self.snd_settle_mode == _SND_UNSETTLED:
            raise LocalProtocolError("link's sender-settle-mode is unsettled; cannot presettle")
        elif not settled and self.snd_settle_mode == _SND_SETTLED:
            raise LocalProtocolError("link's sender-settle-mode is settled; must presettle")
        if tag is None:
            number = self._next_tag
            self._next_tag = number + 1
            tag = number.to_bytes(8, "big")
        session = self.session
        delivery_id = session._allocate_delivery_id()
        # The delivery does not keep the payload: once written (or queued by the session
        # for the peer's window) nothing needs it again, and it would hold the memory.
        delivery = Delivery(self, delivery_id, tag, None, message_format, settled)
        self.credit -= 1
        self.delivery_count = (self.delivery_count + 1) % _SEQ_MOD
        if not settled:
            self.unsettled[delivery_id] = delivery
            session._outgoing_unsettled[delivery_id] = delivery
        session._send_transfer_fields(self, delivery_id, tag, message_format, settled, payload)
        return delivery

    def drained(self) -> None:
        """Answer a drain: we have nothing more to send, so the remaining credit is spent.

        The answering flow goes out even if messages used up all the credit, so that the
        receiver always hears the end of its drain (once per drain asked for).
        """
        if not self.drain or not self._drain_unanswered:
            return
        self._drain_unanswered = False
        self.delivery_count = (self.delivery_count + self.credit) % _SEQ_MOD
        self.credit = 0
        self.session._request_flow(self)

    def _on_flow_fields(self, delivery_count: Any, link_credit: Any, available: Any, drain: Any, echo: Any) -> None:
        receiver_count = delivery_count
        if receiver_count is None:
            receiver_count = self._initial_delivery_count
        credit = (receiver_count + (link_credit or 0) - self.delivery_count) % _SEQ_MOD
        # A receiver that lowered its credit below what is already in flight yields a
        # "negative" value that wraps; treat it as none left.
        self.credit = credit if credit < (1 << 31) else 0
        self.drain = bool(drain)
        self._drain_unanswered = self.drain
        self.session.connection._events.append(CreditGranted(self))
        if echo:
            self.session._request_flow(self)

    _initial_delivery_count = 0
    _drain_unanswered = False
    # The transfer frame prefix cached for the fast encoder, and the (channel, handle) it
    # was made for.
    _transfer_prefix: bytes | None = None
    _prefix_key: tuple[int, Any] | None = None

    def _attach_fields(self) -> dict[str, Any]:
        return {"initial_delivery_count": self.delivery_count}


class ReceiverLink(Link):
    """Our end receives: messages in, outcomes out, credit out."""

    role: bool = True  # Role.RECEIVER

    # Initial values as class-level defaults: see ``SenderLink._next_tag``.
    _partial: Delivery | None = None
    _limit: int = 0
    """The highest delivery-count + link-credit granted so far: a sender that saw an
    older, larger grant may still be sending within it when we lower our credit."""

    def flow(self, credit: int, drain: bool = False) -> None:
        """Set the credit the sender may use (absolute, not added); optionally drain it."""
        if credit < 0 or credit >= _SEQ_MOD:
            raise LocalProtocolError(f"link credit out of range: {credit}")
        self.credit = credit
        self.drain = drain
        limit = (self.delivery_count + credit) % _SEQ_MOD
        if (limit - self._limit) % _SEQ_MOD < (1 << 31):
            self._limit = limit
        state = self.machine.state
        if state is _ATTACHED or state is _ATTACH_SENT:
            self.session._request_flow(self)

    def add_credit(self, count: int) -> None:
        """Grant ``count`` more credit on top of what is left."""
        self.flow(self.credit + count, self.drain)

    def _on_flow_fields(self, delivery_count: Any, link_credit: Any, available: Any, drain: Any, echo: Any) -> None:
        if delivery_count is not None:
            # The sender may advance its count (a drain); our credit shrinks to match.
            advanced = (delivery_count - self.delivery_count) % _SEQ_MOD
            if advanced < (1 << 31):
                self.credit = max(0, self.credit - advanced)
                self.delivery_count = delivery_count
        self.available = available or 0
        if self.drain and self.credit == 0:
            self.drain = False
        self.session.connection._events.append(LinkFlowReceived(self))
        if echo:
            self.session._request_flow(self)

    def _within_granted(self) -> bool:
        """May a transfer arriving now have been sent under credit we granted?"""
        return 0 < (self._limit - self.delivery_count) % _SEQ_MOD < (1 << 31)

    def _attach_fields(self) -> dict[str, Any]:
        return {}

    def _drop_partial(self) -> None:
        """Forget the delivery in progress (completed, aborted or abandoned)."""
        delivery = self._partial
        if delivery is not None:
            self._partial = None
            self.session.connection.partial_bytes -= delivery._size
            delivery._chunks = None

    def _lost(self, error: Error | None) -> None:
        self._drop_partial()
        super()._lost(error)


def transfer_limit_error() -> Error:
    return Error(condition=Condition.LINK_TRANSFER_LIMIT_EXCEEDED, description="transfer without link credit")
