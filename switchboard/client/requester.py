"""Request/response: send a request, wait for the reply that names it.

A ``Requester`` holds two links, made once and shared by every request in flight: a
sender on the anonymous relay (each request carries its own ``to``) and a receiver from
a dynamic address the router assigns, named in each request's ``reply_to``.  A request
gets a fresh ``message_id``; its reply is the message on the reply address whose
``correlation_id`` is that id.  Replies are accepted as they arrive, also those that
come after their request gave up waiting (they are dropped).

What a request ends with:

* the reply (a ``Message``);
* ``RequestTimeout``: no reply within the timeout (the request may have been processed);
* ``NotDelivered``: no consumer took it (the router released it: nobody consumes the
  address), so it was not processed.  Raised as soon as the router says so, not at the
  timeout;
* ``RequestRejected``: the consumer (or the router) rejected it;
* ``OutcomeUnknown``: the connection was lost after the request was written and before
  its reply came.  It may have been processed, and its reply, addressed to the lost
  connection, cannot come: the request fails at once rather than at its timeout.  It is
  not sent again, since that could process it twice;
* ``ClientError``: the client gave up or was closed, or the requester was closed.

A request the lost connection never wrote goes out again on the next router, with the
reply address that router assigned: the first router never saw it.  So does a request
still waiting for credit.  The timeout bounds all of it, failover included.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import TYPE_CHECKING, Any

from ..amqp.delivery import ACCEPTED, Delivery
from ..amqp.errors import DecodeError
from ..amqp.message import Message
from ..amqp.spec import Accepted, Error, Modified, Properties, Rejected, Released
from .errors import ClientError, NotDelivered, NotSent, OutcomeUnknown, RequestRejected, RequestTimeout, describe
from .events import ClientEvent, Connected, ConnectionLost
from .receiver import Receiver
from .sender import Sender

if TYPE_CHECKING:
    from .connection import Client

__all__ = ["Requester", "DEFAULT_REQUEST_TIMEOUT"]

log = logging.getLogger("switchboard.client")

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds a request waits for its reply unless told otherwise."""


class _Retry(Exception):
    """The request was never written to the lost connection: send it again."""


class _Pending:
    """One request on the wire: where it went, and what its caller waits on."""

    __slots__ = ("address", "generation", "outcome", "result")

    def __init__(self, address: str, generation: int, outcome: asyncio.Future[Any], result: asyncio.Future[Message]) -> None:
        self.address = address
        self.generation = generation
        """The connection (counted by the requester) the request was written to."""
        self.outcome = outcome
        """The router's outcome for the request message."""
        self.result = result
        """The reply, or why there will be none."""


class _ReplyReceiver(Receiver):
    """The requester's receiver: hands each reply to its request as it arrives."""

    requester: "Requester | None" = None

    def _deliver(self, delivery: Delivery) -> None:
        self._settle(delivery, ACCEPTED)
        self._replenish()
        if self.requester is not None:
            self.requester._reply_arrived(delivery.payload or b"")

    def _fail(self, error: Error | None) -> None:
        super()._fail(error)
        if self.requester is not None:
            self.requester._receiver_ended(self.error)


class Requester:
    """Sends requests and returns their replies; many may be in flight at once.

    Made by ``await client.requester()`` (or used through ``client.request``).  Safe to
    share between the coroutines of one event loop.
    """

    def __init__(self, client: "Client", sender: Sender, receiver: _ReplyReceiver) -> None:
        self.client = client
        self._sender = sender
        self._receiver = receiver
        receiver.requester = self
        self._prefix = f"{client.container_id}-{uuid.uuid4().hex[:8]}-"
        self._ids = itertools.count(1)
        self._pending: dict[Any, _Pending] = {}
        self._generation = 0
        """Connections lost since the requester was made: tells a request written to a
        lost connection from one written to the current connection."""
        self._up = asyncio.Event()
        if client.connected:
            self._up.set()
        self._failure: ClientError | None = None
        client.add_listener(self._client_event)

    @classmethod
    async def open(cls, client: "Client", *, credit: int = 200) -> "Requester":
        """Attach the requester's sender and reply receiver on ``client``."""
        receiver = _ReplyReceiver(client, None, f"replies-{uuid.uuid4().hex[:8]}", credit, True)
        await client._attach_new(receiver)
        if receiver.link is None or receiver.link.remote_source is None or receiver.address is None:
            raise ClientError("the router refused a dynamic reply address", receiver.error)
        try:
            sender = await client.sender(None, resend=False, name=f"requests-{uuid.uuid4().hex[:8]}")
        except BaseException:
            await receiver.close()
            raise
        return cls(client, sender, receiver)

    @property
    def reply_address(self) -> str | None:
        """The address replies come to on the current connection (it changes on failover)."""
        return self._receiver.address

    @property
    def ended(self) -> bool:
        """The requester was closed, or its client or reply receiver ended."""
        return self._failure is not None

    @property
    def in_flight(self) -> int:
        """Requests sent and waiting for their reply."""
        return len(self._pending)

    async def request(self, address: str, message: Message, *, timeout: float | None = DEFAULT_REQUEST_TIMEOUT) -> Message:
        """Send ``message`` to ``address`` and return the reply.

        ``message`` is not changed: what is sent is a copy with ``to``, ``reply_to`` and
        (unless set) ``message_id`` filled in.  ``timeout`` (seconds, None: no bound)
        bounds everything: waiting for a connection or for credit, and the reply.
        Raises ``RequestTimeout``, ``NotDelivered``, ``RequestRejected``,
        ``OutcomeUnknown`` or ``ClientError`` (see the module's description).
        """
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive or None: {timeout}")
        given = message.properties.message_id if message.properties is not None else None
        message_id = given if given is not None else self._prefix + str(next(self._ids))
        if message_id in self._pending:
            raise ValueError(f"a request with message_id {message_id!r} is already in flight")
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                while True:
                    pending = await self._send(address, message, message_id)
                    try:
                        return await pending.result
                    except _Retry:
                        log.info("request %s to %r was never written to the lost connection: sending it again", message_id, address)
                        continue
                    finally:
                        if self._pending.get(message_id) is pending:
                            del self._pending[message_id]
        except TimeoutError:
            if not deadline.expired():
                raise
            raise RequestTimeout(f"no reply to the request to {address!r} within {timeout} s") from None

    async def close(self) -> None:
        """Detach the requester's links; requests still waiting fail with ``ClientError``."""
        self._fail_all(ClientError("requester closed"))
        self.client.remove_listener(self._client_event)
        await self._sender.close()
        await self._receiver.close()

    # -- internals ---------------------------------------------------------------------
    async def _send(self, address: str, message: Message, message_id: Any) -> _Pending:
        """Write the request to the current connection, with its reply address."""
        while True:
            self._check_usable()
            if not self._up.is_set():
                await self._up.wait()
                continue
            generation = self._generation
            await self._sender._sendable()
            if generation != self._generation or not self._up.is_set():
                continue  # credit came on a connection whose reply address we do not know yet
            reply_to = self._receiver.address
            payload = _with_routing(message, message_id, address, reply_to).encode()
            loop = asyncio.get_running_loop()
            outcome = self._sender._transmit(payload, None)
            assert outcome is not None  # the requester's sender is never presettled
            pending = _Pending(address, generation, outcome, loop.create_future())
            self._pending[message_id] = pending
            outcome.add_done_callback(lambda future: self._outcome_known(pending, future))
            return pending

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise ClientError(str(self._failure), self._failure.error)
        self.client._check_usable()

    def _outcome_known(self, pending: _Pending, outcome: asyncio.Future[Any]) -> None:
        if outcome.cancelled():
            return
        exc = outcome.exception()
        if pending.result.done():
            return  # answered already, or failed by a lost connection
        if exc is not None:
            if isinstance(exc, NotSent):
                pending.result.set_exception(_Retry())
            elif isinstance(exc, OutcomeUnknown):
                pending.result.set_exception(_unknown(pending, str(exc), exc.error))
            else:
                pending.result.set_exception(ClientError(f"request to {pending.address!r} failed: {exc}", getattr(exc, "error", None)))
            return
        state = outcome.result()
        if isinstance(state, Accepted):
            return  # taken: the reply is on its way
        if isinstance(state, Rejected):
            error = state.error
            pending.result.set_exception(RequestRejected(f"request to {pending.address!r} rejected: {describe(error)}", error))
        elif isinstance(state, Modified) and state.delivery_failed:
            # The router says this when the consumer went away with the request: it may
            # have processed it.
            pending.result.set_exception(_unknown(pending, f"the consumer of {pending.address!r} went away with the request", None))
        elif isinstance(state, (Released, Modified)):
            pending.result.set_exception(NotDelivered(
                f"request to {pending.address!r} not delivered: no consumer took it ({type(state).__name__.lower()})", state))
        else:
            pending.result.set_exception(ClientError(f"request to {pending.address!r}: unexpected outcome {state!r}"))

    def _reply_arrived(self, payload: bytes) -> None:
        try:
            reply = Message.decode(payload)
        except DecodeError as exc:
            log.warning("dropped a malformed reply: %s", exc)
            return
        pending = self._pending.pop(reply.correlation_id, None)
        if pending is None:
            log.debug("dropped a reply no request waits for (late, or not ours): %r", reply.correlation_id)
            return
        if not pending.result.done():
            pending.result.set_result(reply)

    def _client_event(self, event: ClientEvent) -> None:
        if isinstance(event, ConnectionLost):
            lost = self._generation
            self._generation += 1
            self._up.clear()
            for pending in list(self._pending.values()):
                if pending.generation != lost or pending.result.done():
                    continue
                outcome = pending.outcome
                if outcome.done() and not outcome.cancelled() and isinstance(outcome.exception(), NotSent):
                    continue  # _outcome_known sends it again
                pending.result.set_exception(_unknown(
                    pending, f"the connection to {event.router} was lost before the reply came ({describe(event.error)})", event.error))
        elif isinstance(event, Connected):
            self._up.set()

    def _receiver_ended(self, error: Error | None) -> None:
        ended = self.client._failure  # set when the client itself ended: say that
        if ended is not None:
            self._fail_all(ClientError(str(ended), ended.error))
        else:
            self._fail_all(ClientError(f"the reply receiver ended: {describe(error)}", error))

    def _fail_all(self, exc: ClientError) -> None:
        if self._failure is None:
            self._failure = exc
        for pending in list(self._pending.values()):
            if not pending.result.done():
                pending.result.set_exception(exc)
        self._up.set()  # wake requests waiting for a connection: they fail


def _unknown(pending: _Pending, why: str, error: Error | None) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"outcome unknown: request to {pending.address!r} sent, no reply: {why}; it may have been processed",
        error,
    )


def _with_routing(message: Message, message_id: Any, to: str, reply_to: str | None) -> Message:
    """A copy of ``message`` (sharing its body) addressed for a request."""
    copy = Message(
        message.body,
        body_type=message.body_type,
        header=message.header,
        delivery_annotations=message.delivery_annotations,
        message_annotations=message.message_annotations,
        application_properties=message.application_properties,
        footer=message.footer,
    )
    original = message.properties
    properties = Properties(**{name: getattr(original, name) for name in Properties.__slots__}) if original is not None else Properties()
    properties.message_id = message_id
    properties.to = to
    properties.reply_to = reply_to
    copy.properties = properties
    return copy
