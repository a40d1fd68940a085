"""Request/response through real routers: ``client.request`` and ``Requester``.

    requester ──► router ──► responder (a receiver on the service address)
        ▲                        │
        └──── dynamic address ◄──┘  reply: correlation_id = the request's message_id

What a caller is told in each case: the reply; ``NotDelivered`` at once when nobody
consumes the address; ``RequestRejected``; ``RequestTimeout``; ``OutcomeUnknown`` at once
(not at the timeout) when the router dies with the request unanswered; and a request
that the lost connection never wrote goes to the next router and is answered there.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from system_support import HOST, run_async, wait_until
from test_client_failover import QUICK, WAIT, Recorder, failed_over_to, kill, router_list
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Properties, Released
from switchboard.client import (
    Client,
    ClientError,
    ConnectionLost,
    NotDelivered,
    OutcomeUnknown,
    Received,
    RequestRejected,
    RequestTimeout,
    Router,
)

LONG = 120.0
"""A request timeout no test reaches: a request that fails must fail for another reason."""


class Responder:
    """A service on a router: takes requests from ``address`` and answers each with
    ``tag:body`` on the anonymous relay, to the request's ``reply_to``.

    ``hold`` set: requests are accepted and kept unanswered in ``held`` (``answer`` sends
    their replies later); ``reject`` set: requests are rejected.
    """

    def __init__(self, client: Client, address: str, tag: str) -> None:
        self.client = client
        self.address = address
        self.tag = tag
        self.hold = False
        self.reject = False
        self.held: list[Message] = []
        self.taken = 0
        self._task: asyncio.Task[None] | None = None
        self.receiver: Any = None
        self.replies: Any = None

    async def start(self) -> "Responder":
        self.receiver = await self.client.receiver(self.address, credit=50)
        self.replies = await self.client.sender(None)
        self._task = asyncio.get_running_loop().create_task(self._serve())
        return self

    async def _serve(self) -> None:
        async for item in self.receiver:
            self.taken += 1
            await self._handle(item)

    async def _handle(self, item: Received) -> None:
        request = item.message()
        if self.reject:
            item.reject("test:refused", "this service refuses everything")
            return
        item.accept()
        if self.hold:
            self.held.append(request)
            return
        await self.answer(request)

    async def answer(self, request: Message, *, wait: bool = False) -> Any:
        reply = Message(
            body=f"{self.tag}:{request.body}",
            properties=Properties(to=request.reply_to, correlation_id=request.properties.message_id),
        )
        outcome = await self.replies.send(reply, wait=False)
        return await outcome if wait else outcome

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, ClientError):
                pass


# ======================================================================================
def test_many_requests_in_flight_each_get_their_own_reply(router) -> None:
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as server, await Client.connect(r.url) as client:
            await Responder(server, "service/echo", "echo").start()
            replies = await asyncio.gather(*(
                client.request("service/echo", Message(body=f"request-{i}"), timeout=WAIT) for i in range(200)
            ))
            assert [reply.body for reply in replies] == [f"echo:request-{i}" for i in range(200)]
            # The caller's message is left as it was; the reply names the request it answers.
            message = Message(body="mine", properties=Properties(subject="kept", message_id="my-id-1"))
            reply = await client.request("service/echo", message, timeout=WAIT)
            assert reply.correlation_id == "my-id-1"
            assert (message.properties.to, message.properties.reply_to, message.properties.subject) == (None, None, "kept")
            # One requester is shared by client.request: one reply address for all.
            requester = await client._requester
            assert requester.in_flight == 0
            assert requester.reply_address is not None

    run_async(scenario, timeout=120)


def test_a_requester_made_once_serves_several_services(router) -> None:
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as server, await Client.connect(r.url) as client:
            await Responder(server, "service/a", "a").start()
            await Responder(server, "service/b", "b").start()
            requester = await client.requester()
            a, b = await asyncio.gather(
                requester.request("service/a", Message(body="1"), timeout=WAIT),
                requester.request("service/b", Message(body="2"), timeout=WAIT),
            )
            assert (a.body, b.body) == ("a:1", "b:2")
            await requester.close()
            with pytest.raises(ClientError, match="requester closed"):
                await requester.request("service/a", Message(body="3"), timeout=WAIT)

    run_async(scenario)


def test_a_request_nobody_consumes_fails_at_once_as_not_delivered(router) -> None:
    """The router releases a request for an address without consumers: the caller is
    told so, long before the request's timeout."""
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as client:
            with pytest.raises(NotDelivered, match="no consumer took it") as caught:
                await client.request("service/nobody", Message(body="anyone?"), timeout=LONG)
            assert isinstance(caught.value.outcome, Released)
            assert "service/nobody" in str(caught.value)

    run_async(scenario)


def test_a_rejected_request_says_why(router) -> None:
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as server, await Client.connect(r.url) as client:
            responder = await Responder(server, "service/strict", "strict").start()
            responder.reject = True
            with pytest.raises(RequestRejected) as caught:
                await client.request("service/strict", Message(body="please"), timeout=LONG)
            assert caught.value.condition == "test:refused"
            assert "this service refuses everything" in str(caught.value)

    run_async(scenario)


def test_a_request_without_reply_times_out_and_a_late_reply_is_dropped(router) -> None:
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as server, await Client.connect(r.url) as client:
            responder = await Responder(server, "service/slow", "slow").start()
            responder.hold = True
            with pytest.raises(RequestTimeout, match="no reply to the request to 'service/slow' within 0.5 s"):
                await client.request("service/slow", Message(body="late"), timeout=0.5)
            assert [m.body for m in responder.held] == ["late"]
            requester = await client._requester
            assert requester.in_flight == 0
            # The reply that comes after the timeout is taken (accepted) and dropped ...
            assert isinstance(await responder.answer(responder.held.pop(), wait=True), Accepted)
            # ... and the requester goes on answering.
            responder.hold = False
            reply = await client.request("service/slow", Message(body="on time"), timeout=WAIT)
            assert reply.body == "slow:on time"

    run_async(scenario)


def test_router_killed_with_requests_unanswered_fails_them_at_once(router) -> None:
    """Requests taken by the service on r1 and not answered when r1 dies: the caller gets
    OutcomeUnknown right away, not at the (long) timeout; the next requests go to r2."""
    r1, r2 = router(), router()
    first, second = Router(HOST, r1.port), Router(HOST, r2.port)

    async def scenario() -> None:
        events = Recorder()
        async with await Client.connect(r1.url) as server1, await Client.connect(r2.url) as server2, \
                await Client.connect(router_list(r1.port, r2.port), reconnect=QUICK, on_event=events) as client:
            responder1 = await Responder(server1, "service/work", "r1").start()
            await Responder(server2, "service/work", "r2").start()
            responder1.hold = True
            requests = [
                asyncio.ensure_future(client.request("service/work", Message(body=f"w{i}"), timeout=LONG))
                for i in range(5)
            ]
            await wait_until(lambda: len(responder1.held) == 5, WAIT, "the service on r1 to take five requests")
            kill(r1)
            results = await asyncio.gather(*requests, return_exceptions=True)
            assert all(isinstance(result, OutcomeUnknown) for result in results), results
            assert "may have been processed" in str(results[0])
            assert str(first) in str(results[0])
            await events.wait(failed_over_to(second), "the failover to r2")
            reply = await client.request("service/work", Message(body="after"), timeout=WAIT)
            assert reply.body == "r2:after"

    run_async(scenario, timeout=120)


def test_requests_never_written_go_to_the_next_router_and_are_answered_there(router) -> None:
    """The socket to r1 is cut by our side before two requests handed to the connection
    are written: r1 never saw them, so they go to r2 with r2's reply address, and the
    caller gets r2's replies."""
    r1, r2 = router('[router]\nid = "r1"\n'), router('[router]\nid = "r2"\n')
    second = Router(HOST, r2.port)

    async def scenario() -> None:
        events = Recorder()
        async with await Client.connect(r1.url) as server1, await Client.connect(r2.url) as server2, \
                await Client.connect(router_list(r1.port, r2.port), reconnect=QUICK, on_event=events) as client:
            responder1 = await Responder(server1, "service/retry", "r1").start()
            await Responder(server2, "service/retry", "r2").start()
            requester = await client.requester()
            await wait_until(lambda: requester._sender.link.credit >= 2, WAIT, "credit from r1")
            address_on_r1 = requester.reply_address
            loop = asyncio.get_running_loop()
            requests = [
                loop.create_task(requester.request("service/retry", Message(body=f"x{i}"), timeout=WAIT))
                for i in range(2)
            ]
            # Runs after both requests were handed to the engine, before their bytes go out.
            loop.call_soon(client.protocol.transport.abort)
            replies = await asyncio.gather(*requests)
            assert [reply.body for reply in replies] == ["r2:x0", "r2:x1"]
            lost = events.of(ConnectionLost)
            assert [(event.outcome_unknown, event.resending) for event in lost] == [(0, 2)]
            await events.wait(failed_over_to(second), "the failover to r2")
            assert (address_on_r1, requester.reply_address) == ("_dynamic/r1/1", "_dynamic/r2/1")
            assert responder1.taken == 0

    run_async(scenario, timeout=120)


def test_closing_the_client_fails_requests_waiting_for_replies(router) -> None:
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as server:
            responder = await Responder(server, "service/held", "held").start()
            responder.hold = True
            client = await Client.connect(r.url)
            request = asyncio.ensure_future(client.request("service/held", Message(body="pending"), timeout=LONG))
            await wait_until(lambda: len(responder.held) == 1, WAIT, "the request to be taken")
            await client.close()
            with pytest.raises(ClientError, match="client closed"):
                await request
            with pytest.raises(ClientError):
                await client.request("service/held", Message(body="after close"), timeout=WAIT)

    run_async(scenario)


def test_a_stopped_router_is_noticed_by_heartbeats_and_its_requests_fail_at_once(router) -> None:
    """A SIGSTOPped router keeps its sockets open: only missing heartbeats tell.  The
    request it holds fails with OutcomeUnknown when they do (idle_timeout=1), long
    before the request's own timeout."""
    r1, r2 = router(), router()
    second = Router(HOST, r2.port)

    async def scenario() -> None:
        events = Recorder()
        async with await Client.connect(r1.url) as server1, await Client.connect(r2.url) as server2, \
                await Client.connect(router_list(r1.port, r2.port), idle_timeout=1.0, reconnect=QUICK, on_event=events) as client:
            responder1 = await Responder(server1, "service/stopped", "r1").start()
            await Responder(server2, "service/stopped", "r2").start()
            responder1.hold = True
            request = asyncio.ensure_future(client.request("service/stopped", Message(body="held"), timeout=LONG))
            await wait_until(lambda: len(responder1.held) == 1, WAIT, "the request to be taken on r1")
            r1.signal(signal.SIGSTOP)
            try:
                with pytest.raises(OutcomeUnknown, match="idle timeout"):
                    await request
                await events.wait(failed_over_to(second), "the failover to r2")
            finally:
                r1.signal(signal.SIGCONT)
            reply = await client.request("service/stopped", Message(body="again"), timeout=WAIT)
            assert reply.body == "r2:again"

    run_async(scenario, timeout=120)


def test_without_failover_a_lost_router_ends_the_requests_with_it(router) -> None:
    """One router, no reconnect: the request it holds is OutcomeUnknown, and requests
    after that fail with the client's own error."""
    r = router()

    async def scenario() -> None:
        async with await Client.connect(r.url) as server:
            responder = await Responder(server, "service/single", "single").start()
            responder.hold = True
            client = await Client.connect(r.url)
            request = asyncio.ensure_future(client.request("service/single", Message(body="held"), timeout=LONG))
            await wait_until(lambda: len(responder.held) == 1, WAIT, "the request to be taken")
            kill(r)
            with pytest.raises(OutcomeUnknown, match="may have been processed"):
                await request
            with pytest.raises(ClientError, match="connection closed") as caught:
                await client.request("service/single", Message(body="after"), timeout=WAIT)
            assert not isinstance(caught.value, (OutcomeUnknown, RequestTimeout))
            await client.close()

    run_async(scenario)
