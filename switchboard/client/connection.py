"""The asyncio client: a connection to one router of a list, with senders and receivers.

Every operation that waits on the peer returns when the peer answers, and fails with
``ClientError`` when the peer refuses or the client gives up: a send resolves to the
delivery's outcome (accepted, rejected, released, modified), to ``OutcomeUnknown``
when the connection was lost with the message in flight, never to silence.

Failover.  The client holds one connection at a time, to one router of its URL's list.
When it is lost (the socket drops, heartbeats stop, the router closes it) the client
connects to the next router (``failover.AttemptPlan``: round robin, back-off between
rounds, bounded by ``Reconnect``), attaches its senders' and receivers' links again, and
carries on; the application sees ``ClientEvent``s and ``client.router``.  Failover is on
when the URL lists several routers, or when ``reconnect`` says so; a client of one router
without ``reconnect`` ends with its connection, failing what waits.

Refusals that another attempt cannot cure end the client at once: authentication
(``amqp:unauthorized-access``), since the same credentials go to every router.

Each connection has its own handler (``_Wire``): callbacks from a connection the client
has left behind (still closing, or an attempt that timed out) reach that handler and
change nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from typing import Any, Sequence

from ..amqp import events as ev
from ..amqp.connection import Connection
from ..amqp.delivery import Delivery
from ..amqp.errors import CONNECTION_ESTABLISHMENT_FAILED, Condition
from ..amqp.link import Link
from ..amqp.message import Message
from ..amqp.sasl import SaslClient
from ..amqp.session import Session
from ..amqp.spec import Error
from ..io.connector import connect
from ..io.protocol import AmqpProtocol
from ..io.tls import client_context
from .errors import ClientError, OutcomeUnknown, describe
from .events import (
    ClientEvent,
    ConnectAttemptFailed,
    Connected,
    ConnectionLost,
    GaveUp,
    Listener,
    ReceiverAddressChanged,
    RoundFailed,
)
from .failover import AttemptPlan, Reconnect
from .receiver import Received, Receiver
from .requester import DEFAULT_REQUEST_TIMEOUT, Requester
from .sender import Sender
from .urls import Router, Url, UrlError, parse_url

__all__ = [
    "Client",
    "ClientError",
    "OutcomeUnknown",
    "Sender",
    "Receiver",
    "Received",
    "Reconnect",
    "Router",
    "Url",
    "UrlError",
    "parse_url",
]

log = logging.getLogger("switchboard.client")

CLOSE_WAIT_SECONDS = 5.0
"""How long ``close()`` waits for the router's close before dropping the socket."""

_FATAL_CONDITIONS = frozenset({str(Condition.UNAUTHORIZED_ACCESS)})
"""Refusals no other router of the list will reverse (same credentials everywhere)."""


class _Lost(ClientError):
    """The connection went while an attach waited (the client may retry it elsewhere)."""


class _Wire:
    """One connection attempt, then (if it opens) the connection: the ConnectionHandler."""

    def __init__(self, client: "Client", router: Router, engine: Connection) -> None:
        self.client = client
        self.router = router
        self.engine = engine
        self.protocol: AmqpProtocol | None = None
        self.session: Session | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.attaches: dict[Link, asyncio.Future[None]] = {}
        self.ended = False
        # AmqpProtocol.flush hands whatever data_to_send returns to the transport at once,
        # so that is the moment deliveries count as written (see sender.py).
        engine.on_output = self._output_taken

    def _output_taken(self) -> None:
        # A transport already closing (aborted, or failed and not yet reported lost)
        # drops what it is given: those bytes were never written.
        transport = self.protocol.transport if self.protocol is not None else None
        if transport is not None and not transport.is_closing():
            self.client._output_written(self)

    def abandon(self) -> None:
        """Leave this connection (a failed attempt): drop the socket, ignore its callbacks."""
        self.ended = True
        if self.protocol is not None and not self.engine.transport_done:
            self.protocol.abort()  # else the engine's close is on its way out: let it go

    # -- ConnectionHandler -------------------------------------------------------------
    def connection_started(self, protocol: AmqpProtocol) -> None:
        # Here, not after connect() returns: the peer's answer (a SASL refusal, say) may
        # be processed before the awaiting coroutine runs again.
        self.protocol = protocol
        self.engine.open()
        self.session = self.engine.begin_session()

    def writing_paused(self, protocol: AmqpProtocol, paused: bool) -> None:
        pass

    def events_received(self, protocol: AmqpProtocol, events: list[ev.Event]) -> None:
        if not self.ended:
            self.client._on_events(self, events)

    def connection_ended(self, protocol: AmqpProtocol) -> None:
        if not self.ended:
            error = self.engine.error or Error(condition=Condition.CONNECTION_FORCED, description="connection lost")
            self.client._on_lost(self, error)


class Client:
    """A connection to one router of a list, with failover.  Make it with
    ``await Client.connect(url, ...)``; close it with ``await client.close()`` (or use
    ``async with``)."""

    def __init__(
        self,
        url: Url,
        *,
        container_id: str | None = None,
        idle_timeout: float | None = 10.0,
        max_frame_size: int = 65536,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        sasl_mechanism: str | None = None,
        reconnect: Reconnect | bool | None = None,
        on_event: Listener | None = None,
    ) -> None:
        if reconnect is None:
            reconnect = len(url.routers) > 1
        if reconnect is True:
            reconnect = Reconnect()
        self.url = url
        self.routers: tuple[Router, ...] = url.routers
        self.container_id = container_id or f"switchboard-{uuid.uuid4().hex[:12]}"
        self.reconnect: Reconnect | None = reconnect or None
        """The failover policy; None: the client ends with its first connection."""
        self._idle_timeout = idle_timeout
        self._max_frame_size = max_frame_size
        self._timeout = timeout
        self._sasl_mechanism = sasl_mechanism
        self._ssl_context = ssl_context if ssl_context is not None or not url.tls else client_context()
        self._listeners: list[Listener] = [on_event] if on_event is not None else []
        self._wire: _Wire | None = None
        self._last_router_index = -1
        self._endpoints: list[Sender | Receiver] = []
        self._unwritten: list[tuple[Sender, Delivery, bytes, Any]] = []
        self._up_waiters: list[asyncio.Future[None]] = []
        self._reconnect_task: asyncio.Task[None] | None = None
        self._failure: ClientError | None = None
        """Set once the client has ended (gave up, or closed): what waits fails with it."""
        self._closing = False
        self._requester: asyncio.Future[Requester] | None = None
        """The requester ``request()`` shares, once the first request made it."""
        # The current (or last) connection's parts, for those who look inside.
        self.engine: Connection | None = None
        self.protocol: AmqpProtocol | None = None
        self.session: Session | None = None

    @classmethod
    async def connect(
        cls,
        url: str | Url,
        *,
        container_id: str | None = None,
        idle_timeout: float | None = 10.0,
        max_frame_size: int = 65536,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        sasl_mechanism: str | None = None,
        reconnect: Reconnect | bool | None = None,
        on_event: Listener | None = None,
    ) -> "Client":
        """Connect to a router of ``url`` (``amqp[s]://[user:pass@]h1:p1[,h2:p2...][/address]``).

        ``timeout`` bounds each attempt (TCP, TLS, SASL and open).  ``idle_timeout`` is
        what the client asks of the router (heartbeats every half of it) and how long it
        waits in silence before it counts the router as dead (None: no heartbeats).

        ``reconnect``: a ``Reconnect`` policy, True (the default policy) or False; None
        (the default) fails over when the URL lists more than one router.  With
        failover, ``connect`` itself retries within the policy's bounds.

        The SASL mechanism is PLAIN with a user in ``url``, else ANONYMOUS, unless
        ``sasl_mechanism`` names one: ``"EXTERNAL"`` authenticates as the user the
        client certificate in ``ssl_context`` names.

        Raises ``ClientError`` when no router could be reached within the bounds (or the
        ``OSError`` / ``TimeoutError`` of the only attempt, without failover), at once on a
        refusal no retry cures.  A bad URL raises ``UrlError`` (a ``ValueError``).
        """
        target = url if isinstance(url, Url) else parse_url(url)
        client = cls(
            target,
            container_id=container_id,
            idle_timeout=idle_timeout,
            max_frame_size=max_frame_size,
            ssl_context=ssl_context,
            timeout=timeout,
            sasl_mechanism=sasl_mechanism,
            reconnect=reconnect,
            on_event=on_event,
        )
        wire = await client._connect_any(0)
        client._install(wire)
        client._emit(Connected(wire.router, reconnected=False))
        return client

    # -- what the application sees -----------------------------------------------------
    @property
    def router(self) -> Router | None:
        """The router the client is connected to; None between connections."""
        wire = self._wire
        return wire.router if wire is not None else None

    @property
    def connected(self) -> bool:
        return self._wire is not None

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for each ``ClientEvent`` from now on."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    # -- links -------------------------------------------------------------------------
    async def sender(
        self,
        address: str | None,
        *,
        presettled: bool = False,
        name: str | None = None,
        resend: bool = True,
    ) -> Sender:
        """Attach a sending link to ``address`` (None: the anonymous relay; set ``to``).

        ``resend=False``: a message a lost connection never wrote fails with ``NotSent``
        instead of going out again on the next connection.
        """
        sender = Sender(self, address, name or f"sender-{uuid.uuid4().hex[:8]}", presettled, resend)
        await self._attach_new(sender)
        return sender

    async def receiver(
        self,
        address: str | None,
        *,
        credit: int = 100,
        dynamic: bool = False,
        name: str | None = None,
    ) -> Receiver:
        """Attach a receiving link from ``address`` (or a dynamic address the peer picks)."""
        receiver = Receiver(self, address, name or f"receiver-{uuid.uuid4().hex[:8]}", credit, dynamic)
        await self._attach_new(receiver)
        if receiver.link is None or receiver.link.remote_source is None:
            raise ClientError(f"the peer refused a receiver from {address!r}", receiver.error)
        return receiver

    async def requester(self, *, credit: int = 200) -> Requester:
        """Attach a ``Requester``: a reply address of its own, and a sender for requests.

        Make one and use it for many requests (they may be in flight at once); each
        requester holds two links on the router.  ``credit`` bounds replies prefetched.
        """
        return await Requester.open(self, credit=credit)

    async def request(
        self,
        address: str,
        message: Message,
        *,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> Message:
        """Send a request to ``address`` and return the reply: ``Requester.request`` on a
        requester the client makes at the first request and shares from then on (and
        makes again if the router ended it while the client goes on)."""
        shared = self._requester
        if shared is not None and shared.done() and not shared.exception() and shared.result().ended:
            self._check_usable()
            shared = self._requester = None
        if shared is None:
            shared = self._requester = asyncio.get_running_loop().create_future()
            try:
                shared.set_result(await self.requester())
            except BaseException as exc:
                self._requester = None
                shared.set_exception(exc if isinstance(exc, Exception) else ClientError("cancelled"))
                shared.exception()  # retrieved: other waiters have it, or there are none
                raise
        requester = await asyncio.shield(shared)
        return await requester.request(address, message, timeout=timeout)

    async def close(self) -> None:
        """Close the connection and wait (bounded) for the transport to end."""
        if self._closing:
            return
        self._closing = True
        task = self._reconnect_task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        wire = self._wire
        if wire is not None and wire.protocol is not None:
            protocol = wire.protocol
            protocol.close()
            closed = protocol.closed
            if closed is not None:
                try:
                    async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                        await closed.wait()
                except TimeoutError:
                    protocol.abort()
            if not wire.ended:
                self._on_lost(wire, Error(condition=Condition.CONNECTION_FORCED, description="client closed"))
        self._end(ClientError("client closed", self.engine.error if self.engine is not None else None))

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- connecting --------------------------------------------------------------------
    async def _connect_any(self, start: int) -> _Wire:
        """Try the routers from ``start`` as the policy allows; return an open connection.

        Raises ``ClientError`` once the plan gives up (or on a fatal refusal); without
        failover, the only attempt's own error."""
        loop = asyncio.get_running_loop()
        plan = AttemptPlan(self.routers, start, self.reconnect, loop.time())
        failures: dict[Router, BaseException] = {}
        last: BaseException | None = None
        while True:
            round_before = plan.round
            step = plan.next_attempt(loop.time())
            if step is None:
                break
            router, delay = step
            if plan.round != round_before:
                self._emit(RoundFailed(round_before + 1, delay))
                log.info("no router of %s answered; next round in %.2f s", _describe_list(self.routers), delay)
            if delay > 0:
                await asyncio.sleep(delay)
            if self._closing:
                raise ClientError("client closed")
            try:
                return await self._open(router)
            except (OSError, TimeoutError, ClientError) as exc:
                last = exc
                failures[router] = exc
                self._emit(ConnectAttemptFailed(router, plan.attempts, exc))
                log.info("cannot connect to %s: %s", router, _describe_exception(exc))
                if isinstance(exc, ClientError) and exc.condition in _FATAL_CONDITIONS:
                    raise
        assert last is not None
        if self.reconnect is None and len(self.routers) == 1:
            raise last
        summary = "; ".join(f"{router}: {_describe_exception(exc)}" for router, exc in failures.items())
        error = last.error if isinstance(last, ClientError) else None
        raise ClientError(
            f"cannot connect to any router of {_describe_list(self.routers)}"
            f" ({plan.attempts} attempts in {loop.time() - plan.started_at:.1f} s): {summary}",
            error,
        ) from last

    async def _open(self, router: Router) -> _Wire:
        """One attempt: TCP (TLS), SASL, open; the connection's session is begun."""
        sasl = SaslClient(self.url.username, self.url.password, mechanism=self._sasl_mechanism)
        engine = Connection(
            self.container_id,
            hostname=router.host,
            sasl=sasl,
            idle_timeout=self._idle_timeout,
            max_frame_size=self._max_frame_size,
        )
        wire = _Wire(self, router, engine)
        try:
            await connect(router.host, router.port, engine, wire, self._ssl_context, timeout=self._timeout)
            async with asyncio.timeout(self._timeout):
                await wire.opened
            if wire.ended:
                raise ClientError(f"connection to {router} lost as it opened: {describe(wire.engine.error)}", wire.engine.error)
        except BaseException:
            wire.abandon()
            raise
        return wire

    def _install(self, wire: _Wire) -> None:
        self._wire = wire
        self._last_router_index = self.routers.index(wire.router)
        self.engine = wire.engine
        self.protocol = wire.protocol
        self.session = wire.session
        log.info("connected to %s", wire.router)
        waiters, self._up_waiters = self._up_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _keep_connected(self) -> None:
        """Fail over: connect to the next router, attach the links again; repeat if the
        new connection is lost while that happens.  Gives up as the policy says."""
        try:
            while True:
                wire = await self._connect_any(self._last_router_index + 1)
                self._install(wire)
                try:
                    await self._restore(wire)
                except _Lost:
                    continue
                if wire is self._wire:
                    log.warning("failed over to %s", wire.router)
                    self._emit(Connected(wire.router, reconnected=True))
                    return
        except ClientError as exc:
            if not self._closing:
                self._give_up(exc)
        except Exception as exc:  # a bug must not leave the client waiting for ever
            log.exception("reconnecting failed")
            self._give_up(ClientError(f"reconnecting failed: {type(exc).__name__}: {exc}"))

    async def _restore(self, wire: _Wire) -> None:
        """Attach every sender's and receiver's link on the new connection."""
        pending = [self._begin_attach(wire, endpoint) for endpoint in list(self._endpoints)]
        for future in pending:
            try:
                await future
            except _Lost:
                raise
            except ClientError:
                pass  # refused here: the endpoint has ended (its _detached ran)

    async def _attach_new(self, endpoint: Sender | Receiver) -> None:
        while True:
            wire = await self._ready()
            try:
                await self._begin_attach(wire, endpoint)
            except _Lost:
                if self.reconnect is None:
                    raise
                continue
            if wire.ended:
                if self.reconnect is None:
                    raise ClientError("connection closed: the link was attached as it ended", wire.engine.error)
                continue
            link = endpoint.link
            refused = isinstance(endpoint, Receiver) and link is not None and link.remote_source is None
            if endpoint.error is None and not refused:
                self._endpoints.append(endpoint)
            return

    def _begin_attach(self, wire: _Wire, endpoint: Sender | Receiver) -> asyncio.Future[None]:
        assert wire.session is not None
        link = endpoint._make_link(wire.session)
        future = asyncio.get_running_loop().create_future()
        wire.attaches[link] = future
        self._flush()
        return future

    async def _ready(self) -> _Wire:
        """The open connection, once there is one; ``ClientError`` once the client ended."""
        while True:
            self._check_usable()
            if self._wire is not None:
                return self._wire
            waiter = asyncio.get_running_loop().create_future()
            self._up_waiters.append(waiter)
            await waiter

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise ClientError(str(self._failure), self._failure.error)

    # -- losing it ---------------------------------------------------------------------
    def _on_lost(self, wire: _Wire, error: Error | None) -> None:
        if wire.ended:
            return
        wire.ended = True
        if error is None and self._closing:
            # The router's answer to our close carries no error: say whose close it was.
            error = Error(condition=Condition.CONNECTION_FORCED, description="client closed")
        lost = _Lost(f"connection to {wire.router} lost: {describe(error)}", error)
        for future in wire.attaches.values():
            if not future.done():
                future.set_exception(lost)
        wire.attaches.clear()
        if not wire.opened.done():
            wire.opened.set_exception(ClientError(f"connection refused: {describe(error)}", error))
        if wire is not self._wire:
            return
        self._wire = None
        unwritten, self._unwritten = self._unwritten, []
        by_sender: dict[Sender, list[tuple[Delivery, bytes, Any]]] = {}
        for sender, delivery, payload, future in unwritten:
            by_sender.setdefault(sender, []).append((delivery, payload, future))
        failing_over = self.reconnect is not None and not self._closing and not _is_fatal(error)
        unknown = resending = 0
        for endpoint in list(self._endpoints) + [s for s in by_sender if s not in self._endpoints]:
            if isinstance(endpoint, Sender):
                never_written = by_sender.get(endpoint, [])
                unknown += endpoint._connection_lost(error, never_written, wire.router)
                resending += len(never_written)
            elif failing_over:
                endpoint._connection_lost()
        if self._closing:
            return
        if failing_over:
            log.warning(
                "connection to %s lost (%s): %d outcomes unknown, %d to resend; failing over",
                wire.router, describe(error), unknown, resending,
            )
        self._emit(ConnectionLost(wire.router, error, unknown, resending))
        if not failing_over:
            self._give_up(ClientError(f"connection closed: {describe(error)}", error))
            return
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._keep_connected())

    def _give_up(self, exc: ClientError) -> None:
        if self._failure is not None:
            return
        if self.reconnect is not None:
            log.error("giving up: %s", exc)
        self._end(exc)
        self._emit(GaveUp(exc))

    def _end(self, exc: ClientError) -> None:
        """The client is over: fail everything that still waits."""
        if self._failure is None:
            self._failure = exc
        for endpoint in list(self._endpoints):
            if isinstance(endpoint, Sender):
                endpoint._fail(exc.error, str(exc))
            else:
                endpoint._fail(exc.error or Error(condition=Condition.CONNECTION_FORCED, description=str(exc)))
        self._endpoints.clear()
        waiters, self._up_waiters = self._up_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    # -- called by senders and receivers -----------------------------------------------
    def _flush(self) -> None:
        wire = self._wire
        if wire is not None and wire.protocol is not None:
            wire.protocol.request_flush()

    def _sent(self, sender: Sender, delivery: Delivery, payload: bytes, future: Any) -> None:
        self._unwritten.append((sender, delivery, payload, future))
        self._flush()

    def _output_written(self, wire: _Wire) -> None:
        if wire is self._wire and self._unwritten:
            self._unwritten = []

    def _forget(self, endpoint: Sender | Receiver) -> None:
        if endpoint in self._endpoints:
            self._endpoints.remove(endpoint)

    def _emit(self, event: ClientEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a client event listener raised on %r", event)

    # -- the connection's events -------------------------------------------------------
    def _on_events(self, wire: _Wire, events: list[ev.Event]) -> None:
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
                link = event.link  # type: ignore[attr-defined]
                sender = link.context
                if sender is not None and sender.link is link:
                    sender._credit_changed()
            elif kind is ev.LinkAttached:
                self._on_link_attached(wire, event.link)  # type: ignore[attr-defined]
            elif kind is ev.LinkDetached:
                self._on_link_detached(wire, event.link, event.error)  # type: ignore[attr-defined]
            elif kind is ev.ConnectionOpened:
                remote = wire.engine.remote_open
                properties = (remote.properties if remote is not None else None) or {}
                if properties.get(CONNECTION_ESTABLISHMENT_FAILED):
                    continue  # a refusal: the close that follows fails the connect
                if not wire.opened.done():
                    wire.opened.set_result(None)
            elif kind is ev.ConnectionClosed:
                self._on_lost(wire, event.error)  # type: ignore[attr-defined]

    def _on_link_attached(self, wire: _Wire, link: Link) -> None:
        if link.remote_initiated:
            link.refuse(Error(condition="amqp:not-allowed", description="clients do not accept links"))
            return
        endpoint = link.context
        if endpoint is not None and endpoint.link is link:
            changed = endpoint._on_attached()
            if changed is not None and isinstance(endpoint, Receiver):
                old, new = changed
                log.info("dynamic receiver %s has a new address after failover: %s (was %s)", endpoint.name, new, old)
                self._emit(ReceiverAddressChanged(endpoint, old, new))
        future = wire.attaches.pop(link, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_link_detached(self, wire: _Wire, link: Link, error: Error | None) -> None:
        endpoint = link.context
        if wire.engine.closed:
            # The connection ended: _on_lost handles its links, except those being closed.
            if endpoint is not None and endpoint._closed and endpoint.link is link:
                endpoint._detached(error)
            return
        if endpoint is not None and endpoint.link is link:
            endpoint._detached(error)
        future = wire.attaches.pop(link, None)
        if future is not None and not future.done():
            future.set_exception(ClientError(f"link {link.name!r} refused", error))


def _is_fatal(error: Error | None) -> bool:
    return error is not None and str(error.condition) in _FATAL_CONDITIONS


def _describe_list(routers: Sequence[Router]) -> str:
    return ",".join(str(router) for router in routers)


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__
