"""The address table: which distribution an address has, and who sends and consumes there.

An address's distribution comes from the longest configured prefix that matches it.
``Address`` records exist while some link uses them (or messages wait for them) and are
looked up by exact name on every message, so the prefix match runs once per address.
It also gives the address its prefix's traffic record (``traffic.py``), which routing
counts on.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Iterable, Iterator

from .config import AddressConfig, QueueSettings
from .interrouter import DYNAMIC_PREFIX, MANAGEMENT_ADDRESS, MANAGEMENT_PREFIX, owner_of
from .traffic import PrefixTraffic, RpcTopic, TrafficTable

if TYPE_CHECKING:
    from .links import Inbound, Outbound, Pending
    from .queues import HostedQueue

__all__ = ["Address", "AddressTable"]


class Address:
    """One address: its consumers (our sending links), its senders, messages waiting."""

    __slots__ = (
        "name", "distribution", "consumers", "senders", "pending", "dynamic", "held_bytes", "held_messages",
        "remote", "owner", "advertised", "last_used", "hosted", "queue_proxy", "_rotation", "traffic", "rpc",
        "messages_in", "messages_out", "rate_in", "rate_out", "_sample",
    )

    def __init__(self, name: str, distribution: str, traffic: PrefixTraffic, dynamic: bool = False) -> None:
        self.name = name
        self.distribution = distribution
        self.traffic = traffic
        """The counts of the prefix it falls under (shared with its other addresses)."""
        self.rpc: RpcTopic | None = None
        """For an RPC address, the topic whose call latencies the router measures."""
        self.consumers: list["Outbound"] = []
        self.senders: list["Inbound"] = []
        self.pending: deque["Pending"] = deque()
        """Messages that arrived while no consumer had credit (bounded: see credit.py)."""
        self.dynamic = dynamic
        self.held_bytes = 0
        """Bytes of its waiting messages and multicast copies (max_address_bytes)."""
        self.held_messages = 0
        self.remote: list["Outbound"] = []
        """Our links to other routers for it (next hops toward remote consumers), cheapest first."""
        self.owner: str | None = None
        """The router a dynamic address of another router belongs to."""
        self.advertised = False
        """The network has been told we have consumers for it."""
        self.last_used = 0.0
        self.hosted: "HostedQueue | None" = None
        """The queue this router hosts for the address (``queues.py``)."""
        self.queue_proxy = False
        """A queue hosted by another router (``owner``): senders' messages go there, and
        what it sends to this router's consumers is delivered here."""
        self._rotation = 0
        self.messages_in = 0
        """Messages that came to it (from senders here and other routers), routed or not."""
        self.messages_out = 0
        """Messages sent from it to consumers and next hops (a multicast copy each)."""
        self.rate_in = 0.0
        self.rate_out = 0.0
        """Messages per second in and out over the last sample (``sample_rates``)."""
        self._sample: tuple[float, int, int] | None = None

    def sample_rates(self, now: float) -> None:
        """Turn the counts since the last call into rates (the core's tick calls it about
        once a second, so the message path only counts)."""
        sample = self._sample
        if sample is not None and now > sample[0]:
            elapsed = now - sample[0]
            self.rate_in = (self.messages_in - sample[1]) / elapsed
            self.rate_out = (self.messages_out - sample[2]) / elapsed
        self._sample = (now, self.messages_in, self.messages_out)

    @property
    def in_use(self) -> bool:
        return bool(self.consumers or self.senders or self.pending or self.remote or self.hosted)

    def capacity(self, max_unsettled: int) -> int:
        """Messages the consumers (here and, through our links, elsewhere) can take now
        beyond what already waits for them."""
        total = -len(self.pending)
        for consumers in (self.consumers, self.remote) if self.remote else (self.consumers,):
            for out in consumers:
                link = out.link
                room = max_unsettled - len(link.unsettled)
                session = link.session
                if (
                    room > 0
                    and not out.connection.port.write_paused
                    and session.remote_incoming_window > 0
                    and not session.blocked_transfers
                ):
                    total += link.credit if link.credit < room else room
        return total

    def next_rotation(self) -> int:
        self._rotation += 1
        return self._rotation

    def __repr__(self) -> str:
        return (
            f"Address({self.name!r}, {self.distribution}, consumers={len(self.consumers)},"
            f" senders={len(self.senders)}, pending={len(self.pending)})"
        )


class AddressTable:
    def __init__(self, prefixes: Iterable[AddressConfig], router_id: str | None = None,
                 traffic: TrafficTable | None = None) -> None:
        # Longest prefix first, so the first match is the longest.
        self._prefixes = sorted(prefixes, key=lambda a: len(a.prefix), reverse=True)
        self._addresses: dict[str, Address] = {}
        self.router_id = router_id
        self.traffic = traffic if traffic is not None else TrafficTable()
        """Per-prefix counts (``traffic.py``), kept by prefix across reloads."""
        for entry in self._prefixes:
            self.traffic.for_prefix(entry.prefix)
        self.generation = 0
        """Counts the prefix tables put in place by ``reconfigure``: something cached from
        a prefix's configuration is stale when it was looked up under an older one."""

    def reconfigure(self, prefixes: Iterable[AddressConfig]) -> list[str]:
        """Put a new prefix table in place (a configuration reload).

        Address records live on: lookups by prefix (``distribution_of``,
        ``queue_settings``, ``prefix_of``) answer from the new table at once, and a record
        made from now on gets the new distribution.  A record in use keeps the
        distribution it was made with, except between ``balanced`` and ``closest`` (the
        same records, the same credit: switched in place); it takes the new one when it
        is next made, once its links are gone.  Returns a line for each record kept so.
        """
        self._prefixes = sorted(prefixes, key=lambda a: len(a.prefix), reverse=True)
        self.generation += 1
        for entry in self._prefixes:
            self.traffic.for_prefix(entry.prefix)  # a removed prefix's record stays, its counts kept
        kept = []
        for address in self._addresses.values():
            if address.dynamic:
                continue
            address.traffic = self.traffic_of(address.name)  # counted under its prefix from now on
            wanted = self.distribution_of(address.name)
            if wanted == address.distribution:
                continue
            if {wanted, address.distribution} == {"balanced", "closest"} and address.owner is None:
                address.distribution = wanted
            elif address.hosted is None:  # a hosted queue is reported by its manager
                kept.append(f"{address.name} stays {address.distribution} until its links detach (now {wanted})")
        return kept

    def prefix_of(self, name: str) -> AddressConfig | None:
        """The configured prefix ``name`` falls under (the longest), or None."""
        for entry in self._prefixes:
            if name.startswith(entry.prefix):
                return entry
        return None

    def distribution_of(self, name: str) -> str:
        if name == MANAGEMENT_ADDRESS or name.startswith(MANAGEMENT_PREFIX):
            # Answered by this router, or by the router named after the prefix (management.py).
            return "management"
        for entry in self._prefixes:
            if name.startswith(entry.prefix):
                return entry.distribution
        return "balanced"

    def traffic_of(self, name: str) -> PrefixTraffic:
        """The traffic record of address ``name``: its prefix's, or the dynamic addresses'."""
        if name.startswith(DYNAMIC_PREFIX):
            return self.traffic.dynamic
        entry = self.prefix_of(name)
        return self.traffic.for_prefix(entry.prefix if entry is not None else "")

    def queue_settings(self, name: str) -> QueueSettings | None:
        """The settings of the queue prefix ``name`` falls under, or None if it is not a queue."""
        if name == MANAGEMENT_ADDRESS or name.startswith(MANAGEMENT_PREFIX):
            return None
        for entry in self._prefixes:
            if name.startswith(entry.prefix):
                return entry.queue
        return None

    def hosts_queue(self, name: str) -> bool:
        """``name`` is a queue this router hosts."""
        settings = self.queue_settings(name)
        return settings is not None and settings.host in (None, self.router_id)

    def get(self, name: str) -> Address:
        """The record for ``name``, created on first use."""
        address = self._addresses.get(name)
        if address is None:
            address = Address(name, self.distribution_of(name), self.traffic_of(name))
            address.rpc = self.traffic.rpc_topic(name)
            owner = owner_of(name)
            if owner is not None and owner != self.router_id:
                address.owner = owner
            elif address.distribution == "queue":
                host = self.queue_settings(name).host  # type: ignore[union-attr]
                if host is not None and host != self.router_id:
                    address.owner = host
                    address.queue_proxy = True
            self._addresses[name] = address
        return address

    def find(self, name: str) -> Address | None:
        return self._addresses.get(name)

    def add_dynamic(self, name: str) -> Address:
        address = Address(name, "closest", self.traffic.dynamic, dynamic=True)
        self._addresses[name] = address
        return address

    def release_if_unused(self, address: Address) -> None:
        if not address.in_use and self._addresses.get(address.name) is address:
            del self._addresses[address.name]

    def __len__(self) -> int:
        return len(self._addresses)

    def __iter__(self) -> Iterator[Address]:
        return iter(list(self._addresses.values()))
