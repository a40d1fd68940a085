"""Receivers: an async iterator with a bounded prefetch, across failovers.

After a failover the receiver's link is attached again from the same address with the
same credit window; a dynamic receiver gets a new address from the new router (its
``address`` changes, and the client reports ``ReceiverAddressChanged``).

Messages the lost connection delivered but nobody settled cannot be settled any more:
the router that held them is gone (it returns them to their senders, or a queue
redelivers them).  So those still in the prefetch buffer are dropped, and settling one
already taken raises ``ClientError``.  Messages the sender presettled need no
settlement and are kept.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator

from ..amqp.delivery import ACCEPTED, RELEASED, Delivery
from ..amqp.link import ReceiverLink
from ..amqp.message import Message
from ..amqp.session import Session
from ..amqp.spec import Error, Modified, Rejected, Source, Target
from .errors import ClientError, describe

if TYPE_CHECKING:
    from .connection import Client

__all__ = ["Receiver", "Received"]


@dataclass
class Received:
    """A message taken from a receiver; settle it with accept/reject/release/modify.

    Settling raises ``ClientError`` when the connection it came on is gone (after a
    failover): the router that held it has already returned it to its sender.
    """

    delivery: Delivery
    receiver: "Receiver"

    @property
    def payload(self) -> bytes:
        return self.delivery.payload or b""

    def message(self) -> Message:
        return Message.decode(self.payload)

    def accept(self) -> None:
        self.receiver._settle(self.delivery, ACCEPTED)

    def reject(self, condition: str = "amqp:internal-error", description: str | None = None) -> None:
        self.receiver._settle(self.delivery, Rejected(error=Error(condition=condition, description=description)))

    def release(self) -> None:
        self.receiver._settle(self.delivery, RELEASED)

    def modify(self, delivery_failed: bool = True, undeliverable_here: bool = False) -> None:
        self.receiver._settle(self.delivery, Modified(delivery_failed=delivery_failed, undeliverable_here=undeliverable_here))


class Receiver:
    """Receives messages with a bounded prefetch (``credit``), topped up as they are taken.

    Made by ``Client.receiver()``.  While the client fails over, ``receive`` waits for
    the next connection instead of failing; it raises ``ClientError`` once the receiver
    ends for good (detached by the router, closed, or the client gave up).
    """

    def __init__(self, client: "Client", address: str | None, name: str, credit: int, dynamic: bool) -> None:
        self.client = client
        self.source_address = address
        self.name = name
        self.credit_window = credit
        self.dynamic = dynamic
        self.link: ReceiverLink | None = None
        """The link on the current (or last) connection."""
        self.error: Error | None = None
        self._address: str | None = None
        self._closed = False
        self._queue: deque[Delivery] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        """Those in ``receive`` (several tasks may share a receiver): woken together by
        a message or the end, each looks again."""

    @property
    def address(self) -> str | None:
        """The address messages come from, as the router named it: for a dynamic
        receiver, the one the current router assigned (it changes on failover)."""
        return self._address

    async def receive(self, timeout: float | None = None) -> Received:
        """Wait for the next message; raise ``ClientError`` if the receiver has ended."""
        async with asyncio.timeout(timeout):
            while not self._queue:
                if self.error is not None:
                    raise ClientError(f"receiver detached: {describe(self.error)}", self.error)
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
        delivery = self._queue.popleft()
        self._replenish()
        return Received(delivery, self)

    def __aiter__(self) -> AsyncIterator[Received]:
        return self

    async def __anext__(self) -> Received:
        try:
            return await self.receive()
        except ClientError:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        self._closed = True
        self.client._forget(self)
        link = self.link
        if link is not None and link.active:
            link.detach()
            self.client._flush()
        else:
            self._fail(Error(condition="amqp:link:detach-forced", description="receiver closed"))

    # -- internals ---------------------------------------------------------------------
    def _make_link(self, session: Session) -> ReceiverLink:
        link = session.receiver(
            self.name,
            source=Source(address=None if self.dynamic else self.source_address, dynamic=self.dynamic or None),
            target=Target(address=self.client.container_id),
        )
        link.context = self
        self.link = link
        return link

    def _on_attached(self) -> tuple[str | None, str | None] | None:
        """The link is attached: take the router's address, open the credit window.

        Returns ``(old, new)`` when the address changed on a re-attach."""
        link = self.link
        assert link is not None
        source = link.remote_source
        if source is None:
            return None  # refused: the router's detach follows
        old, self._address = self._address, source.address
        self._replenish()
        if old is not None and old != self._address:
            return old, self._address
        return None

    def pause(self) -> None:
        """Give the router no more credit: nothing more arrives once what is on its way
        has (a server stopping, say).  Messages already received can still be taken."""
        self.credit_window = 0
        link = self.link
        if link is not None and link.active:
            link.flow(0)
            self.client._flush()

    def release_prefetched(self) -> int:
        """Hand back every message received and not yet taken (``released``: the router
        offers it to another consumer, unchanged).  Returns how many went back."""
        count = 0
        while self._queue:
            delivery = self._queue.popleft()
            try:
                Received(delivery, self).release()
            except ClientError:
                pass  # its connection is gone: the router has given it back already
            count += 1
        return count

    def _replenish(self) -> None:
        # Top credit back up once half the window is used: fewer flow frames than one
        # per message, and the sender never waits while we still have room.
        link = self.link
        if link is None or not link.active:
            return
        outstanding = link.credit + len(self._queue)
        if outstanding <= self.credit_window // 2:
            link.flow(self.credit_window - len(self._queue))
            self.client._flush()

    def _settle(self, delivery: Delivery, outcome: Any) -> None:
        if delivery.settled or delivery.remote_settled:
            return
        link = delivery.link
        if link is not self.link or not link.active:
            raise ClientError(
                "cannot settle this message: the link it came on is gone (connection lost or link"
                " detached); the router returns unsettled messages to their senders",
                self.error,
            )
        delivery.settle(outcome)
        self.client._flush()

    def _deliver(self, delivery: Delivery) -> None:
        self._queue.append(delivery)
        self._wake()

    def _connection_lost(self) -> int:
        """Drop the prefetched messages that can no longer be settled; return how many."""
        before = len(self._queue)
        if before:
            self._queue = deque(d for d in self._queue if d.remote_settled)
        return before - len(self._queue)

    def _detached(self, error: Error | None) -> None:
        """The router detached the link (the connection stays): the receiver is over."""
        self.client._forget(self)
        self._fail(error)

    def _fail(self, error: Error | None) -> None:
        self.error = error or Error(condition="amqp:link:detach-forced", description="link detached")
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
