"""Authorization policy: which users may connect, and where they may send and receive.

Users belong to groups (``[policy.groups.NAME]``); a group says which addresses its
users may send to and receive from, whether they may create dynamic (reply) addresses,
whether multicast addresses are allowed in each direction, and how many connections the
group, and each of its users, may hold.  Clients that did not authenticate (SASL
ANONYMOUS, or no SASL) are the user ``anonymous`` in ``policy.anonymous_group``; users
listed in no group are in ``policy.default_group``.  Without either, such clients are
refused.  Without a ``[policy]`` table there is no policy: everything is allowed.

Patterns: ``"*"`` is every address, ``"prefix*"`` every address starting with
``prefix``, anything else exactly that address.

The core asks: ``admit`` when a connection opens (``release`` when it ends), and the
``Grant`` it returns at each attach and, for the anonymous relay, at each message.  Per
message the answer comes from a per-group cache of decisions by address, so the hot path
pays one dict lookup.  Every denial is counted (``counters.policy_denied``) and logged
at most once per ``DENIAL_LOG_SECONDS`` for each user, action and address.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..amqp.errors import Condition
from ..amqp.spec import Error
from .config import GroupConfig, PolicyConfig

__all__ = ["Policy", "Grant", "Patterns", "ANONYMOUS_USER"]

log = logging.getLogger("switchboard.router.policy")

ANONYMOUS_USER = "anonymous"
DENIAL_LOG_SECONDS = 60.0
MAX_LOGGED_CAUSES = 1024
"""Distinct denials remembered for the log's rate limit (beyond: not logged until some age out)."""
MAX_CACHED_DECISIONS = 4096
"""Per group and direction; the cache starts afresh when full."""


class Patterns:
    """A compiled list of address patterns: exact names and prefixes."""

    __slots__ = ("exact", "prefixes", "everything")

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.everything = "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*") and p != "*")

    def matches(self, address: str) -> bool:
        return self.everything or address in self.exact or address.startswith(self.prefixes)


class _Group:
    """A group's compiled rules, its connection counts and its decision caches."""

    def __init__(self, config: GroupConfig, distribution_of: Callable[[str], str]) -> None:
        self.config = config
        self.name = config.name
        self.send = Patterns(config.send)
        self.receive = Patterns(config.receive)
        self._distribution_of = distribution_of
        self.connections = 0
        self.per_user: dict[str, int] = {}
        self.send_cache: dict[str, str | None] = {}

    def send_denial(self, address: str) -> str | None:
        """Why sending to ``address`` is denied (a phrase), or None if it is allowed."""
        cache = self.send_cache
        try:
            return cache[address]
        except KeyError:
            pass
        if not self.send.matches(address):
            why: str | None = f"may not send to {address!r}"
        elif not self.config.send_multicast and self._distribution_of(address) == "multicast":
            why = f"may not send to multicast address {address!r}"
        else:
            why = None
        if len(cache) >= MAX_CACHED_DECISIONS:
            cache.clear()
        cache[address] = why
        return why

    def receive_denial(self, address: str) -> str | None:
        if not self.receive.matches(address):
            return f"may not receive from {address!r}"
        if not self.config.receive_multicast and self._distribution_of(address) == "multicast":
            return f"may not receive from multicast address {address!r}"
        return None


class Grant:
    """One admitted connection's user and group: the answers to its attaches and messages."""

    __slots__ = ("policy", "user", "group")

    def __init__(self, policy: "Policy", user: str, group: _Group) -> None:
        self.policy = policy
        self.user = user
        self.group = group

    def send_refusal(self, address: str) -> Error | None:
        """The error refusing a sender link to ``address``, or None."""
        why = self.group.send_denial(address)
        return None if why is None else self._deny("send", address, why)

    def receive_refusal(self, address: str) -> Error | None:
        """The error refusing a receiver link from ``address``, or None (also for "")."""
        if not address:
            return None  # no address at all: the core refuses it as an invalid field
        why = self.group.receive_denial(address)
        return None if why is None else self._deny("receive", address, why)

    def dynamic_refusal(self) -> Error | None:
        if self.group.config.dynamic:
            return None
        return self._deny("dynamic", "", "may not create dynamic addresses")

    def may_send_to(self, address: str) -> bool:
        """For each message on the anonymous relay: a cached decision, nothing logged."""
        return self.group.send_denial(address) is None

    def relay_refusal(self, address: str) -> str:
        """Count and log a message denied on the anonymous relay; its rejection's description."""
        why = self.group.send_denial(address) or f"may not send to {address!r}"
        return str(self._deny("send", address, why).description)

    def _deny(self, action: str, address: str, why: str) -> Error:
        description = f"user {self.user!r} (group {self.group.name!r}) {why}"
        self.policy._denied((self.user, action, address), description)
        return Error(condition=Condition.UNAUTHORIZED_ACCESS, description=description)


class Policy:
    """The router's policy; ``enabled`` is False when none is configured."""

    def __init__(
        self,
        config: PolicyConfig | None,
        distribution_of: Callable[[str], str],
        counters: Any,
        clock: Callable[[], float],
    ) -> None:
        self.enabled = config is not None
        self.counters = counters
        self.clock = clock
        self._groups: dict[str, _Group] = {}
        self._group_of: dict[str, _Group] = {}
        self._anonymous: _Group | None = None
        self._default: _Group | None = None
        self._logged: dict[tuple[str, str, str], float] = {}
        if config is None:
            return
        for group_config in config.groups:
            group = _Group(group_config, distribution_of)
            self._groups[group.name] = group
            for user in group_config.users:
                self._group_of[user] = group
        if config.anonymous_group is not None:
            self._anonymous = self._groups[config.anonymous_group]
        if config.default_group is not None:
            self._default = self._groups[config.default_group]

    def admit(self, user: str | None) -> tuple[Grant | None, Error | None]:
        """A connection opened by ``user`` (None or ``anonymous``: not authenticated).

        Returns its grant (None without a policy) or the error to refuse it with.
        """
        if not self.enabled:
            return None, None
        if user is None or user == ANONYMOUS_USER:
            name, group = ANONYMOUS_USER, self._anonymous
        else:
            name, group = user, self._group_of.get(user, self._default)
        if group is None:
            who = "anonymous clients are" if name == ANONYMOUS_USER else f"user {name!r} is"
            return None, self._refuse(
                (name, "connect", ""), Condition.UNAUTHORIZED_ACCESS,
                f"{who} in no policy group, so may not connect",
            )
        limit = group.config.max_connections
        if limit is not None and group.connections >= limit:
            return None, self._refuse(
                (name, "connect", group.name), Condition.RESOURCE_LIMIT_EXCEEDED,
                f"group {group.name!r} has reached its max_connections ({limit}); user {name!r} refused",
            )
        limit = group.config.max_connections_per_user
        if limit is not None and group.per_user.get(name, 0) >= limit:
            return None, self._refuse(
                (name, "connect", ""), Condition.RESOURCE_LIMIT_EXCEEDED,
                f"user {name!r} has reached max_connections_per_user ({limit}) of group {group.name!r}",
            )
        group.connections += 1
        group.per_user[name] = group.per_user.get(name, 0) + 1
        return Grant(self, name, group), None

    def carry_over(self, user: str | None) -> Grant:
        """The grant, under this (reloaded) policy, of a connection admitted under the
        previous one.  It counts against its group's connection limits but is never
        refused by them (the connection is already open; new ones are refused while the
        group is over).  A user in no group now keeps the connection, and the links it
        has, but may attach no new link and send nothing more on the anonymous relay."""
        name = ANONYMOUS_USER if user is None or user == ANONYMOUS_USER else user
        group = self._anonymous if name == ANONYMOUS_USER else self._group_of.get(name, self._default)
        if group is None:
            group = _Group(GroupConfig(name="(none)"), lambda address: "balanced")
        group.connections += 1
        group.per_user[name] = group.per_user.get(name, 0) + 1
        return Grant(self, name, group)

    def release(self, grant: Grant) -> None:
        """The connection admitted with ``grant`` ended."""
        group = grant.group
        group.connections -= 1
        left = group.per_user.get(grant.user, 0) - 1
        if left > 0:
            group.per_user[grant.user] = left
        else:
            group.per_user.pop(grant.user, None)

    def _refuse(self, key: tuple[str, str, str], condition: str, description: str) -> Error:
        self._denied(key, description)
        return Error(condition=condition, description=description)

    def _denied(self, key: tuple[str, str, str], description: str) -> None:
        self.counters.policy_denied += 1
        now = self.clock()
        logged = self._logged
        last = logged.get(key)
        if last is not None and now - last < DENIAL_LOG_SECONDS:
            return
        if last is None and len(logged) >= MAX_LOGGED_CAUSES:
            for old in [k for k, at in logged.items() if now - at >= DENIAL_LOG_SECONDS]:
                del logged[old]
            if len(logged) >= MAX_LOGGED_CAUSES:
                return  # a storm of distinct denials: counted, not all logged
        logged[key] = now
        log.warning("policy denied: %s (logged once per %g s for this user, action and address)",
                    description, DENIAL_LOG_SECONDS)
