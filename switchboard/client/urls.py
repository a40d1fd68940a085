"""Client URLs: one router or a list of them, and an optional address.

    amqp[s]://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...][/ADDRESS]

A list names routers of one deployment: the credentials, the TLS choice and the address
apply to every router in it.  IPv6 literals go in brackets (``[::1]:5672``).  USER,
PASSWORD, the hosts in brackets and ADDRESS may be percent-encoded; nothing else is.

``urllib.parse`` is not used because it reads ``host1:5672,host2:5672`` as one host with
a port it cannot parse; a list needs its own grammar, and errors that say which router in
the list is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["Router", "Url", "UrlError", "parse_url", "DEFAULT_PORTS"]

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
"""Registered names and IPv4 literals: letters, digits, '-', '_' and '.' ('_' because
container and cluster names use it)."""


class UrlError(ValueError):
    """A URL that cannot name routers; the message says which part is wrong."""


@dataclass(frozen=True)
class Router:
    """One router to connect to.  ``host`` is bare (no brackets around IPv6 literals)."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Url:
    scheme: str
    routers: tuple[Router, ...]
    address: str | None
    username: str | None
    password: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "amqps"

    @property
    def host(self) -> str:
        """The first router's host (the only one, in the common case)."""
        return self.routers[0].host

    @property
    def port(self) -> int:
        """The first router's port."""
        return self.routers[0].port


def parse_url(url: str) -> Url:
    """Parse ``amqp[s]://[user[:password]@]host[:port][,host[:port]...][/address]``.

    Raises ``UrlError`` (a ``ValueError``) naming what is wrong.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise UrlError(f"URL must start with amqp:// or amqps://: {url!r}")
    if "?" in rest or "#" in rest:
        raise UrlError(f"URL may not have a query or fragment (percent-encode '?' and '#' in the address): {url!r}")
    authority, slash, path = rest.partition("/")
    address = unquote(path) if slash and path else None
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user_part, colon, password_part = userinfo.partition(":")
        if not user_part:
            raise UrlError(f"URL has '@' but no user before it: {url!r}")
        username = unquote(user_part)
        password = unquote(password_part) if colon else None
    if not hosts:
        raise UrlError(f"URL has no host: {url!r}")
    default_port = DEFAULT_PORTS[scheme]
    routers: list[Router] = []
    for position, entry in enumerate(hosts.split(","), start=1):
        router = _parse_router(entry, default_port, position, url)
        if router in routers:
            raise UrlError(f"router {position} ({router}) is listed twice: {url!r}")
        routers.append(router)
    return Url(scheme, tuple(routers), address, username, password)


def _parse_router(entry: str, default_port: int, position: int, url: str) -> Router:
    where = f"router {position} ({entry!r})" if entry else f"router {position}"
    if not entry:
        raise UrlError(f"{where} is empty: {url!r}")
    if entry.startswith("["):
        literal, bracket, port_part = entry[1:].partition("]")
        if not bracket:
            raise UrlError(f"{where}: '[' without ']': {url!r}")
        host = unquote(literal)  # a zone id arrives as %25eth0
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlError(f"{where}: not an IPv6 address in brackets: {url!r}") from None
        if port_part and not port_part.startswith(":"):
            raise UrlError(f"{where}: expected ':PORT' after ']': {url!r}")
        port_text = port_part[1:] if port_part else None
    else:
        host, colon, port_text_found = entry.partition(":")
        if ":" in port_text_found:
            raise UrlError(f"{where}: an IPv6 address must be written in brackets ([::1]:5672): {url!r}")
        if not _HOSTNAME.fullmatch(host):
            raise UrlError(f"{where}: not a host name or address: {url!r}")
        port_text = port_text_found if colon else None
    return Router(host, _parse_port(port_text, default_port, where, url))


def _parse_port(text: str | None, default_port: int, where: str, url: str) -> int:
    if text is None:
        return default_port
    if not text.isascii() or not text.isdigit():
        raise UrlError(f"{where}: port must be a number: {url!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UrlError(f"{where}: port {port} is out of range 1-65535: {url!r}")
    return port
