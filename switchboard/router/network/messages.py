"""The inter-router control messages, as typed values with a map form for the wire.

Every message is an AMQP map of plain values (str, int, bool, list, dict) carrying its
operation (``op``) and the protocol version (``v``).  ``to_map()`` gives that map;
``parse_message()`` (or a class's ``from_map()``) reads one back and raises ``ValueError``
— never anything else — when a neighbour sends something malformed: a wrong type, a
missing field, a negative sequence, an unknown operation or version.  Unknown extra keys
are ignored, so a later minor version can add fields without breaking this one.

All messages travel between neighbours only.  HELLO, RA, LSR and MAR speak for the
sender (``id``); LSU and MAU speak for their origin (``id``), which may be a router many
hops away, because those two are flooded: a router passes on every one that is news to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Union

__all__ = [
    "HELLO",
    "LSR",
    "LSU",
    "MAR",
    "MAU",
    "MAX_ADDRESS_CHARS",
    "MAX_COST",
    "MAX_ROUTER_ID_CHARS",
    "PROTOCOL_VERSION",
    "RA",
    "ControlMessage",
    "RouterSummary",
    "parse_message",
]

PROTOCOL_VERSION = 1
"""The version this code speaks; messages of any other version are refused."""

MAX_ROUTER_ID_CHARS = 255
MAX_ADDRESS_CHARS = 4096
MAX_COST = (1 << 31) - 1
_MAX_COUNTER = (1 << 63) - 1  # the largest AMQP long: what a plain int encodes as


def _field(body: dict, key: str) -> Any:
    try:
        return body[key]
    except KeyError:
        raise ValueError(f"missing field {key!r}") from None


def _counter(body: dict, key: str) -> int:
    value = _field(body, key)
    # bool is an int subclass; a True sequence number is a peer's bug, not a 1
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key}: expected an integer, got {type(value).__name__}")
    if not 0 <= value <= _MAX_COUNTER:
        raise ValueError(f"{key}: {value} out of range")
    return int(value)


def _router_id(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a router id string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ROUTER_ID_CHARS:
        raise ValueError(f"{where}: router id of {len(value)} characters")
    return str(value)


def _address(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an address string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ADDRESS_CHARS:
        raise ValueError(f"{where}: address of {len(value)} characters")
    return str(value)


def _list(body: dict, key: str) -> list:
    value = _field(body, key)
    if not isinstance(value, list):
        raise ValueError(f"{key}: expected a list, got {type(value).__name__}")
    return value


def _router_ids(body: dict, key: str) -> tuple[str, ...]:
    return tuple(_router_id(item, f"{key}[{i}]") for i, item in enumerate(_list(body, key)))


def _addresses(body: dict, key: str) -> tuple[str, ...]:
    return tuple(_address(item, f"{key}[{i}]") for i, item in enumerate(_list(body, key)))


def _cost(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: expected an integer cost, got {type(value).__name__}")
    if not 1 <= value <= MAX_COST:
        raise ValueError(f"{where}: cost {value} out of range 1..{MAX_COST}")
    return int(value)


def _check_header(body: Any, op: str) -> None:
    if not isinstance(body, dict):
        raise ValueError(f"expected a map, got {type(body).__name__}")
    if body.get("op") != op:
        raise ValueError(f"expected op {op!r}, got {body.get('op')!r}")
    version = body.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version != PROTOCOL_VERSION:
        raise ValueError(f"protocol version {version!r} not supported (this router speaks {PROTOCOL_VERSION})")


def _header(op: str, router_id: str, instance: int) -> dict[str, Any]:
    return {"op": op, "v": PROTOCOL_VERSION, "id": router_id, "instance": instance}


@dataclass(frozen=True, slots=True)
class HELLO:
    """Neighbour discovery: who I am and which neighbours I currently hear."""

    OP: ClassVar[str] = "HELLO"
    id: str
    instance: int
    seen: tuple[str, ...]

    def to_map(self) -> dict[str, Any]:
        body = _header(self.OP, self.id, self.instance)
        body["seen"] = list(self.seen)
        return body

    @classmethod
    def from_map(cls, body: Any) -> HELLO:
        _check_header(body, cls.OP)
        return cls(_router_id(_field(body, "id"), "id"), _counter(body, "instance"), _router_ids(body, "seen"))


@dataclass(frozen=True, slots=True)
class RouterSummary:
    """One router's versions as another router knows them (an entry of an RA)."""

    id: str
    instance: int
    ls_seq: int
    mobile_seq: int

    def to_list(self) -> list[Any]:
        return [self.id, self.instance, self.ls_seq, self.mobile_seq]

    @classmethod
    def from_list(cls, value: Any, where: str) -> RouterSummary:
        if not isinstance(value, list) or len(value) != 4:
            raise ValueError(f"{where}: expected [id, instance, ls_seq, mobile_seq]")
        fields = {"instance": value[1], "ls_seq": value[2], "mobile_seq": value[3]}
        return cls(
            _router_id(value[0], f"{where}.id"),
            _counter(fields, "instance"),
            _counter(fields, "ls_seq"),
            _counter(fields, "mobile_seq"),
        )


@dataclass(frozen=True, slots=True)
class RA:
    """Router advertisement, to neighbours: my own versions and those of every router I know.

    A neighbour compares the summaries with its own records and asks (LSR, MAR) for what
    it lacks, so a lost flood, a partition or a late start is repaired by one exchange.
    """

    OP: ClassVar[str] = "RA"
    id: str
    instance: int
    ls_seq: int
    mobile_seq: int
    known: tuple[RouterSummary, ...]

    def to_map(self) -> dict[str, Any]:
        body = _header(self.OP, self.id, self.instance)
        body["ls_seq"] = self.ls_seq
        body["mobile_seq"] = self.mobile_seq
        body["known"] = [summary.to_list() for summary in self.known]
        return body

    @classmethod
    def from_map(cls, body: Any) -> RA:
        _check_header(body, cls.OP)
        known = tuple(RouterSummary.from_list(item, f"known[{i}]") for i, item in enumerate(_list(body, "known")))
        return cls(
            _router_id(_field(body, "id"), "id"),
            _counter(body, "instance"),
            _counter(body, "ls_seq"),
            _counter(body, "mobile_seq"),
            known,
        )


@dataclass(frozen=True, slots=True)
class LSR:
    """Link-state request: send me the link state of these routers."""

    OP: ClassVar[str] = "LSR"
    id: str
    instance: int
    want: tuple[str, ...]

    def to_map(self) -> dict[str, Any]:
        body = _header(self.OP, self.id, self.instance)
        body["want"] = list(self.want)
        return body

    @classmethod
    def from_map(cls, body: Any) -> LSR:
        _check_header(body, cls.OP)
        return cls(_router_id(_field(body, "id"), "id"), _counter(body, "instance"), _router_ids(body, "want"))


@dataclass(frozen=True, slots=True)
class LSU:
    """Link-state update: the origin's neighbours and its cost to each, at ``ls_seq``."""

    OP: ClassVar[str] = "LSU"
    id: str
    instance: int
    ls_seq: int
    peers: dict[str, int]

    def to_map(self) -> dict[str, Any]:
        body = _header(self.OP, self.id, self.instance)
        body["ls_seq"] = self.ls_seq
        body["peers"] = dict(self.peers)
        return body

    @classmethod
    def from_map(cls, body: Any) -> LSU:
        _check_header(body, cls.OP)
        raw = _field(body, "peers")
        if not isinstance(raw, dict):
            raise ValueError(f"peers: expected a map, got {type(raw).__name__}")
        peers = {_router_id(peer, "peers key"): _cost(cost, f"peers[{peer!r}]") for peer, cost in raw.items()}
        return cls(_router_id(_field(body, "id"), "id"), _counter(body, "instance"), _counter(body, "ls_seq"), peers)


@dataclass(frozen=True, slots=True)
class MAR:
    """Mobile-address request: bring me up to date on ``origin``'s addresses.

    ``have_instance`` and ``have_seq`` say what the requester holds (0, 0 for nothing); the
    answer is the missing deltas when they are still kept, else the full list.
    """

    OP: ClassVar[str] = "MAR"
    id: str
    instance: int
    origin: str
    have_instance: int
    have_seq: int

    def to_map(self) -> dict[str, Any]:
        body = _header(self.OP, self.id, self.instance)
        body["origin"] = self.origin
        body["have_instance"] = self.have_instance
        body["have_seq"] = self.have_seq
        return body

    @classmethod
    def from_map(cls, body: Any) -> MAR:
        _check_header(body, cls.OP)
        return cls(
            _router_id(_field(body, "id"), "id"),
            _counter(body, "instance"),
            _router_id(_field(body, "origin"), "origin"),
            _counter(body, "have_instance"),
            _counter(body, "have_seq"),
        )


@dataclass(frozen=True, slots=True)
class MAU:
    """Mobile-address update for the origin's ``mobile_seq``.

    Either a delta from ``mobile_seq - 1`` (``added``, ``removed``) or, when ``full`` is
    true, the complete list of the origin's addresses at that sequence (in ``added``).
    """

    OP: ClassVar[str] = "MAU"
    id: str
    instance: int
    mobile_seq: int
    full: bool
    added: tuple[str, ...]
    removed: tuple[str, ...] = ()

    def to_map(self) -> dict[str, Any]:
        body = _header(self.OP, self.id, self.instance)
        body["mobile_seq"] = self.mobile_seq
        if self.full:
            body["exist"] = list(self.added)
        else:
            body["add"] = list(self.added)
            body["del"] = list(self.removed)
        return body

    @classmethod
    def from_map(cls, body: Any) -> MAU:
        _check_header(body, cls.OP)
        origin = _router_id(_field(body, "id"), "id")
        instance = _counter(body, "instance")
        mobile_seq = _counter(body, "mobile_seq")
        if "exist" in body:
            if "add" in body or "del" in body:
                raise ValueError("a full list (exist) cannot also carry a delta (add, del)")
            return cls(origin, instance, mobile_seq, True, _addresses(body, "exist"))
        if mobile_seq < 1:
            raise ValueError("a delta needs mobile_seq >= 1")
        return cls(origin, instance, mobile_seq, False, _addresses(body, "add"), _addresses(body, "del"))


ControlMessage = Union[HELLO, RA, LSR, LSU, MAR, MAU]

_BY_OP: dict[str, Any] = {cls.OP: cls for cls in (HELLO, RA, LSR, LSU, MAR, MAU)}


def parse_message(body: Any) -> ControlMessage:
    """Read any control message from its map; ``ValueError`` when it is not one."""
    if not isinstance(body, dict):
        raise ValueError(f"expected a map, got {type(body).__name__}")
    op = body.get("op")
    cls = _BY_OP.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ValueError(f"unknown op {op!r}")
    return cls.from_map(body)
