"""Sessions (spec part 2.5): channels, handles, transfer ids, windows, dispositions.

A session numbers transfer frames (``next-outgoing-id``) and deliveries
(``delivery-id``), maps the peer's link handles to our links, and holds the unsettled
deliveries of all its links by delivery id, because dispositions name deliveries by id
range, not by link.

Flows and dispositions are not written when asked for: they are queued and written at
``Connection.data_to_send()``, so a burst of settlements becomes ranged dispositions and
a burst of credit changes one flow per link.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Final, cast

from .delivery import Delivery
from .errors import AmqpError, Condition, FramingError, LocalProtocolError
from .fastpath import MAX_FAST_TAG, TRANSFER_OVERHEAD, transfer_prefix, write_transfer_fields
from .events import (
    DeliveryAborted,
    DeliveryReceived,
    DeliveryUpdated,
    LinkAttached,
    SessionEnded,
    SessionWindowOpened,
)
from .link import Link, ReceiverLink, SenderLink, transfer_limit_error
from .spec import Attach, Begin, Detach, Disposition, End, Error, Flow, Role, Transfer
from .types import UInt
from .states import SESSION_TRANSITIONS, Input, LinkState, SessionState, StateMachine

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Session", "SessionError"]

_SEQ_MOD: Final = 1 << 32
# Enum members and spec constants read for every frame, as module constants: from
# compiled code, reading one off its class is a generic attribute lookup (an enum
# class's through its metaclass's __getattr__ hook), dearer than the rest of the check.
_MAPPED: Final = SessionState.MAPPED
_END_RCVD: Final = SessionState.END_RCVD
_BEGIN_SENT: Final = SessionState.BEGIN_SENT
_LINK_ATTACHED: Final = LinkState.ATTACHED
_LINK_ATTACH_SENT: Final = LinkState.ATTACH_SENT
_RECEIVER: Final = Role.RECEIVER
_UINT_CLASS: Final = UInt
_pack_frame_size: Final = struct.Struct(">I").pack_into
_OWN_BUFFER: Final = 8192
"""Payloads this large are written as their own buffer (as ``Connection._write_frame``)."""
_WINDOW: Final = (1 << 31) - 1
"""Session windows we advertise.  Memory is bounded by link credit and message size
limits, not by the session window, so it is wide open and replenished at half."""


class SessionError(AmqpError):
    """A peer's violation that ends this session only (not the whole connection)."""


class Session:
    """One session of a connection, on local channel ``channel``."""

    def __init__(
        self,
        connection: "Connection",
        channel: int,
        handle_max: int = 1023,
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.remote_channel: int | None = None
        self.remote_begin: Begin | None = None
        self.machine: StateMachine[SessionState] = StateMachine(SESSION_TRANSITIONS, SessionState.UNMAPPED)
        self.handle_max = handle_max
        self.remote_handle_max = handle_max
        self.context: Any = None
        # Transfer-frame numbering and windows (2.5.6).
        self.next_outgoing_id = 0
        self.next_incoming_id = 0
        self.incoming_window = _WINDOW
        self.incoming_window_size = _WINDOW
        """The window we replenish to once half of it is used (``set_incoming_window``)."""
        self.outgoing_window = _WINDOW
        self.remote_incoming_window = 0
        self.remote_outgoing_window = 0
        self._next_delivery_id = 0
        # Links: ours by local handle, the peer's handles to our links, links by name.
        self.links: dict[int, Link] = {}
        self._remote_handles: dict[int, Link] = {}
        self._pending_attach: dict[tuple[str, bool], Link] = {}
        # Unsettled deliveries by id: ours out, theirs in.
        self._outgoing_unsettled: dict[int, Delivery] = {}
        self._incoming_unsettled: dict[int, Delivery] = {}
        # Output deferred to the flush.
        self._flow_links: list[Link] = []
        self._flow_session = False
        self._dispositions: list[tuple[bool, int, bool, Any]] = []
        self.blocked_transfers: list[tuple[Transfer, Any]] = []
        """Transfers waiting for room in the peer's incoming window, in order."""
        self._queued = False
        self._ending = False
        """Our end (or our connection's close) is written: no frame of ours may follow."""

    @property
    def state(self) -> SessionState:
        return self.machine.state

    @property
    def active(self) -> bool:
        return self.machine.state is _MAPPED

    @property
    def output_blocked(self) -> bool:
        """The peer's incoming window has no room: a transfer sent now would wait here."""
        return self.remote_incoming_window <= 0 or bool(self.blocked_transfers)

    # -- our actions -------------------------------------------------------------------
    def begin(self) -> None:
        """Send our begin: start a session we created, or accept one the peer began."""
        self.machine.local(Input.SEND_BEGIN)
        self.connection._write_frame(
            self.channel,
            Begin(
                remote_channel=self.remote_channel,
                next_outgoing_id=self.next_outgoing_id,
                incoming_window=self.incoming_window,
                outgoing_window=self.outgoing_window,
                handle_max=self.handle_max,
            ),
        )

    def end(self, error: Error | None = None) -> None:
        """End the session; its links end with it."""
        if self.machine.state in (SessionState.UNMAPPED, SessionState.END_SENT, SessionState.DISCARDING):
            return
        # Settlements and flows queued so far go out before the end, while still mapped.
        self._flush()
        self.machine.local(Input.SEND_END)
        self._stop_sending()
        self.connection._write_frame(self.channel, End(error=error))
        if self.machine.state is SessionState.UNMAPPED:
            self._unmap(error)

    def _stop_sending(self) -> None:
        """Our end (or our connection's close) is written: nothing of ours may follow it,
        so no link of this session has credit left to send on (an owner checks credit)."""
        self._ending = True
        for link in self.links.values():
            link.credit = 0

    def sender(self, name: str, **kwargs: Any) -> SenderLink:
        """Create a sending link and send its attach.  Keyword arguments as ``Link``."""
        link = SenderLink(self, name, **kwargs)
        self._add_link(link)
        link.attach()
        return link

    def receiver(self, name: str, *, credit: int = 0, **kwargs: Any) -> ReceiverLink:
        """Create a receiving link, send its attach and, if ``credit``, a flow granting it."""
        link = ReceiverLink(self, name, **kwargs)
        self._add_link(link)
        link.attach()
        if credit:
            link.flow(credit)
        return link

    def set_incoming_window(self, frames: int) -> None:
        """Let the peer send ``frames`` more transfer frames, and keep the window that size.

        Zero stops the peer's transfers on this session until the window is opened again.
        """
        if not 0 <= frames <= _WINDOW:
            raise LocalProtocolError(f"incoming window out of range: {frames}")
        self.incoming_window_size = frames
        self.incoming_window = frames
        self._request_flow(None)

    def _add_link(self, link: Link) -> None:
        if not self.active and self.machine.state is not SessionState.BEGIN_SENT:
            raise LocalProtocolError(f"cannot attach a link on a session in state {self.state.value}")
        link.handle = self._free_handle()
        self.links[link.handle] = link
        self._pending_attach[(link.name, link.role)] = link

    def _free_handle(self, answering: bool = False) -> int:
        """Our lowest free handle.  Answering the peer's attach, only the peer's
        handle-max bounds it (our own bounds the handles the peer uses)."""
        limit = self.remote_handle_max if answering else min(self.handle_max, self.remote_handle_max)
        for handle in range(len(self.links) + 1):
            if handle not in self.links:
                if handle > limit:
                    break
                return handle
        if answering:
            raise SessionError(f"no handle left to answer an attach (handle-max {limit})",
                               Condition.RESOURCE_LIMIT_EXCEEDED)
        raise LocalProtocolError(f"no free link handle (handle-max {limit})")

    # -- frames out --------------------------------------------------------------------
    def _allocate_delivery_id(self) -> int:
        delivery_id = self._next_delivery_id
        self._next_delivery_id = (delivery_id + 1) % _SEQ_MOD
        return delivery_id

    def _send_attach(self, link: Link) -> None:
        attach = Attach(
            name=link.name,
            handle=link.handle,
            role=link.role,
            snd_settle_mode=link.snd_settle_mode,
            rcv_settle_mode=link.rcv_settle_mode,
            source=link.source,
            target=link.target,
            max_message_size=link.max_message_size,
            offered_capabilities=link.offered_capabilities,
            desired_capabilities=link.desired_capabilities,
            properties=link.properties,
            **link._attach_fields(),
        )
        self.connection._write_frame(self.channel, attach)
        if link.role is _RECEIVER and link.credit:
            self._request_flow(link)

    def _send_detach(self, link: Link, detach: Detach) -> None:
        if self.blocked_transfers:
            # Transfers still waiting for the peer's window must not follow the detach.
            self.blocked_transfers = [(t, p) for t, p in self.blocked_transfers if t.handle != link.handle]
        self._flush()
        self.connection._write_frame(self.channel, detach)

    def _send_transfer(self, link: Link, transfer: Transfer, payload: Any) -> None:
        if self.blocked_transfers or self.remote_incoming_window <= 0:
            self.blocked_transfers.append((transfer, payload))
            return
        rest = self._write_transfer(transfer, payload)
        if rest is not None:
            self.blocked_transfers.append(rest)

    def _send_transfer_fields(
        self, link: SenderLink, delivery_id: int, tag: Any, message_format: Any, settled: Any, payload: Any
    ) -> None:
        """Send a new delivery's transfer; what ``_send_transfer`` does with a ``Transfer``
        of these fields, written without one when it fits a frame and the window is open."""
        connection = self.connection
        if (
            not self.blocked_transfers
            and self.remote_incoming_window > 0
            and connection._open_sent
            and connection.trace is None
            and type(tag) is bytes
            and len(tag) <= MAX_FAST_TAG
            and (type(message_format) is int or type(message_format) is _UINT_CLASS)
            and 0 <= message_format <= 0xFFFFFFFF
        ):
            size = len(payload)
            if size <= connection.remote_max_frame_size - TRANSFER_OVERHEAD - len(tag):
                prefix = link._transfer_prefix
                if prefix is None or link._prefix_key != (self.channel, link.handle):
                    link._prefix_key = (self.channel, link.handle)
                    prefix = link._transfer_prefix = transfer_prefix(self.channel, cast(int, link.handle))
                self.next_outgoing_id = (self.next_outgoing_id + 1) % _SEQ_MOD
                self.remote_incoming_window -= 1
                out = connection._out
                start = write_transfer_fields(out, prefix, delivery_id, tag, message_format, settled)
                _pack_frame_size(out, start, len(out) - start + size)
                if size >= _OWN_BUFFER:
                    # Large payloads go out as their own buffer, as in _write_frame.
                    connection._chunks.append(out)
                    connection._chunks.append(payload)
                    connection._out = bytearray()
                else:
                    out += payload
                return
        self._send_transfer(
            link,
            Transfer(
                handle=link.handle,
                delivery_id=delivery_id,
                delivery_tag=tag,
                message_format=message_format,
                settled=settled,
            ),
            payload,
        )

    def _write_transfer(self, transfer: Transfer, payload: Any) -> tuple[Transfer, Any] | None:
        """Write a delivery's frames, splitting the payload to the peer's max frame size.

        The peer's incoming window counts frames, not deliveries: if it closes part-way,
        return the continuation (transfer, rest of the payload) to send once it reopens.
        """
        connection = self.connection
        room = connection._transfer_room(self.channel, transfer)
        size = len(payload)
        if size <= room:
            self.next_outgoing_id = (self.next_outgoing_id + 1) % _SEQ_MOD
            self.remote_incoming_window -= 1
            connection._write_frame(self.channel, transfer, payload)
            return None
        view = memoryview(payload)
        offset = 0
        while True:
            chunk = view[offset : offset + room]
            offset += len(chunk)
            transfer.more = offset < size
            self.next_outgoing_id = (self.next_outgoing_id + 1) % _SEQ_MOD
            self.remote_incoming_window -= 1
            connection._write_frame(self.channel, transfer, chunk)
            if offset >= size:
                return None
            transfer = Transfer(handle=transfer.handle)
            if self.remote_incoming_window <= 0:
                return transfer, view[offset:]
            room = connection._transfer_room(self.channel, transfer)

    def _request_flow(self, link: Link | None) -> None:
        if link is None:
            self._flow_session = True
        elif link not in self._flow_links:
            self._flow_links.append(link)
        self._mark_dirty()

    def _queue_disposition(self, role: bool, delivery_id: int, settled: bool, state: Any) -> None:
        self._dispositions.append((role, delivery_id, settled, state))
        self._mark_dirty()

    def _mark_dirty(self) -> None:
        if not self._queued:
            self._queued = True
            self.connection._dirty_sessions.append(self)

    def _flush(self) -> None:
        """Write the queued dispositions (as ranges) and flows."""
        self._queued = False
        state = self.machine.state
        if state is not _MAPPED and state is not _END_RCVD and state is not _BEGIN_SENT:
            self._dispositions.clear()
            self._flow_links.clear()
            return
        connection = self.connection
        channel = self.channel
        if self._dispositions:
            pending = self._dispositions
            self._dispositions = []
            role, first, settled, state = pending[0]
            last = first
            for next_role, delivery_id, next_settled, next_state in pending[1:]:
                if (
                    next_role is role
                    and delivery_id == (last + 1) % _SEQ_MOD
                    and next_settled == settled
                    and (next_state is state or next_state == state)
                ):
                    last = delivery_id
                    continue
                connection._write_disposition(channel, role, first, None if last == first else last, settled, state)
                role, first, settled, state = next_role, delivery_id, next_settled, next_state
                last = first
            connection._write_disposition(channel, role, first, None if last == first else last, settled, state)
        if self._flow_links or self._flow_session:
            links = self._flow_links
            self._flow_links = []
            self._flow_session = False
            next_incoming_id = self.next_incoming_id if self.remote_begin is not None else None
            if not links:
                connection._write_flow(channel, next_incoming_id, self.incoming_window, self.next_outgoing_id,
                                       self.outgoing_window, None, None, None, None, False)
            for link in links:
                link_state = link.machine.state
                if link_state is not _LINK_ATTACHED and link_state is not _LINK_ATTACH_SENT:
                    continue
                connection._write_flow(channel, next_incoming_id, self.incoming_window, self.next_outgoing_id,
                                       self.outgoing_window, link.handle, link.delivery_count, link.credit,
                                       0 if link.is_sender else None, link.drain)

    # -- frames in ---------------------------------------------------------------------
    def _on_begin(self, begin: Begin) -> None:
        self.remote_begin = begin
        self.remote_outgoing_window = begin.outgoing_window
        self.next_incoming_id = begin.next_outgoing_id
        # A begin's incoming window counts from our first transfer id, and no transfer can
        # precede it: sending needs credit, which the peer grants only after its begin.
        self.remote_incoming_window = begin.incoming_window
        self.remote_handle_max = begin.handle_max if begin.handle_max is not None else (1 << 32) - 1

    def _on_end(self, end: End) -> None:
        was = self.machine.state
        if not self.machine.remote(Input.RECV_END):
            raise AmqpError("end on a session that is not mapped", Condition.NOT_ALLOWED)
        if self.machine.state is SessionState.END_RCVD:
            self.machine.local(Input.SEND_END)
            self._dispositions.clear()
            self.connection._write_frame(self.channel, End())
        if was is SessionState.DISCARDING:
            # _fail() reported the end already; the peer's answer only frees the channel.
            self.connection._session_gone(self)
            return
        self._unmap(end.error)

    def _unmap(self, error: Error | None) -> None:
        for link in list(self.links.values()):
            link._lost(error)
        self.links.clear()
        self._remote_handles.clear()
        self._pending_attach.clear()
        self.connection._session_gone(self)
        self.connection._events.append(SessionEnded(self, error))

    def _lost(self, error: Error | None) -> None:
        was = self.machine.state
        self.machine.remote(Input.TRANSPORT_LOST)
        # UNMAPPED: over already; DISCARDING: _fail() reported the end already.
        if was is not SessionState.UNMAPPED and was is not SessionState.DISCARDING:
            for link in list(self.links.values()):
                link._lost(error)
            self.connection._events.append(SessionEnded(self, error))

    def _fail(self, error: AmqpError) -> None:
        """End this session for the peer's violation; the connection carries on."""
        self.machine.local(Input.SEND_END_FOR_ERROR)
        self._stop_sending()
        err = Error(condition=error.condition, description=error.description)
        self.connection._write_frame(self.channel, End(error=err))
        for link in list(self.links.values()):
            link._lost(err)
        self.links.clear()
        self._remote_handles.clear()
        self.connection._events.append(SessionEnded(self, err))

    def _on_attach(self, attach: Attach) -> None:
        if attach.handle > self.handle_max:
            # Spec 2.7.2: a handle beyond the handle-max we announced closes the connection.
            raise FramingError(f"handle {attach.handle} exceeds handle-max {self.handle_max}")
        if attach.handle in self._remote_handles:
            raise SessionError(f"handle {attach.handle} is already attached", Condition.SESSION_HANDLE_IN_USE)
        our_role = not attach.role
        link = self._pending_attach.pop((attach.name, our_role), None)
        if link is None:
            link = (ReceiverLink if our_role is _RECEIVER else SenderLink)(
                self,
                attach.name,
                source=attach.source,
                target=attach.target,
                snd_settle_mode=attach.snd_settle_mode,
                rcv_settle_mode=attach.rcv_settle_mode,
            )
            link.remote_initiated = True
            link.handle = self._free_handle(answering=True)
            self.links[link.handle] = link
        elif link.remote_initiated:
            raise SessionError(f"link {attach.name!r} attached twice", Condition.NOT_ALLOWED)
        link.machine.remote(Input.RECV_ATTACH)
        link.remote_handle = attach.handle
        link.remote_attach = attach
        self._remote_handles[attach.handle] = link
        if isinstance(link, ReceiverLink):
            link.delivery_count = attach.initial_delivery_count or 0
            link._limit = (link.delivery_count + link.credit) % _SEQ_MOD
        else:
            # The receiver decides how it settles; how we settle stays what we asked for.
            link.rcv_settle_mode = attach.rcv_settle_mode
        self.connection._events.append(LinkAttached(link))

    def _on_detach(self, detach: Detach) -> None:
        link = self._remote_handles.get(detach.handle)
        if link is None:
            raise SessionError(f"detach of unattached handle {detach.handle}", Condition.SESSION_UNATTACHED_HANDLE)
        link._on_detach(detach)

    def _link_gone(self, link: Link) -> None:
        """A link finished detaching: free its handles (its unsettled deliveries stay on it)."""
        if link.remote_handle is not None and self._remote_handles.get(link.remote_handle) is link:
            del self._remote_handles[link.remote_handle]
        if link.handle is not None and self.links.get(link.handle) is link:
            del self.links[link.handle]
        if link.role is _RECEIVER:
            link._drop_partial()  # type: ignore[attr-defined]
        self._pending_attach.pop((link.name, link.role), None)
        unsettled = self._outgoing_unsettled if link.is_sender else self._incoming_unsettled
        for delivery_id in link.unsettled:
            unsettled.pop(delivery_id, None)

    def _forget(self, link: Link, delivery: Delivery) -> None:
        unsettled = self._outgoing_unsettled if link.is_sender else self._incoming_unsettled
        unsettled.pop(delivery.delivery_id, None)

    def _on_flow(self, flow: Flow) -> None:
        self._on_flow_fields(
            flow.next_incoming_id, flow.incoming_window, flow.next_outgoing_id, flow.outgoing_window, flow.handle,
            flow.delivery_count, flow.link_credit, flow.available, flow.drain, flow.echo,
        )

    def _on_flow_fields(
        self, next_incoming_id: Any, incoming_window: int, next_outgoing_id: Any, outgoing_window: int, handle: Any,
        delivery_count: Any, link_credit: Any, available: Any, drain: Any, echo: Any,
    ) -> None:
        was_blocked = self.remote_incoming_window <= 0 or bool(self.blocked_transfers)
        next_incoming = next_incoming_id
        if next_incoming is None:
            next_incoming = 0
        self.remote_incoming_window = (next_incoming + incoming_window - self.next_outgoing_id) % _SEQ_MOD
        if self.remote_incoming_window >= (1 << 31):
            self.remote_incoming_window = 0
        self.remote_outgoing_window = outgoing_window
        if handle is not None:
            link = self._remote_handles.get(handle)
            if link is None:
                raise SessionError(f"flow for unattached handle {handle}", Condition.SESSION_UNATTACHED_HANDLE)
            link._on_flow_fields(delivery_count, link_credit, available, drain, echo)
        elif echo:
            self._request_flow(None)
        if self.blocked_transfers and self.remote_incoming_window > 0:
            blocked = self.blocked_transfers
            self.blocked_transfers = []
            for index, (transfer, payload) in enumerate(blocked):
                if self.remote_incoming_window <= 0:
                    self.blocked_transfers = blocked[index:]
                    break
                rest = self._write_transfer(transfer, payload)
                if rest is not None:
                    self.blocked_transfers = [rest, *blocked[index + 1 :]]
                    break
        if was_blocked and self.remote_incoming_window > 0 and not self.blocked_transfers:
            self.connection._events.append(SessionWindowOpened(self))

    def _on_transfer(self, transfer: Transfer, payload: bytes) -> None:
        self._on_transfer_fields(
            transfer.handle, transfer.delivery_id, transfer.delivery_tag, transfer.message_format,
            transfer.settled, transfer.more, transfer.aborted, transfer.state, payload,
        )

    def _on_transfer_fields(
        self, handle: int, delivery_id: Any, delivery_tag: Any, message_format: Any,
        settled: Any, more: Any, aborted: Any, state: Any, payload: bytes,
    ) -> None:
        """A transfer arrived: its fields as the generic decoder gives them (the fast
        decoder in ``Connection._process`` passes them without a ``Transfer``)."""
        if self.incoming_window <= 0:
            raise SessionError("transfer beyond the session's incoming window", Condition.SESSION_WINDOW_VIOLATION)
        self.next_incoming_id = (self.next_incoming_id + 1) % _SEQ_MOD
        self.incoming_window -= 1
        if self.incoming_window < self.incoming_window_size // 2:
            self.incoming_window = self.incoming_window_size
            self._request_flow(None)
        link = self._remote_handles.get(handle)
        if link is None:
            raise SessionError(f"transfer on unattached handle {handle}", Condition.SESSION_UNATTACHED_HANDLE)
        if not isinstance(link, ReceiverLink):
            raise SessionError("transfer on a link where the peer is the receiver", Condition.NOT_ALLOWED)
        if link.machine.state is not _LINK_ATTACHED:
            return  # we detached it; frames in flight are dropped
        delivery = link._partial
        if delivery is None:
            if delivery_id is None or delivery_tag is None:
                raise SessionError("first transfer of a delivery lacks delivery-id or tag", Condition.INVALID_FIELD)
            if link.credit > 0:
                link.credit -= 1
                if not link.credit:
                    link.drain = False  # a drain is over once the credit is spent
            elif not link._within_granted():
                link.detach(transfer_limit_error())
                return
            # else: sent under a grant we have since lowered; the sender had not seen it.
            link.delivery_count = (link.delivery_count + 1) % _SEQ_MOD
            delivery = Delivery(
                link,
                delivery_id,
                delivery_tag,
                None,
                message_format or 0,
                False,
                bool(settled),
            )
            if more:
                delivery._chunks = []
                link._partial = delivery
        elif delivery_id is not None and delivery_id != delivery.delivery_id:
            raise SessionError("a continuation transfer names another delivery", Condition.NOT_ALLOWED)
        if settled:
            delivery.remote_settled = True
        if aborted:
            link._drop_partial()
            delivery.aborted = True
            self.connection._events.append(DeliveryAborted(delivery))
            return
        if state is not None:
            delivery.remote_state = state
        limit = link.max_message_size
        if delivery._chunks is not None:
            size = len(payload)
            if limit and delivery._size + size > limit:
                link._drop_partial()
                link.detach(Error(condition=Condition.LINK_MESSAGE_SIZE_EXCEEDED,
                                  description=f"message larger than the link's maximum of {limit} bytes"))
                return
            connection = self.connection
            bound = connection.max_partial_bytes
            if bound is not None and connection.partial_bytes + size > bound:
                link._drop_partial()
                link.detach(Error(condition=Condition.RESOURCE_LIMIT_EXCEEDED,
                                  description=f"messages in progress on this connection exceed {bound} bytes"))
                return
            delivery._size += size
            connection.partial_bytes += size
            delivery._chunks.append(payload)
            if more:
                return
            delivery.payload = b"".join(delivery._chunks)
            link._drop_partial()
        else:
            if limit and len(payload) > limit:
                link.detach(Error(condition=Condition.LINK_MESSAGE_SIZE_EXCEEDED,
                                  description=f"message larger than the link's maximum of {limit} bytes"))
                return
            delivery.payload = payload
        if not delivery.remote_settled:
            link.unsettled[delivery.delivery_id] = delivery
            self._incoming_unsettled[delivery.delivery_id] = delivery
        self.connection._events.append(DeliveryReceived(delivery))

    def _on_disposition(self, disposition: Disposition) -> None:
        self._on_disposition_fields(
            disposition.role, disposition.first, disposition.last, disposition.settled, disposition.state,
        )

    def _on_disposition_fields(self, role: Any, first: int, last_or_none: Any, settled: Any, state: Any) -> None:
        # The peer's role says whose deliveries these are: a receiver settles ours.
        unsettled = self._outgoing_unsettled if role is _RECEIVER else self._incoming_unsettled
        last = last_or_none if last_or_none is not None else first
        span = (last - first) % _SEQ_MOD
        if span < len(unsettled):
            ids = [(first + i) % _SEQ_MOD for i in range(span + 1)]
        else:
            ids = [d for d in unsettled if (d - first) % _SEQ_MOD <= span]
        events = self.connection._events
        for delivery_id in ids:
            delivery = unsettled.get(delivery_id)
            if delivery is None:
                continue
            if state is not None:
                delivery.remote_state = state
            if settled:
                delivery.remote_settled = True
                del unsettled[delivery_id]
                delivery.link.unsettled.pop(delivery_id, None)
            events.append(DeliveryUpdated(delivery))
