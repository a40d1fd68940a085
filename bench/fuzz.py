"""Fuzz campaign against a real ``switchboard router`` process.

    .venv/bin/python bench/fuzz.py [--frames 1000000] [--seconds S] [--jobs 2] [--seed 1]
                                   [--concurrency 48] [--reproducers DIR] [--json]
    .venv/bin/python bench/fuzz.py --seed S --case N      # run one case again, verbosely
    .venv/bin/python bench/fuzz.py --replay FILE.bin      # send a saved byte stream again

The campaign starts ``switchboard router --config fuzz.toml`` (the venv's entry point, a
real process) with timers and limits small enough that a hang shows within seconds:
1 s idle and handshake timeouts, 4 sessions and 16 links per connection, 4 KiB frames,
64 KiB messages.  Well-behaved clients keep two addresses busy the whole time: a consumer
on the anycast address ``fuzz/anycast``, one on the multicast address ``multicast/fuzz``,
and a responder on ``fuzz/checkpoint``.

``--jobs`` worker processes then open fuzzing connections (``--concurrency`` at a time
each).  Every connection is one *case*, drawn from ``--seed`` and its index alone:

1. A valid exchange drives it into a chosen state (``STATES``): after the protocol header;
   during or after SASL; after open; after begin; with a sender link that holds credit;
   with a receiver link holding unsettled deliveries; in the middle of a multi-frame
   transfer; after a detach, an end, a close; with more links than the router allows.
   Everything is pipelined except where the router must answer first (credit,
   deliveries).
2. Rounds of frames follow.  Each frame is generated valid for the state the connection
   is believed to be in (or, now and then, for another state), then mutated: field values
   of the wrong type, boundary and out-of-range numbers, hostile sizes and counts, deep
   nesting, unknown or wrong descriptors, bad channels, handles and delivery ids, broken
   message sections (structure-aware, on the codec's encoding of each field); bit flips,
   truncated or extended bodies, impossible frame headers (blind).  Rounds are then
   reordered, duplicated, thinned, salted with protocol headers and heartbeats, and
   written at random split points.
3. After each round a probe, a ``begin`` on a channel kept for it: the router must answer
   it (its ``begin`` naming our channel) or end the connection within ``--hang-seconds``.
4. The connection ends by a close handshake, an abort, a half-close or silence (which
   the router's idle timeout must end).

Reported: crashes (the router exits, logs a traceback or an internal error, or closes a
connection with ``amqp:internal-error``; target 0), hangs (a connection that neither
answers its probe nor ends within the bound; a close the router does not answer; a
checkpoint, run every ``--checkpoint-seconds``, in which a fresh client fails to complete
a request/response and a multicast through the router within ``--checkpoint-timeout``),
protocol anomalies in what the router sent (undecodable frames, frames after its close),
the histogram of the close, end and detach conditions (and message outcomes) the router
answered with, frames sent and frames/s, and the router's RSS at start and end.

For every crash, hang or anomaly the exact bytes the connection sent are saved in the
``--reproducers`` directory (``KIND-SEED-CASE.bin``, with a ``.json`` that says what the
case was and what the router answered); ``--replay`` sends such a file to a fresh router.

``--frames`` counts mutated frames; the valid frames around them are counted apart.
``frames_answered`` counts the frames of rounds whose probe the router answered: frames it
certainly read.  Frames are made and mutated in ``bench/_fuzz_frames.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from _fuzz_frames import (  # noqa: E402
    ANYCAST,
    HOST,
    MAX_FRAME,
    MAX_LINKS,
    MAX_MESSAGE,
    MAX_SESSIONS,
    MULTICAST,
    PASSWORD,
    PROBE_CHANNEL,
    USER,
    Context,
    Unit,
    _transfer_units,
    g_attach,
    g_close,
    g_detach,
    g_end,
    g_transfer,
    make_round,
)
from switchboard.amqp.codec import decode_value  # noqa: E402
from switchboard.amqp.errors import DecodeError  # noqa: E402
from switchboard.amqp.framing import AMQP_HEADER, EMPTY_FRAME, SASL_HEADER  # noqa: E402
from switchboard.amqp.message import Message  # noqa: E402
from switchboard.amqp.spec import (  # noqa: E402
    Accepted,
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Flow,
    Open,
    Properties,
    Rejected,
    Role,
    SaslInit,
    SaslMechanisms,
    SaslOutcome,
    Transfer,
)
from switchboard.amqp.types import Symbol, UInt, UShort  # noqa: E402
from switchboard.router.credentials import Credentials  # noqa: E402

IDLE_TIMEOUT = 1.0
HANDSHAKE_TIMEOUT = 1.0
CHECKPOINT = "fuzz/checkpoint"
"""Only checkpoints use it: a fuzz receiver there could take their requests."""
SETUP_SECONDS = 15.0
"""Bound on each wait of a valid set-up exchange (credit, deliveries)."""
HEARTBEAT_SECONDS = 0.25
"""While a set-up waits for the router, an empty frame this often keeps it from idling out."""
_FRAME = struct.Struct(">IBBH")

ROUTER_CONFIG = f"""\
[router]
id = "fuzz-router"

[[listeners]]
host = "{HOST}"
port = 0
sasl_mechanisms = ["ANONYMOUS", "PLAIN"]

[[addresses]]
prefix = "multicast/"
distribution = "multicast"

[limits]
max_message_size = {MAX_MESSAGE}
max_connections = 4000
max_connections_per_host = 4000
max_sessions_per_connection = {MAX_SESSIONS}
max_links_per_connection = {MAX_LINKS}
max_frame_size = {MAX_FRAME}
idle_timeout = {IDLE_TIMEOUT}
handshake_timeout = {HANDSHAKE_TIMEOUT}
shutdown_timeout = 2.0

[authentication]
credentials_file = "fuzz.creds"
max_failed_logins = 1000000          # the campaign fails logins on purpose: keep PLAIN reachable

[logging]
level = "warning"
"""

# Lines in the router's log that mean a bug met some input.
TROUBLE = re.compile(r"Traceback|internal error|Exception in callback|Fatal error|Unhandled exception")


# ======================================================================================
# Reading what the router sends
# ======================================================================================
def _condition(error: Any) -> str:
    condition = getattr(error, "condition", None)
    return str(condition) if condition is not None else "(no condition)"


_NUMBERS = re.compile(r"\d+")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|b'[^']*'")


def _reason(kind: str, error: Any) -> str:
    """``kind:condition: description`` with numbers and quoted values blanked, so that
    reasons that differ only in a handle or a byte count fall in one bucket."""
    description = str(getattr(error, "description", None) or "")
    description = _NUMBERS.sub("N", _QUOTED.sub("'…'", description))[:90]
    return f"{kind}:{_condition(error)}: {description}"


class Inbox:
    """Everything a fuzzing connection received from the router, parsed as it arrives.

    Anything the router sends that is not well-formed AMQP, any frame after its close,
    on a channel after its end there or for a handle after its detach, is an anomaly: a
    peer's garbage must never make the router speak garbage.
    """

    SEEN_LIMIT = 64

    def __init__(self) -> None:
        self.buf = bytearray()
        self.received = 0
        self.opened = False
        self.close: Close | None = None
        self.after_close = 0
        self.begins: Counter[int] = Counter()  # our channel -> begins that answer it
        self.handles: dict[str, int] = {}  # link name -> the router's handle
        self.credit: dict[int, int] = {}  # the router's handle -> link credit of its last flow
        self.deliveries: Counter[int] = Counter()  # the router's handle -> deliveries begun
        self.delivery_ids: list[int] = []
        self.transfer_frames = 0
        self.conditions: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.sasl_outcome: int | None = None
        self.anomalies: list[str] = []
        self.seen: list[str] = []
        self._broken = False
        self._ended: set[int] = set()  # the router's channels it sent an end on
        self._detached: set[tuple[int, int]] = set()  # (channel, handle) it sent a detach for

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._broken:
            return
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 8:
            if buf[pos : pos + 4] == b"AMQP":
                self._see(f"header {bytes(buf[pos:pos + 8])!r}")
                pos += 8
                continue
            size, doff, frame_type, channel = _FRAME.unpack_from(buf, pos)
            if size < 8 or doff < 2 or doff * 4 > size:
                self.anomalies.append(f"malformed frame header from the router: size {size}, data offset {doff}")
                self._broken = True
                break
            if len(buf) - pos < size:
                break
            body = bytes(buf[pos + doff * 4 : pos + size])
            pos += size
            if not body:
                continue  # a heartbeat
            if self.close is not None and not self.after_close:
                self.anomalies.append("the router sent a frame after its close")
            if self.close is not None:
                self.after_close += 1
            try:
                performative, _ = decode_value(body, 0)
            except DecodeError as exc:
                self.anomalies.append(f"undecodable frame from the router: {exc}")
                continue
            self._on(performative, channel, frame_type)
        del buf[:pos]

    def _see(self, text: str) -> None:
        if len(self.seen) < self.SEEN_LIMIT:
            self.seen.append(text)

    def _on(self, p: Any, channel: int, frame_type: int) -> None:
        kind = type(p)
        if channel in self._ended and kind is not Begin and frame_type == 0 and kind not in (Open, Close):
            self.anomalies.append(f"the router sent a {kind.__name__.lower()} on channel {channel} after its end there")
        if (kind is Transfer or kind is Flow) and p.handle is not None and (channel, int(p.handle)) in self._detached:
            self.anomalies.append(f"the router sent a {kind.__name__.lower()} for handle {p.handle} after its detach")
        if kind is Transfer:
            self.transfer_frames += 1
            if p.delivery_id is not None:
                self.deliveries[int(p.handle)] += 1
                self.delivery_ids.append(int(p.delivery_id))
            self._see(f"{channel}: transfer handle={p.handle} id={p.delivery_id} more={p.more}")
            return
        if kind is Flow:
            if p.handle is not None:
                self.credit[int(p.handle)] = int(p.link_credit or 0)
            self._see(f"{channel}: flow handle={p.handle} credit={p.link_credit} echo={p.echo}")
            return
        if kind is Disposition:
            state = p.state
            if isinstance(state, Rejected):
                self.outcomes[f"rejected:{_condition(state.error)}"] += 1
            elif state is not None:
                self.outcomes[type(state).__name__.lower()] += 1
            self._see(f"{channel}: disposition {p.first}..{p.last} {type(state).__name__}")
            return
        if kind is Begin:
            self._ended.discard(channel)
            self._detached = {(c, h) for c, h in self._detached if c != channel}
            if p.remote_channel is not None:
                self.begins[int(p.remote_channel)] += 1
            self._see(f"{channel}: begin remote_channel={p.remote_channel}")
        elif kind is Attach:
            self._detached.discard((channel, int(p.handle)))
            self.handles[str(p.name)] = int(p.handle)
            self._see(f"{channel}: attach {p.name!r} handle={p.handle}")
        elif kind is Detach:
            if p.closed:
                self._detached.add((channel, int(p.handle)))
            if p.error is not None:
                self.conditions[f"detach:{_condition(p.error)}"] += 1
                self.reasons[_reason("detach", p.error)] += 1
            self._see(f"{channel}: detach handle={p.handle} {_condition(p.error) if p.error else ''}")
        elif kind is End:
            self._ended.add(channel)
            if p.error is not None:
                self.conditions[f"end:{_condition(p.error)}"] += 1
                self.reasons[_reason("end", p.error)] += 1
            self._see(f"{channel}: end {_condition(p.error) if p.error else ''}")
        elif kind is Close:
            self.close = p
            if p.error is not None:
                self.conditions[f"close:{_condition(p.error)}"] += 1
                self.reasons[_reason("close", p.error)] += 1
            self._see(f"{channel}: close {_condition(p.error) if p.error else ''} {getattr(p.error, 'description', '') or ''}")
        elif kind is Open:
            self.opened = True
            self._see(f"{channel}: open")
        elif kind is SaslOutcome:
            self.sasl_outcome = int(p.code)
            if p.code != 0:
                self.conditions[f"sasl-outcome:{int(p.code)}"] += 1
            self._see(f"sasl-outcome {p.code}")
        elif kind is SaslMechanisms:
            self._see("sasl-mechanisms")
        else:
            self.anomalies.append(f"the router sent a {kind.__name__} on channel {channel} (frame type {frame_type})")

    def internal_errors(self) -> list[str]:
        return [c for c in self.conditions if c.endswith("amqp:internal-error")]


class Peer(asyncio.Protocol):
    """A fuzzing connection's socket: keeps what it sent, parses what it receives."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.sent = bytearray()
        self.waits: list[int] = []  # offsets in ``sent`` where the connection waited for the router
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[str] = self.loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._predicate: Callable[[Inbox], bool] = lambda inbox: False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.inbox.feed(data)
        self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result("eof" if exc is None else "reset")
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (self.done.done() or self._predicate(self.inbox)):
            waiter.set_result(None)

    @property
    def ended(self) -> bool:
        return self.done.done()

    def write(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing() or not data:
            return False
        transport.write(data)
        self.sent += data
        return True

    async def wait(self, predicate: Callable[[Inbox], bool], timeout: float, heartbeat: bool = False) -> str:
        """Wait until ``predicate(inbox)`` ("met"), the connection ends ("ended") or the
        deadline ("timeout").  With ``heartbeat``, send empty frames meanwhile."""
        self.waits.append(len(self.sent))
        self._predicate = predicate
        deadline = self.loop.time() + timeout
        try:
            while True:
                if predicate(self.inbox):
                    return "met"
                if self.ended:
                    return "ended"
                remaining = deadline - self.loop.time()
                if remaining <= 0:
                    # A starved process may see the deadline in the same loop turn as the
                    # answer it waits for: one more short look before judging.
                    await asyncio.sleep(0.5)
                    return "met" if predicate(self.inbox) else "ended" if self.ended else "timeout"
                self._waiter = self.loop.create_future()
                await asyncio.wait({self._waiter}, timeout=min(remaining, HEARTBEAT_SECONDS) if heartbeat else remaining)
                if heartbeat and not self._waiter.done():
                    self.write(EMPTY_FRAME)
        finally:
            self._waiter = None


# ======================================================================================
# Cases: a valid set-up, rounds of mutated frames with probes, an ending
# ======================================================================================
STATES = {
    "header": 5, "sasl": 5, "after-sasl": 5, "open": 8, "begin": 12, "sender": 18, "receiver": 14,
    "mid-transfer": 10, "detached": 8, "ended": 6, "closed": 3, "links-full": 4,
}
ENDINGS = {"close": 4, "abort": 3, "half-close": 1, "silence": 1}


@dataclass
class Step:
    units: list[Unit]
    wait: Callable[[Inbox], bool] | None = None
    what: str = ""


def _credited(name: str) -> Callable[[Inbox], bool]:
    return lambda inbox: inbox.credit.get(inbox.handles.get(name, -1), 0) > 0


def _delivered(name: str, count: int) -> Callable[[Inbox], bool]:
    return lambda inbox: inbox.deliveries.get(inbox.handles.get(name, -1), 0) >= count


def _standard_open(ctx: Context) -> Unit:
    ctx.phase = "open"
    return Unit.of(Open(container_id=f"fuzz-{ctx.name}", max_frame_size=UInt(65536), channel_max=UShort(255)))


def _standard_begin(ctx: Context) -> Unit:
    ctx.sessions.add(0)
    ctx.phase = "session"
    return Unit.of(Begin(next_outgoing_id=UInt(0), incoming_window=UInt(1000), outgoing_window=UInt(1000)), 0)


def set_up(state: str, ctx: Context) -> list[Step]:
    """The valid exchange that brings a connection into ``state``."""
    rng = ctx.rng
    if state == "sasl":
        ctx.phase = "sasl"
        return [Step([Unit.raw_bytes("header", SASL_HEADER)])]
    units: list[Unit] = []
    if state == "after-sasl" or rng.random() < 0.4:
        plain = rng.random() < 0.25
        response = b"\x00" + USER.encode() + b"\x00" + PASSWORD.encode() if plain else b"fuzz"
        units += [Unit.raw_bytes("header", SASL_HEADER),
                  Unit.of(SaslInit(mechanism=Symbol("PLAIN" if plain else "ANONYMOUS"), initial_response=response), 0, frame_type=1)]
    units.append(Unit.raw_bytes("header", AMQP_HEADER))
    ctx.phase = "pre-open"
    if state in ("header", "after-sasl"):
        return [Step(units)]
    units.append(_standard_open(ctx))
    if state == "open":
        return [Step(units)]
    if state == "closed":
        if rng.random() < 0.5:
            units.append(_standard_begin(ctx))
        return [Step(units + g_close(ctx))]
    units.append(_standard_begin(ctx))
    if state == "begin":
        return [Step(units)]
    if state == "links-full":
        # One link past the router's limit: the last attach (and any later one) is refused.
        for handle in range(MAX_LINKS + 1):
            units += g_attach(ctx, handle=handle, plain=True, credit=rng.choice((0, 5)))
        return [Step(units)]
    if state == "ended":
        if rng.random() < 0.5:
            units += g_attach(ctx, handle=0, plain=True)
        return [Step(units + g_end(ctx))]
    receiving = state == "receiver" or (state == "detached" and rng.random() < 0.5)
    if not receiving:
        units += g_attach(ctx, Role.SENDER, rng.choice((ANYCAST, MULTICAST, None)), handle=0, plain=True)
        steps = [Step(units, _credited(ctx.links[0].name), "credit for a sender")]
        if state == "mid-transfer":
            parts = g_transfer(ctx, 0, rng.choice((7000, 20000, MAX_MESSAGE + 5000)), to=ANYCAST if ctx.links[0].address is None else None)
            ctx.partial = (0, ctx.next_delivery - 1)
            steps.append(Step(parts[: rng.randint(1, len(parts) - 1)]))
        elif state == "detached":
            steps.append(Step(g_detach(ctx, 0)))
        return steps
    # A receiver holding unsettled deliveries: it consumes its own address, which a
    # sender of the same connection feeds.
    units += g_attach(ctx, Role.RECEIVER, ctx.own, handle=0, credit=20, plain=True)
    units += g_attach(ctx, Role.SENDER, ctx.own, handle=1, plain=True)
    steps = [Step(units, _credited(ctx.links[1].name), "credit for a sender")]
    count = rng.randint(1, 5)
    transfers: list[Unit] = []
    for _ in range(count):
        delivery_id = ctx.next_delivery
        ctx.next_delivery += 1
        ctx.links[1].sent += 1
        transfers += _transfer_units(ctx, 1, delivery_id, ctx.message(None, rng.choice((10, 100, 5000))), False)
    steps.append(Step(transfers, _delivered(ctx.links[0].name, count), "deliveries to a receiver"))
    if state == "detached":
        steps.append(Step(g_detach(ctx, rng.choice((0, 1)))))
    return steps


@dataclass
class CaseResult:
    seed: int
    index: int
    state: str
    ending: str
    frames: int = 0
    mutated: int = 0
    setup_frames: int = 0
    probes: int = 0
    probes_answered: int = 0
    frames_answered: int = 0
    rounds: list[str] = field(default_factory=list)
    mutations: Counter[str] = field(default_factory=Counter)
    outcome: str = ""
    seconds: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)

    def finding(self, kind: str, detail: str) -> None:
        self.findings.append({"kind": kind, "detail": detail})


PROBE_BEGIN = Unit.of(Begin(next_outgoing_id=UInt(0), incoming_window=UInt(100), outgoing_window=UInt(100)), PROBE_CHANNEL).render()
PROBE_END = Unit.of(End(), PROBE_CHANNEL).render()
CLOSE_FRAME = Unit.of(Close()).render()


async def write_split(peer: Peer, data: bytes, rng: random.Random) -> None:
    """Write ``data`` whole, or cut at random points (so the router's reads split frames)."""
    roll = rng.random()
    if roll < 0.65 or len(data) < 2:
        peer.write(data)
        return
    if roll < 0.9:
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    else:
        step = max(rng.randint(1, 16), len(data) // 200)
        cuts = list(range(step, len(data), step))
    delay = 0.0
    if rng.random() < 0.05:  # a few pieces, slowly (but well inside the idle timeout)
        delay = rng.choice((0.005, 0.02, 0.1))
        cuts = cuts[:: max(1, len(cuts) // 8)]
    start = 0
    for cut in [*cuts, len(data)]:
        if not peer.write(data[start:cut]):
            return
        start = cut
        await asyncio.sleep(delay)


async def run_case(port: int, seed: int, index: int, hang_seconds: float) -> tuple[CaseResult, Peer]:
    """One fuzzing connection, from its set-up to its end."""
    rng = random.Random(f"{seed}:{index}")
    state = rng.choices(list(STATES), list(STATES.values()))[0]
    ending = rng.choices(list(ENDINGS), list(ENDINGS.values()))[0]
    rounds = rng.choice((1, 1, 2, 3, 4, 6, 10))
    ctx = Context(rng, f"{seed}-{index}")
    steps = set_up(state, ctx)
    result = CaseResult(seed, index, state, ending)
    loop = asyncio.get_running_loop()
    started = loop.time()
    transport, peer = await loop.create_connection(Peer, HOST, port)
    inbox = peer.inbox
    try:
        for step in steps:
            peer.write(b"".join(unit.render() for unit in step.units))
            result.setup_frames += len(step.units)
            if step.wait is not None:
                waited = await peer.wait(step.wait, SETUP_SECONDS, heartbeat=True)
                if waited != "met":
                    why = f"closed ({', '.join(inbox.conditions) or 'no condition'})" if waited == "ended" else "no answer"
                    result.finding("setup", f"valid set-up for {state}: {step.what}: {why}")
                    break
        probes = 0
        for number in range(rounds):
            if peer.ended:
                break
            ctx.received_ids = inbox.delivery_ids[-32:]
            ctx.received_frames = inbox.transfer_frames
            units, stream_ops = make_round(ctx)
            data = b"".join(unit.render() for unit in units)
            if probes:
                data = PROBE_END + data  # the previous probe's session makes room for the next
            await write_split(peer, data, rng)
            result.frames += len(units)
            for unit in units:
                if unit.mutations:
                    result.mutated += 1
                    result.mutations.update(unit.mutations)
            result.mutations.update(stream_ops)
            result.rounds.append(" ".join(f"{u.kind}[{','.join(u.mutations)}]" if u.mutations else u.kind for u in units)
                                 + (f" | {','.join(stream_ops)}" if stream_ops else ""))
            if number == rounds - 1 and ending == "silence":
                break
            probes += 1
            result.probes += 1
            if not peer.write(PROBE_BEGIN):
                break
            waited = await peer.wait(lambda box, n=probes: box.begins[PROBE_CHANNEL] >= n, hang_seconds)
            if waited == "timeout":
                result.finding("hang", f"no answer to probe {probes} (a begin on channel {PROBE_CHANNEL}) "
                                       f"within {hang_seconds:g} s, connection still open")
                result.outcome = "hang"
                return result, peer
            if waited == "met":
                result.probes_answered += 1
                result.frames_answered += len(units)
        if not peer.ended:
            if ending == "abort":
                transport.abort()
                result.outcome = "aborted by the fuzzer"
            else:
                if ending == "close":
                    peer.write(CLOSE_FRAME)
                elif ending == "half-close" and transport.can_write_eof():
                    transport.write_eof()
                waited = await peer.wait(lambda box: False, hang_seconds)
                if waited == "timeout":
                    result.finding("hang", f"the router did not end the connection within {hang_seconds:g} s "
                                           f"of our {ending}")
                    result.outcome = "hang"
                    return result, peer
        if not result.outcome:
            how = peer.done.result() if peer.ended else "open"
            result.outcome = f"{how}, {'after a close' if inbox.close is not None else 'no close frame'}"
        return result, peer
    finally:
        result.seconds = loop.time() - started
        if not transport.is_closing():
            transport.abort()
        for anomaly in dict.fromkeys(inbox.anomalies):
            result.finding("anomaly", anomaly)
        for condition in inbox.internal_errors():
            description = getattr(getattr(inbox.close, "error", None), "description", None)
            result.finding("crash", f"the router answered with {condition}" + (f": {description}" if description else ""))


# ======================================================================================
# Workers: many cases at once, results as JSON lines on stdout
# ======================================================================================
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)


class Stats:
    """Counts and histograms that add up across cases and workers."""

    HISTOGRAMS = ("states", "mutations", "endings", "conditions", "reasons", "outcomes", "findings", "durations")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.histograms: dict[str, Counter[str]] = {name: Counter() for name in self.HISTOGRAMS}

    def add(self, result: CaseResult, peer: Peer) -> None:
        counts = self.counts
        counts["cases"] += 1
        counts["frames"] += result.frames
        counts["mutated_frames"] += result.mutated
        counts["setup_frames"] += result.setup_frames
        counts["probes"] += result.probes
        counts["probes_answered"] += result.probes_answered
        counts["frames_answered"] += result.frames_answered
        counts["bytes_sent"] += len(peer.sent)
        counts["bytes_received"] += peer.inbox.received
        h = self.histograms
        h["states"][result.state] += 1
        h["mutations"].update(result.mutations)
        h["endings"][result.outcome] += 1
        h["conditions"].update(peer.inbox.conditions)
        h["reasons"].update(peer.inbox.reasons)
        h["outcomes"].update(peer.inbox.outcomes)
        h["findings"].update(finding["kind"] for finding in result.findings)
        bucket = next((f"<{limit:g} s" for limit in DURATION_BUCKETS if result.seconds < limit), f">={DURATION_BUCKETS[-1]:g} s")
        h["durations"][bucket] += 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        for name, histogram in self.histograms.items():
            out[name] = dict(histogram.most_common())
        return out

    def merge(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if key in self.histograms:
                self.histograms[key].update(value)
            else:
                self.counts[key] += value


def save_reproducer(directory: Path, kind: str, result: CaseResult, peer: Peer | None, detail: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{kind}-{result.seed}-{result.index}"
    if peer is not None:
        stem.with_suffix(".bin").write_bytes(bytes(peer.sent))
    description = {
        "kind": kind,
        "detail": detail,
        "seed": result.seed,
        "case": result.index,
        "state": result.state,
        "ending": result.ending,
        "outcome": result.outcome,
        "rounds": result.rounds,
        "router_said": peer.inbox.seen if peer is not None else [],
        "waits": peer.waits if peer is not None else [],
        "again": f"bench/fuzz.py --seed {result.seed} --case {result.index}",
        "replay": f"bench/fuzz.py --replay {stem.with_suffix('.bin')}",
    }
    stem.with_suffix(".json").write_text(json.dumps(description, indent=2) + "\n")
    return stem.with_suffix(".bin")


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def worker(args: argparse.Namespace) -> None:
    """Run cases ``args.worker``, ``args.worker + jobs``, ... until the budget is spent."""
    stats = Stats()
    deadline = time.monotonic() + args.seconds if args.seconds else float("inf")
    semaphore = asyncio.Semaphore(args.concurrency)
    in_flight: set[asyncio.Task[None]] = set()
    router_gone = asyncio.Event()
    reproducers = Path(args.reproducers)

    async def one(index: int) -> None:
        try:
            try:
                result, peer = await run_case(args.port, args.seed, index, args.hang_seconds)
            except OSError as exc:  # nothing listens any more: the router is gone
                if not router_gone.is_set():
                    router_gone.set()
                    emit({"finding": {"kind": "crash", "detail": f"cannot connect to the router: {exc}", "case": index}})
                return
            stats.add(result, peer)
            for finding in result.findings:
                path = save_reproducer(reproducers, finding["kind"], result, peer, finding["detail"])
                emit({"finding": {**finding, "case": index, "state": result.state, "reproducer": str(path)}})
        finally:
            semaphore.release()

    async def progress() -> None:
        while True:
            await asyncio.sleep(2.0)
            emit({"progress": {"frames": stats.counts["mutated_frames"], "cases": stats.counts["cases"]}})

    ticker = asyncio.create_task(progress())
    index = args.worker
    while not router_gone.is_set() and stats.counts["mutated_frames"] < args.frames and time.monotonic() < deadline:
        await semaphore.acquire()
        if router_gone.is_set() or stats.counts["mutated_frames"] >= args.frames:
            semaphore.release()
            break
        task = asyncio.create_task(one(index))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        index += args.jobs
    if in_flight:
        await asyncio.gather(*in_flight)
    ticker.cancel()
    own = psutil.Process().cpu_times()
    stats.counts["worker_cpu_seconds"] = round(own.user + own.system, 1)
    emit({"result": stats.as_dict()})


# ======================================================================================
# The router under test, and the well-behaved clients around it
# ======================================================================================
def switchboard_command() -> list[str]:
    """The ``switchboard`` entry point next to this interpreter (the venv's)."""
    for candidate in (Path(sys.executable).with_name("switchboard"), REPO_DIR / ".venv/bin/switchboard"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-c", "from switchboard.cli.main import main; main()"]


_LISTENING = re.compile(r"listening on amqp://([^\s]+):(\d+)")


class RouterUnderTest:
    """``switchboard router`` with the fuzzing configuration, its log in a file."""

    def __init__(self, workdir: Path, start_timeout: float = 30.0) -> None:
        self.config_path = workdir / "fuzz.toml"
        self.config_path.write_text(ROUTER_CONFIG, encoding="utf-8")
        credentials = Credentials()
        # A cheap hash: the campaign logs in thousands of times; the cost is not under test.
        credentials.set_password(USER, PASSWORD, n=2**4)
        credentials.save(workdir / "fuzz.creds")
        self.log_path = workdir / "router.log"
        self.command = [*switchboard_command(), "router", "--config", str(self.config_path)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log, cwd=workdir)
        self.port = 0
        ready = threading.Event()

        def read_stdout() -> None:  # keep reading so the router never blocks on a full pipe
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                match = _LISTENING.search(line.decode("utf-8", "replace"))
                if match and not self.port:
                    self.port = int(match.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=read_stdout, name="router-stdout", daemon=True).start()
        ready.wait(start_timeout)
        if not self.port:
            self.stop()
            raise RuntimeError(f"the router did not say where it listens within {start_timeout:g} s:\n{self.log()[-3000:]}")
        self.process = psutil.Process(self.proc.pid)
        self.exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"amqp://{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        try:
            times = self.process.cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system

    def rss(self) -> int | None:
        try:
            return self.process.memory_info().rss
        except psutil.Error:
            return None

    def peak_rss(self) -> int | None:
        """``VmHWM``: the most resident memory the process ever had."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def trouble(self) -> list[str]:
        return [line for line in self.log().splitlines() if TROUBLE.search(line)]

    def incidents(self) -> int:
        """Bugs the log shows: its error lines (a traceback follows one), or else its
        tracebacks."""
        lines = self.trouble()
        headed = [line for line in lines if not line.startswith("Traceback")]
        return len(headed) or len(lines)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.exit_code = None
                self._log.close()
                return None
        self.exit_code = self.proc.returncode
        self._log.close()
        return self.exit_code


class Services:
    """Well-behaved clients: consumers on the anycast and the multicast address, and a
    responder on the checkpoint address that answers each request at its reply-to."""

    def __init__(self) -> None:
        self.clients: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.received: Counter[str] = Counter()
        self.failures: list[str] = []
        self._markers: dict[bytes, asyncio.Future[None]] = {}

    async def start(self, url: str) -> None:
        from switchboard.client.connection import Client

        consumer = await Client.connect(url, container_id="fuzz-services", timeout=30)
        listener = await Client.connect(url, container_id="fuzz-multicast", timeout=30)
        self.clients += [consumer, listener]
        anycast = await consumer.receiver(ANYCAST, credit=200)
        requests = await consumer.receiver(CHECKPOINT, credit=20)
        self.replies = await consumer.sender(None)
        multicast = await listener.receiver(MULTICAST, credit=200)
        self.tasks = [
            asyncio.create_task(self._consume(anycast, ANYCAST)),
            asyncio.create_task(self._consume(multicast, MULTICAST)),
            asyncio.create_task(self._respond(requests)),
        ]

    async def _consume(self, receiver: Any, address: str) -> None:
        async for item in receiver:
            self.received[address] += 1
            for marker in [m for m in self._markers if item.payload.endswith(m)]:
                waiter = self._markers.pop(marker)
                if not waiter.done():
                    waiter.set_result(None)
            item.accept()
        self.failures.append(f"the consumer of {address} lost its link: {receiver.error}")

    async def _respond(self, receiver: Any) -> None:
        async for item in receiver:
            self.received[CHECKPOINT] += 1
            try:
                request = item.message()
                reply = Message(request.body, properties=Properties(to=request.reply_to, correlation_id=request.properties.message_id))
                future = await self.replies.send(reply, wait=False)
                if future is not None:
                    future.add_done_callback(lambda f: f.exception())  # outcome not needed
                item.accept()
            except Exception:  # noqa: BLE001 - a mutated message that reached us: refuse it
                self.received["undecodable requests"] += 1
                item.reject(description="cannot answer")
        self.failures.append(f"the responder lost its link: {receiver.error}")

    def expect_multicast(self, marker: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers[marker] = future
        return future

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for client in self.clients:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing after a crash may fail; nothing to do
                pass


async def checkpoint(url: str, services: Services, number: int, timeout: float) -> float:
    """A fresh client completes a request/response and a multicast through the router."""
    from switchboard.client.connection import Client

    loop = asyncio.get_running_loop()
    started = loop.time()
    body = f"checkpoint {number} {uuid.uuid4().hex}".encode()
    async with asyncio.timeout(timeout):
        client = await Client.connect(url, container_id=f"fuzz-checkpoint-{number}", timeout=timeout)
        try:
            replies = await client.receiver(None, dynamic=True, credit=5)
            requests = await client.sender(CHECKPOINT)
            outcome = await requests.send(Message(body, properties=Properties(message_id=f"cp-{number}", reply_to=replies.address)))
            if not isinstance(outcome, Accepted):
                raise AssertionError(f"the request was not accepted: {outcome!r}")
            reply = await replies.receive()
            if reply.payload[-len(body):] != body or reply.message().body != body:
                raise AssertionError(f"a wrong reply: {reply.payload[:100]!r}")
            reply.accept()
            seen = services.expect_multicast(body)
            await (await client.sender(MULTICAST)).send(Message(body))
            await seen
        finally:
            await client.close()
    return loop.time() - started


# ======================================================================================
# The campaign
# ======================================================================================
def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


async def campaign(args: argparse.Namespace, router: RouterUnderTest, reproducers: Path) -> dict[str, Any]:
    services = Services()
    await services.start(router.url)
    rss_start = router.rss()
    stats = Stats()
    findings: list[dict[str, Any]] = []
    checkpoints: list[float] = []
    checkpoint_failures: list[str] = []
    progress: dict[int, int] = {}
    started = time.monotonic()
    frames_per_worker = -(-args.frames // args.jobs)

    async def run_worker(number: int) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(number), "--port", str(router.port),
                   "--seed", str(args.seed), "--jobs", str(args.jobs), "--frames", str(frames_per_worker),
                   "--concurrency", str(args.concurrency), "--hang-seconds", str(args.hang_seconds),
                   "--reproducers", str(reproducers)]
        if args.seconds:
            command += ["--seconds", str(args.seconds)]
        proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, limit=1 << 24)
        assert proc.stdout is not None
        result_seen = False
        async for line in proc.stdout:
            message = json.loads(line)
            if "progress" in message:
                progress[number] = message["progress"]["frames"]
            elif "finding" in message:
                findings.append(message["finding"])
                _say(f"finding: {message['finding']}")
            elif "result" in message:
                stats.merge(message["result"])
                result_seen = True
        code = await proc.wait()
        if code != 0 or not result_seen:
            findings.append({"kind": "fuzzer", "detail": f"worker {number} exited with code {code} without its result"})

    workers = asyncio.gather(*(run_worker(n) for n in range(args.jobs)))
    number = 0
    while True:
        done, _ = await asyncio.wait({workers}, timeout=args.checkpoint_seconds)
        if not router.alive():
            break
        number += 1
        try:
            checkpoints.append(await checkpoint(router.url, services, number, args.checkpoint_timeout))
        except Exception as exc:  # noqa: BLE001 - every way a checkpoint fails is a finding
            checkpoint_failures.append(f"checkpoint {number} after {time.monotonic() - started:.0f} s: {exc!r}")
            _say(f"checkpoint {number} failed: {exc!r}")
        frames = sum(progress.values())
        elapsed = time.monotonic() - started
        _say(f"{elapsed:6.0f} s  {frames:>9,} mutated frames  {frames / max(elapsed, 1e-9):>7,.0f}/s  "
                   f"rss {_mib(router.rss())} MiB  findings {len(findings)}")
        if done:
            break
    await workers
    elapsed = time.monotonic() - started
    healthy = router.alive()
    final_error = None
    if healthy:
        try:
            checkpoints.append(await checkpoint(router.url, services, number + 1, args.checkpoint_timeout))
        except Exception as exc:  # noqa: BLE001
            final_error = repr(exc)
            healthy = False
    rss_end = router.rss()
    peak = router.peak_rss()
    router_cpu = router.cpu_seconds()
    await services.stop()
    died = not router.alive()
    return {
        "stats": stats,
        "findings": findings,
        "elapsed": elapsed,
        "checkpoints": checkpoints,
        "checkpoint_failures": checkpoint_failures,
        "final_error": final_error,
        "healthy": healthy and not services.failures,
        "service_failures": services.failures,
        "services_received": dict(services.received),
        "router_died": died,
        "rss_start": rss_start,
        "rss_end": rss_end,
        "peak_rss": peak,
        "router_cpu": router_cpu,
    }


def build_report(args: argparse.Namespace, router: RouterUnderTest, run: dict[str, Any], exit_code: int | None,
                 reproducers: Path) -> dict[str, Any]:
    stats: Stats = run["stats"]
    counts = stats.counts
    data = stats.as_dict()
    findings = run["findings"]
    trouble = router.trouble()
    crashes = [f for f in findings if f["kind"] == "crash"]
    # The router's log and its answers on the wire are two views of the same incidents.
    crash_count = max(len(crashes), router.incidents()) + (1 if run["router_died"] else 0)
    hangs = [f for f in findings if f["kind"] == "hang"]
    checkpoints = sorted(run["checkpoints"])
    elapsed = run["elapsed"]
    return {
        "seed": args.seed,
        "frames": counts["frames"],
        "frames_target": args.frames,
        "elapsed_seconds": round(elapsed, 1),
        "frames_per_second": round(counts["frames"] / elapsed) if elapsed else 0,
        "mutated_frames": counts["mutated_frames"],
        "mutated_frames_per_second": round(counts["mutated_frames"] / elapsed) if elapsed else 0,
        "frames_answered": counts["frames_answered"],
        "setup_frames": counts["setup_frames"],
        "connections": counts["cases"],
        "probes": counts["probes"],
        "probes_answered": counts["probes_answered"],
        "bytes_sent": counts["bytes_sent"],
        "bytes_received": counts["bytes_received"],
        "worker_cpu_seconds": round(counts["worker_cpu_seconds"], 1),
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "crashes": crash_count,
        "crash_details": [f["detail"] for f in crashes][:20]
        + trouble[:20] + (["the router process exited during the campaign"] if run["router_died"] else []),
        "hangs": len(hangs) + len(run["checkpoint_failures"]),
        "hang_details": [f"case {f.get('case')} ({f.get('state')}): {f['detail']}" for f in hangs][:20] + run["checkpoint_failures"][:20],
        "anomalies": [f"case {f.get('case')}: {f['detail']}" for f in findings if f["kind"] == "anomaly"][:50],
        "setup_failures": [f"case {f.get('case')}: {f['detail']}" for f in findings if f["kind"] == "setup"][:50],
        "fuzzer_failures": [f["detail"] for f in findings if f["kind"] == "fuzzer"],
        "conditions": data["conditions"],
        "reasons": data["reasons"],
        "outcomes": data["outcomes"],
        "endings": data["endings"],
        "states": data["states"],
        "mutations": data["mutations"],
        "durations": data["durations"],
        "checkpoints": {
            "count": len(checkpoints),
            "failures": len(run["checkpoint_failures"]),
            "median_seconds": round(checkpoints[len(checkpoints) // 2], 3) if checkpoints else None,
            "max_seconds": round(checkpoints[-1], 3) if checkpoints else None,
        },
        "healthy_at_end": run["healthy"] and not run["router_died"],
        "final_checkpoint_error": run["final_error"],
        "service_failures": run["service_failures"],
        "services_received": run["services_received"],
        "router": {
            "command": " ".join(router.command),
            "rss_start_mib": _mib(run["rss_start"]),
            "rss_end_mib": _mib(run["rss_end"]),
            "peak_rss_mib": _mib(run["peak_rss"]),
            "cpu_seconds": None if run["router_cpu"] is None else round(run["router_cpu"], 1),
            "exit_code": exit_code,
        },
        "reproducers": str(reproducers),
    }


def print_report(report: dict[str, Any]) -> None:
    r = report
    print(f"seed {r['seed']}: {r['mutated_frames']:,} mutated frames among {r['frames']:,} ({r['frames_answered']:,} answered by a probe) "
          f"in {r['connections']:,} connections, {r['elapsed_seconds']} s: {r['mutated_frames_per_second']:,} mutated frames/s, "
          f"{r['frames_per_second']:,} frames/s")
    print(f"crashes {r['crashes']}  hangs {r['hangs']}  anomalies {len(r['anomalies'])}  set-up failures {len(r['setup_failures'])}  "
          f"healthy at the end: {r['healthy_at_end']}")
    for key in ("crash_details", "hang_details", "anomalies", "setup_failures", "fuzzer_failures", "service_failures"):
        for line in r[key][:10]:
            print(f"  {key}: {line}")
    cp = r["checkpoints"]
    print(f"checkpoints: {cp['count']} ({cp['failures']} failed), median {cp['median_seconds']} s, max {cp['max_seconds']} s")
    router = r["router"]
    print(f"router RSS {router['rss_start_mib']} MiB at start, {router['rss_end_mib']} MiB at the end, peak {router['peak_rss_mib']} MiB; "
          f"exit code {router['exit_code']}; router CPU {router['cpu_seconds']} s, fuzzers' CPU {r['worker_cpu_seconds']} s")
    for title, key in (("conditions the router answered with", "conditions"), ("why (descriptions)", "reasons"),
                       ("message outcomes", "outcomes"),
                       ("connection endings", "endings"), ("connection lifetimes", "durations"), ("states", "states"),
                       ("mutations", "mutations")):
        print(f"{title}:")
        for name, count in list(r[key].items())[:40]:
            print(f"  {count:>9,}  {name}")
    print(f"reproducers: {r['reproducers']}")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ======================================================================================
# One case again, or a saved byte stream
# ======================================================================================
async def _quiet(peer: Peer, quiet: float = 0.1, limit: float = 3.0) -> None:
    """Wait until the router has sent nothing for ``quiet`` seconds (at most ``limit``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline and not peer.ended:
        before = peer.inbox.received
        await asyncio.sleep(quiet)
        if peer.inbox.received == before:
            return


async def run_one(args: argparse.Namespace, router: RouterUnderTest, reproducers: Path) -> int:
    services = Services()
    await services.start(router.url)
    try:
        if args.replay:
            data = Path(args.replay).read_bytes()
            description = Path(args.replay).with_suffix(".json")
            waits = json.loads(description.read_text())["waits"] if description.is_file() else []
            loop = asyncio.get_running_loop()
            transport, peer = await loop.create_connection(Peer, HOST, router.port)
            start = 0
            for offset in [*waits, len(data)]:
                # Where the case waited for the router, wait until it has said its piece.
                peer.write(data[start:offset])
                start = offset
                await _quiet(peer)
            waited = await peer.wait(lambda box: False, args.hang_seconds)
            transport.abort()
            print(f"sent {len(data)} bytes; the connection {'is still open' if waited == 'timeout' else 'ended: ' + peer.done.result()}")
            findings = [f"anomaly: {a}" for a in peer.inbox.anomalies]
        else:
            result, peer = await run_case(router.port, args.seed, args.case, args.hang_seconds)
            print(f"case {args.case} of seed {args.seed}: state {result.state}, ending {result.ending}: {result.outcome}")
            for number, text in enumerate(result.rounds, 1):
                print(f"  round {number}: {text}")
            findings = [f"{f['kind']}: {f['detail']}" for f in result.findings]
            for finding in result.findings:
                print(f"reproducer: {save_reproducer(reproducers, finding['kind'], result, peer, finding['detail'])}")
        print("the router said:")
        for line in peer.inbox.seen:
            print(f"  {line}")
        checkpoint_ok = True
        try:
            await checkpoint(router.url, services, 1, args.checkpoint_timeout)
        except Exception as exc:  # noqa: BLE001
            checkpoint_ok = False
            findings.append(f"checkpoint failed: {exc!r}")
    finally:
        await services.stop()
    findings += [f"router log: {line}" for line in router.trouble()]
    for line in findings:
        print(line)
    return 1 if findings or not checkpoint_ok else 0


# ======================================================================================
# Command line
# ======================================================================================
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000, help="mutated frames to send in all (default 10^6)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop starting connections after this long (0: no limit)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=48, help="connections at once per worker (default 48)")
    parser.add_argument("--seed", type=int, default=1, help="the campaign's seed (default 1)")
    parser.add_argument("--hang-seconds", type=float, default=20.0,
                        help="a connection that neither answers a probe nor ends this long is hung (default 20)")
    parser.add_argument("--checkpoint-seconds", type=float, default=5.0, help="a known-good round trip this often (default 5)")
    parser.add_argument("--checkpoint-timeout", type=float, default=20.0, help="bound on each checkpoint (default 20)")
    parser.add_argument("--reproducers", default=str(BENCH_DIR / ".fuzz-reproducers"),
                        help="where byte streams of crashes, hangs and anomalies go (default bench/.fuzz-reproducers)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--case", type=int, help="run only this case of --seed, and show it")
    parser.add_argument("--replay", help="send this saved byte stream to a fresh router, and show what it answers")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from switchboard.io.loop import run

    if args.worker is not None:
        run(lambda: worker(args))
        return 0
    reproducers = Path(args.reproducers)
    with tempfile.TemporaryDirectory(prefix="switchboard-fuzz-") as workdir:
        router = RouterUnderTest(Path(workdir))
        try:
            if args.case is not None or args.replay:
                code = run(lambda: run_one(args, router, reproducers))
                exit_code = router.stop()
                return code or (exit_code != 0)
            outcome = run(lambda: campaign(args, router, reproducers))
        except BaseException:
            router.stop()
            raise
        exit_code = router.stop()
        report = build_report(args, router, outcome, exit_code, reproducers)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    ok = report["crashes"] == 0 and report["hangs"] == 0 and report["healthy_at_end"] and exit_code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
