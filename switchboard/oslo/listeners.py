"""RPC servers' and notification listeners' subscriptions, and the messages they hand out.

A listener is a set of receivers on the driver's connection (the loop thread) whose
messages the loop hands to oslo.messaging's server (which queues them on its executor).
How much a listener holds is bounded: each receiver's credit window is the prefetch, and a receiver takes a message
from its window only while fewer than ``prefetch`` taken messages wait to be settled,
so a busy server leaves requests with the router, which gives them to its other servers.

Settlement (on the loop thread, in the order the workers ask for it):

* ``acknowledge()``: ``accepted``, except for calls.  oslo.messaging's RPC server
  acknowledges a request as it starts the method; a cast is accepted then (the caller
  returns), but a call is accepted only once its reply is on its way, so that a server
  lost in the middle of a call turns into ``modified`` for the caller, which fails at
  once instead of at its timeout (``switchboard.rpc``'s servers do the same).  A
  notification listener acknowledges once its endpoints handled the notification, which
  removes it from its queue.
* ``requeue()``: ``modified`` with ``delivery-failed``: a queue offers the notification
  again and counts the attempt (a queue's ``max_delivery_attempts`` ends a message that
  always fails).  For RPC the caller learns that its request failed.
* At ``cleanup``, what the listener took but never handed to the application is
  ``released``: nobody saw it, so a caller sends it again to another server (as its
  ``retry`` allows) and a queue offers it again without counting an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import TYPE_CHECKING, Any, Callable

from oslo_messaging._drivers import base
from oslo_messaging._drivers import common as rpc_common
from oslo_serialization import jsonutils

from ..amqp.message import Message
from ..client import ClientError, Received, Receiver
from ..rpc import wire
from .connection import CALL_MONITOR_PROPERTY, HEARTBEAT_PROPERTY

if TYPE_CHECKING:
    from .driver import SwitchboardDriver

__all__ = ["DriverListener", "RpcIncoming", "NotificationIncoming"]

log = logging.getLogger("switchboard.oslo")


class _Incoming:
    """Settlement shared by RPC requests and notifications: once, on the loop thread."""

    listener: "DriverListener"
    item: Received

    def _settle(self, how: str) -> None:
        self.listener._settle_threadsafe(self.item, how)

    def _taken(self) -> None:
        """The application has it: room for another (its settlement comes later)."""
        self.listener._taken_threadsafe()


class RpcIncoming(_Incoming, base.RpcIncomingMessage):
    """An RPC request as oslo.messaging's server sees it."""

    def __init__(self, listener: "DriverListener", item: Received, request: wire.Request,
                 client_timeout: float | None) -> None:
        message: dict[str, Any] = {"method": request.method, "args": request.kwargs}
        if request.namespace is not None:
            message["namespace"] = request.namespace
        if request.version is not None:
            message["version"] = request.version
        base.RpcIncomingMessage.__init__(self, request.context, message, request.msg_id)
        self.listener = listener
        self.item = item
        self.reply_to = request.reply_to
        self.correlation_id = request.msg_id
        self.client_timeout = client_timeout

    def acknowledge(self) -> None:
        if self.reply_to is None:
            self._settle("accept")  # a cast: the caller returns now
        else:
            self._taken()  # a call: accepted with its reply

    def requeue(self) -> None:
        self._settle("modify")

    def reply(self, reply: Any = None, failure: Any = None) -> None:
        if self.reply_to is None:
            return  # a cast: nobody waits
        try:
            if failure is not None:
                result = wire.Reply(self.correlation_id, failure=_failure(failure))
            else:
                result = wire.Reply(self.correlation_id, result=reply)
            message = _encode(wire.encode_reply, result, self.reply_to)
        except Exception as exc:
            log.exception("cannot encode the reply to %s", self.correlation_id)
            message = wire.encode_reply(wire.Reply(self.correlation_id, failure=wire.Failure(
                type(exc).__name__, type(exc).__module__, f"the server could not encode the reply: {exc}")),
                self.reply_to)
        self.listener.driver._reply_threadsafe(message.encode(), self.correlation_id,
                                               lambda: self.listener._settle(self.item, "accept", room=False))

    def heartbeat(self) -> None:
        if self.reply_to is None:
            return
        message = wire.encode_reply(wire.Reply(self.correlation_id), self.reply_to)
        message.application_properties = {HEARTBEAT_PROPERTY: True}
        self.listener.driver._reply_threadsafe(message.encode(), self.correlation_id)


class NotificationIncoming(_Incoming, base.IncomingMessage):
    """A notification as oslo.messaging's notification listener sees it."""

    def __init__(self, listener: "DriverListener", item: Received, notification: wire.Notification) -> None:
        message = {
            "message_id": notification.message_id,
            "publisher_id": notification.publisher_id,
            "event_type": notification.event_type,
            "priority": notification.priority.upper(),
            "payload": notification.payload,
            "timestamp": notification.timestamp,
        }
        base.IncomingMessage.__init__(self, notification.context, message, notification.message_id or None)
        self.listener = listener
        self.item = item

    def acknowledge(self) -> None:
        self._settle("accept")

    def requeue(self) -> None:
        self._settle("modify")


class DriverListener(base.Listener):
    """Receivers on the loop thread handing messages straight to oslo.messaging's server.

    The loop thread calls the server's callback itself (it only queues the work on the
    server's executor), so a request crosses no poller thread on its way to a worker.
    Batches (``batch_size`` > 1) are gathered on the loop: a batch goes out when full, or
    ``batch_timeout`` seconds after its first message."""

    def __init__(self, driver: "SwitchboardDriver", kind: str, prefetch: int,
                 decode: Callable[["DriverListener", Received], Any], batch_size: int,
                 batch_timeout: float | None) -> None:
        super().__init__(batch_size, batch_timeout, prefetch)
        self.driver = driver
        self.kind = kind
        self._decode = decode
        # Loop-thread state.
        self.receivers: list[Receiver] = []
        self._pumps: list[asyncio.Task[None]] = []
        self._room: asyncio.Semaphore | None = None
        self._callback: Callable[[list[Any]], Any] | None = None
        self._waiting: list[Any] = []
        """Taken before start(), or gathering into a batch."""
        self._batch_timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self.on_cleanup: list[Callable[[], Any]] = []

    # -- oslo.messaging's threads ------------------------------------------------------
    def start(self, on_incoming_callback: Callable[[list[Any]], Any]) -> None:
        super().start(on_incoming_callback)
        self.driver._loop.run(self._start(on_incoming_callback))

    def stop(self) -> None:
        self.driver._loop.run(self._stop())
        super().stop()

    def cleanup(self) -> None:
        self.driver._run_listener_cleanup(self)

    # -- loop thread -------------------------------------------------------------------
    async def subscribe(self, addresses: list[str]) -> None:
        """Attach a receiver to each address and start taking messages."""
        client = await self.driver._connection.client()
        self._room = asyncio.Semaphore(self.prefetch_size)
        for address in addresses:
            receiver = await client.receiver(address, credit=self.prefetch_size)
            self.receivers.append(receiver)
        loop = asyncio.get_running_loop()
        self._pumps = [loop.create_task(self._pump(receiver)) for receiver in self.receivers]

    async def _start(self, callback: Callable[[list[Any]], Any]) -> None:
        self._callback = callback
        if self._waiting:
            self._gathered()

    async def _stop(self) -> None:
        """No more messages: what was gathered goes to the server now, the rest back at cleanup."""
        self._stopped = True
        for pump in self._pumps:
            pump.cancel()
        if self._waiting and self._callback is not None:
            self._hand_over(self._waiting)
            self._waiting = []
        self._callback = None

    async def _pump(self, receiver: Receiver) -> None:
        room = self._room
        assert room is not None
        while True:
            await room.acquire()
            try:
                item = await receiver.receive()
            except ClientError as exc:
                room.release()
                if not self._stopped:
                    log.error("%s listener: the subscription to %s ended: %s", self.kind, receiver.source_address, exc)
                return
            except BaseException:
                room.release()
                raise
            try:
                incoming = self._decode(self, item)
            except Exception as exc:
                log.warning("%s listener: rejected a message from %s that cannot be read: %s",
                            self.kind, receiver.source_address, exc)
                self._settle(item, "reject", str(exc))
                continue
            if incoming is None:  # taken care of by the decoder
                self._settle(item, "accept")
                continue
            self._waiting.append(incoming)
            if self._callback is not None:
                self._gathered()

    def _gathered(self) -> None:
        if len(self._waiting) >= self.batch_size:
            while len(self._waiting) >= self.batch_size:
                batch, self._waiting = self._waiting[:self.batch_size], self._waiting[self.batch_size:]
                self._hand_over(batch)
            if self._batch_timer is not None:
                self._batch_timer.cancel()
                self._batch_timer = None
        if self._waiting and self._batch_timer is None and self.batch_timeout:
            self._batch_timer = asyncio.get_running_loop().call_later(self.batch_timeout, self._batch_due)

    def _batch_due(self) -> None:
        self._batch_timer = None
        if self._waiting and self._callback is not None:
            batch, self._waiting = self._waiting, []
            self._hand_over(batch)

    def _hand_over(self, batch: list[Any]) -> None:
        callback = self._callback
        assert callback is not None
        try:
            callback(batch)
        except Exception:
            # The executor refused the work (it is shutting down): give the messages back.
            log.exception("%s listener: the server did not take %d message(s); releasing them", self.kind, len(batch))
            for incoming in batch:
                self._settle(incoming.item, "release")

    def _settle(self, item: Received, how: str, description: str | None = None, room: bool = True) -> None:
        if room and self._room is not None:
            self._room.release()
        try:
            if how == "accept":
                item.accept()
            elif how == "release":
                item.release()
            elif how == "reject":
                item.reject("amqp:decode-error", description)
            else:
                item.modify(delivery_failed=True)
        except ClientError as exc:
            # The connection it came on was lost: its router has already given it back.
            log.info("%s listener: could not %s a message: %s", self.kind, how, exc)

    def _settle_threadsafe(self, item: Received, how: str) -> None:
        self.driver._loop.call_soon(self._settle, item, how)

    def _taken_threadsafe(self) -> None:
        if self._room is not None:
            self.driver._loop.call_soon(self._room.release)

    async def _close(self) -> None:
        self._stopped = True
        self._callback = None
        if self._batch_timer is not None:
            self._batch_timer.cancel()
        for pump in self._pumps:
            pump.cancel()
        for pump in self._pumps:
            try:
                await pump
            except (asyncio.CancelledError, Exception):
                pass
        # Taken from a receiver, never handed to the application: give them back.
        left, self._waiting = self._waiting, []
        for incoming in left:
            self._settle(incoming.item, "release")
        for receiver in self.receivers:
            while True:
                try:
                    item = await receiver.receive(timeout=0)
                except (TimeoutError, ClientError):
                    break
                self._settle(item, "release")
            await receiver.close()
        for action in self.on_cleanup:
            result = action()
            if asyncio.iscoroutine(result):
                await result


# -- decoding (loop thread) -----------------------------------------------------------
def decode_request(listener: DriverListener, item: Received) -> RpcIncoming:
    message = item.message()
    request = wire.decode_request(message)
    monitor = (message.application_properties or {}).get(CALL_MONITOR_PROPERTY)
    client_timeout = float(monitor) if isinstance(monitor, (int, float)) and monitor > 0 else None
    return RpcIncoming(listener, item, request, client_timeout)


def decode_notification(listener: DriverListener, item: Received) -> NotificationIncoming:
    return NotificationIncoming(listener, item, wire.decode_notification(item.message()))


# -- encoding (workers' threads) ------------------------------------------------------
def _failure(exc_info: Any) -> wire.Failure:
    """oslo's own description of a failure (its ``_Remote`` naming, its kwargs)."""
    data = jsonutils.loads(rpc_common.serialize_remote_exception(exc_info))
    return wire.Failure(
        exc_type=data["class"],
        module=data["module"],
        message=data["message"],
        args=list(data.get("args") or []),
        traceback=list(data.get("tb") or traceback.format_exception(*exc_info)),
    )


def _encode(encoder: Callable[..., Message], value: Any, *args: Any) -> Message:
    """Encode with the wire's JSON; values JSON cannot carry (datetimes, sets, objects)
    are first turned into primitives the way oslo.messaging's other drivers do."""
    try:
        return encoder(value, *args)
    except TypeError:
        return encoder(_primitive(value), *args)


def _primitive(value: Any) -> Any:
    if isinstance(value, wire.Reply):
        return wire.Reply(value.correlation_id, _to_primitive(value.result), value.failure)
    if isinstance(value, wire.Request):
        value.kwargs = _to_primitive(value.kwargs)
        value.context = _to_primitive(value.context)
        return value
    if isinstance(value, wire.Notification):
        value.payload = _to_primitive(value.payload)
        value.context = _to_primitive(value.context)
        return value
    return _to_primitive(value)


def _to_primitive(value: Any) -> Any:
    return jsonutils.to_primitive(value, convert_instances=True)
