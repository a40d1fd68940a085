"""The asyncio client: a connection with senders and receivers.

Every operation that waits on the peer returns when the peer answers, and fails with
``ClientError`` when the connection is lost or the peer refuses: a send resolves to the
delivery's outcome (accepted, rejected, released, modified), never to silence.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import unquote, urlsplit

from ..amqp import events as ev
from ..amqp.connection import Connection
from ..amqp.delivery import ACCEPTED, RELEASED, Delivery
from ..amqp.link import Link, ReceiverLink, SenderLink
from ..amqp.message import Message
from ..amqp.sasl import SaslClient
from ..amqp.session import Session
from ..amqp.spec import Error, Modified, Rejected, SenderSettleMode, Source, Target
from ..amqp.errors import CONNECTION_ESTABLISHMENT_FAILED
from ..io.connector import connect
from ..io.protocol import AmqpProtocol
from ..io.tls import client_context

__all__ = ["Client", "ClientError", "Sender", "Receiver", "Received", "parse_url", "Url"]


class ClientError(Exception):
    """The peer refused, or the connection was lost, before an operation completed."""

    def __init__(self, message: str, error: Error | None = None) -> None:
        super().__init__(message)
        self.error = error

    @property
    def condition(self) -> str | None:
        return str(self.error.condition) if self.error is not None else None


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str
    port: int
    address: str | None
    username: str | None
    password: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "amqps"


def parse_url(url: str) -> Url:
    """Parse ``amqp[s]://[user[:password]@]host[:port][/address]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError(f"URL scheme must be amqp or amqps: {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    address = unquote(parts.path[1:]) if len(parts.path) > 1 else None
    return Url(
        parts.scheme,
        parts.hostname,
        port,
        address,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


class Client:
    """One AMQP connection with one session.  Make it with ``await Client.connect(...)``."""

    def __init__(self, engine: Connection) -> None:
        self.engine = engine
        self.protocol: AmqpProtocol | None = None
        self.session: Session | None = None
        self._opened: asyncio.Future[None] | None = None
        self._attaches: dict[Link, asyncio.Future[None]] = {}
        self._closed = False
        self._error: Error | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        container_id: str | None = None,
        idle_timeout: float | None = 30.0,
        max_frame_size: int = 65536,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        sasl_mechanism: str | None = None,
    ) -> "Client":
        """Connect, authenticate and open; raise ``ClientError`` or ``OSError`` on failure.

        The SASL mechanism is PLAIN with a user in ``url``, else ANONYMOUS, unless
        ``sasl_mechanism`` names one: ``"EXTERNAL"`` authenticates as the user the
        client certificate in ``ssl_context`` names.
        """
        target = parse_url(url)
        sasl = SaslClient(target.username, target.password, mechanism=sasl_mechanism)
        engine = Connection(
            container_id or f"switchboard-{uuid.uuid4().hex[:12]}",
            hostname=target.host,
            sasl=sasl,
            idle_timeout=idle_timeout,
            max_frame_size=max_frame_size,
        )
        client = cls(engine)
        loop = asyncio.get_running_loop()
        client._opened = loop.create_future()
        if target.tls and ssl_context is None:
            ssl_context = client_context()
        client.protocol = await connect(target.host, target.port, engine, client, ssl_context, timeout=timeout)
        async with asyncio.timeout(timeout):
            await client._opened
        return client

    # -- links -------------------------------------------------------------------------
    async def sender(self, address: str | None, *, presettled: bool = False, name: str | None = None) -> "Sender":
        """Attach a sending link to ``address`` (None: the anonymous relay; set ``to``)."""
        session = self._session()
        link = session.sender(
            name or f"sender-{uuid.uuid4().hex[:8]}",
            source=Source(address=self.engine.container_id),
            target=Target(address=address),
            snd_settle_mode=SenderSettleMode.SETTLED if presettled else SenderSettleMode.UNSETTLED,
        )
        sender = Sender(self, link)
        link.context = sender
        await self._attached(link)
        return sender

    async def receiver(
        self,
        address: str | None,
        *,
        credit: int = 100,
        dynamic: bool = False,
        name: str | None = None,
    ) -> "Receiver":
        """Attach a receiving link from ``address`` (or a dynamic address the peer picks)."""
        session = self._session()
        link = session.receiver(
            name or f"receiver-{uuid.uuid4().hex[:8]}",
            source=Source(address=None if dynamic else address, dynamic=dynamic or None),
            target=Target(address=self.engine.container_id),
        )
        receiver = Receiver(self, link, credit)
        link.context = receiver
        await self._attached(link)
        if link.remote_source is None:
            raise ClientError(f"the peer refused a receiver from {address!r}", self._link_error(link))
        receiver._replenish()
        self._flush()
        return receiver

    async def close(self) -> None:
        """Close the connection and wait (bounded) for the transport to end."""
        if self.protocol is None:
            return
        if not self._closed:
            self.protocol.close()
        closed = self.protocol.closed
        if closed is not None:
            try:
                async with asyncio.timeout(5):
                    await closed.wait()
            except TimeoutError:
                self.protocol.abort()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- internals ---------------------------------------------------------------------
    def _session(self) -> Session:
        if self._closed or self.session is None:
            raise ClientError("connection is closed", self._error)
        return self.session

    def _flush(self) -> None:
        if self.protocol is not None:
            self.protocol.request_flush()

    async def _attached(self, link: Link) -> None:
        future = asyncio.get_running_loop().create_future()
        self._attaches[link] = future
        self._flush()
        await future

    def _link_error(self, link: Link) -> Error | None:
        return getattr(link.context, "error", None) if link.context else None

    # -- ConnectionHandler -------------------------------------------------------------
    def connection_started(self, protocol: AmqpProtocol) -> None:
        # Here, not after connect() returns: the peer's answer (a SASL refusal, say) may
        # be processed before the awaiting coroutine runs again.
        self.engine.open()
        self.session = self.engine.begin_session()

    def writing_paused(self, protocol: AmqpProtocol, paused: bool) -> None:
        pass

    def connection_ended(self, protocol: AmqpProtocol) -> None:
        self._fail_everything(self._error or Error(condition="amqp:connection:forced", description="connection lost"))

    def events_received(self, protocol: AmqpProtocol, events: list[ev.Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is ev.DeliveryUpdated:
                delivery = event.delivery  # type: ignore[attr-defined]
                if delivery.remote_settled and delivery.context is not None:
                    future = delivery.context
                    delivery.context = None
                    if not future.done():
                        future.set_result(delivery.remote_state)
            elif kind is ev.DeliveryReceived:
                delivery = event.delivery  # type: ignore[attr-defined]
                receiver = delivery.link.context
                if receiver is not None:
                    receiver._deliver(delivery)
            elif kind is ev.CreditGranted:
                sender = event.link.context  # type: ignore[attr-defined]
                if sender is not None:
                    sender._credit_changed()
            elif kind is ev.LinkAttached:
                link = event.link  # type: ignore[attr-defined]
                if link.remote_initiated:
                    link.refuse(Error(condition="amqp:not-allowed", description="clients do not accept links"))
                    continue
                future = self._attaches.pop(link, None)
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind is ev.LinkDetached:
                link = event.link  # type: ignore[attr-defined]
                endpoint = link.context
                if endpoint is not None:
                    endpoint._detached(event.error)  # type: ignore[attr-defined]
                future = self._attaches.pop(link, None)
                if future is not None and not future.done():
                    future.set_exception(ClientError(f"link {link.name!r} refused", event.error))  # type: ignore[attr-defined]
            elif kind is ev.ConnectionOpened:
                remote = protocol.engine.remote_open
                properties = (remote.properties if remote is not None else None) or {}
                if properties.get(CONNECTION_ESTABLISHMENT_FAILED):
                    continue  # a refusal: the close that follows fails the connect
                if self._opened is not None and not self._opened.done():
                    self._opened.set_result(None)
            elif kind is ev.ConnectionClosed:
                self._closed = True
                self._error = event.error  # type: ignore[attr-defined]
                if self._opened is not None and not self._opened.done():
                    self._opened.set_exception(ClientError(f"connection refused: {_describe(event.error)}", event.error))  # type: ignore[attr-defined]
                self._fail_everything(event.error)  # type: ignore[attr-defined]

    def _fail_everything(self, error: Error | None) -> None:
        self._closed = True
        exc = ClientError(f"connection closed: {_describe(error)}", error)
        for future in self._attaches.values():
            if not future.done():
                future.set_exception(exc)
        self._attaches.clear()
        if self.session is not None:
            for link in list(self.session.links.values()):
                if link.context is not None:
                    link.context._detached(error)
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(exc)


def _describe(error: Error | None) -> str:
    if error is None:
        return "no error"
    return f"{error.condition}: {error.description}" if error.description else str(error.condition)


class Sender:
    """Sends messages; ``send`` waits for credit, then for the outcome unless presettled."""

    def __init__(self, client: Client, link: SenderLink) -> None:
        self.client = client
        self.link = link
        self.error: Error | None = None
        self._credit_waiters: deque[asyncio.Future[None]] = deque()
        self._pending: set[asyncio.Future[Any]] = set()

    @property
    def presettled(self) -> bool:
        return self.link.snd_settle_mode == SenderSettleMode.SETTLED

    async def send(self, message: Message | bytes, *, wait: bool = True) -> Any:
        """Send one message; return its outcome (``None`` when presettled).

        With ``wait=False`` the outcome future is returned at once, for pipelining.
        """
        payload = message.encode() if isinstance(message, Message) else message
        while self.link.credit <= 0:
            self._check_open()
            waiter = asyncio.get_running_loop().create_future()
            self._credit_waiters.append(waiter)
            await waiter
        self._check_open()
        delivery = self.link.send(payload)
        self.client._flush()
        if delivery.settled:
            return None
        future = asyncio.get_running_loop().create_future()
        delivery.context = future
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        if not wait:
            return future
        return await future

    async def close(self) -> None:
        self.link.detach()
        self.client._flush()

    def _check_open(self) -> None:
        if self.error is not None or not self.link.active:
            raise ClientError(f"sender is detached: {_describe(self.error)}", self.error)

    def _credit_changed(self) -> None:
        while self._credit_waiters and self.link.credit > 0:
            waiter = self._credit_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _detached(self, error: Error | None) -> None:
        self.error = error or Error(condition="amqp:link:detach-forced", description="link detached")
        exc = ClientError(f"sender detached: {_describe(self.error)}", self.error)
        for waiter in self._credit_waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._credit_waiters.clear()
        # Unsettled deliveries: the outcome is unknown, and the caller must be told.
        for delivery in list(self.link.unsettled.values()):
            future = delivery.context
            if future is not None and not future.done():
                future.set_exception(exc)
            delivery.context = None
        for future in list(self._pending):
            if not future.done():
                future.set_exception(exc)


@dataclass
class Received:
    """A message taken from a receiver; settle it with accept/reject/release/modify."""

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
    """Receives messages with a bounded prefetch (``credit``), topped up as they are taken."""

    def __init__(self, client: Client, link: ReceiverLink, credit: int) -> None:
        self.client = client
        self.link = link
        self.credit_window = credit
        self.error: Error | None = None
        self._queue: deque[Delivery] = deque()
        self._waiter: asyncio.Future[None] | None = None

    @property
    def address(self) -> str | None:
        source = self.link.remote_source
        return source.address if source is not None else None

    async def receive(self, timeout: float | None = None) -> Received:
        """Wait for the next message; raise ``ClientError`` if the link or connection ends."""
        while not self._queue:
            if self.error is not None:
                raise ClientError(f"receiver detached: {_describe(self.error)}", self.error)
            self._waiter = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(timeout):
                await self._waiter
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
        self.link.detach()
        self.client._flush()

    def _replenish(self) -> None:
        # Top credit back up once half the window is used: fewer flow frames than one
        # per message, and the sender never waits while we still have room.
        outstanding = self.link.credit + len(self._queue)
        if outstanding <= self.credit_window // 2 and self.link.active:
            self.link.flow(self.credit_window - len(self._queue))
            self.client._flush()

    def _settle(self, delivery: Delivery, outcome: Any) -> None:
        if not delivery.settled and not delivery.remote_settled:
            delivery.settle(outcome)
            self.client._flush()

    def _deliver(self, delivery: Delivery) -> None:
        self._queue.append(delivery)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _detached(self, error: Error | None) -> None:
        self.error = error or Error(condition="amqp:link:detach-forced", description="link detached")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
