"""The driver's connection to the router network: runs on the driver's loop thread only.

One ``Client`` per driver (per oslo Transport) carries everything: an anonymous-relay
sender for requests, casts, notifications and replies (each message names its address in
``to``), one dynamic receiver for the replies to this driver's calls, the listeners'
receivers, and the notifiers' view of the listener pools.

What a send's outcome means, and what the driver does with it:

* ``accepted``: a server took the request (it accepts as it starts the work), the queue
  stored the notification, or a multicast was handed to the routers: done.
* ``released``: nobody took it, and nobody saw it (no server on the topic yet, or the one
  chosen stopped before taking it).  Sending it again cannot duplicate it, so the driver
  does, with back-off, as ``retry`` allows and within the deadline.  A fanout nobody
  listens to is released too: that is done, as with a broker's fanout exchange.
* ``modified`` (the consumer went away holding it) or an outcome lost with a router
  (``OutcomeUnknown``): it may have been processed.  Never sent again (oslo.messaging asks
  that retries never duplicate a message): ``MessageDeliveryFailure`` at once.
* ``rejected``: the router refused it (policy, size, a bad address): the router's
  condition and description in ``MessageDeliveryFailure``.

A call then waits for its reply on the dynamic receiver, matched by correlation-id.  The
reply address belongs to the router the driver is connected to: when that connection is
lost, no reply can come any more, so every call waiting for one fails at once with
``MessageDeliveryFailure`` instead of waiting for its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from oslo_messaging import MessageDeliveryFailure, MessagingTimeout

from ..amqp.spec import Accepted, Modified, Rejected, Released
from ..client import (
    Client,
    ClientError,
    ClientEvent,
    ConnectionLost,
    OutcomeUnknown,
    Receiver,
    ReceiverAddressChanged,
    Reconnect,
    Sender,
    Url,
)
from ..client.errors import describe
from ..rpc import wire

__all__ = ["DriverConnection", "HEARTBEAT_PROPERTY", "CALL_MONITOR_PROPERTY", "failed"]

log = logging.getLogger("switchboard.oslo")

HEARTBEAT_PROPERTY = "x-oslo-heartbeat"
"""Application property of a reply that only says the call is still running (oslo's
call-monitor heartbeat); such a reply has no result."""
CALL_MONITOR_PROPERTY = "x-oslo-call-monitor-timeout"
"""Application property of a request: the caller's call-monitor timeout in seconds, so
the server heartbeats at half of it while the method runs."""

REPLY_CREDIT = 500
"""Replies the driver's reply receiver takes ahead (each is matched to a waiting call)."""
FIRST_RESEND_DELAY = 0.05
MAX_RESEND_DELAY = 1.0


@dataclass
class _Call:
    """A call waiting for its reply: replies and heartbeats arrive in ``inbox``."""

    reply_to: str | None
    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


class _Heartbeat:
    """What the inbox holds for a call-monitor heartbeat."""


HEARTBEAT = _Heartbeat()


class DriverConnection:
    """The client, its shared relay sender and reply receiver, and the calls in flight."""

    def __init__(self, url: Url, options: Any) -> None:
        self.url = url
        self.options = options
        self._client: Client | None = None
        self._connecting: asyncio.Task[Client] | None = None
        self._relay: Sender | None = None
        self._relay_attaching: asyncio.Task[Sender] | None = None
        self._replies: Receiver | None = None
        self._replies_attaching: asyncio.Task[Receiver] | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._calls: dict[str, _Call] = {}
        self._closed = False
        self.event_listeners: list[Callable[[ClientEvent], None]] = []

    # -- the client --------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def client(self) -> Client:
        """The connected client; the first caller starts connecting (others share it).

        A caller that gives up (its deadline) does not stop the attempt for the others."""
        if self._closed:
            raise MessageDeliveryFailure("the transport has been cleaned up")
        if self._client is not None:
            return self._client
        if self._connecting is None or failed(self._connecting):
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        except ClientError as exc:
            raise MessageDeliveryFailure(f"cannot connect to {_routers(self.url)}: {exc}") from exc

    async def _connect(self) -> Client:
        options = self.options
        client = await Client.connect(
            self.url,
            timeout=options.connect_timeout,
            idle_timeout=options.idle_timeout or None,
            reconnect=Reconnect(timeout=None, max_delay=options.reconnect_max_delay),
            on_event=self._on_event,
        )
        if self._closed:
            await client.close()
            raise ClientError("the transport has been cleaned up")
        self._client = client
        return client

    async def close(self) -> None:
        """Fail what waits, close the client."""
        self._closed = True
        lost = MessageDeliveryFailure("the transport was cleaned up while the call waited for its reply")
        for call in self._calls.values():
            call.inbox.put_nowait(lost)
        for task in (self._reply_task, self._connecting, self._relay_attaching, self._replies_attaching):
            if task is not None and not task.done():
                task.cancel()
        if self._client is not None:
            await self._client.close()

    def _on_event(self, event: ClientEvent) -> None:
        if isinstance(event, ConnectionLost):
            # Replies come to an address of the lost router: none can arrive now.
            self._fail_calls(
                lambda call: True,
                f"the connection to router {event.router} was lost while the call waited for its reply"
                f" ({describe(event.error)}); the call may or may not have run",
            )
        elif isinstance(event, ReceiverAddressChanged) and event.receiver is self._replies:
            self._fail_calls(
                lambda call: call.reply_to == event.old,
                f"the reply address {event.old} went with its router; the call may or may not have run",
            )
        for listener in list(self.event_listeners):
            listener(event)

    def _fail_calls(self, which: Callable[[_Call], bool], reason: str) -> None:
        for msg_id, call in self._calls.items():
            if which(call):
                call.inbox.put_nowait(MessageDeliveryFailure(f"{reason} (message ID {msg_id})"))

    # -- links -------------------------------------------------------------------------
    async def relay(self) -> Sender:
        """The anonymous-relay sender every message of this driver goes out on."""
        if self._relay is not None and self._relay.error is None:
            return self._relay
        if self._relay_attaching is None or self._relay_attaching.done():
            self._relay_attaching = asyncio.get_running_loop().create_task(self._attach_relay())
        return await asyncio.shield(self._relay_attaching)

    async def _attach_relay(self) -> Sender:
        client = await self.client()
        self._relay = await client.sender(None, name=f"oslo-relay-{uuid.uuid4().hex[:8]}")
        return self._relay

    async def reply_receiver(self) -> Receiver:
        """The dynamic receiver replies to this driver's calls come to."""
        if self._replies is not None and self._replies.error is None:
            return self._replies
        if self._replies_attaching is None or self._replies_attaching.done():
            self._replies_attaching = asyncio.get_running_loop().create_task(self._attach_replies())
        return await asyncio.shield(self._replies_attaching)

    async def _attach_replies(self) -> Receiver:
        client = await self.client()
        receiver = await client.receiver(None, dynamic=True, credit=REPLY_CREDIT,
                                         name=f"oslo-replies-{uuid.uuid4().hex[:8]}")
        self._replies = receiver
        self._reply_task = asyncio.get_running_loop().create_task(self._take_replies(receiver))
        return receiver

    async def _take_replies(self, receiver: Receiver) -> None:
        async for item in receiver:
            item.accept()
            try:
                message = item.message()
                heartbeat = bool((message.application_properties or {}).get(HEARTBEAT_PROPERTY))
                reply = wire.decode_reply(message)
            except Exception as exc:  # a peer's bad reply must not stop the others
                log.warning("dropped a reply that cannot be read: %s", exc)
                continue
            call = self._calls.get(reply.correlation_id or "")
            if call is None:
                log.debug("a reply for %s came after its call ended", reply.correlation_id)
                continue
            call.inbox.put_nowait(HEARTBEAT if heartbeat else reply)

    # -- sending -----------------------------------------------------------------------
    async def deliver(self, payload: bytes, retry: int | None, what: str, *, released_is_done: bool = False) -> None:
        """Send one encoded message until a consumer takes it, as ``retry`` allows.

        ``retry``: None or -1 resends for ever (within the caller's deadline), 0 never, N
        at most N times; only messages nobody can have seen are resent.  The caller bounds
        the whole with its deadline."""
        attempts = 0
        delay = FIRST_RESEND_DELAY
        unlimited = retry is None or retry < 0
        while True:
            if not unlimited and retry == 0 and not self.connected and self._client is not None:
                raise MessageDeliveryFailure(f"{what}: no router connected, and retry=0 forbids waiting for one")
            sender = await self.relay()
            try:
                outcome = await sender.send(payload)
            except OutcomeUnknown as exc:
                raise MessageDeliveryFailure(f"{what}: {exc}") from exc
            except ClientError as exc:
                # The sender ended before the message went out: it was not sent.
                outcome = None
                reason = str(exc)
            else:
                reason = "no consumer took it (released)"
            if type(outcome) is Accepted:
                return
            if type(outcome) is Released and released_is_done:
                return
            if type(outcome) is Rejected:
                raise MessageDeliveryFailure(f"{what}: the router rejected it: {describe(outcome.error)}")
            if type(outcome) is Modified and (outcome.delivery_failed or outcome.undeliverable_here):
                raise MessageDeliveryFailure(
                    f"{what}: the consumer that held it went away before it said what became of it;"
                    " it may have been processed, so it is not sent again")
            attempts += 1
            if not unlimited and attempts > retry:  # type: ignore[operator]
                raise MessageDeliveryFailure(f"{what}: not delivered after {attempts} attempt(s): {reason}")
            if attempts == 1 or attempts % 20 == 0:
                log.debug("%s: %s; sending again in %.2f s", what, reason, delay)
            await asyncio.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, MAX_RESEND_DELAY)

    async def call(self, build: Callable[[str, str], bytes], retry: int | None, monitor_timeout: float | None,
                   what: str) -> wire.Reply:
        """Send a request made by ``build(msg_id, reply_to)`` and wait for its reply.

        The reply ends the call, whether or not the request's outcome has come back yet
        (a server accepts a call once it has replied); an outcome that says the request
        failed ends it at once.  The caller bounds the whole (the call's timeout);
        ``monitor_timeout`` bounds the silence between the server's heartbeats."""
        receiver = await self.reply_receiver()
        msg_id = uuid.uuid4().hex
        reply_to = receiver.address
        call = _Call(reply_to)
        self._calls[msg_id] = call
        sending = asyncio.get_running_loop().create_task(
            self._send_request(build(msg_id, reply_to or ""), retry, what, call))
        try:
            while True:
                if monitor_timeout:
                    try:
                        async with asyncio.timeout(monitor_timeout):
                            item = await call.inbox.get()
                    except TimeoutError:
                        raise MessagingTimeout(
                            f"{what}: no reply nor heartbeat from a server within the call-monitor timeout"
                            f" ({monitor_timeout} s; message ID {msg_id})") from None
                else:
                    item = await call.inbox.get()
                if item is HEARTBEAT:
                    continue
                if isinstance(item, Exception):
                    raise item
                return item
        finally:
            del self._calls[msg_id]
            if not sending.done():
                sending.cancel()

    async def _send_request(self, payload: bytes, retry: int | None, what: str, call: _Call) -> None:
        try:
            await self.deliver(payload, retry, what)
        except Exception as exc:  # the call's own task raises it
            call.inbox.put_nowait(exc)


def failed(task: asyncio.Task[Any]) -> bool:
    """The task ended without a result (raised or was cancelled): start another."""
    return task.done() and (task.cancelled() or task.exception() is not None)


def _routers(url: Url) -> str:
    return ",".join(str(router) for router in url.routers)
