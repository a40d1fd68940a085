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
   transfer; after a detach, an end, a close.  Everything is pipelined except where the
   router must answer first (credit, deliveries).
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

Frames are counted when written; ``frames_answered`` counts those followed by a probe the
router answered, i.e. frames the router certainly read.
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

from switchboard.amqp.codec import decode_value, encode, skip_value
from switchboard.amqp.errors import DecodeError
from switchboard.amqp.framing import AMQP_HEADER, EMPTY_FRAME, SASL_HEADER
from switchboard.amqp.message import Message
from switchboard.amqp.spec import (
    Accepted,
    Attach,
    Begin,
    Close,
    Coordinator,
    DeleteOnClose,
    Detach,
    Disposition,
    End,
    Error,
    Flow,
    Header,
    Modified,
    Open,
    Properties,
    Received,
    Rejected,
    Released,
    Role,
    SaslChallenge,
    SaslInit,
    SaslMechanisms,
    SaslOutcome,
    SaslResponse,
    Source,
    Target,
    Transfer,
)
from switchboard.amqp.types import (
    Array,
    Byte,
    Char,
    Decimal32,
    Described,
    Float,
    Int,
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"

# The router's configuration: small limits and short timers, so hangs show quickly.
MAX_SESSIONS = 4
CHANNEL_MAX = MAX_SESSIONS - 1
MAX_LINKS = 16
MAX_FRAME = 4096
MAX_MESSAGE = 65536
IDLE_TIMEOUT = 1.0
HANDSHAKE_TIMEOUT = 1.0
USER, PASSWORD = "fuzz", "fuzz-password"

ANYCAST = "fuzz/anycast"
MULTICAST = "multicast/fuzz"
CHECKPOINT = "fuzz/checkpoint"
"""Only checkpoints use it: a fuzz receiver there could take their requests."""
PROBE_CHANNEL = CHANNEL_MAX
"""Kept for probes: fuzz frames never pick it on purpose."""

CHUNK = 3000
"""Payload bytes per transfer frame: well inside the router's 4 KiB frames."""
SETUP_SECONDS = 15.0
"""Bound on each wait of a valid set-up exchange (credit, deliveries)."""
HEARTBEAT_SECONDS = 0.25
"""While a set-up waits for the router, an empty frame this often keeps it from idling out."""

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

[users]
{USER} = "{PASSWORD}"

[logging]
level = "warning"
"""

# Lines in the router's log that mean a bug met some input.
TROUBLE = re.compile(r"Traceback|internal error|Exception in callback|Fatal error|Unhandled exception")


# ======================================================================================
# Encoding frames by hand (so that any part of them can be wrong)
# ======================================================================================
_FRAME = struct.Struct(">IBBH")
_U32 = struct.Struct(">I")


def frame_bytes(channel: int, body: bytes, frame_type: int = 0) -> bytes:
    return _FRAME.pack(8 + len(body), 2, frame_type, channel & 0xFFFF) + body


def list_bytes(elements: Sequence[bytes]) -> bytes:
    """A described list's value from already encoded elements (list0, list8 or list32)."""
    if not elements:
        return b"\x45"
    inner = b"".join(elements)
    if len(inner) < 255 and len(elements) < 256:
        return bytes((0xC0, len(inner) + 1, len(elements))) + inner
    return b"\xd0" + struct.pack(">II", len(inner) + 4, len(elements)) + inner


def split_composite(value: Any) -> tuple[bytes, list[bytes]]:
    """The encoding of a performative as (descriptor bytes, encoded fields)."""
    out = bytearray()
    value.encode_into(out)
    data = bytes(out)
    start = skip_value(data, 1)  # past the descriptor
    constructor = data[start]
    if constructor == 0x45:
        return data[:start], []
    if constructor == 0xC0:
        count, offset = data[start + 2], start + 3
    else:
        count, offset = _U32.unpack_from(data, start + 5)[0], start + 9
    fields = []
    for _ in range(count):
        end = skip_value(data, offset)
        fields.append(data[offset:end])
        offset = end
    return data[:start], fields


def nested_lists(depth: int) -> bytes:
    value = b"\x45"
    for _ in range(depth):
        value = b"\xd0" + struct.pack(">II", len(value) + 4, 1) + value
    return value


# ======================================================================================
# Values to put where they do not belong
# ======================================================================================
BOUNDARY: dict[str, list[Any]] = {
    "uint": [UInt(v) for v in (0, 1, 2, 3, 15, 16, 255, 0x7FFFFFFE, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)],
    "ushort": [UShort(v) for v in (0, 1, 2, 3, 4, 255, 256, 0x7FFF, 0xFFFF)],
    "ubyte": [UByte(v) for v in (0, 1, 2, 3, 4, 0x7F, 0xFF)],
    "ulong": [ULong(v) for v in (0, 1, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)],
    "boolean": [True, False],
    "timestamp": [Timestamp(v) for v in (0, -1, -(1 << 63), (1 << 63) - 1)],
    "string": ["", "x" * 3500, "\x00", "é" * 600, "_dynamic/fuzz-router/1", "multicast/", "/"],
    "symbol": [Symbol(""), Symbol("x" * 3500), Symbol("amqp:internal-error"), Symbol("PLAIN"), Symbol("never")],
    "binary": [b"", b"\x00" * 3500, b"\xff"],
}
BOUNDARY["fields"] = BOUNDARY["map"] = [
    {},
    {Symbol(f"k{i}"): i for i in range(400)},
    {1: 2, "s": None},
    {Symbol("a"): {Symbol("b"): [1, [2, [3, {Symbol("c"): b"d"}]]]}},
    {Symbol("x-opt-fuzz"): "y" * 3000},
]
BOUNDARY["error"] = [
    Error(condition=Symbol("amqp:internal-error"), description="from the fuzzer"),
    Error(condition=Symbol(""), description=""),
    Error(condition=Symbol("x" * 3000)),
    Error(condition=Symbol("amqp:link:redirect"), info={Symbol("address"): "elsewhere", Symbol("network-host"): 5}),
    Error(),
]
ODD_ADDRESSES: list[Any] = [
    "", "x" * 3000, "multicast/", "_dynamic/fuzz-router/1", "fuzz/anycast\x00", "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
    ANYCAST, MULTICAST, Symbol(ANYCAST), 7, b"bytes", None,
]
SOURCES: list[Any] = [
    Source(address=ANYCAST), Source(address=MULTICAST), Source(dynamic=True), Source(),
    Source(address=ANYCAST, dynamic=True), Source(dynamic=True, dynamic_node_properties={Symbol("lifetime-policy"): DeleteOnClose()}),
    Source(address=ANYCAST, filter={Symbol("f"): Described(Symbol("apache.org:selector-filter:string"), "1=1")}),
    Source(address=ANYCAST, distribution_mode=Symbol("copy"), expiry_policy=Symbol("never"), timeout=UInt(0xFFFFFFFF)),
    Source(address=ANYCAST, default_outcome=Rejected(), outcomes=Array("symbol", [Symbol("amqp:accepted:list")])),
    Target(address=ANYCAST), Coordinator(), Described(ULong(0x28), {Symbol("address"): ANYCAST}), "a-string",
]
TARGETS: list[Any] = [
    Target(address=ANYCAST), Target(address=MULTICAST), Target(), Target(dynamic=True), Coordinator(),
    Target(address="fuzz/elsewhere"), Source(address=ANYCAST), Described(ULong(0x29), [ANYCAST]), [ANYCAST],
]
STATES_OF_DELIVERY: list[Any] = [
    Accepted(), Released(), Rejected(error=Error(condition=Symbol("amqp:decode-error"), description="fuzz")),
    Modified(delivery_failed=True, undeliverable_here=True, message_annotations={Symbol("x-fuzz"): 1}),
    Received(section_number=UInt(0xFFFFFFFF), section_offset=ULong((1 << 64) - 1)), Received(),
    Described(ULong(0x34), [b"txn-id", Accepted()]),  # transactional-state
    Error(condition=Symbol("not-a-state")), Described(ULong(0x9999), None), None,
]


def random_value(rng: random.Random) -> Any:
    """A well-formed value of a random AMQP type."""
    kind = rng.randrange(26)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return UByte(rng.randrange(256))
    if kind == 3:
        return UShort(rng.randrange(1 << 16))
    if kind == 4:
        return rng.choice(BOUNDARY["uint"])
    if kind == 5:
        return rng.choice(BOUNDARY["ulong"])
    if kind == 6:
        return Byte(rng.randrange(-128, 128))
    if kind == 7:
        return Short(-1)
    if kind == 8:
        return Int(rng.choice((-1, -(1 << 31), (1 << 31) - 1)))
    if kind == 9:
        return rng.choice((-1, -(1 << 63), (1 << 63) - 1, 0))
    if kind == 10:
        return Float(1.5)
    if kind == 11:
        return rng.choice((3.25, float("nan"), float("-inf")))
    if kind == 12:
        return Char(rng.choice("x\u00e9\U0001f600"))
    if kind == 13:
        return rng.choice(BOUNDARY["timestamp"])
    if kind == 14:
        return uuid.UUID(int=rng.getrandbits(128))
    if kind == 15:
        return rng.randbytes(rng.choice((0, 1, 16, 300)))
    if kind == 16:
        return rng.choice(BOUNDARY["string"])
    if kind == 17:
        return rng.choice(BOUNDARY["symbol"])
    if kind == 18:
        return [random_value(rng) for _ in range(rng.randrange(4))]
    if kind == 19:
        return rng.choice(BOUNDARY["map"])
    if kind == 20:
        return rng.choice((Array("uint", [UInt(1), UInt(2)]), Array("symbol", []), Array("symbol", [Symbol("a")] * 500)))
    if kind == 21:
        return Described(ULong(rng.choice((0x99, 0x10, 0x70, 0x1D, (1 << 64) - 1))), rng.choice(("x", [], None)))
    if kind == 22:
        return rng.choice(SOURCES + TARGETS)
    if kind == 23:
        return rng.choice(BOUNDARY["error"])
    if kind == 24:
        return Decimal32(b"\x00\x00\x00\x01")
    return rng.choice(STATES_OF_DELIVERY)


def hostile_encoding(rng: random.Random) -> bytes:
    """A value whose sizes, counts, nesting or bytes are impossible or hostile."""
    return rng.choice((
        b"\xb1" + _U32.pack(1 << 31) + b"abc",  # str32 claims 2 GiB
        b"\xa1\xff" + b"ab",  # str8 claims 255 bytes, has 2
        b"\xb0\xff\xff\xff\xff",  # vbin32 of 4 GiB, none there
        b"\xd0" + struct.pack(">II", 0x7FFFFFFF, 0x7FFFFFFF),  # list32 of 2^31 elements
        b"\xd0" + struct.pack(">II", 4, 0x7FFFFFFF),  # list32: small size, huge count
        b"\xc0\x01\xff",  # list8 of 255 elements in 1 byte
        b"\xd1" + struct.pack(">II", 5, 3) + b"\x40",  # map with an odd count
        b"\xc1\x05\x02\x40\x40\x40",  # map8 whose size disagrees with its count
        b"\xf0" + struct.pack(">II", 5, 0x40000000) + b"\x40",  # array of 2^30 nulls
        b"\xf0" + struct.pack(">II", 5, 0x40000000) + b"\x45",  # array of 2^30 empty lists
        b"\xe0\x02\x03\x40",  # array8 of 3 nulls
        b"\xe0\x04\x02\x00\x53\x24",  # array of described values, cut short
        nested_lists(rng.choice((63, 64, 65, 200))),
        b"\x00" * rng.choice((2, 70, 500)) + b"\x53\x24\x45",  # chains of descriptors
        b"\xa3\x05\xff\xfe\xfd\xfc\xfb",  # a symbol that is not ASCII
        b"\xa1\x03\xff\xfe\xfd",  # a string that is not UTF-8
        b"\x73\x00\x00\xd8\x00",  # char: a lone surrogate
        b"\x73\x00\x11\x00\x00",  # char beyond Unicode
        b"\x98" + b"\x00" * 15,  # uuid cut short
        b"\x56\x02",  # boolean that is neither
        bytes((rng.choice((0x01, 0x0F, 0x30, 0x57, 0x62, 0x85, 0x90, 0x99, 0xA2, 0xB2, 0xC2, 0xF1, 0xFF)),)),
        b"\x00\xa3\x0eamqp:open:list\x45",  # a symbolic descriptor (valid, rarely seen)
        b"\x00\x80" + b"\xff" * 8 + b"\x45",  # descriptor ulong max
    ))


# ======================================================================================
# Frames under construction
# ======================================================================================
class Unit:
    """One frame of a round, kept in parts so that each mutator works on the part it needs.

    ``fields`` holds the encoded fields of the performative (``None`` once the body was
    replaced whole); ``raw``, once set, is the frame's final bytes (after a blind
    mutation, or for things that are not frames at all: headers, garbage).
    """

    __slots__ = ("kind", "cls", "channel", "frame_type", "descriptor", "fields", "body", "payload", "raw", "mutations")

    def __init__(self, kind: str, cls: Any = None, channel: int = 0, frame_type: int = 0) -> None:
        self.kind = kind
        self.cls = cls
        self.channel = channel
        self.frame_type = frame_type
        self.descriptor = b""
        self.fields: list[bytes] | None = None
        self.body: bytes | None = None
        self.payload = b""
        self.raw: bytes | None = None
        self.mutations: list[str] = []

    @classmethod
    def of(cls, performative: Any, channel: int = 0, payload: bytes = b"", frame_type: int = 0) -> "Unit":
        unit = cls(type(performative).__name__.lower(), type(performative), channel, frame_type)
        unit.descriptor, unit.fields = split_composite(performative)
        unit.payload = payload
        return unit

    @classmethod
    def raw_bytes(cls, kind: str, data: bytes) -> "Unit":
        unit = cls(kind)
        unit.raw = data
        return unit

    def field_specs(self) -> tuple[Any, ...]:
        return getattr(self.cls, "FIELDS", ())

    def pad_fields(self, count: int) -> list[bytes]:
        assert self.fields is not None
        while len(self.fields) < count:
            self.fields.append(b"\x40")
        return self.fields

    def render(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.body is not None:
            body = self.body
        else:
            body = self.descriptor + list_bytes(self.fields or [])
        return frame_bytes(self.channel, body + self.payload, self.frame_type)


# ======================================================================================
# What a connection believes about its state (what valid frames it can make next)
# ======================================================================================
@dataclass
class LinkInfo:
    role: bool  # ours: Role.SENDER or Role.RECEIVER
    name: str
    address: Any
    sent: int = 0


class Context:
    """One case's view of its connection: what is open, attached, unsettled.

    It is updated as valid frames are generated, whether or not the router will accept
    them (a mutated frame may not have done what its valid self would have): the fuzzer
    only needs to be right often enough to reach deep states.
    """

    def __init__(self, rng: random.Random, name: str) -> None:
        self.rng = rng
        self.name = name
        self.own = f"fuzz/own/{name}"
        self.phase = "start"  # start, sasl, pre-open, open, session, closed
        self.sessions: set[int] = set()
        self.channel = 0
        self.links: dict[int, LinkInfo] = {}
        self.detached: list[int] = []
        self.next_handle = 0
        self.next_delivery = 0
        self.transfer_frames = 0
        self.partial: tuple[int, int] | None = None  # (handle, delivery id) of a delivery in progress
        self.received_ids: list[int] = []  # deliveries the router sent us (from the inbox)
        self.received_frames = 0

    def handle_for(self, role: bool | None = None) -> int | None:
        handles = [h for h, link in self.links.items() if role is None or link.role is role]
        return self.rng.choice(handles) if handles else None

    def message(self, to: Any = None, size: int | None = None) -> bytes:
        rng = self.rng
        if size is None:
            size = rng.choice((0, 1, 10, 100, 500, 2000))
        properties = Properties(
            message_id=f"{self.name}-{self.next_delivery}",
            to=to,
            reply_to=rng.choice((None, None, self.own, "_dynamic/fuzz-router/1", ANYCAST)),
            subject=rng.choice((None, "fuzz")),
        )
        header = rng.choice((None, Header(durable=True), Header(ttl=UInt(rng.choice((1, 50, 60000)))), Header(priority=UByte(9))))
        return Message(rng.randbytes(size), header=header, properties=properties,
                       application_properties=rng.choice((None, {"k": 1, "s": "v"}))).encode()


# -- valid frames for a context ----------------------------------------------------------
def g_open(ctx: Context) -> list[Unit]:
    rng = ctx.rng
    ctx.phase = "open"
    return [Unit.of(Open(
        container_id=f"fuzz-{ctx.name}",
        hostname=rng.choice((None, HOST)),
        max_frame_size=UInt(rng.choice((512, 4096, 65536, 0xFFFFFFFF))),
        channel_max=UShort(rng.choice((0, 3, 255, 0xFFFF))),
        idle_time_out=rng.choice((None, None, None, UInt(60000))),
        offered_capabilities=rng.choice((None, [Symbol("ANONYMOUS-RELAY")])),
        desired_capabilities=rng.choice((None, [Symbol("ANONYMOUS-RELAY")])),
        properties=rng.choice((None, {Symbol("product"): "fuzz"})),
    ))]


def g_begin(ctx: Context, channel: int | None = None) -> list[Unit]:
    rng = ctx.rng
    if channel is None:
        free = [c for c in range(CHANNEL_MAX) if c not in ctx.sessions]
        channel = rng.choice(free) if free else rng.randrange(CHANNEL_MAX)
    ctx.sessions.add(channel)
    if ctx.phase in ("open", "pre-open"):
        ctx.phase = "session"
    if rng.random() < 0.5:  # later frames go to the new session (its links are new too)
        ctx.channel = channel
        ctx.links.clear()
    return [Unit.of(Begin(
        remote_channel=UShort(0) if rng.random() < 0.05 else None,
        next_outgoing_id=UInt(ctx.transfer_frames),
        incoming_window=UInt(rng.choice((1000, 1000, 1000, 1, 0x7FFFFFFF, 0xFFFFFFFF))),
        outgoing_window=UInt(rng.choice((1000, 0xFFFFFFFF))),
        handle_max=rng.choice((UInt(0xFFFFFFFF), UInt(0xFFFFFFFF), UInt(0), UInt(15))),
    ), channel)]


def g_attach(ctx: Context, role: bool | None = None, address: Any = "random", handle: int | None = None,
             credit: int | None = None, plain: bool = False) -> list[Unit]:
    """An attach (and a flow granting credit, for a receiver); ``plain``: no odd terminus."""
    rng = ctx.rng
    if role is None:
        role = rng.random() < 0.5
    if handle is None:
        handle = ctx.next_handle
        ctx.next_handle += 1
    name = f"{'r' if role else 's'}-{ctx.name}-{handle}"
    units: list[Unit] = []
    if role is Role.RECEIVER:
        if address == "random":
            address = rng.choice((ANYCAST, MULTICAST, ctx.own, ctx.own, None))
        source = Source(address=address) if address is not None else Source(dynamic=True)
        if not plain and rng.random() < 0.1:
            source = rng.choice(SOURCES)
        attach = Attach(name=name, handle=UInt(handle), role=Role.RECEIVER, source=source,
                        target=Target(address=f"fuzz-{ctx.name}"),
                        rcv_settle_mode=UByte(rng.choice((0, 0, 1))))
        units.append(Unit.of(attach, ctx.channel))
        ctx.links[handle] = LinkInfo(Role.RECEIVER, name, address)
        if credit is None:
            credit = rng.choice((0, 1, 10, 10, 100))
        if credit:
            units.append(Unit.of(Flow(
                next_incoming_id=UInt(ctx.received_frames), incoming_window=UInt(1000),
                next_outgoing_id=UInt(ctx.transfer_frames), outgoing_window=UInt(1000),
                handle=UInt(handle), delivery_count=UInt(0), link_credit=UInt(credit),
            ), ctx.channel))
    else:
        if address == "random":
            address = rng.choice((ANYCAST, MULTICAST, ctx.own, None))
        target = Target(address=address)
        if not plain and rng.random() < 0.1:
            target = rng.choice(TARGETS)
        attach = Attach(name=name, handle=UInt(handle), role=Role.SENDER, source=Source(address=f"fuzz-{ctx.name}"),
                        target=target, snd_settle_mode=UByte(rng.choice((0, 1, 2, 2))),
                        initial_delivery_count=UInt(0), max_message_size=rng.choice((None, ULong(MAX_MESSAGE))))
        units.append(Unit.of(attach, ctx.channel))
        ctx.links[handle] = LinkInfo(Role.SENDER, name, address)
    return units


def g_flow(ctx: Context) -> list[Unit]:
    rng = ctx.rng
    handle = ctx.handle_for() if rng.random() < 0.8 else None
    flow = Flow(
        next_incoming_id=UInt(ctx.received_frames), incoming_window=UInt(rng.choice((1000, 0, 1, 0xFFFFFFFF))),
        next_outgoing_id=UInt(ctx.transfer_frames), outgoing_window=UInt(rng.choice((1000, 0))),
        echo=rng.random() < 0.2,
    )
    if handle is not None:
        link = ctx.links[handle]
        flow.handle = UInt(handle)
        flow.delivery_count = UInt(link.sent if link.role is Role.SENDER else len(ctx.received_ids))
        flow.link_credit = UInt(rng.choice((0, 1, 5, 100, 1000, 0xFFFFFFFF)))
        flow.drain = rng.random() < 0.2
        if link.role is Role.SENDER:
            flow.available = UInt(rng.choice((0, 1, 1000)))
    return [Unit.of(flow, ctx.channel)]


def _transfer_units(ctx: Context, handle: int, delivery_id: int, payload: bytes, settled: bool) -> list[Unit]:
    units = []
    chunks = [payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK)] or [b""]
    for i, chunk in enumerate(chunks):
        more = i < len(chunks) - 1
        if i == 0:
            transfer = Transfer(handle=UInt(handle), delivery_id=UInt(delivery_id), delivery_tag=delivery_id.to_bytes(4, "big"),
                                message_format=UInt(0), settled=settled, more=more)
        else:
            transfer = Transfer(handle=UInt(handle), more=more)
        units.append(Unit.of(transfer, ctx.channel, chunk))
    ctx.transfer_frames += len(units)
    return units


def g_transfer(ctx: Context, handle: int | None = None, size: int | None = None, to: Any = "random") -> list[Unit]:
    rng = ctx.rng
    if handle is None:
        handle = ctx.handle_for(Role.SENDER)
        if handle is None:
            handle = rng.randrange(4)
    link = ctx.links.get(handle)
    if to == "random":
        to = None if link is not None and link.address else rng.choice((ANYCAST, MULTICAST, ctx.own, "nowhere", None))
    if size is None:
        roll = rng.random()
        size = rng.choice((5000, 12000, 20000)) if roll < 0.06 else MAX_MESSAGE + 1000 if roll < 0.08 else None
    payload = ctx.message(to, size)
    delivery_id = ctx.next_delivery
    ctx.next_delivery += 1
    if link is not None:
        link.sent += 1
    return _transfer_units(ctx, handle, delivery_id, payload, rng.random() < 0.3)


def g_continuation(ctx: Context) -> list[Unit]:
    """More of the delivery in progress (or a transfer that claims to be)."""
    rng = ctx.rng
    handle, delivery_id = ctx.partial or (ctx.handle_for(Role.SENDER) or 0, ctx.next_delivery)
    ending = rng.random()
    transfer = Transfer(handle=UInt(handle), more=ending < 0.6, aborted=0.9 < ending,
                        delivery_id=rng.choice((None, None, UInt(delivery_id), UInt(delivery_id + 1))))
    if not transfer.more:
        ctx.partial = None
    return [Unit.of(transfer, ctx.channel, rng.randbytes(rng.choice((0, 1, CHUNK))))]


def g_disposition(ctx: Context) -> list[Unit]:
    rng = ctx.rng
    ids = ctx.received_ids
    if ids and rng.random() < 0.8:
        first = rng.choice(ids)
        last = rng.choice((None, None, max(ids), first + rng.randrange(3)))
        role = Role.RECEIVER
    else:
        first = rng.randrange(max(1, ctx.next_delivery + 2))
        last = rng.choice((None, first, first + 1000, (first - 1) & 0xFFFFFFFF))
        role = rng.random() < 0.5
    state = rng.choice((Accepted(), Accepted(), Released(), Rejected(), Modified(delivery_failed=True),
                       Received(section_number=UInt(0), section_offset=ULong(0)), None))
    return [Unit.of(Disposition(role=role, first=UInt(first), last=None if last is None else UInt(last & 0xFFFFFFFF),
                                settled=rng.random() < 0.85, state=state, batchable=rng.random() < 0.1), ctx.channel)]


def g_detach(ctx: Context, handle: int | None = None) -> list[Unit]:
    rng = ctx.rng
    if handle is None:
        handle = ctx.handle_for()
    if handle is None:
        handle = rng.choice(ctx.detached) if ctx.detached else rng.randrange(4)
    ctx.links.pop(handle, None)
    ctx.detached.append(handle)
    error = rng.choice((None, None, Error(condition=Symbol("amqp:link:detach-forced"), description="fuzz")))
    return [Unit.of(Detach(handle=UInt(handle), closed=rng.random() < 0.8, error=error), ctx.channel)]


def g_end(ctx: Context) -> list[Unit]:
    channel = ctx.channel
    ctx.sessions.discard(channel)
    ctx.links.clear()
    if not ctx.sessions:
        ctx.phase = "open"
    error = ctx.rng.choice((None, Error(condition=Symbol("amqp:internal-error"), description="fuzz")))
    return [Unit.of(End(error=error), channel)]


def g_close(ctx: Context) -> list[Unit]:
    ctx.phase = "closed"
    error = ctx.rng.choice((None, Error(condition=Symbol("amqp:connection:forced"), description="fuzz")))
    return [Unit.of(Close(error=error))]


def g_heartbeat(ctx: Context) -> list[Unit]:
    return [Unit.raw_bytes("heartbeat", EMPTY_FRAME)]


def g_sasl(ctx: Context) -> list[Unit]:
    rng = ctx.rng
    roll = rng.random()
    if roll < 0.7:
        mechanism = Symbol(rng.choice(("ANONYMOUS", "PLAIN", "PLAIN", "EXTERNAL", "SCRAM-SHA-256", "", "anonymous")))
        response = rng.choice((None, b"", b"\x00fuzz\x00wrong", b"\x00fuzz", b"\x00\x00", b"\xff\xfe\x00\xff\x00\xfe",
                               b"\x00" + USER.encode() + b"\x00" + PASSWORD.encode(), b"x" * 3000))
        performative: Any = SaslInit(mechanism=mechanism, initial_response=response, hostname=rng.choice((None, HOST)))
        if mechanism in ("ANONYMOUS", "PLAIN"):
            ctx.phase = "pre-open"  # if it succeeds, an AMQP header must follow
    elif roll < 0.8:
        performative = SaslResponse(response=b"\x00fuzz\x00x")
    elif roll < 0.87:
        performative = SaslMechanisms(sasl_server_mechanisms=[Symbol("PLAIN")])
    elif roll < 0.94:
        performative = SaslOutcome(code=UByte(rng.choice((0, 1, 4, 255))))
    else:
        performative = SaslChallenge(challenge=b"?")
    return [Unit.of(performative, 0, frame_type=1)]


def g_header(ctx: Context) -> list[Unit]:
    rng = ctx.rng
    header = rng.choice((AMQP_HEADER, SASL_HEADER, b"AMQP\x02\x01\x00\x00", b"AMQP\x00\x01\x00\x01", b"AMQP\x00\x00\x09\x01",
                         b"GET / HTTP/1.1\r\n\r\n", b"\x00\x00\x00\x08"))
    return [Unit.raw_bytes("header", header)]


GENERATORS: dict[str, Callable[[Context], list[Unit]]] = {
    "open": g_open, "begin": g_begin, "attach": g_attach, "flow": g_flow, "transfer": g_transfer,
    "continuation": g_continuation, "disposition": g_disposition, "detach": g_detach, "end": g_end,
    "close": g_close, "heartbeat": g_heartbeat, "sasl": g_sasl, "header": g_header,
}


def generator_weights(ctx: Context) -> dict[str, float]:
    """Which valid frames make sense next, by the context's phase."""
    phase = ctx.phase
    if phase in ("start", "sasl"):
        return {"sasl": 8, "header": 1, "open": 1}
    if phase == "pre-open":
        return {"open": 8, "begin": 1, "sasl": 1, "header": 0.5, "heartbeat": 0.5}
    if phase == "open":
        return {"begin": 6, "open": 0.5, "close": 0.3, "attach": 1, "heartbeat": 0.5, "flow": 0.5}
    if phase == "closed":
        return {name: 1.0 for name in GENERATORS}
    weights = {"attach": 2, "flow": 3, "transfer": 1, "disposition": 1, "detach": 1, "end": 0.4, "begin": 0.6,
               "close": 0.15, "open": 0.2, "heartbeat": 0.3, "continuation": 0.3}
    if any(link.role is Role.SENDER for link in ctx.links.values()):
        weights["transfer"] = 7
    if ctx.received_ids:
        weights["disposition"] = 5
    if ctx.partial is not None:
        weights["continuation"] = 6
    if len(ctx.links) >= MAX_LINKS // 2:
        weights["attach"] = 0.3
    return weights


# ======================================================================================
# Mutations
# ======================================================================================
def _field_index(unit: Unit, rng: random.Random) -> int:
    specs = unit.field_specs()
    span = max(len(unit.fields or ()), len(specs))
    return rng.randrange(span) if span else 0


def m_wrong_type(ctx: Context, unit: Unit) -> str | None:
    if unit.fields is None:
        return None
    i = _field_index(unit, ctx.rng)
    unit.pad_fields(i + 1)[i] = encode(random_value(ctx.rng))
    return "wrong-type"


def m_boundary(ctx: Context, unit: Unit) -> str | None:
    specs = unit.field_specs()
    if unit.fields is None or not specs:
        return None
    rng = ctx.rng
    i = rng.randrange(len(specs))
    spec = specs[i]
    if spec.type in BOUNDARY:
        value = rng.choice(BOUNDARY[spec.type])
    elif spec.requires in ("source",):
        value = rng.choice(SOURCES)
    elif spec.requires in ("target",):
        value = rng.choice(TARGETS)
    elif spec.requires == "delivery-state":
        value = rng.choice(STATES_OF_DELIVERY)
    elif spec.requires == "address":
        value = rng.choice(ODD_ADDRESSES)
    else:
        value = random_value(rng)
    if spec.multiple and rng.random() < 0.5:
        value = Array("symbol", [Symbol(f"cap-{n}") for n in range(rng.choice((0, 1, 300)))])
    unit.pad_fields(i + 1)[i] = encode(value)
    return "boundary"


def m_null(ctx: Context, unit: Unit) -> str | None:
    specs = unit.field_specs()
    mandatory = [i for i, spec in enumerate(specs) if spec.mandatory]
    if unit.fields is None or not mandatory:
        return None
    i = ctx.rng.choice(mandatory)
    unit.pad_fields(i + 1)[i] = b"\x40"
    return "null-mandatory"


def m_drop_fields(ctx: Context, unit: Unit) -> str | None:
    if not unit.fields:
        return None
    unit.fields = unit.fields[: ctx.rng.randrange(len(unit.fields))]
    return "drop-fields"


def m_extra_fields(ctx: Context, unit: Unit) -> str | None:
    if unit.fields is None:
        return None
    rng = ctx.rng
    unit.pad_fields(len(unit.field_specs()))
    unit.fields += [encode(random_value(rng)) for _ in range(rng.choice((1, 2, 10, 300)))]
    return "extra-fields"


def m_hostile(ctx: Context, unit: Unit) -> str | None:
    if unit.fields is None:
        return None
    i = _field_index(unit, ctx.rng)
    unit.pad_fields(i + 1)[i] = hostile_encoding(ctx.rng)
    return "hostile-value"


_DESCRIPTORS = (
    b"\x00\x53\x99", b"\x00\x53\x00", b"\x00\x53\xff", b"\x00\x80" + b"\x00" * 7 + b"\x10",
    b"\x00\x80" + b"\xff" * 8, b"\x00\xa3\x0eamqp:open:list", b"\x00\xa3\x0eamqp:nope:list",
    b"\x00\xa1\x04open", b"\x00\x40", b"\x00\x00\x53\x10\x53\x11",
) + tuple(b"\x00\x53" + bytes((code,)) for code in (
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,  # another performative's descriptor
    0x1D, 0x23, 0x24, 0x28, 0x29, 0x30, 0x40, 0x41, 0x44, 0x70, 0x73, 0x75, 0x77,  # not performatives
))


def m_descriptor(ctx: Context, unit: Unit) -> str | None:
    if unit.fields is None:
        return None
    unit.descriptor = ctx.rng.choice(_DESCRIPTORS)
    return "descriptor"


def m_container(ctx: Context, unit: Unit) -> str | None:
    """The performative's value is not a list."""
    if unit.fields is None:
        return None
    rng = ctx.rng
    value = rng.choice((encode("x"), encode({}), encode(Array("uint", [UInt(1)])), b"\x40", encode(5),
                        b"\xc1\x01\x00", encode({Symbol("handle"): UInt(0)}), b"", hostile_encoding(rng)))
    unit.body = unit.descriptor + value
    unit.fields = None
    return "container"


def m_channel(ctx: Context, unit: Unit) -> str | None:
    if unit.raw is not None:
        return None
    unit.channel = ctx.rng.choice((1, 2, CHANNEL_MAX + 1, 16, 255, 256, 0x7FFF, 0xFFFF))
    return "channel"


_HANDLE_FIELD = {Attach: 1, Flow: 4, Transfer: 0, Detach: 0}
_DELIVERY_FIELDS = {Transfer: (1,), Disposition: (1, 2)}


def m_handle(ctx: Context, unit: Unit) -> str | None:
    i = _HANDLE_FIELD.get(unit.cls)
    if i is None or unit.fields is None:
        return None
    rng = ctx.rng
    choices = [MAX_LINKS, MAX_LINKS + 1, 1023, 1024, 0x7FFFFFFF, 0xFFFFFFFF, ctx.next_handle + 5]
    choices += ctx.detached[-2:] + list(ctx.links)[:3]
    unit.pad_fields(i + 1)[i] = encode(UInt(rng.choice(choices)))
    return "handle"


def m_delivery_id(ctx: Context, unit: Unit) -> str | None:
    indexes = _DELIVERY_FIELDS.get(unit.cls)
    if indexes is None or unit.fields is None:
        return None
    rng = ctx.rng
    i = rng.choice(indexes)
    value = rng.choice((0, 1, ctx.next_delivery - 1, ctx.next_delivery + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF))
    unit.pad_fields(i + 1)[i] = encode(UInt(value & 0xFFFFFFFF))
    return "delivery-id"


def m_payload(ctx: Context, unit: Unit) -> str | None:
    """Break the message a transfer carries (the router reads its routing fields)."""
    if unit.cls is not Transfer:
        return None
    rng = ctx.rng
    payload = unit.payload
    roll = rng.randrange(8)
    if roll == 0 and payload:
        data = bytearray(payload)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        unit.payload = bytes(data)
    elif roll == 1 and payload:
        unit.payload = payload[: rng.randrange(len(payload))]
    elif roll == 2:
        unit.payload = rng.randbytes(rng.randint(1, 64))
    elif roll == 3:  # a section whose value is hostile
        unit.payload = b"\x00\x53" + bytes((rng.choice((0x70, 0x71, 0x72, 0x73, 0x74, 0x75)),)) + hostile_encoding(rng)
    elif roll == 4:  # sections out of order
        unit.payload = encode(Properties(to=ANYCAST)) + encode(Header(ttl=UInt(5))) + b"\x00\x53\x75\xa0\x01x"
    elif roll == 5:  # properties with fields of the wrong type
        unit.payload = b"\x00\x53\x73" + list_bytes([encode(random_value(rng)) for _ in range(rng.randint(1, 14))]) + b"\x00\x53\x75\xa0\x00"
    elif roll == 6:
        unit.payload = b""
    else:  # message annotations: many, or keyed by what is not a symbol
        annotations = rng.choice(({Symbol(f"x-{i}"): i for i in range(500)}, {1: 2}, {Symbol("x-opt-to"): [ANYCAST]}))
        unit.payload = b"\x00\x53\x72" + encode(annotations) + payload
    return "payload"


SEMANTIC: list[Callable[[Context, Unit], str | None]] = [
    m_boundary, m_boundary, m_boundary, m_handle, m_handle, m_delivery_id, m_delivery_id, m_payload, m_payload,
]
"""Well-typed values that are wrong for the moment: the frame decodes, the state machines judge it."""
SYNTACTIC: list[Callable[[Context, Unit], str | None]] = [
    m_wrong_type, m_wrong_type, m_null, m_drop_fields, m_extra_fields, m_hostile, m_hostile, m_descriptor,
    m_container, m_channel,
]
"""Frames the decoder (or the frame reader) must refuse."""

INTERESTING = (0x00, 0x01, 0x02, 0x40, 0x41, 0x45, 0x53, 0x7F, 0x80, 0xA0, 0xA1, 0xA3, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0, 0xFF)


def blind(ctx: Context, unit: Unit) -> str:
    """Mutate the frame's bytes without regard for what they mean."""
    rng = ctx.rng
    data = bytearray(unit.render())
    roll = rng.randrange(10) if len(data) >= 8 else 9
    if roll == 0 and len(data) > 8:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(8, len(data))
            data[i] ^= 1 << rng.randrange(8)
        label = "bit-flips"
    elif roll == 1 and len(data) > 8:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(8, len(data))] = rng.choice(INTERESTING)
        label = "interesting-bytes"
    elif roll == 2 and len(data) > 9:  # a shorter body, sized to match
        del data[rng.randrange(9, len(data)) :]
        _U32.pack_into(data, 0, len(data))
        label = "truncated-body"
    elif roll == 3 and len(data) > 9:  # a frame that claims more than it has
        del data[rng.randrange(9, len(data)) :]
        label = "truncated-frame"
    elif roll == 4:
        data += rng.randbytes(rng.choice((1, 4, 100)))
        _U32.pack_into(data, 0, len(data))
        label = "extended-body"
    elif roll == 5:
        _U32.pack_into(data, 0, rng.choice((0, 1, 7, 8, 9, len(data) - 1, len(data) + 1, MAX_FRAME, MAX_FRAME + 1,
                                            1 << 31, 0xFFFFFFFF)) & 0xFFFFFFFF)
        label = "frame-size"
    elif roll == 6:
        data[4] = rng.choice((0, 1, 3, 4, 0xFF))
        label = "data-offset"
    elif roll == 7:
        data[5] = rng.choice((1, 2, 7, 0xFF))
        label = "frame-type"
    elif roll == 8:  # an extended header (legal, and rarely used)
        data[4] = 3
        data[8:8] = b"\xde\xad\xbe\xef"
        _U32.pack_into(data, 0, len(data))
        label = "extended-header"
    else:
        data = bytearray(rng.randbytes(rng.randint(1, 64)))
        label = "garbage"
    unit.raw = bytes(data)
    return label


def mutate(ctx: Context, unit: Unit, density: float, semantic: bool) -> None:
    """Mutate ``unit`` with probability ``density``: by the round's family of mutators
    (``SEMANTIC`` or ``SYNTACTIC``), or blind (a quarter of the syntactic ones)."""
    rng = ctx.rng
    if unit.kind == "heartbeat" or rng.random() >= density:
        return
    if semantic or (rng.random() < 0.75 and unit.raw is None):
        family = SEMANTIC if semantic else SYNTACTIC
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            for _attempt in range(4):
                label = rng.choice(family)(ctx, unit)
                if label is not None:
                    unit.mutations.append(label)
                    break
        if unit.mutations or semantic:
            return
    unit.mutations.append(blind(ctx, unit))


def mutate_stream(ctx: Context, units: list[Unit]) -> list[str]:
    """Reorder, repeat, drop or salt a round's frames."""
    rng = ctx.rng
    applied = []
    for _ in range(rng.choice((0, 0, 0, 0, 1, 1, 2))):
        roll = rng.randrange(6)
        i = rng.randrange(len(units))
        if roll == 0:
            units.insert(i, units[i])
            applied.append("duplicate")
        elif roll == 1 and len(units) > 1:
            j = rng.randrange(len(units))
            units[i], units[j] = units[j], units[i]
            applied.append("swap")
        elif roll == 2 and len(units) > 1:
            del units[i]
            applied.append("drop")
        elif roll == 3:
            units[i:] = units[i:][::-1]
            applied.append("reverse")
        elif roll == 4:
            units.insert(i, Unit.raw_bytes("header", rng.choice((AMQP_HEADER, SASL_HEADER))))
            applied.append("header-mid-stream")
        else:
            for _ in range(rng.randint(1, 5)):
                units.insert(rng.randrange(len(units) + 1), Unit.raw_bytes("heartbeat", EMPTY_FRAME))
            applied.append("heartbeats")
    return applied


def make_round(ctx: Context) -> tuple[list[Unit], list[str]]:
    """One round of fuzz frames: generated for the state, mutated, shuffled."""
    rng = ctx.rng
    roll = rng.random()
    count = rng.randint(1, 4) if roll < 0.5 else rng.randint(5, 12) if roll < 0.88 else rng.randint(13, 48)
    # Half the rounds bend values the state machines must judge, and the connection
    # usually lives on into deeper states; the other half break the encoding, mostly in
    # a frame or two among valid ones (the router reads those before the one that ends
    # the connection), sometimes everywhere.
    semantic = rng.random() < 0.5
    if semantic:
        density = rng.choice((0.2, 0.4, 0.7))
    else:
        density = rng.choices((0.05, 0.15, 0.35, 0.8), (3, 3, 2, 1))[0]
    units: list[Unit] = []
    while len(units) < count:
        weights = generator_weights(ctx)
        if rng.random() < 0.1:  # a frame that does not belong in this state
            name = rng.choice(list(GENERATORS))
        else:
            name = rng.choices(list(weights), list(weights.values()))[0]
        generated = GENERATORS[name](ctx)
        for unit in generated:
            mutate(ctx, unit, density, semantic)
        units += generated
    return units, mutate_stream(ctx, units)


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

    Anything the router sends that is not well-formed AMQP, and any frame after its
    close, is an anomaly: a peer's garbage must never make the router speak garbage.
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
            if p.remote_channel is not None:
                self.begins[int(p.remote_channel)] += 1
            self._see(f"{channel}: begin remote_channel={p.remote_channel}")
        elif kind is Attach:
            self.handles[str(p.name)] = int(p.handle)
            self._see(f"{channel}: attach {p.name!r} handle={p.handle}")
        elif kind is Detach:
            if p.error is not None:
                self.conditions[f"detach:{_condition(p.error)}"] += 1
                self.reasons[_reason("detach", p.error)] += 1
            self._see(f"{channel}: detach handle={p.handle} {_condition(p.error) if p.error else ''}")
        elif kind is End:
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
    "mid-transfer": 10, "detached": 8, "ended": 6, "closed": 3,
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


def _probe_begin() -> bytes:
    return Unit.of(Begin(next_outgoing_id=UInt(0), incoming_window=UInt(100), outgoing_window=UInt(100)), PROBE_CHANNEL).render()


PROBE_BEGIN = b""
PROBE_END = b""
CLOSE_FRAME = b""


def _constants() -> None:
    global PROBE_BEGIN, PROBE_END, CLOSE_FRAME
    PROBE_BEGIN = _probe_begin()
    PROBE_END = Unit.of(End(), PROBE_CHANNEL).render()
    CLOSE_FRAME = Unit.of(Close()).render()


_constants()


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
    """Counts that add up across cases and workers."""

    COUNTERS = ("states", "mutations", "endings", "conditions", "reasons", "outcomes", "findings", "durations")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        for name in self.COUNTERS:
            setattr(self, name, Counter())

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
        self.states[result.state] += 1  # type: ignore[attr-defined]
        self.mutations.update(result.mutations)  # type: ignore[attr-defined]
        self.endings[result.outcome] += 1  # type: ignore[attr-defined]
        self.conditions.update(peer.inbox.conditions)  # type: ignore[attr-defined]
        self.reasons.update(peer.inbox.reasons)  # type: ignore[attr-defined]
        self.outcomes.update(peer.inbox.outcomes)  # type: ignore[attr-defined]
        for finding in result.findings:
            self.findings[finding["kind"]] += 1  # type: ignore[attr-defined]
        bucket = next((f"<{limit:g} s" for limit in DURATION_BUCKETS if result.seconds < limit), f">={DURATION_BUCKETS[-1]:g} s")
        self.durations[bucket] += 1  # type: ignore[attr-defined]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        for name in self.COUNTERS:
            out[name] = dict(getattr(self, name).most_common())
        return out

    def merge(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if key in self.COUNTERS:
                getattr(self, key).update(value)
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
    reported = Stats()
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
    reported.merge(stats.as_dict())
    emit({"result": reported.as_dict()})


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
                _say(args, f"finding: {message['finding']}")
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
            _say(args, f"checkpoint {number} failed: {exc!r}")
        frames = sum(progress.values())
        elapsed = time.monotonic() - started
        _say(args, f"{elapsed:6.0f} s  {frames:>9,} mutated frames  {frames / max(elapsed, 1e-9):>7,.0f}/s  "
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
    crash_count = len(crashes) + len(trouble) + (1 if run["router_died"] else 0)
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


def _say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ======================================================================================
# One case again, or a saved byte stream
# ======================================================================================
async def run_one(args: argparse.Namespace, router: RouterUnderTest, reproducers: Path) -> int:
    services = Services()
    await services.start(router.url)
    try:
        if args.replay:
            data = Path(args.replay).read_bytes()
            loop = asyncio.get_running_loop()
            transport, peer = await loop.create_connection(Peer, HOST, router.port)
            peer.write(data)
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
