"""Senders: ``send()`` resolves to the delivery's outcome, across failovers.

What a lost connection means for each message, by where it was:

* waiting for credit (inside ``send``): it waits on, and goes out on the next connection;
* handed to the engine but never written to the socket: the router never saw it, so it
  is sent again on the next connection, first, in order; its future is the same.  A
  sender made with ``resend=False`` fails its future with ``NotSent`` instead, for
  callers that rebuild the message for the next connection (a request's reply address
  changes with the connection);
* written but not settled by the router: nobody knows whether it was delivered.  Its
  future fails with ``OutcomeUnknown``; it is not sent again behind the caller's back;
* settled: its future already holds the router's outcome.

"Written" is decided conservatively: a delivery counts as written from the first time
the engine's output is handed to the transport after it was sent (the client's engine
reports that).  A transfer still held back by the peer's session window at that moment
is counted as written too: reported unknown, never duplicated.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from ..amqp.delivery import Delivery
from ..amqp.link import SenderLink
from ..amqp.message import Message
from ..amqp.session import Session
from ..amqp.spec import Error, SenderSettleMode, Source, Target
from .errors import ClientError, NotSent, OutcomeUnknown, describe

if TYPE_CHECKING:
    from .connection import Client

__all__ = ["Sender"]


class Sender:
    """Sends messages to ``address``; made by ``Client.sender()``.

    ``send`` waits for credit, then for the outcome unless presettled.  While the client
    fails over, ``send`` waits for the next connection (bounded by the client's reconnect
    policy) instead of failing.
    """

    def __init__(self, client: "Client", address: str | None, name: str, presettled: bool, resend: bool = True) -> None:
        self.client = client
        self.target_address = address
        self.name = name
        self._presettled = presettled
        self._resend_unwritten = resend
        self.link: SenderLink | None = None
        """The link on the current (or last) connection."""
        self.error: Error | None = None
        """Why the sender ended for good (detached by the router, or the client gave up)."""
        self._closed = False
        self._credit_waiters: deque[asyncio.Future[None]] = deque()
        self._resend: deque[tuple[bytes, asyncio.Future[Any] | None]] = deque()
        """Messages a lost connection never wrote, to go out first on the next one."""

    @property
    def presettled(self) -> bool:
        return self._presettled

    async def send(self, message: Message | bytes, *, wait: bool = True) -> Any:
        """Send one message; return its outcome (``None`` when presettled).

        With ``wait=False`` the outcome future is returned once the message is handed to
        the connection (when there is credit), for pipelining.  The outcome is the
        router's (accepted, rejected, released, modified); ``OutcomeUnknown`` if the
        connection was lost after the message was written; ``ClientError`` if the sender
        or client ended first.
        """
        payload = message.encode() if isinstance(message, Message) else message
        await self._sendable()
        future = self._transmit(payload, None)
        if future is None or not wait:
            return future
        return await future

    async def close(self) -> None:
        """Detach the link; outcomes not yet known fail with ``ClientError``."""
        self._closed = True
        self.client._forget(self)
        link = self.link
        if link is not None and link.active:
            link.detach()
            self.client._flush()
        else:
            self._fail(Error(condition="amqp:link:detach-forced", description="sender closed"), "sender closed")

    # -- internals ---------------------------------------------------------------------
    async def _sendable(self) -> None:
        """Return once a message can be handed to the engine at once (there is credit and
        nothing waits to be sent again); raise ``ClientError`` once the sender has ended."""
        while self._resend or not self._can_send():
            self._check_usable()
            waiter = asyncio.get_running_loop().create_future()
            self._credit_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._credit_changed()  # woken but leaving: pass the wake-up on
                raise

    def _can_send(self) -> bool:
        link = self.link
        return link is not None and link.credit > 0 and link.active and self.error is None and not self._closed

    def _check_usable(self) -> None:
        if self.error is not None:
            raise ClientError(f"sender is detached: {describe(self.error)}", self.error)
        if self._closed:
            raise ClientError("sender is closed")
        self.client._check_usable()

    def _transmit(self, payload: bytes, future: asyncio.Future[Any] | None) -> asyncio.Future[Any] | None:
        """Hand one message to the engine (there is credit); return its outcome's future
        (``future`` if given: a message sent again), None when presettled."""
        link = self.link
        assert link is not None
        delivery = link.send(payload)
        if not delivery.settled:
            if future is None:
                future = asyncio.get_running_loop().create_future()
            delivery.context = future
        self.client._sent(self, delivery, payload, future)
        return future

    def _make_link(self, session: Session) -> SenderLink:
        link = session.sender(
            self.name,
            source=Source(address=self.client.container_id),
            target=Target(address=self.target_address),
            snd_settle_mode=SenderSettleMode.SETTLED if self._presettled else SenderSettleMode.UNSETTLED,
        )
        link.context = self
        self.link = link
        return link

    def _on_attached(self) -> None:
        pass  # credit arrives in a flow of its own

    def _credit_changed(self) -> None:
        link = self.link
        if link is None:
            return
        # What a lost connection never wrote goes first, then those waiting in send().
        while self._resend and link.credit > 0 and link.active:
            payload, future = self._resend.popleft()
            if future is not None and future.done():
                continue  # the caller gave up on it (cancelled)
            self._transmit(payload, future)
        if self._resend:
            return
        wake = link.credit
        while self._credit_waiters and wake > 0:
            waiter = self._credit_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                wake -= 1

    def _connection_lost(self, error: Error | None, unwritten: list[tuple[Delivery, bytes, Any]], router: Any) -> int:
        """The connection is gone: re-queue what it never wrote, report the rest unknown.

        Returns how many outcomes became unknown."""
        link = self.link
        never_written = {id(delivery) for delivery, _, _ in unwritten}
        for delivery, _, _ in unwritten:
            delivery.context = None
        if self._resend_unwritten:
            # First in line on the next connection, in their original order.
            self._resend.extendleft((payload, future) for _, payload, future in reversed(unwritten))
        else:
            not_sent: NotSent | None = None
            for _, _, future in unwritten:
                if future is not None and not future.done():
                    if not_sent is None:
                        not_sent = NotSent(
                            f"not sent: the connection to {router} was lost before the message was written"
                            f" ({describe(error)}); it was not delivered",
                            error,
                        )
                    future.set_exception(not_sent)
        unknown = 0
        if link is not None:
            exc: OutcomeUnknown | None = None
            for delivery in list(link.unsettled.values()):
                future = delivery.context
                delivery.context = None
                if id(delivery) in never_written or future is None or future.done():
                    continue
                if exc is None:
                    exc = OutcomeUnknown(
                        f"outcome unknown: the connection to {router} was lost after the message was sent"
                        f" and before the router settled it; it may have been delivered ({describe(error)})",
                        error,
                    )
                future.set_exception(exc)
                unknown += 1
        return unknown

    def _detached(self, error: Error | None) -> None:
        """The router detached the link (the connection stays): the sender is over."""
        self.client._forget(self)
        self._fail(error or Error(condition="amqp:link:detach-forced", description="link detached"),
                   f"sender detached: {describe(error)}" if error else "sender detached")

    def _fail(self, error: Error | None, reason: str) -> None:
        """End for good: everything still waiting fails."""
        if self.error is None:
            self.error = error or Error(condition="amqp:link:detach-forced", description=reason)
        exc = ClientError(reason, error)
        for waiter in self._credit_waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._credit_waiters.clear()
        not_sent = ClientError(f"not sent: {reason}", error)
        for _, future in self._resend:
            if future is not None and not future.done():
                future.set_exception(not_sent)
        self._resend.clear()
        link = self.link
        if link is not None:
            unknown: OutcomeUnknown | None = None
            for delivery in list(link.unsettled.values()):
                future = delivery.context
                delivery.context = None
                if future is not None and not future.done():
                    if unknown is None:
                        unknown = OutcomeUnknown(f"outcome unknown: {reason} before the router settled the message", error)
                    future.set_exception(unknown)
