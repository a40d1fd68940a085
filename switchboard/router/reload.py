"""What a configuration reload may change, and what it changes.

A reload (SIGHUP, ``RELOAD config`` on ``$management``, ``POST /api/reload``) reads the
router's file again and validates all of it first.  ``plan_reload`` then compares the new
configuration with the running one: a change that needs a restart refuses the whole
reload, naming its key, so a reload is applied entirely or not at all.

Reloadable, while every connection stays open:

* ``[[addresses]]``: prefixes added, removed or changed (distribution and queue
  settings; a queue prefix's ``host`` only for a new prefix);
* ``[policy]``: groups, users, rules and connection limits;
* ``[authentication] credentials_file``: its users and passwords (the file is read again);
* ``[limits]`` but for ``RESTART_LIMITS``;
* the admin token (``admin.token_file`` is read again).

Not reloadable: ``router.id``, ``router.data_dir``, ``[[listeners]]`` (their TLS files
are read again on every reload all the same), ``[[connectors]]``, ``[store]``, ``[admin]``
but its token, ``[authentication]`` but its users, and ``RESTART_LIMITS``.  ``[logging]``
is not looked at here (the router applies it on its own, ``Router.reload``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import AddressConfig, ConfigError, RouterConfig

__all__ = ["plan_reload", "RESTART_LIMITS"]

RESTART_LIMITS = ("handshake_timeout", "close_timeout", "max_connection_output", "frames_per_turn")
"""Limits the listeners and the event loop took at start."""

RESTART = "changes need a restart"


def plan_reload(old: RouterConfig, new: RouterConfig) -> list[str]:
    """What reloading ``new`` over ``old`` changes, a line for each change (empty: nothing).

    Raises ``ConfigError`` naming the first key whose change needs a restart."""
    if new.router_id != old.router_id:
        raise ConfigError(f"router.id: {RESTART} (running as {old.router_id!r}, the file says {new.router_id!r})")
    if new.data_dir != old.data_dir:
        raise ConfigError(f"router.data_dir: {RESTART} (running with {old.data_dir})")
    _same_items("listeners", old.listeners, new.listeners)
    _same_items("connectors", old.connectors, new.connectors)
    for field in dataclasses.fields(old.store):
        if getattr(old.store, field.name) != getattr(new.store, field.name):
            raise ConfigError(f"store.{field.name}: {RESTART}")
    for field in dataclasses.fields(old.admin):
        if field.name != "token" and getattr(old.admin, field.name) != getattr(new.admin, field.name):
            raise ConfigError(f"admin.{field.name}: {RESTART} (only the token is read again)")
    for field in dataclasses.fields(old.authentication):
        if field.name != "credentials" and getattr(old.authentication, field.name) != getattr(new.authentication, field.name):
            raise ConfigError(f"authentication.{field.name}: {RESTART} (only the credentials file's users are read again)")
    for name in RESTART_LIMITS:
        if getattr(old.limits, name) != getattr(new.limits, name):
            raise ConfigError(f"limits.{name}: {RESTART}")
    _check_queue_hosting(old, new)

    changes = _address_changes(old.addresses, new.addresses)
    if new.policy != old.policy:
        changes.append(_policy_change(old, new))
    for field in dataclasses.fields(old.limits):
        before, after = getattr(old.limits, field.name), getattr(new.limits, field.name)
        if before != after:
            changes.append(f"limits.{field.name}: {before} -> {after}")
    if _users(old) != _users(new):
        changes.append("authentication.credentials_file: users read again")
    if old.admin.token != new.admin.token:
        changes.append("admin.token_file: new token")
    return changes


def _same_items(key: str, old: tuple[Any, ...], new: tuple[Any, ...]) -> None:
    if len(old) != len(new):
        raise ConfigError(f"{key}: {RESTART} (running with {len(old)}, the file has {len(new)})")
    for index, (before, after) in enumerate(zip(old, new)):
        for field in dataclasses.fields(before):
            if getattr(before, field.name) != getattr(after, field.name):
                raise ConfigError(f"{key}[{index}].{field.name}: {RESTART}")


def _check_queue_hosting(old: RouterConfig, new: RouterConfig) -> None:
    """Which router hosts a prefix's queues, and whether this one has a store at all, were
    settled at start."""
    before = {entry.prefix: entry for entry in old.addresses}
    for index, entry in enumerate(new.addresses):
        previous = before.get(entry.prefix)
        if entry.queue is None or previous is None or previous.queue is None:
            continue
        if entry.queue.host != previous.queue.host:
            raise ConfigError(
                f"addresses[{index}].host: {RESTART} (the queues of {entry.prefix!r} are hosted by"
                f" {previous.queue.host or old.router_id!r})"
            )
    if new.has_queues and not old.has_queues:
        index = next(i for i, a in enumerate(new.addresses) if a.queue is not None and a.queue.host in (None, new.router_id))
        raise ConfigError(
            f"addresses[{index}].distribution: the first queue prefix this router hosts {RESTART}"
            " (the queue store is opened at start)"
        )


def _address_changes(old: tuple[AddressConfig, ...], new: tuple[AddressConfig, ...]) -> list[str]:
    before = {entry.prefix: entry for entry in old}
    after = {entry.prefix: entry for entry in new}
    changes = []
    for prefix, entry in after.items():
        previous = before.get(prefix)
        if previous is None:
            changes.append(f"address prefix {prefix!r} added ({entry.distribution})")
        elif previous.distribution != entry.distribution:
            changes.append(f"address prefix {prefix!r}: distribution {previous.distribution} -> {entry.distribution}")
        elif previous.queue != entry.queue and previous.queue is not None and entry.queue is not None:
            differing = [
                f"{field.name} {getattr(previous.queue, field.name)} -> {getattr(entry.queue, field.name)}"
                for field in dataclasses.fields(entry.queue)
                if getattr(previous.queue, field.name) != getattr(entry.queue, field.name)
            ]
            changes.append(f"address prefix {prefix!r}: {', '.join(differing)}")
    for prefix in before:
        if prefix not in after:
            changes.append(f"address prefix {prefix!r} removed")
    return changes


def _policy_change(old: RouterConfig, new: RouterConfig) -> str:
    if old.policy is None:
        return "policy: enabled"
    if new.policy is None:
        return "policy: removed (every client may do everything)"
    before = {group.name: group for group in old.policy.groups}
    after = {group.name: group for group in new.policy.groups}
    changed = sorted(name for name in before.keys() & after.keys() if before[name] != after[name])
    parts = [f"+{name}" for name in sorted(after.keys() - before.keys())]
    parts += [f"-{name}" for name in sorted(before.keys() - after.keys())]
    parts += [f"~{name}" for name in changed]
    for key in ("anonymous_group", "default_group"):
        if getattr(old.policy, key) != getattr(new.policy, key):
            parts.append(f"{key} {getattr(old.policy, key)} -> {getattr(new.policy, key)}")
    return f"policy: groups {' '.join(parts)}" if parts else "policy: changed"


def _users(config: RouterConfig) -> str | None:
    credentials = config.authentication.credentials
    return credentials.format() if credentials is not None else None
