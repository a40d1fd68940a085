"""Garbage at the listener: thousands of mutated client byte streams, and the server lives.

::

    capture:   our Client, Proton ──▶ RecordingProxy ──▶ ┌─────────────────────────┐
                                      (client bytes)     │ amqp_broker.py          │
    fuzz:      raw TCP, mutated bytes ─────────────────▶ │ in a SUBPROCESS         │
    check:     our Client (send + receive) ────────────▶ │ idle 0.5 s, open 1 s    │
                                                         └─────────────────────────┘

Valid client streams are captured from real exchanges (SASL ANONYMOUS and PLAIN, our
client and Proton's, a message split over several frames, a dynamic receiver).  Each
fuzz connection sends one stream mutated by a few of: bit flips, truncation, duplicated
or inserted bytes, interesting byte values, frames dropped, duplicated or swapped,
impossible or oversized frame sizes, or plain random garbage; then it only reads.

Every connection must be closed by the server within a bound: at once for a violation,
at the idle timeout (0.5 s) for a stream that stops once frames flow, at the handshake
timeout (1 s) for one that stops before its open.  Where the header exchange succeeded
(the server sent its protocol header and open) and the connection ended cleanly, the
server's last word must be a close performative, and never ``amqp:internal-error`` (the
engine's name for its own exceptions).  A connection the server closes while our bytes
are still unread ends with a TCP reset, which may discard its close frame: those are
counted, not judged.  At the end the server process is
alive, serves a good client, logged no traceback, and its memory stayed bounded.

Mutations are drawn from a seeded generator: ``FUZZ_SEED=n`` replays a run.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import psutil
import pytest

from interop_support import (
    AMQP_BROKER,
    AMQP_HEADER,
    SASL_HEADER,
    arun,
    header_exchange_succeeded,
    performatives,
    proton,
    run_process_async,
    start_server,
)
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Close
from switchboard.client.connection import Client

SEED = int(os.environ.get("FUZZ_SEED", "1969"))
CONNECTIONS = 3000
CONCURRENCY = 150
TIME_BUDGET_SECONDS = 45.0
CLOSE_BOUND_SECONDS = 6.0
"""The server's longest timer here is the 1 s handshake timeout; the rest is slack for a
loaded two-core machine."""
LATE_GRACE_SECONDS = 2.0
RSS_GROWTH_BOUND = 150 * 1024 * 1024

IDLE_TIMEOUT = 0.5
HANDSHAKE_TIMEOUT = 1.0
MAX_FRAME_SIZE = 4096


# ======================================================================================
# Capturing valid client streams
# ======================================================================================
class RecordingProxy:
    """A TCP proxy to the server that keeps every connection's client-to-server bytes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.streams: list[bytearray] = []
        self.finished = 0
        self.server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    async def wait_finished(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` proxied connections have ended in both directions."""
        async with asyncio.timeout(timeout):
            while self.finished < count:
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        recorded = bytearray()
        self.streams.append(recorded)
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray | None) -> None:
            try:
                while data := await reader.read(65536):
                    if record is not None:
                        record += data
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        try:
            async with asyncio.timeout(30):
                await asyncio.gather(pipe(client_reader, server_writer, recorded), pipe(server_reader, client_writer, None))
        finally:
            self.finished += 1
            self._changed.set()


async def capture_corpus(server_port: int) -> list[bytes]:
    """Real client byte streams: our client and Proton's, through a recording proxy."""
    proxy = RecordingProxy(server_port)
    port = await proxy.start()
    url = f"amqp://127.0.0.1:{port}"
    try:
        for userinfo in ("", "fuzz:pw@"):
            async with await Client.connect(f"amqp://{userinfo}127.0.0.1:{port}") as client:
                sender = await client.sender("fuzz")
                for body in (b"hello", os.urandom(3 * MAX_FRAME_SIZE), b"world"):  # one in several frames
                    assert isinstance(await sender.send(Message(body)), Accepted)
                receiver = await client.receiver("fuzz", credit=10)
                for _ in range(3):
                    (await receiver.receive(timeout=10)).accept()
                dynamic = await client.receiver(None, dynamic=True)
                await (await client.sender(dynamic.address, presettled=True)).send(Message(b"to myself"))
                (await dynamic.receive(timeout=10)).accept()
        sent = await run_process_async(proton("send", url, "fuzz", "--count", 3), timeout=30)
        assert sent.json()["accepted"] == 3, sent
        received = await run_process_async(proton("receive", url, "fuzz", "--count", 3), timeout=30)
        assert received.json()["received"] == 3, received
        await proxy.wait_finished(4)  # the proxy's last reads race the clients' exits
    finally:
        await proxy.stop()
    return [bytes(stream) for stream in proxy.streams]


# ======================================================================================
# Mutations
# ======================================================================================
_SIZE = struct.Struct(">I")
INTERESTING = [0x00, 0x01, 0x02, 0x40, 0x41, 0x42, 0x45, 0x53, 0x7F, 0x80, 0xA0, 0xA1, 0xA3, 0xB0, 0xB1,
               0xC0, 0xC1, 0xD0, 0xD1, 0xE0, 0xF0, 0xFE, 0xFF]


def units(stream: bytes) -> list[bytes]:
    """Split a client stream into protocol headers and frames (a mutated one: as far as
    its sizes make sense; the rest is one piece)."""
    out, offset = [], 0
    while offset < len(stream):
        if stream[offset : offset + 4] == b"AMQP":
            size = 8
        elif len(stream) - offset >= 8 and _SIZE.unpack_from(stream, offset)[0] >= 8:
            (size,) = _SIZE.unpack_from(stream, offset)
        else:
            size = len(stream) - offset
        out.append(stream[offset : offset + size])
        offset += size
    return out


def _frame_indexes(parts: list[bytes]) -> list[int]:
    return [i for i, part in enumerate(parts) if len(part) >= 8 and not part.startswith(b"AMQP")]


def bit_flips(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def duplicate_bytes(rng: random.Random, data: bytes) -> bytes:
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 64))
    return data[:end] + data[start:end] + data[end:]


def insert_bytes(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 32)) + data[at:]


def interesting_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        buf[rng.randrange(len(buf))] = rng.choice(INTERESTING)
    return bytes(buf)


def drop_frame(rng: random.Random, data: bytes) -> bytes:
    parts = units(data)
    del parts[rng.randrange(len(parts))]
    return b"".join(parts)


def duplicate_frame(rng: random.Random, data: bytes) -> bytes:
    parts = units(data)
    i = rng.randrange(len(parts))
    parts.insert(i, parts[i])
    return b"".join(parts)


def swap_frames(rng: random.Random, data: bytes) -> bytes:
    parts = units(data)
    i, j = rng.randrange(len(parts)), rng.randrange(len(parts))
    parts[i], parts[j] = parts[j], parts[i]
    return b"".join(parts)


def frame_size(rng: random.Random, data: bytes) -> bytes:
    """A frame claims an impossible, oversized or merely wrong size, or data offset."""
    parts = units(data)
    frames = _frame_indexes(parts)
    if not frames:
        return data
    i = rng.choice(frames)
    frame = bytearray(parts[i])
    choice = rng.randrange(4)
    if choice == 0:
        _SIZE.pack_into(frame, 0, rng.choice([MAX_FRAME_SIZE + 1, 65537, 1 << 31, 0xFFFFFFFF, rng.randrange(1 << 32)]))
    elif choice == 1:
        _SIZE.pack_into(frame, 0, rng.randrange(8))
    elif choice == 2:
        _SIZE.pack_into(frame, 0, max(8, len(frame) + rng.randint(-16, 16)))
    else:
        frame[4] = rng.choice([0, 1, 3, 0xFF])
    parts[i] = bytes(frame)
    return b"".join(parts)


def without_sasl(rng: random.Random, data: bytes) -> bytes:
    """The same client without SASL: the AMQP header, then the AMQP frames."""
    if not data.startswith(SASL_HEADER) or AMQP_HEADER not in data:
        return data
    return data[data.index(AMQP_HEADER) :]


def garbage(rng: random.Random, data: bytes) -> bytes:
    prefix = rng.choice([b"", AMQP_HEADER, SASL_HEADER, b"AMQP", b"GET / HTTP/1.1\r\n\r\n"])
    return prefix + rng.randbytes(rng.randint(1, 2048))


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    bit_flips, truncate, duplicate_bytes, insert_bytes, interesting_bytes,
    drop_frame, duplicate_frame, swap_frames, frame_size, frame_size,
]


def mutate(rng: random.Random, stream: bytes) -> tuple[bytes, list[str]]:
    if rng.random() < 0.08:
        return garbage(rng, stream), ["garbage"]
    applied = []
    if rng.random() < 0.3:
        stream = without_sasl(rng, stream)
        applied.append("without_sasl")
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not stream:
            break
        mutator = rng.choice(MUTATORS)
        stream = mutator(rng, stream)
        applied.append(mutator.__name__)
    return stream, applied


# ======================================================================================
# Fuzzing
# ======================================================================================
class _Collector(asyncio.Protocol):
    """Keeps everything the server sends until it closes the connection (cleanly or not)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(exc)


@dataclass
class Outcome:
    mutations: list[str]
    sent: bytes
    ending: str  # "closed" (EOF), "reset" (RST) or "hung"
    seconds: float
    received: bytes = field(repr=False, default=b"")

    @property
    def opened(self) -> bool:
        """The server accepted a protocol header and sent its open."""
        return header_exchange_succeeded(self.received)

    @property
    def closed_with_close(self) -> bool:
        return any(isinstance(p, Close) for p in performatives(self.received))

    def close_condition(self) -> str | None:
        for p in performatives(self.received):
            if isinstance(p, Close):
                return str(p.error.condition) if p.error is not None else "(no error)"
        return None


async def one_connection(port: int, stream: bytes, mutations: list[str], rng: random.Random) -> Outcome:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    transport, collector = await loop.create_connection(_Collector, "127.0.0.1", port)
    try:
        if rng.random() < 0.2 and len(stream) > 1:
            # Some streams arrive in small pieces, to split every read the server does.
            step = rng.randint(1, 64)
            for offset in range(0, len(stream), step):
                if transport.is_closing():
                    break
                transport.write(stream[offset : offset + step])
                await asyncio.sleep(0)
        elif stream:
            transport.write(stream)
        done, _ = await asyncio.wait({collector.done}, timeout=CLOSE_BOUND_SECONDS)
        if not done:
            # When this process was starved, the timeout can come due in the same loop
            # turn as the close it waits for (libuv runs timers before it polls): take
            # one more look before calling the connection hung.
            done, _ = await asyncio.wait({collector.done}, timeout=LATE_GRACE_SECONDS)
        if done:
            ending = "closed" if collector.done.result() is None else "reset"
        else:
            ending = "hung"
    finally:
        transport.abort()
    return Outcome(mutations, stream, ending, time.monotonic() - started, bytes(collector.data))


async def fuzz(port: int, corpus: list[bytes], rng: random.Random) -> list[Outcome]:
    # Every case is drawn before any I/O, so a seed replays the same cases.
    cases = []
    for _ in range(CONNECTIONS):
        case_rng = random.Random(rng.getrandbits(64))
        stream, mutations = mutate(case_rng, case_rng.choice(corpus))
        cases.append((stream, mutations, case_rng))
    semaphore = asyncio.Semaphore(CONCURRENCY)
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    outcomes: list[Outcome] = []

    async def run_one(stream: bytes, mutations: list[str], case_rng: random.Random) -> None:
        async with semaphore:
            if time.monotonic() < deadline:
                outcomes.append(await one_connection(port, stream, mutations, case_rng))

    async with asyncio.timeout(TIME_BUDGET_SECONDS + CLOSE_BOUND_SECONDS + 30):
        await asyncio.gather(*(run_one(*case) for case in cases))
    return outcomes


async def good_client_round_trip(port: int) -> None:
    async with await Client.connect(f"amqp://fuzz:pw@127.0.0.1:{port}", timeout=10) as client:
        sender = await client.sender("after-the-storm")
        assert isinstance(await sender.send(Message(b"still here")), Accepted)
        receiver = await client.receiver("after-the-storm", credit=5)
        item = await receiver.receive(timeout=10)
        assert item.message().body == b"still here"
        item.accept()


def _show(outcomes: list[Outcome], limit: int = 5) -> str:
    return "\n".join(
        f"  {o.mutations} ending={o.ending} after {o.seconds:.2f} s; sent {o.sent[:80]!r}...; got {o.received[:120]!r}"
        for o in outcomes[:limit]
    )


@pytest.mark.timeout(150)
def test_listener_survives_mutated_client_streams() -> None:
    server = start_server([
        AMQP_BROKER,
        "--idle-timeout", str(IDLE_TIMEOUT),
        "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
        "--max-frame-size", str(MAX_FRAME_SIZE),
        "--user", "fuzz", "--password", "pw",
    ])
    try:
        corpus = arun(lambda: capture_corpus(server.port), timeout=60)
        assert len(corpus) >= 4 and all(stream.startswith(SASL_HEADER) for stream in corpus)
        process = psutil.Process(server.process.pid)
        baseline_rss = process.memory_info().rss

        rng = random.Random(SEED)
        started = time.monotonic()
        outcomes = arun(lambda: fuzz(server.port, corpus, rng), timeout=TIME_BUDGET_SECONDS + 60)
        elapsed = time.monotonic() - started
        rss = process.memory_info().rss

        endings = Counter(o.ending for o in outcomes)
        late = sum(o.seconds > CLOSE_BOUND_SECONDS for o in outcomes if o.ending != "hung")
        conditions = Counter(o.close_condition() for o in outcomes if o.opened)
        print(f"\nfuzz seed {SEED}: {len(outcomes)} connections in {elapsed:.1f} s; endings {dict(endings)}; {late} late")
        print(f"close conditions where the server opened: {dict(conditions)}")
        print(f"server RSS {baseline_rss / 2**20:.1f} MiB -> {rss / 2**20:.1f} MiB")

        assert len(outcomes) >= 1000, f"only {len(outcomes)} connections in the time budget"
        hung = [o for o in outcomes if o.ending == "hung"]
        assert not hung, f"{len(hung)} connections not closed by the server within {CLOSE_BOUND_SECONDS + LATE_GRACE_SECONDS} s:\n{_show(hung)}"
        silent = [o for o in outcomes if o.opened and o.ending == "closed" and not o.closed_with_close]
        assert not silent, f"{len(silent)} connections opened but ended without a close frame:\n{_show(silent)}"
        # The engine turns its own exceptions into internal-error closes: none may happen.
        internal = [o for o in outcomes if o.close_condition() == "amqp:internal-error"]
        assert not internal, f"{len(internal)} connections closed with internal-error:\n{_show(internal)}"

        assert server.process.poll() is None, "the server process died"
        arun(lambda: good_client_round_trip(server.port), timeout=30)
        assert server.process.poll() is None
        assert rss - baseline_rss < RSS_GROWTH_BOUND, f"RSS grew by {(rss - baseline_rss) / 2**20:.1f} MiB"
        log = server.stderr()
        for sign_of_trouble in ("Traceback", "Fatal error", "Exception in callback"):
            assert sign_of_trouble not in log, log[-4000:]
    finally:
        server.stop()
