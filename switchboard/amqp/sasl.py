"""SASL (spec part 5.3): ANONYMOUS and PLAIN, for both roles.

The connection drives the exchange; these classes only decide: which mechanism a client
picks and what it sends, and whether a server lets a client in.  A server checks PLAIN
credentials through the ``authenticate(user, password)`` callable it is given, so the
engine holds no credential store.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .spec import SaslCode
from .types import Symbol

__all__ = ["SaslClient", "SaslServer", "ANONYMOUS", "PLAIN"]

ANONYMOUS = Symbol("ANONYMOUS")
PLAIN = Symbol("PLAIN")


class SaslClient:
    """The client side: picks a mechanism from the server's list."""

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        mechanism: str | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.mechanism = Symbol(mechanism) if mechanism else None
        self.chosen: Symbol | None = None
        """The mechanism picked from the server's offer, once ``choose`` has run."""

    def choose(self, offered: Iterable[str]) -> tuple[Symbol, bytes | None] | None:
        """Return (mechanism, initial response), or None if nothing offered will do."""
        offered = [Symbol(m) for m in offered]
        # Credentials mean the caller wants to be someone: never fall back to anonymous,
        # or a misconfigured server would silently accept an unauthenticated client.
        preferences = [self.mechanism] if self.mechanism else (
            [PLAIN] if self.username is not None else [ANONYMOUS]
        )
        for mechanism in preferences:
            if mechanism in offered:
                self.chosen = mechanism
                if mechanism == PLAIN:
                    response = b"\x00" + (self.username or "").encode() + b"\x00" + (self.password or "").encode()
                    return mechanism, response
                if mechanism == ANONYMOUS:
                    return mechanism, (self.username or "anonymous").encode()
        return None


class SaslServer:
    """The server side: offers mechanisms and judges a client's sasl-init."""

    def __init__(
        self,
        mechanisms: Iterable[str] = (ANONYMOUS,),
        authenticate: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.mechanisms = [Symbol(m) for m in mechanisms]
        unknown = [m for m in self.mechanisms if m not in (ANONYMOUS, PLAIN)]
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms: {', '.join(unknown)}")
        if PLAIN in self.mechanisms and authenticate is None:
            raise ValueError("PLAIN needs an authenticate(user, password) callable")
        self.authenticate = authenticate

    @property
    def allows_anonymous(self) -> bool:
        return ANONYMOUS in self.mechanisms

    def judge(self, mechanism: str, response: bytes | None) -> tuple[int, str | None]:
        """Return (sasl-code, authenticated user) for a client's sasl-init."""
        if mechanism not in self.mechanisms:
            return SaslCode.AUTH, None
        if mechanism == ANONYMOUS:
            return SaslCode.OK, "anonymous"
        parts = (response or b"").split(b"\x00")
        if len(parts) != 3:
            return SaslCode.AUTH, None
        try:
            user = parts[1].decode("utf-8")
            password = parts[2].decode("utf-8")
        except UnicodeDecodeError:
            return SaslCode.AUTH, None
        assert self.authenticate is not None
        if self.authenticate(user, password):
            return SaslCode.OK, user
        return SaslCode.AUTH, None
