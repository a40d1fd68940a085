"""Listener pools: each pool gets its own copy of every notification.

A notifier sends each notification to the default pool's queue and to the queue of every
pool it knows listens to that topic and priority.  It learns the pools from the
listeners: a listener in a pool announces the pool on the exchange's multicast
``notify-pools/`` address as it starts, and again whenever a notifier asks (a notifier
asks once, before its first notification to the exchange, and waits a short while for
the answers).  A notifier keeps every pool it heard of for as long as it lives, so a pool
whose listeners all restart still finds its notifications waiting in its queue; a pool
not heard of for ``pool_memory`` seconds is forgotten (its listeners announce it every
``pool_announce_interval`` seconds while they run).

Runs on the driver's loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..client import ClientError, Receiver
from ..rpc import wire

if TYPE_CHECKING:
    from .connection import DriverConnection

__all__ = ["PoolDirectory", "announce"]

log = logging.getLogger("switchboard.oslo")

ANNOUNCEMENT_CREDIT = 100


class PoolDirectory:
    """What the notifiers of one driver know of one exchange's listener pools."""

    def __init__(self, connection: "DriverConnection", exchange: str, memory: float) -> None:
        self.connection = connection
        self.exchange = exchange
        self.memory = memory
        self.pools: dict[tuple[str, str], dict[str, float]] = {}
        """(topic, priority) -> pool -> when it was last heard of (loop time)."""
        self._receiver: Receiver | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, discovery_timeout: float) -> None:
        """Listen for announcements, ask every pool to announce, and wait for answers."""
        client = await self.connection.client()
        address = wire.pools_address(self.exchange)
        self._receiver = await client.receiver(address, credit=ANNOUNCEMENT_CREDIT)
        self._task = asyncio.get_running_loop().create_task(self._listen(self._receiver))
        query = wire.encode_announcement(wire.PoolAnnouncement(self.exchange, None, (), query=True))
        query.properties.to = address
        await self.connection.deliver(query.encode(), None, f"asking the pools of {self.exchange!r}",
                                      released_is_done=True)
        if discovery_timeout > 0:
            # Pools answer as soon as they hear the query; there is no count to wait for.
            await asyncio.sleep(discovery_timeout)

    def pools_for(self, topic: str, priority: str) -> tuple[str, ...]:
        heard = self.pools.get((topic, priority))
        if not heard:
            return ()
        horizon = asyncio.get_running_loop().time() - self.memory
        for pool in [pool for pool, at in heard.items() if at < horizon]:
            log.info("pool %r of exchange %r not heard of for %.0f s: notifications %s.%s no longer go to it",
                     pool, self.exchange, self.memory, topic, priority)
            del heard[pool]
        return tuple(sorted(heard))

    async def _listen(self, receiver: Receiver) -> None:
        async for item in receiver:
            try:
                item.accept()
                announcement = wire.decode_announcement(item.message())
            except (ClientError, wire.WireError) as exc:
                log.warning("ignored a pool announcement on %s: %s", receiver.source_address, exc)
                continue
            if announcement.query or announcement.pool is None or announcement.exchange != self.exchange:
                continue
            now = asyncio.get_running_loop().time()
            for target in announcement.targets:
                known = self.pools.setdefault(target, {})
                if announcement.pool not in known:
                    log.info("notifications %s.%s of exchange %r also go to pool %r",
                             target[0], target[1], self.exchange, announcement.pool)
                known[announcement.pool] = now

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._receiver is not None:
            await self._receiver.close()


async def announce(connection: "DriverConnection", exchange: str, pool: str,
                   targets: tuple[tuple[str, str], ...]) -> None:
    """Tell the exchange's notifiers that ``pool`` listens to ``targets``."""
    message = wire.encode_announcement(wire.PoolAnnouncement(exchange, pool, targets))
    message.properties.to = wire.pools_address(exchange)
    await connection.deliver(message.encode(), None, f"announcing pool {pool!r}", released_is_done=True)
