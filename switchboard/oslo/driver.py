"""``SwitchboardDriver``: oslo.messaging's transport driver for Switchboard routers.

A service switches with ``transport_url = switchboard://host1:5672,host2:5672/``.  The
driver keeps one client connection per transport (failing over across the listed routers)
on one asyncio loop in a background thread; oslo.messaging's threads (the threading
executor's workers, the service's own) block on that loop for each call.  No
eventlet is needed.

Addresses and message bodies are ``switchboard.rpc.wire``'s, so an oslo.messaging service
and a ``switchboard.rpc`` program talk to each other:

============================== ================================================ ==========
what                           address                                          distribution
============================== ================================================ ==========
call / cast to a topic         ``rpc/<exchange>/<topic>``                       balanced
call / cast to one server      ``rpc/<exchange>/<topic>/<server>``              balanced
fanout cast                    ``rpc-fanout/<exchange>/<topic>``                multicast
notification, default pool     ``notify/<exchange>/<topic>.<priority>``         queue
notification, pool P           ``notify/<exchange>/<topic>.<priority>/<P>``     queue
listener pools' announcements  ``notify-pools/<exchange>``                      multicast
============================== ================================================ ==========

``connection.py`` says what each outcome means and when a message is sent again;
``listeners.py`` how servers settle what they take; ``pools.py`` how pools get copies.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Callable

from oslo_messaging import MessageDeliveryFailure, MessagingTimeout
from oslo_messaging._drivers import base
from oslo_messaging._drivers import common as rpc_common
from oslo_serialization import jsonutils

from ..rpc import wire
from . import options as driver_options
from .connection import CALL_MONITOR_PROPERTY, DriverConnection, failed
from .listeners import DriverListener, _encode, decode_notification, decode_request
from .loop import LoopThread
from .pools import PoolDirectory, announce
from .urls import client_url

__all__ = ["SwitchboardDriver"]

log = logging.getLogger("switchboard.oslo")


class SwitchboardDriver(base.BaseDriver):
    """oslo.messaging's ``BaseDriver`` over a Switchboard router network."""

    def __init__(self, conf: Any, url: Any, default_exchange: str | None = None,
                 allowed_remote_exmods: list[str] | None = None) -> None:
        super().__init__(conf, url, default_exchange, allowed_remote_exmods)
        self._options = driver_options.register(conf)
        self._url = url
        self._loop = LoopThread(name=f"switchboard-oslo-{uuid.uuid4().hex[:6]}")
        self._connection = DriverConnection(client_url(url), self._options)
        self._pools: dict[str, asyncio.Task[PoolDirectory]] = {}
        """Loop thread: one directory of listener pools per exchange notified."""
        self._listeners: list[DriverListener] = []

    def require_features(self, requeue: bool = False) -> None:
        pass  # requeue is supported: modified(delivery-failed), see listeners.py

    # -- sending -----------------------------------------------------------------------
    def send(self, target: Any, ctxt: Any, message: dict[str, Any], wait_for_reply: bool | None = None,
             timeout: float | None = None, call_monitor_timeout: float | None = None,
             retry: int | None = None, transport_options: Any = None) -> Any:
        exchange = self._exchange(target)
        if target.fanout:
            address = wire.fanout_address(exchange, target.topic)
        else:
            address = wire.rpc_address(exchange, target.topic, target.server or None)
        method = message.get("method")
        request = wire.Request(
            method=method,
            kwargs=message.get("args") or {},
            context=dict(ctxt or {}),
            namespace=message.get("namespace"),
            version=message.get("version"),
        )
        if not wait_for_reply:
            what = f"cast of {method!r} to {address}"
            request.msg_id = uuid.uuid4().hex
            payload = _request_payload(request, address, None)
            deadline = timeout if timeout is not None else self._options.send_timeout
            self._loop.run(self._bounded(
                self._connection.deliver(payload, retry, what, released_is_done=bool(target.fanout)),
                deadline, what))
            return None

        what = f"call of {method!r} to {address}"

        def build(msg_id: str, reply_to: str) -> bytes:
            request.msg_id = msg_id
            request.reply_to = reply_to
            return _request_payload(request, address, call_monitor_timeout)

        deadline = timeout if timeout is not None else self.conf.rpc_response_timeout
        reply = self._loop.run(self._bounded(
            self._connection.call(build, retry, call_monitor_timeout, what), deadline, what))
        if reply.failure is not None:
            raise self._remote_exception(reply.failure)
        return reply.result

    def send_notification(self, target: Any, ctxt: Any, message: dict[str, Any], version: float,
                          retry: int | None = None) -> None:
        exchange = self._exchange(target)
        topic, _, priority = target.topic.rpartition(".")
        priority = priority.lower()
        notification = wire.Notification(
            publisher_id=str(message.get("publisher_id") or ""),
            event_type=str(message.get("event_type") or ""),
            priority=priority,
            payload=message.get("payload"),
            context=dict(ctxt or {}),
            message_id=str(message.get("message_id") or uuid.uuid4()),
            timestamp=str(message.get("timestamp") or ""),
        )
        encoded = _encode(wire.encode_notification, notification)
        what = f"notification {notification.event_type!r} to {target.topic!r} of exchange {exchange!r}"
        self._loop.run(self._bounded(
            self._notify(encoded, exchange, topic, priority, retry, what), self._options.send_timeout, what))

    async def _notify(self, message: Any, exchange: str, topic: str, priority: str, retry: int | None,
                      what: str) -> None:
        directory = await self._pool_directory(exchange)
        addresses = [wire.notification_address(exchange, topic, priority)]
        addresses += [wire.notification_address(exchange, topic, priority, pool)
                      for pool in directory.pools_for(topic, priority)]
        payloads = []
        for address in addresses:
            message.properties.to = address
            payloads.append(message.encode())
        # Every pool's copy at once; the notification is sent when every queue has it.
        loop = asyncio.get_running_loop()
        copies = [loop.create_task(self._connection.deliver(payload, retry, what)) for payload in payloads]
        try:
            await asyncio.gather(*copies)
        finally:
            for copy in copies:
                copy.cancel()  # one failed: the others stop too (done ones are unaffected)

    async def _pool_directory(self, exchange: str) -> PoolDirectory:
        task = self._pools.get(exchange)
        if task is None or failed(task):
            task = asyncio.get_running_loop().create_task(self._start_directory(exchange))
            self._pools[exchange] = task
        return await asyncio.shield(task)

    async def _start_directory(self, exchange: str) -> PoolDirectory:
        directory = PoolDirectory(self._connection, exchange, self._options.pool_memory)
        await directory.start(self._options.pool_discovery_timeout)
        return directory

    async def _bounded(self, coroutine: Any, seconds: float, what: str) -> Any:
        try:
            async with asyncio.timeout(seconds):
                return await coroutine
        except TimeoutError:
            raise MessagingTimeout(f"{what}: timed out after {seconds} s") from None

    def _reply_threadsafe(self, payload: bytes, correlation_id: str | None,
                          then: Callable[[], None] | None = None) -> None:
        """Send a reply (or heartbeat) without blocking the worker beyond the hand-off;
        ``then`` runs on the loop once the reply is out (or given up)."""
        self._loop.submit(self._send_reply(payload, correlation_id, then))

    async def _send_reply(self, payload: bytes, correlation_id: str | None,
                          then: Callable[[], None] | None) -> None:
        what = f"reply to message ID {correlation_id}"
        if then is not None:
            # Runs once this task first waits: after the reply went out on the connection
            # (when there was credit), so the request is settled right behind its reply.
            asyncio.get_running_loop().call_soon(then)
        try:
            async with asyncio.timeout(self._options.reply_retry_timeout or 0.001):
                await self._connection.deliver(payload, None, what)
        except TimeoutError:
            log.warning("%s: dropped, the caller's reply address took nothing for %s s (the caller is gone)",
                        what, self._options.reply_retry_timeout)
        except MessageDeliveryFailure as exc:
            log.warning("%s: %s", what, exc)
        except Exception:
            log.exception("%s: failed", what)

    # -- listening ---------------------------------------------------------------------
    def listen(self, target: Any, batch_size: int, batch_timeout: float | None) -> base.Listener:
        exchange = self._exchange(target)
        addresses = [
            wire.rpc_address(exchange, target.topic),
            wire.rpc_address(exchange, target.topic, target.server),
            wire.fanout_address(exchange, target.topic),
        ]
        listener = DriverListener(self, "RPC", self._options.rpc_prefetch, decode_request, batch_size, batch_timeout)
        self._start_listener(listener, addresses, f"RPC server {target.topic}/{target.server}")
        return listener

    def listen_for_notifications(self, targets_and_priorities: list[tuple[Any, str]], pool: str | None,
                                 batch_size: int, batch_timeout: float | None) -> base.Listener:
        addresses: list[str] = []
        by_exchange: dict[str, list[tuple[str, str]]] = {}
        for target, priority in targets_and_priorities:
            exchange = self._exchange(target)
            address = wire.notification_address(exchange, target.topic, priority.lower(), pool)
            if address not in addresses:
                addresses.append(address)
            by_exchange.setdefault(exchange, []).append((target.topic, priority.lower()))
        listener = DriverListener(self, "notification", self._options.notification_prefetch, decode_notification,
                                  batch_size, batch_timeout)
        if pool is not None:
            for exchange, targets in by_exchange.items():
                listener.on_cleanup.append(self._loop.run(self._bounded(
                    self._answer_pool_queries(exchange, pool, tuple(targets)), self._options.startup_timeout,
                    f"announcing pool {pool!r} to exchange {exchange!r}")))
        self._start_listener(listener, addresses, f"notification listener (pool {pool!r})")
        return listener

    def _start_listener(self, listener: DriverListener, addresses: list[str], what: str) -> None:
        try:
            self._loop.run(self._bounded(listener.subscribe(addresses), self._options.startup_timeout,
                                         f"{what}: subscribing to {', '.join(addresses)}"))
        except BaseException:
            self._loop.run(listener._close())
            raise
        self._listeners.append(listener)

    async def _answer_pool_queries(self, exchange: str, pool: str, targets: tuple[tuple[str, str], ...]) -> Any:
        """Announce ``pool`` now and whenever a notifier asks; returns what stops it."""
        client = await self._connection.client()
        receiver = await client.receiver(wire.pools_address(exchange), credit=10)

        interval = self._options.pool_announce_interval

        async def answer() -> None:
            while True:
                try:
                    item = await receiver.receive(timeout=interval)
                except TimeoutError:
                    await announce(self._connection, exchange, pool, targets)  # notifiers forget the silent
                    continue
                try:
                    item.accept()
                    query = wire.decode_announcement(item.message())
                except Exception as exc:
                    log.debug("ignored a message on %s: %s", receiver.source_address, exc)
                    continue
                if query.query and query.exchange == exchange:
                    await announce(self._connection, exchange, pool, targets)

        task = asyncio.get_running_loop().create_task(answer())
        await announce(self._connection, exchange, pool, targets)

        async def stop() -> None:
            task.cancel()
            await receiver.close()

        return stop

    def _run_listener_cleanup(self, listener: DriverListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
            self._loop.run(listener._close())

    # -- the end -----------------------------------------------------------------------
    def cleanup(self) -> None:
        if self._loop.in_loop_thread:
            raise RuntimeError("cleanup() called from the driver's own loop thread")
        try:
            self._loop.run(self._close())
        except RuntimeError:
            return  # cleaned up already
        self._loop.stop()

    async def _close(self) -> None:
        for listener in list(self._listeners):
            await listener._close()
        self._listeners.clear()
        for task in self._pools.values():
            if task.done() and not failed(task):
                await task.result().close()
            else:
                task.cancel()
        await self._connection.close()
        # The loop is this driver's alone: nothing on it outlives the driver.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    # -- helpers -----------------------------------------------------------------------
    def _exchange(self, target: Any) -> str:
        return target.exchange or self._default_exchange or wire.DEFAULT_EXCHANGE

    def _remote_exception(self, failure: wire.Failure) -> Exception:
        data = {
            "class": failure.exc_type,
            "module": failure.module,
            "message": failure.message,
            "tb": failure.traceback,
            "args": failure.args,
            "kwargs": {},
        }
        return rpc_common.deserialize_remote_exception(jsonutils.dumps(data), self._allowed_remote_exmods)


def _request_payload(request: wire.Request, address: str, monitor_timeout: float | None) -> bytes:
    message = _encode(wire.encode_request, request)
    message.properties.to = address
    if monitor_timeout:
        message.application_properties = {**(message.application_properties or {}),
                                          CALL_MONITOR_PROPERTY: float(monitor_timeout)}
    return message.encode()
