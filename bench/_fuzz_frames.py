"""What ``bench/fuzz.py`` sends: frames made valid for a connection's state, then mutated.

``Context`` is what a fuzzing connection believes about its connection (phase, sessions,
links, deliveries); the generators (``g_*``) make the frames that would be valid next,
and update it.  ``mutate`` then bends a frame with the round's family of mutators:
``SEMANTIC`` ones put well-typed but wrong values (boundary numbers, unattached or stale
handles, delivery ids out of range, broken message sections) where the state machines
must judge them; ``SYNTACTIC`` ones break the encoding (values of the wrong type, hostile
sizes, counts and nesting, unknown descriptors, bad channels), and ``blind`` breaks bytes
(bit flips, truncated or extended bodies, impossible frame headers).  ``mutate_stream``
reorders, repeats, drops and salts a round; ``make_round`` puts it all together.

Frames are encoded by hand from the codec's encoding of each field (``split_composite``),
so any part of them can be made wrong.
"""

from __future__ import annotations

import random
import struct
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from switchboard.amqp.codec import encode, skip_value
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

HOST = "127.0.0.1"

# The router's configuration (bench/fuzz.py writes it): small limits and short timers.
MAX_SESSIONS = 4
CHANNEL_MAX = MAX_SESSIONS - 1
MAX_LINKS = 16
MAX_FRAME = 4096
MAX_MESSAGE = 65536
USER, PASSWORD = "fuzz", "fuzz-password"

ANYCAST = "fuzz/anycast"
MULTICAST = "multicast/fuzz"
PROBE_CHANNEL = CHANNEL_MAX
"""Kept for probes: fuzz frames never pick it on purpose."""

CHUNK = 3000
"""Payload bytes per transfer frame: well inside the router's 4 KiB frames."""

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
        weights["attach"] = 1
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
