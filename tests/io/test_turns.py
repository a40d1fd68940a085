"""A loop turn shared between connections: a flood waits its turn, others do not.

A real listener (``io.listen``) whose connections share one ``TurnScheduler``, our client
over loopback on both ends: one connection writes 20,000 presettled messages at once;
once the listener has begun on them, another writes one message.  The lone message must
be handled within a few turns' shares, not after the part of the flood already read
(without the scheduler, a read of the flood is handled whole: thousands of messages).
"""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.amqp import events as ev
from switchboard.amqp.link import ReceiverLink
from switchboard.amqp.message import Message
from switchboard.client.connection import Client
from switchboard.io.listener import listen
from switchboard.io.protocol import AmqpProtocol
from switchboard.io.turns import TurnScheduler
from switchboard.amqp.connection import Connection
from switchboard.amqp.sasl import SaslServer

from interop_support import arun

FLOOD = 20_000


class Sink:
    """Accepts every link, grants plenty of credit, records messages in arrival order."""

    def __init__(self) -> None:
        self.arrivals: list[bytes] = []
        self.lone_at: int | None = None

    def connection_started(self, protocol: AmqpProtocol) -> None:
        pass

    def events_received(self, protocol: AmqpProtocol, events: list[ev.Event]) -> None:
        engine = protocol.engine
        for event in events:
            if isinstance(event, ev.ConnectionOpened):
                engine.open()
            elif isinstance(event, ev.LinkAttached) and event.link.remote_initiated:
                link = event.link
                link.source, link.target = link.remote_source, link.remote_target
                link.attach()
                if isinstance(link, ReceiverLink):
                    link.flow(FLOOD + 10)
            elif isinstance(event, ev.DeliveryReceived):
                body = Message.decode(event.delivery.payload).body
                if body == b"lone":
                    self.lone_at = len(self.arrivals)
                self.arrivals.append(body)

    def connection_ended(self, protocol: AmqpProtocol) -> None:
        pass

    def writing_paused(self, protocol: AmqpProtocol, paused: bool) -> None:
        pass


def test_a_lone_message_is_not_kept_waiting_behind_a_flood() -> None:
    async def scenario() -> Sink:
        loop = asyncio.get_running_loop()
        sink = Sink()
        turns = TurnScheduler(loop, frames_per_turn=16)

        def engine() -> Connection:
            connection = Connection("sink", server=True, sasl=SaslServer(["ANONYMOUS"]))
            connection.frame_budget = 16
            return connection

        server = await listen("127.0.0.1", 0, engine, sink, turns=turns)
        port = server.sockets[0].getsockname()[1]
        try:
            flooder = await Client.connect(f"amqp://127.0.0.1:{port}")
            lone = await Client.connect(f"amqp://127.0.0.1:{port}")
            flood_sender = await flooder.sender("flood", presettled=True)
            lone_sender = await lone.sender("lone", presettled=True)
            payload = Message(b"f").encode()
            for _ in range(FLOOD):
                await flood_sender.send(payload)  # written in one go at the next turn
            deadline = loop.time() + 30
            while not sink.arrivals:  # the router has begun on the flood
                assert loop.time() < deadline, "the flood never arrived"
                await asyncio.sleep(0)
            await lone_sender.send(Message(b"lone").encode())
            deadline = loop.time() + 60
            while len(sink.arrivals) < FLOOD + 1:
                assert loop.time() < deadline, f"{len(sink.arrivals)} of {FLOOD + 1} arrived"
                await asyncio.sleep(0.01)
            await flooder.close()
            await lone.close()
        finally:
            server.close()
        return sink

    sink = arun(scenario, timeout=90)
    assert sink.arrivals.count(b"f") == FLOOD
    assert sink.lone_at is not None and sink.lone_at < 2000, (
        f"the lone message was handled after {sink.lone_at} of the flood's {FLOOD}"
    )
