"""``RPCClient``: call (wait for the result), cast (no result), fanout, direct to a server.

How a call ends, and why it ends fast when it can:

* the reply arrives: the result, or ``RemoteError`` for what the method raised;
* no server of the target has room (none attached): the request waits for credit, and
  the call raises ``MessagingTimeout`` at its timeout saying that no server took it;
* a server released the request (it was stopping and had not started it): it was
  certainly not run, so it is sent again within the call's timeout;
* the server's connection was lost with the request (``modified`` or ``OutcomeUnknown``):
  the call fails at once with ``MessageDeliveryFailure(maybe_processed=True)``, not at
  its timeout;
* the request was rejected (a malformed request, a policy refusal): the call fails at
  once with the router's or server's reason.

Requests are settled end to end: a server settles a call once it has sent the reply,
a cast as soon as it takes it; so ``cast`` returns once a server has the message.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from typing import Any

from ..amqp.delivery import ACCEPTED
from ..amqp.spec import Accepted, Modified, Rejected, Released
from ..client import Client, ClientError, OutcomeUnknown, Receiver, ReceiverAddressChanged, Sender
from ..client.events import ClientEvent, GaveUp
from .dispatch import version_is_compatible
from .errors import MessageDeliveryFailure, MessagingTimeout, RemoteError
from .target import Target
from .wire import Reply, Request, WireError, decode_reply, encode_request

__all__ = ["RPCClient"]

log = logging.getLogger("switchboard.rpc")

DEFAULT_TIMEOUT = 60.0
REPLY_CREDIT = 500


class _Caller:
    """What every RPCClient on one Client shares: senders by address, and one reply
    receiver with the calls waiting on it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.senders: dict[str, asyncio.Future[Sender]] = {}
        self.replies: asyncio.Future[Receiver] | None = None
        self.pending: dict[str, asyncio.Future[Reply]] = {}
        self.reader: asyncio.Task[None] | None = None
        client.add_listener(self._on_client_event)

    async def sender(self, address: str) -> Sender:
        future = self.senders.get(address)
        if future is None or (future.done() and (future.exception() is not None or future.result().error is not None)):
            future = asyncio.ensure_future(self.client.sender(address))
            self.senders[address] = future
        return await asyncio.shield(future)

    async def reply_address(self) -> str:
        if self.replies is None or (self.replies.done() and self.replies.exception() is not None):
            self.replies = asyncio.ensure_future(self._open_replies())
        receiver = await asyncio.shield(self.replies)
        assert receiver.address is not None
        return receiver.address

    async def _open_replies(self) -> Receiver:
        receiver = await self.client.receiver(None, dynamic=True, credit=REPLY_CREDIT)
        self.reader = asyncio.get_running_loop().create_task(self._read_replies(receiver))
        return receiver

    async def _read_replies(self, receiver: Receiver) -> None:
        try:
            async for item in receiver:
                try:
                    reply = decode_reply(item.message())
                except WireError as exc:
                    item.reject("amqp:decode-error", str(exc))
                    log.warning("dropped a malformed reply: %s", exc)
                    continue
                item.accept()
                waiter = self.pending.get(reply.correlation_id or "")
                if waiter is None:
                    log.debug("a reply for %s came after its call ended", reply.correlation_id)
                elif not waiter.done():
                    waiter.set_result(reply)
        finally:
            self._fail_pending(MessageDeliveryFailure(
                f"the reply receiver ended ({receiver.error}); the reply cannot arrive", maybe_processed=True))
            self.replies = None

    def _fail_pending(self, exc: Exception) -> None:
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(exc)

    def _on_client_event(self, event: ClientEvent) -> None:
        replies = self.replies
        receiver = replies.result() if replies is not None and replies.done() and not replies.exception() else None
        if isinstance(event, ReceiverAddressChanged) and event.receiver is receiver:
            # Replies to the old address go nowhere now: those calls cannot complete.
            self._fail_pending(MessageDeliveryFailure(
                f"the client failed over while the call was in flight; its reply address {event.old} is gone",
                maybe_processed=True))
        elif isinstance(event, GaveUp):
            self._fail_pending(MessageDeliveryFailure(f"connection lost: {event.error}", maybe_processed=True))


_callers: "weakref.WeakKeyDictionary[Client, _Caller]" = weakref.WeakKeyDictionary()


def _caller(client: Client) -> _Caller:
    caller = _callers.get(client)
    if caller is None:
        caller = _callers[client] = _Caller(client)
    return caller


class RPCClient:
    """Calls and casts to a ``Target`` over a connected ``Client``.

    ``timeout`` (seconds, None: none) bounds a call from start to reply, and a cast
    until a server has the message.  ``version_cap`` is the highest version this client
    may ask for (``can_send_version``).
    """

    def __init__(self, client: Client, target: Target, *, timeout: float | None = DEFAULT_TIMEOUT,
                 version_cap: str | None = None) -> None:
        self.client = client
        self.target = target
        self.timeout = timeout
        self.version_cap = version_cap
        self._caller = _caller(client)

    def prepare(self, *, timeout: float | None | object = ..., version_cap: str | None | object = ...,
                **overrides: Any) -> "RPCClient":
        """A client for the same connection with target fields (``topic``, ``server``,
        ``fanout``, ``namespace``, ``version``, ``exchange``) or the timeout changed."""
        return RPCClient(
            self.client,
            self.target.replace(**overrides),
            timeout=self.timeout if timeout is ... else timeout,  # type: ignore[arg-type]
            version_cap=self.version_cap if version_cap is ... else version_cap,  # type: ignore[arg-type]
        )

    def can_send_version(self, version: str) -> bool:
        return self.version_cap is None or version_is_compatible(self.version_cap, version)

    async def call(self, ctxt: dict[str, Any] | None, method: str, **kwargs: Any) -> Any:
        """Run ``method(ctxt, **kwargs)`` on one server of the target and return its result.

        Raises ``RemoteError`` (what the method raised), ``MessagingTimeout``, or
        ``MessageDeliveryFailure``.  A fanout target cannot be called."""
        if self.target.fanout:
            raise ValueError("a fanout target can only be cast to")
        caller = self._caller
        msg_id = uuid.uuid4().hex
        address = self.target.address()
        stage = "waiting for a server of " + address
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        caller.pending[msg_id] = waiter
        try:
            async with asyncio.timeout(self.timeout):
                reply_to = await caller.reply_address()
                request = self._request(ctxt, method, kwargs, msg_id, reply_to)
                while True:
                    sender = await caller.sender(address)
                    outcome = await sender.send(encode_request(request), wait=False)
                    stage = f"waiting for the reply from a server of {address}"
                    if await self._await_reply_or_failure(outcome, waiter, address):
                        break
                    stage = "waiting for a server of " + address  # released: send again
            reply = waiter.result()
        except TimeoutError:
            raise MessagingTimeout(f"call {method!r} timed out after {self.timeout} s {stage}") from None
        except ClientError as exc:
            raise self._delivery_failure(exc, address) from exc
        finally:
            caller.pending.pop(msg_id, None)
        if reply.failure is not None:
            failure = reply.failure
            raise RemoteError(failure.exc_type, failure.message, "\n".join(failure.traceback),
                              failure.module, failure.args)
        return reply.result

    async def cast(self, ctxt: dict[str, Any] | None, method: str, **kwargs: Any) -> None:
        """Send ``method(ctxt, **kwargs)`` with no reply: returns once a server (every
        attached server, for a fanout target: once the router has it) took it."""
        address = self.target.address()
        request = self._request(ctxt, method, kwargs, uuid.uuid4().hex, None)
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    sender = await self._caller.sender(address)
                    outcome = await sender.send(encode_request(request))
                    if not isinstance(outcome, Released):
                        break
        except TimeoutError:
            raise MessagingTimeout(f"cast {method!r} timed out after {self.timeout} s: no server of {address}"
                                   " took it") from None
        except ClientError as exc:
            raise self._delivery_failure(exc, address) from exc
        self._check_outcome(outcome, address)

    # -- internals ---------------------------------------------------------------------
    def _request(self, ctxt: dict[str, Any] | None, method: str, kwargs: dict[str, Any], msg_id: str,
                 reply_to: str | None) -> Request:
        target = self.target
        if target.version is not None and not self.can_send_version(target.version):
            raise ValueError(f"version {target.version} is above this client's cap {self.version_cap}")
        return Request(method, kwargs, dict(ctxt or {}), target.namespace, target.version, msg_id, reply_to)

    async def _await_reply_or_failure(self, outcome: asyncio.Future[Any], waiter: asyncio.Future[Reply],
                                      address: str) -> bool:
        """Wait for the reply; True once it is there, False when the request was released
        (not run: send it again).  A failed delivery raises."""
        while not waiter.done():
            await asyncio.wait((outcome, waiter), return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                break
            # The outcome came first: accepted means the reply is on its way.
            state = outcome.result()  # raises OutcomeUnknown / ClientError
            if isinstance(state, Released):
                return False
            self._check_outcome(state, address)
            await waiter
        return True

    def _check_outcome(self, state: Any, address: str) -> None:
        if state is None or isinstance(state, Accepted) or state is ACCEPTED:
            return
        if isinstance(state, Rejected):
            error = state.error
            reason = f"{error.condition}: {error.description}" if error is not None else "no reason given"
            raise MessageDeliveryFailure(f"the request to {address} was rejected ({reason})")
        if isinstance(state, Modified):
            raise MessageDeliveryFailure(
                f"the server of {address} was lost with the request in flight; it may have run it",
                maybe_processed=True)
        if isinstance(state, Released):
            raise MessageDeliveryFailure(f"no server of {address} took the request (released)")
        raise MessageDeliveryFailure(f"the request to {address} ended with outcome {state!r}")

    @staticmethod
    def _delivery_failure(exc: ClientError, address: str) -> MessageDeliveryFailure:
        if isinstance(exc, OutcomeUnknown):
            return MessageDeliveryFailure(
                f"the connection was lost with the request to {address} in flight; it may have run: {exc}",
                maybe_processed=True)
        return MessageDeliveryFailure(f"cannot send to {address}: {exc}", maybe_processed=False)
