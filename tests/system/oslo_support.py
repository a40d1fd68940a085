"""oslo.messaging services on Switchboard routers, through oslo.messaging's public API only.

``oslo`` is a fixture: ``oslo.rpc_transport(url)``, ``oslo.server(transport, topic,
server, endpoints)`` (started, with the threading executor), ``oslo.client(...)``,
``oslo.notifier(...)``, ``oslo.listener(...)``; everything it made is stopped and cleaned up
at teardown, servers first.  The configuration is oslo's global ``cfg.CONF``, as in a
service; ``oslo.override(name, value)`` sets one of the driver's options for the test.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import oslo_messaging
import pytest
from oslo_config import cfg

from switchboard.oslo.options import register as register_driver_options

DRIVER_GROUP = "oslo_messaging_switchboard"
WAIT = 30.0
"""Seconds a test waits for something it expects (generous: the machine is shared)."""


def switchboard_url(*ports: int, user: str | None = None) -> str:
    credentials = f"{user}@" if user else ""
    return "switchboard://" + ",".join(f"{credentials}127.0.0.1:{port}" for port in ports) + "/"


class Recorder:
    """What endpoints saw, with bounded waits for it."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    def add(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], bool], what: str, timeout: float = WAIT) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; saw {self.items!r}")
                self._changed.wait(remaining)
            return list(self.items)

    def wait_count(self, count: int, what: str, timeout: float = WAIT) -> list[Any]:
        return self.wait_for(lambda items: len(items) >= count, f"{count} {what}", timeout)


class Oslo:
    def __init__(self) -> None:
        self.conf = cfg.CONF
        self._transports: list[Any] = []
        self._servers: list[Any] = []
        self._overridden: list[tuple[str, str | None]] = []

    def override(self, name: str, value: Any, group: str | None = DRIVER_GROUP) -> None:
        if group == DRIVER_GROUP:
            register_driver_options(self.conf)
        self.conf.set_override(name, value, group=group)
        self._overridden.append((name, group))

    def rpc_transport(self, url: str) -> Any:
        transport = oslo_messaging.get_rpc_transport(self.conf, url=url)
        self._transports.append(transport)
        return transport

    def notification_transport(self, url: str) -> Any:
        transport = oslo_messaging.get_notification_transport(self.conf, url=url)
        self._transports.append(transport)
        return transport

    def server(self, transport: Any, topic: str, server: str, endpoints: list[Any], **kwargs: Any) -> Any:
        target = oslo_messaging.Target(topic=topic, server=server)
        rpc_server = oslo_messaging.get_rpc_server(transport, target, endpoints, executor="threading", **kwargs)
        rpc_server.start()
        self._servers.append(rpc_server)
        return rpc_server

    def client(self, transport: Any, topic: str, **kwargs: Any) -> Any:
        return oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), **kwargs)

    def notifier(self, transport: Any, topic: str, publisher_id: str = "test.host") -> Any:
        return oslo_messaging.Notifier(transport, publisher_id=publisher_id, driver="messaging", topics=[topic])

    def listener(self, transport: Any, topic: str, endpoints: list[Any], pool: str | None = None,
                 **kwargs: Any) -> Any:
        targets = [oslo_messaging.Target(topic=topic)]
        listener = oslo_messaging.get_notification_listener(
            transport, targets, endpoints, executor="threading", pool=pool, **kwargs)
        listener.start()
        self._servers.append(listener)
        return listener

    def batch_listener(self, transport: Any, topic: str, endpoints: list[Any], batch_size: int,
                       batch_timeout: float) -> Any:
        listener = oslo_messaging.get_batch_notification_listener(
            transport, [oslo_messaging.Target(topic=topic)], endpoints, executor="threading",
            batch_size=batch_size, batch_timeout=batch_timeout)
        listener.start()
        self._servers.append(listener)
        return listener

    def stop(self, server: Any) -> None:
        server.stop()
        server.wait()
        if server in self._servers:
            self._servers.remove(server)

    def close(self) -> None:
        for server in reversed(self._servers):
            server.stop()
            server.wait()
        for transport in reversed(self._transports):
            transport.cleanup()
        for name, group in self._overridden:
            self.conf.clear_override(name, group=group)


@pytest.fixture
def oslo() -> Any:
    harness = Oslo()
    yield harness
    harness.close()
