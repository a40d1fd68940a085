"""``Target``: where an RPC goes, or what a server or listener serves."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .wire import DEFAULT_EXCHANGE, fanout_address, rpc_address

__all__ = ["Target"]


@dataclass(frozen=True)
class Target:
    """oslo.messaging's Target: a topic within an exchange, and optionally one server.

    A client's target says where a call or cast goes: every server of ``topic`` (one of
    them takes it), the server named ``server``, or (``fanout``) all of them.  A server's
    target names the topic and the server it is.  ``namespace`` and ``version`` select
    the endpoint: a request's version is served by an endpoint of the same major version
    whose minor version is at least the request's.
    """

    exchange: str | None = None
    """None: ``wire.DEFAULT_EXCHANGE``."""
    topic: str | None = None
    namespace: str | None = None
    version: str | None = None
    server: str | None = None
    fanout: bool = False

    def replace(self, **overrides: Any) -> "Target":
        """A copy with the given fields changed (``prepare()`` uses it)."""
        return dataclasses.replace(self, **overrides)

    @property
    def exchange_name(self) -> str:
        return self.exchange or DEFAULT_EXCHANGE

    def address(self) -> str:
        """The address a request for this target is sent to."""
        if not self.topic:
            raise ValueError(f"a target needs a topic to send to: {self}")
        if self.fanout:
            return fanout_address(self.exchange_name, self.topic)
        return rpc_address(self.exchange_name, self.topic, self.server)
