"""Hostile and careless AMQP 1.0 clients, one kind per process, for ``bench/isolation.py``.

    .venv/bin/python bench/hostile.py KIND --url amqp://127.0.0.1:PORT [--seconds S] [options]

Each kind speaks real AMQP 1.0 (our sans-IO engine, ``switchboard.amqp``, over
non-blocking sockets on one event loop) to a real router, does its damage for
``--seconds`` (or until SIGTERM/SIGINT), winds down and prints one JSON line: what it did
(messages sent, outcomes, credit granted and received, connections held) and what the
router told it (close, end and detach conditions). Kinds:

* ``credit-hog``: a consumer on one address grants ``--hog-credit`` (1,000,000) credit and
  then reads one message a second (takes it from its socket and settles it); ``--senders``
  senders push to the address as fast as the router lets them, unsettled, each with up to
  ``--window`` deliveries in flight.
* ``closed-window``: a consumer grants credit but begins its session with an incoming
  window of 0 and keeps it there, so no transfer may reach it; senders push as above.
* ``presettled-flood``: senders flood presettled messages to one address; one fast
  consumer takes them.
* ``multicast-flood``: senders flood a ``multicast/`` address; one fast consumer and one
  slow one (as the credit hog's) receive the copies.
* ``heartbeat-demand``: ``--connections`` (300) connections whose open asks for a 1 ms
  idle time-out, then stay open (sending the heartbeats the router asks for, no more).
* ``tricklers``: ``--connections`` (500) sockets that finish the header, SASL, open and
  begin, then trickle an attach frame into the socket one byte a second.

Every sender must learn the outcome of every unsettled delivery. At the end the
consumers leave first (so the router must release what it holds for them), then the
senders wait up to ``--drain`` seconds for outstanding outcomes; what is still without
one is reported as ``lost_without_outcome`` (split into deliveries whose connection or
link ended with them in doubt and deliveries still pending on a live link).

Everything is bounded: connections by ``--connections``/``--senders``, messages by
``--count`` per sender, the set-up by ``--setup-timeout``, the run by ``--seconds``, the
wind-down by ``--drain`` plus a short close grace. ``--ready-file PATH`` is created once
every connection is set up (what ``bench/isolation.py`` waits for).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from switchboard.amqp import events as ev
from switchboard.amqp.connection import Connection
from switchboard.amqp.delivery import ACCEPTED, Delivery
from switchboard.amqp.link import ReceiverLink, SenderLink
from switchboard.amqp.message import Message
from switchboard.amqp.sasl import SaslClient
from switchboard.amqp.session import Session
from switchboard.amqp.spec import Accepted, Error, Modified, Rejected, Released, SenderSettleMode, Source, Target
from switchboard.io.loop import new_event_loop

__all__ = ["KINDS", "main", "run"]

KINDS = ("credit-hog", "closed-window", "presettled-flood", "multicast-flood", "heartbeat-demand", "tricklers")

READ_SIZE = 256 * 1024
"""Bytes per read for peers that read as fast as they can."""
SLOW_READ_SIZE = 512
"""Bytes per read for a slow consumer: it takes a message's worth at a time, no more."""
SEND_BATCH = 256
"""Messages a sender writes before it lets the other connections of this process run."""
TICK_SECONDS = 0.25
"""How often every connection's engine is ticked (heartbeats the router asks for)."""
CONNECT_CONCURRENCY = 50
"""Connections being set up at once (the router's listen backlog is finite)."""
CLOSE_GRACE = 2.0
"""Seconds to wait for the router to answer our closes before dropping the sockets."""

_OUTCOMES = {Accepted: "accepted", Released: "released", Rejected: "rejected", Modified: "modified"}


class Tally:
    """Counters shared by every connection of the run, for the JSON summary."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.conditions: Counter[str] = Counter()

    def condition(self, where: str, error: Error | None) -> None:
        if error is None:
            self.conditions[f"{where}: (no error)"] += 1
            return
        text = f"{where}: {error.condition}"
        if error.description:
            text += f" ({error.description})"
        self.conditions[text] += 1


# ======================================================================================
# One connection: the engine over a non-blocking socket
# ======================================================================================
class Peer:
    """One AMQP connection driven by our engine on the event loop.

    Reads go through ``add_reader`` (pausable, with a chosen read size); writes are
    tried at once and what the socket does not take waits in ``_backlog`` (the peer is
    then ``blocked`` until the socket drains). Subclasses react to the engine's events.
    """

    role = "peer"

    def __init__(self, run: "Run", name: str, *, idle_timeout: float | None = None) -> None:
        self.run = run
        self.name = name
        self.loop = run.loop
        self.engine = Connection(
            f"hostile-{name}-{os.getpid()}", hostname=run.host, sasl=SaslClient(), idle_timeout=idle_timeout
        )
        self.sock: socket.socket | None = None
        self.read_size = READ_SIZE
        self.reading = False
        self.ticking = True
        self.ready = False
        """Set up as the kind wants it (opened, attached, trickling)."""
        self.refused = False
        """The router refused what it was setting up (a link): a defence, not our failure."""
        self.opened = False
        self.closing = False
        """We asked for the close (wind-down): the router's answer is not a complaint."""
        self.closed = False
        self.blocked = False
        self._backlog = bytearray()
        self._close_frame_seen = False

    # -- set-up ------------------------------------------------------------------------
    def start(self) -> None:
        """Queue what the connection sends first (open, begin, attaches)."""
        self.engine.open()

    async def connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await self.loop.sock_connect(sock, (self.run.host, self.run.port))
        except BaseException:  # refused, or cancelled at the set-up deadline
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.start()
        self.resume_reading()
        self.flush()

    # -- input -------------------------------------------------------------------------
    def pause_reading(self) -> None:
        if self.reading and self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False

    def resume_reading(self) -> None:
        if not self.reading and self.sock is not None and not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)
            self.reading = True

    def _on_readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            data = sock.recv(self.read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        engine = self.engine
        engine.receive_data(data)
        events = engine.take_events()
        if events:
            self._dispatch(events)
        self.flush()

    def _dispatch(self, events: list[ev.Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is ev.ConnectionOpened:
                self.opened = True
                self.run.tally.counts["connections opened"] += 1
            elif kind is ev.ConnectionClosed:
                self._close_frame_seen = True
                if not self.closing:
                    self.run.tally.counts["connections closed by the router"] += 1
                    self.run.tally.condition("close", event.error)  # type: ignore[attr-defined]
            elif kind is ev.SessionEnded and not self.closing and not self.engine.closed:
                self.run.tally.condition("end", event.error)  # type: ignore[attr-defined]
            elif kind is ev.LinkDetached and not self.closing and not self.engine.closed:
                self.run.tally.condition("detach", event.error)  # type: ignore[attr-defined]
            self.on_event(event)

    def on_event(self, event: ev.Event) -> None:
        """One engine event, for the subclass."""

    # -- output ------------------------------------------------------------------------
    def flush(self) -> None:
        """Write what the engine has to send; drop the socket once the engine is done."""
        if self.sock is None:
            return
        chunks = self.engine.data_to_send()
        if chunks:
            self.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self.engine.transport_done and not self._backlog:
            self._drop()

    def write(self, data: Any) -> None:
        sock = self.sock
        if sock is None:
            return
        if self._backlog:
            self._backlog += data
            return
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._lost()
            return
        if sent < len(data):
            self._backlog += memoryview(data)[sent:]
            self.blocked = True
            self.loop.add_writer(sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            sent = sock.send(self._backlog)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost()
            return
        del self._backlog[:sent]
        if not self._backlog:
            self.loop.remove_writer(sock.fileno())
            self.blocked = False
            if self.engine.transport_done:
                self._drop()
            else:
                self.on_drained()

    def on_drained(self) -> None:
        """The socket took everything we had: a sender may go on."""

    def tick(self, now: float) -> None:
        if self.ticking and self.opened and not self.closed:
            self.engine.tick(now)
            events = self.engine.take_events()
            if events:
                self._dispatch(events)
            self.flush()

    # -- the end -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the AMQP connection (our wind-down); the router's close completes it."""
        if self.closed:
            return
        self.closing = True
        self.read_size = READ_SIZE
        self.resume_reading()
        self.engine.close()
        events = self.engine.take_events()
        if events:
            self._dispatch(events)
        self.flush()

    def _lost(self) -> None:
        if self.closed:
            return
        if not self._close_frame_seen and not self.closing:
            self.run.tally.counts["sockets closed by the router without a close frame"] += 1
        self._drop()
        self.engine.connection_lost()
        events = self.engine.take_events()
        if events:
            self._dispatch(events)

    def _drop(self) -> None:
        """Close the socket (the engine is done with it, or it is gone)."""
        if self.closed:
            return
        self.closed = True
        sock = self.sock
        if sock is not None:
            self.pause_reading()
            if self._backlog or self.blocked:
                self.loop.remove_writer(sock.fileno())
            sock.close()
        self.on_closed()

    def on_closed(self) -> None:
        """The socket is gone."""


class _LinkPeer(Peer):
    """A connection with one session and one link, ready once the link is attached."""

    def __init__(self, run: "Run", name: str, address: str) -> None:
        super().__init__(run, name)
        self.address = address
        self.session: Session | None = None
        self.link: SenderLink | ReceiverLink | None = None

    def on_event(self, event: ev.Event) -> None:
        kind = type(event)
        if kind is ev.LinkAttached:
            link = event.link  # type: ignore[attr-defined]
            if link.remote_initiated:
                link.refuse(Error(condition="amqp:not-allowed", description="this client accepts no links"))
            elif link is self.link:
                terminus = link.remote_target if link.is_sender else link.remote_source
                if terminus is None:
                    self.refused = True  # its detach, with the reason, follows
                    self.run.tally.counts[f"{self.role} links refused by the router"] += 1
                else:
                    self.ready = True
                    self.on_attached()
        self.on_link_event(event)

    def on_attached(self) -> None:
        pass

    def on_link_event(self, event: ev.Event) -> None:
        pass


# ======================================================================================
# Senders
# ======================================================================================
class FloodSender(_LinkPeer):
    """Sends as fast as credit, its window of unsettled deliveries and the socket allow."""

    role = "sender"

    def __init__(self, run: "Run", name: str, address: str, payload: bytes, *, presettled: bool, window: int,
                 count: int) -> None:
        super().__init__(run, name, address)
        self.payload = payload
        self.presettled = presettled
        self.window = window
        self.count = count
        self.sent = 0
        self.credit_peak = 0
        self.outcomes: Counter[str] = Counter()
        self.stopped = False
        self._pump_scheduled = False
        self.link_lost_with: Error | None = None

    def start(self) -> None:
        super().start()
        self.session = self.engine.begin_session()
        self.link = self.session.sender(
            f"{self.name}-link",
            source=Source(address=self.engine.container_id),
            target=Target(address=self.address),
            snd_settle_mode=SenderSettleMode.SETTLED if self.presettled else SenderSettleMode.UNSETTLED,
        )

    @property
    def unsettled(self) -> int:
        return len(self.link.unsettled) if self.link is not None else 0

    def on_attached(self) -> None:
        self.pump()

    def on_link_event(self, event: ev.Event) -> None:
        kind = type(event)
        if kind is ev.CreditGranted:
            link = event.link  # type: ignore[attr-defined]
            if link.credit > self.credit_peak:
                self.credit_peak = link.credit
            self.schedule_pump()
        elif kind is ev.DeliveryUpdated:
            delivery: Delivery = event.delivery  # type: ignore[attr-defined]
            if delivery.remote_settled:
                self.outcomes[_OUTCOMES.get(type(delivery.remote_state), "other")] += 1
                delivery.settle()
                self.schedule_pump()
        elif kind is ev.LinkDetached and not self.closing:
            self.link_lost_with = event.error or Error(condition="(detached without error)")  # type: ignore[attr-defined]

    def on_drained(self) -> None:
        self.schedule_pump()

    def schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self.pump)

    def pump(self) -> None:
        self._pump_scheduled = False
        link = self.link
        if self.stopped or self.blocked or self.closed or link is None or not link.active:
            return
        budget = SEND_BATCH
        presettled = self.presettled
        while budget and link.credit > 0 and self.sent < self.count and (presettled or len(link.unsettled) < self.window):
            link.send(self.payload)
            self.sent += 1
            budget -= 1
        if budget < SEND_BATCH:
            self.flush()
            if not budget:
                self.schedule_pump()  # more may go: after the other connections had a turn

    def report(self) -> dict[str, Any]:
        in_doubt = self.unsettled if (self.closed and not self.closing) or self.link_lost_with else 0
        return {
            "sent": self.sent,
            "credit_peak": self.credit_peak,
            **self.outcomes,
            "no_outcome": self.unsettled,
            "no_outcome_in_doubt": in_doubt,
        }


# ======================================================================================
# Consumers
# ======================================================================================
class FastConsumer(_LinkPeer):
    """Reads as fast as it can, accepts what arrives unsettled, keeps ``credit`` granted."""

    role = "fast consumer"

    def __init__(self, run: "Run", name: str, address: str, credit: int) -> None:
        super().__init__(run, name, address)
        self.credit_window = credit
        self.received = 0
        self.granted = 0

    def start(self) -> None:
        super().start()
        self.session = self.engine.begin_session()
        self.link = self.session.receiver(
            f"{self.name}-link",
            source=Source(address=self.address),
            target=Target(address=self.engine.container_id),
            credit=self.credit_window,
        )
        self.granted = self.credit_window

    def on_link_event(self, event: ev.Event) -> None:
        if type(event) is ev.DeliveryReceived and not self.closing:
            # Once our close is out nothing more may be written: no settling, no credit.
            delivery: Delivery = event.delivery  # type: ignore[attr-defined]
            self.received += 1
            if not delivery.remote_settled:
                delivery.settle(ACCEPTED)
            self.on_delivery()

    def on_delivery(self) -> None:
        link = self.link
        assert isinstance(link, ReceiverLink)
        if link.credit <= self.credit_window // 2 and link.active:
            self.granted += self.credit_window - link.credit
            link.flow(self.credit_window)

    def report(self) -> dict[str, Any]:
        return {"received": self.received, "credit_granted": self.granted}


class SlowConsumer(FastConsumer):
    """Grants a lot of credit once, then takes one message a second from its socket.

    Between reads its socket is not read at all, so whatever the router sends piles up
    in the kernel's buffers and then in the router.
    """

    role = "slow consumer"

    def __init__(self, run: "Run", name: str, address: str, credit: int, rate: float) -> None:
        super().__init__(run, name, address, credit)
        self.interval = 1.0 / rate
        self._quota = 0

    def on_attached(self) -> None:
        self.read_size = SLOW_READ_SIZE
        self._quota = self.received + 1
        self.loop.call_later(self.interval, self._next_read)

    def _next_read(self) -> None:
        if self.closed or self.closing:
            return
        self._quota = self.received + 1
        self.resume_reading()
        self.loop.call_later(self.interval, self._next_read)

    def on_delivery(self) -> None:
        # No credit top-up: the one grant is all it ever gives.
        if self.ready and not self.closing and self.received >= self._quota:
            self.pause_reading()


class ClosedWindowConsumer(FastConsumer):
    """Grants credit on a session whose incoming window is 0 and stays 0.

    The window is closed (``Session.set_incoming_window(0)``) before the link's credit
    is granted, so the router never had room to send.  Our engine ends the session with
    ``window-violation`` if a transfer arrives anyway; any delivery seen is counted.
    """

    role = "closed-window consumer"

    def __init__(self, run: "Run", name: str, address: str, credit: int) -> None:
        super().__init__(run, name, address, credit)
        self.violations = 0

    def start(self) -> None:
        self.engine.open()
        session = self.engine.begin_session()
        session.set_incoming_window(0)
        self.session = session
        self.link = session.receiver(
            f"{self.name}-link",
            source=Source(address=self.address),
            target=Target(address=self.engine.container_id),
            credit=self.credit_window,
        )
        self.granted = self.credit_window

    def on_delivery(self) -> None:
        self.violations += 1

    def report(self) -> dict[str, Any]:
        return {"received": self.received, "credit_granted": self.granted,
                "transfers_past_a_closed_window": self.violations}


# ======================================================================================
# Connections that only cost the router
# ======================================================================================
class HeartbeatDemander(Peer):
    """Asks for a 1 ms idle time-out in its open, then just stays open.

    The engine advertises half its own idle time-out, so 2 ms gives 1 ms on the wire.
    Once the open is out, the connection stops judging the router's silence itself (it
    would close after 2 ms of it) and only sends the heartbeats the router asks for.
    """

    role = "heartbeat-demanding connection"

    def __init__(self, run: "Run", name: str) -> None:
        super().__init__(run, name, idle_timeout=0.002)
        self.frames_in = 0

    def on_event(self, event: ev.Event) -> None:
        if type(event) is ev.ConnectionOpened:
            self.engine.idle_timeout = None
            self.ready = True

    def feed(self, data: bytes) -> None:
        self.run.tally.counts["bytes received by heartbeat-demanding connections"] += len(data)
        super().feed(data)


class Trickler(Peer):
    """Completes the handshake (header, SASL, open, begin), then trickles an attach frame
    into the socket ``rate`` bytes a second, never finishing it within the run."""

    role = "trickler"

    def __init__(self, run: "Run", name: str) -> None:
        super().__init__(run, name)
        self.frame = b""
        self.offset = 0

    def start(self) -> None:
        super().start()
        self.engine.begin_session()

    def on_event(self, event: ev.Event) -> None:
        if type(event) is ev.SessionBegun and not self.frame:
            session = event.session  # type: ignore[attr-defined]
            # A long link name makes one frame that takes more than an hour at 1 byte/s.
            session.sender("trickle-" + "x" * 4096, target=Target(address="trickle"))
            self.frame = b"".join(bytes(c) for c in self.engine.data_to_send())
            # From now on the engine must not write (a heartbeat would land mid-frame).
            self.ticking = False
            self.ready = True

    def trickle(self, count: int) -> None:
        if self.closed or not self.frame or self.offset >= len(self.frame):
            return
        chunk = self.frame[self.offset : self.offset + count]
        self.offset += len(chunk)
        self.write(chunk)
        self.run.tally.counts["bytes trickled"] += len(chunk)

    def flush(self) -> None:
        if self.frame and not self.engine.transport_done:
            self.engine.data_to_send()  # discarded: the frame being trickled owns the socket
            return
        super().flush()


# ======================================================================================
# The run
# ======================================================================================
class Run:
    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        parts = urlsplit(args.url)
        if parts.scheme != "amqp" or not parts.hostname or not parts.port:
            raise SystemExit(f"--url must be amqp://HOST:PORT, got {args.url!r}")
        self.args = args
        self.loop = loop
        self.host = parts.hostname
        self.port = parts.port
        self.tally = Tally()
        self.peers: list[Peer] = []
        self.stop = asyncio.Event()
        self.stopped_by = "deadline"
        tag = f"{args.kind}-{os.getpid()}"
        self.address = f"multicast/hostile-{tag}" if args.kind == "multicast-flood" else f"hostile-{tag}"

    # -- building the kind ---------------------------------------------------------------
    def consumers(self) -> list[Peer]:
        a, kind = self.args, self.args.kind
        if kind == "credit-hog":
            return [SlowConsumer(self, "hog", self.address, a.hog_credit, a.slow_rate)]
        if kind == "closed-window":
            return [ClosedWindowConsumer(self, "closed-window", self.address, a.hog_credit)]
        if kind == "presettled-flood":
            return [FastConsumer(self, "fast", self.address, a.credit)]
        if kind == "multicast-flood":
            return [FastConsumer(self, "fast", self.address, a.credit),
                    SlowConsumer(self, "slow", self.address, a.hog_credit, a.slow_rate)]
        return []

    def senders(self) -> list[Peer]:
        a, kind = self.args, self.args.kind
        if kind in ("heartbeat-demand", "tricklers"):
            return []
        presettled = kind == "presettled-flood" or a.presettled
        payload = Message(b"h" * a.size).encode()
        return [FloodSender(self, f"sender{i}", self.address, payload, presettled=presettled, window=a.window,
                            count=a.count) for i in range(a.senders)]

    def idlers(self) -> list[Peer]:
        kind, n = self.args.kind, self.args.connections
        if kind == "heartbeat-demand":
            return [HeartbeatDemander(self, f"hb{i}") for i in range(n)]
        if kind == "tricklers":
            return [Trickler(self, f"trickle{i}") for i in range(n)]
        return []

    # -- phases ----------------------------------------------------------------------------
    async def set_up(self, group: list[Peer], deadline: float) -> None:
        """Connect ``group`` (a few at a time) and wait until each is ready or gone."""
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(peer: Peer) -> None:
            async with gate:
                try:
                    await asyncio.wait_for(peer.connect(), max(0.1, deadline - self.loop.time()))
                except (OSError, TimeoutError) as exc:
                    # The router's listen queue or limits may turn a connection away: that is
                    # counted, not our failure.
                    self.tally.counts[f"connections that failed to connect ({type(exc).__name__})"] += 1
                    peer.closed = True
                    return
                self.peers.append(peer)
                while not (peer.ready or peer.refused or peer.closed) and self.loop.time() < deadline:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one(peer) for peer in group))

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = self.loop.time()
            for peer in self.peers:
                peer.tick(now)

    async def trickle(self) -> None:
        per_step = max(1, round(self.args.trickle_rate))
        interval = per_step / self.args.trickle_rate
        while True:
            await asyncio.sleep(interval)
            for peer in self.peers:
                if isinstance(peer, Trickler):
                    peer.trickle(per_step)

    async def wind_down(self) -> None:
        senders = [p for p in self.peers if isinstance(p, FloodSender)]
        self.tally.counts["connections still open at the end of the run"] = sum(not p.closed for p in self.peers)
        for sender in senders:
            sender.stopped = True
        for peer in self.peers:
            if isinstance(peer, Trickler):
                peer.closing = True
                peer._drop()  # mid-frame: no close frame can follow, only the socket's end
            elif not isinstance(peer, FloodSender):
                peer.close()
        deadline = self.loop.time() + self.args.drain
        while self.loop.time() < deadline and any(s.unsettled and not s.closed and s.link_lost_with is None
                                                  for s in senders):
            await asyncio.sleep(0.05)
        for sender in senders:
            sender.close()
        deadline = self.loop.time() + CLOSE_GRACE
        while self.loop.time() < deadline and not all(p.closed for p in self.peers):
            await asyncio.sleep(0.05)
        for peer in self.peers:
            if not peer.closed:
                self.tally.counts["connections the router did not close in time"] += 1
                peer._drop()

    async def main(self) -> dict[str, Any]:
        a = self.args
        started = self.loop.time()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._on_signal)
        ticker = asyncio.ensure_future(self.ticker())
        trickle = asyncio.ensure_future(self.trickle()) if a.kind == "tricklers" else None
        setup_deadline = started + a.setup_timeout
        consumers, senders, idlers = self.consumers(), self.senders(), self.idlers()
        # Consumers first, so the senders find them (and get credit) when they attach.
        await self.set_up(consumers, setup_deadline)
        await self.set_up(senders + idlers, setup_deadline)
        everyone = consumers + senders + idlers
        ready = sum(1 for p in everyone if p.ready)
        # Only a connection still waiting at the deadline is our failure; one the router
        # refused or closed was answered.
        stuck = sum(1 for p in everyone if not (p.ready or p.refused or p.closed))
        setup_seconds = self.loop.time() - started
        if a.ready_file:
            Path(a.ready_file).touch()
        active_from = self.loop.time()
        if not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), a.seconds)
            except TimeoutError:
                pass
        active = self.loop.time() - active_from
        await self.wind_down()
        ticker.cancel()
        if trickle is not None:
            trickle.cancel()
        return self.summary(everyone, ready, stuck, setup_seconds, active)

    def _on_signal(self) -> None:
        self.stopped_by = "signal"
        self.stop.set()

    def summary(self, everyone: list[Peer], ready: int, stuck: int, setup_seconds: float,
                active: float) -> dict[str, Any]:
        a = self.args
        senders = [p for p in everyone if isinstance(p, FloodSender)]
        roles: dict[str, dict[str, Any]] = {}
        for peer in everyone:
            report = peer.report() if isinstance(peer, (FloodSender, FastConsumer)) else {}
            totals = roles.setdefault(peer.role, {"connections": 0})
            totals["connections"] += 1
            for key, value in report.items():
                if key == "credit_peak":
                    totals[key] = max(totals.get(key, 0), value)
                else:
                    totals[key] = totals.get(key, 0) + value
        lost = sum(s.unsettled for s in senders)
        in_doubt = sum(s.report()["no_outcome_in_doubt"] for s in senders)
        problem = (f"{stuck} of {len(everyone)} connections neither set up nor turned away within "
                   f"{a.setup_timeout:g} s") if stuck else None
        return {
            "kind": a.kind,
            "ok": problem is None,
            "error": problem,
            "stopped": self.stopped_by,
            "address": None if a.kind in ("heartbeat-demand", "tricklers") else self.address,
            "size": a.size if senders else None,
            "window": a.window if senders and not senders[0].presettled else None,
            "presettled": senders[0].presettled if senders else None,
            "setup_seconds": round(setup_seconds, 3),
            "active_seconds": round(active, 3),
            "connections": len(everyone),
            "connections_set_up": ready,
            "roles": roles,
            "counts": dict(self.tally.counts),
            "router_said": dict(self.tally.conditions),
            "lost_without_outcome": lost,
            "lost_in_doubt": in_doubt,
            "lost_on_live_links": lost - in_doubt,
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--url", required=True, help="amqp://HOST:PORT of the router")
    p.add_argument("--seconds", type=float, default=15.0, help="how long to keep at it (default 15)")
    p.add_argument("--senders", type=int, default=2, help="sender connections for the sending kinds (default 2)")
    p.add_argument("--window", type=int, default=100_000,
                   help="unsettled deliveries in flight per sender (default 100000)")
    p.add_argument("--count", type=int, default=2_000_000, help="most messages per sender (default 2000000)")
    p.add_argument("--size", type=int, default=1024, help="message body bytes (default 1024)")
    p.add_argument("--presettled", action="store_true",
                   help="senders send presettled (always so for presettled-flood)")
    p.add_argument("--credit", type=int, default=1000, help="a fast consumer's credit window (default 1000)")
    p.add_argument("--hog-credit", type=int, default=1_000_000,
                   help="credit a slow or closed-window consumer grants once (default 1000000)")
    p.add_argument("--slow-rate", type=float, default=1.0,
                   help="messages a second a slow consumer reads (default 1)")
    p.add_argument("--connections", type=int,
                   help="connections for heartbeat-demand (default 300) and tricklers (default 500)")
    p.add_argument("--trickle-rate", type=float, default=1.0, help="bytes a second per trickler (default 1)")
    p.add_argument("--setup-timeout", type=float, default=30.0, help="bound on connecting everyone (default 30)")
    p.add_argument("--drain", type=float, default=5.0,
                   help="seconds senders wait for outstanding outcomes at the end (default 5)")
    p.add_argument("--ready-file", help="created once every connection is set up")
    args = p.parse_args(argv)
    if args.connections is None:
        args.connections = 300 if args.kind == "heartbeat-demand" else 500
    for name in ("seconds", "slow_rate", "trickle_rate", "setup_timeout"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("senders", "window", "count", "credit", "hog_credit", "connections"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.size < 0 or args.drain < 0:
        p.error("--size and --drain must not be negative")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(Run(args, loop).main())
    finally:
        loop.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    result = run(args)
    result["wall_seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
