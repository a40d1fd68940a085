"""``RPCServer``: serves a target's requests with endpoint objects.

A server takes requests from three addresses (``wire.py``): its topic's (balanced: the
servers of a topic compete), its own (direct calls to it) and the topic's fanout
(multicast: every server gets a copy).  At most ``workers`` requests run at once; each
receiver prefetches at most ``workers`` more, so a busy server is offered less work than
an idle one (the router balances by credit).

Endpoint methods are called as ``method(ctxt, **kwargs)``.  A coroutine function is
awaited on the loop; a plain function runs in one of ``workers`` threads, so a blocking
endpoint does not stall the loop.  What a method returns is the call's result (it must be
JSON-encodable); what it raises is sent back and re-raised by the caller as
``RemoteError``.

A cast is accepted as soon as it is taken (the caller's ``cast`` returns then); a call
is accepted once its reply is sent, so a server lost while running a call is reported to
the caller at once (``modified``) instead of at its timeout.  ``stop()`` releases what
was prefetched and not started: the callers send those again to another server.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from ..client import Client, ClientError, Received, Receiver, Sender
from .dispatch import failure_from, find_method
from .target import Target
from .wire import Reply, Request, WireError, decode_request, encode_reply, fanout_address, rpc_address

__all__ = ["RPCServer"]

log = logging.getLogger("switchboard.rpc")


class RPCServer:
    """Serve ``target`` (its ``topic`` and ``server`` are required) with ``endpoints``.

    ``await server.start()`` attaches; ``await server.stop()`` stops taking requests and
    hands back those not started; ``await server.wait()`` waits for the running ones.
    """

    def __init__(self, client: Client, target: Target, endpoints: Sequence[Any], *, workers: int = 8) -> None:
        if not target.topic or not target.server:
            raise ValueError(f"an RPC server's target needs a topic and a server: {target}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.client = client
        self.target = target
        self.endpoints = list(endpoints)
        self.workers = workers
        self._slots = asyncio.Semaphore(workers)
        self._threads: ThreadPoolExecutor | None = None
        self._receivers: list[Receiver] = []
        self._readers: list[asyncio.Task[None]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._replies: Sender | None = None
        self._started = False

    @property
    def running(self) -> int:
        """Requests being executed now."""
        return len(self._running)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        exchange, topic, server = self.target.exchange_name, self.target.topic, self.target.server
        assert topic is not None and server is not None
        self._replies = await self.client.sender(None)  # the anonymous relay: replies go to each reply-to
        for address in (rpc_address(exchange, topic), rpc_address(exchange, topic, server),
                        fanout_address(exchange, topic)):
            receiver = await self.client.receiver(address, credit=self.workers)
            self._receivers.append(receiver)
        loop = asyncio.get_running_loop()
        self._readers = [loop.create_task(self._read(receiver)) for receiver in self._receivers]

    async def stop(self) -> None:
        """Stop taking requests: no more credit, and those prefetched and not started
        are released (their callers send them again).  Running requests go on."""
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            try:
                await task
            except (asyncio.CancelledError, ClientError):
                pass
        self._readers = []
        for receiver in self._receivers:
            pause(receiver)
            release_prefetched(receiver)

    async def wait(self) -> None:
        """Wait for the running requests to finish (and reply), then detach."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)
        for receiver in self._receivers:
            release_prefetched(receiver)  # any that were on their way when credit stopped
            try:
                await receiver.close()
            except ClientError:
                pass
        self._receivers = []
        if self._replies is not None:
            try:
                await self._replies.close()
            except ClientError:
                pass
            self._replies = None
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None

    # -- internals ---------------------------------------------------------------------
    async def _read(self, receiver: Receiver) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                item = await receiver.receive()
            except ClientError as exc:
                log.warning("RPC server %s: receiver from %s ended: %s", self.target.server, receiver.source_address, exc)
                return
            try:
                await self._slots.acquire()
            except asyncio.CancelledError:
                _settle(item.release)  # taken, not started: another server may run it
                raise
            task = loop.create_task(self._handle(item))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _handle(self, item: Received) -> None:
        try:
            try:
                request = decode_request(item.message())
            except WireError as exc:
                log.warning("RPC server %s: refused a malformed request: %s", self.target.server, exc)
                _settle(lambda error=str(exc): item.reject("amqp:decode-error", error))
                return
            if not request.is_call:
                _settle(item.accept)  # a cast: the caller returns now
            reply = await self._execute(request)
            if request.is_call:
                await self._send_reply(request, reply)
                _settle(item.accept)
        finally:
            self._slots.release()

    async def _execute(self, request: Request) -> Reply:
        try:
            method = find_method(self.endpoints, request.method, request.namespace, request.version)
            if inspect.iscoroutinefunction(method):
                result = await method(request.context, **request.kwargs)
            else:
                if self._threads is None:
                    self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="rpc-worker")
                result = await asyncio.get_running_loop().run_in_executor(
                    self._threads, lambda: method(request.context, **request.kwargs))
        except Exception as exc:
            if request.is_call:
                log.debug("RPC %s raised %s: %s", request.method, type(exc).__name__, exc)
            else:
                log.exception("RPC cast %s raised", request.method)
            return Reply(request.msg_id, failure=failure_from(exc))
        return Reply(request.msg_id, result=result)

    async def _send_reply(self, request: Request, reply: Reply) -> None:
        assert request.reply_to is not None
        try:
            message = encode_reply(reply, request.reply_to)
        except TypeError as exc:
            message = encode_reply(Reply(request.msg_id, failure=failure_from(exc)), request.reply_to)
        sender = self._replies
        if sender is None:
            return
        try:
            # Not awaited to the end: the caller's outcome says nothing the server can act on.
            outcome = await sender.send(message, wait=False)
        except ClientError as exc:
            log.warning("RPC server %s: cannot send the reply to %s: %s", self.target.server, request.reply_to, exc)
            return
        if outcome is not None:
            outcome.add_done_callback(_reply_settled)


def _reply_settled(outcome: "asyncio.Future[Any]") -> None:
    # A caller that gave up (timed out, went away) is no concern of the server's.
    if not outcome.cancelled() and outcome.exception() is not None:
        log.debug("a reply was not delivered: %s", outcome.exception())


def pause(receiver: Receiver) -> None:
    """Give the receiver's link no more credit."""
    receiver.pause()


def release_prefetched(receiver: Receiver) -> None:
    """Hand back the messages prefetched and never taken: the router offers them again."""
    receiver.release_prefetched()


def _settle(settle: Any) -> None:
    try:
        settle()
    except ClientError as exc:  # the request's connection is gone: the router has told the caller
        log.debug("cannot settle a request: %s", exc)
