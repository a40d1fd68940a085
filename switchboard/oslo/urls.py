"""From an oslo.messaging transport URL to the client's router list.

    switchboard://[user:pass@]host1[:port][,[user:pass@]host2[:port]...][/virtual_host][?ssl=1]

Each host is a router of one deployment (the client fails over among them).  The client
sends one set of credentials to every router, so the first host's user and password are
used; hosts naming other credentials are refused, not silently given the first ones.
``ssl=1`` (or ``true``) connects with TLS (``amqps``, default port 5671).  The virtual
host has no meaning for a router and is ignored.
"""

from __future__ import annotations

from typing import Any

from ..client import Router, Url

__all__ = ["client_url", "DEFAULT_HOST"]

DEFAULT_HOST = "127.0.0.1"
_TRUE = frozenset({"1", "true", "yes", "on"})


def client_url(transport_url: Any) -> Url:
    """The client ``Url`` for an oslo ``TransportURL``; ``ValueError`` naming what is wrong."""
    query = getattr(transport_url, "query", None) or {}
    tls = str(query.get("ssl", "")).lower() in _TRUE
    scheme = "amqps" if tls else "amqp"
    default_port = 5671 if tls else 5672
    hosts = list(getattr(transport_url, "hosts", None) or [])
    routers: list[Router] = []
    username = password = None
    for position, host in enumerate(hosts, start=1):
        name = host.hostname or DEFAULT_HOST
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        router = Router(name, int(host.port or default_port))
        if router not in routers:
            routers.append(router)
        if host.username is not None:
            if username is None and position == 1:
                username, password = host.username, host.password
            elif (host.username, host.password) != (username, password):
                raise ValueError(
                    f"transport_url host {position} ({router}) names other credentials than the first "
                    "host: the driver sends one user and password to every router")
    if not routers:
        routers.append(Router(DEFAULT_HOST, default_port))
    return Url(scheme, tuple(routers), None, username, password)
