"""SASL (spec part 5.3): ANONYMOUS, PLAIN and EXTERNAL, for both roles.

The connection drives the exchange; these classes only decide: which mechanism a client
picks and what it sends, and whether a server lets a client in.  A server checks PLAIN
credentials through the ``authenticate(user, password)`` callable it is given, so the
engine holds no credential store.

A server whose check is slow (a deliberately slow password hash) is made with
``decide_later=True``: its judge then answers ``PENDING`` for PLAIN, the connection
reports the credentials as a ``CredentialsReceived`` event and reads no further input
until its owner calls ``Connection.sasl_decided(code)``.  The engine itself never waits.

EXTERNAL (RFC 4422 appendix A) authenticates whoever the transport already verified:
the io layer sets ``SaslServer.certificate_user`` from the client's TLS certificate once
the transport is up.  Without one, EXTERNAL is not offered and a client asking for it
is refused.  The client's response may name the same user or nobody (empty);
authorising as someone else is not supported.
"""

from __future__ import annotations

from typing import Callable, Iterable

from .errors import LocalProtocolError
from .spec import SaslCode
from .types import Symbol

__all__ = ["SaslClient", "SaslServer", "ANONYMOUS", "PLAIN", "EXTERNAL", "PENDING"]

ANONYMOUS = Symbol("ANONYMOUS")
PLAIN = Symbol("PLAIN")
EXTERNAL = Symbol("EXTERNAL")

PENDING = -1
"""Not a sasl-code: the judge's answer when the owner decides later (``decide_later``)."""


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
                if mechanism == EXTERNAL:
                    # The identity to act as; empty: whoever the certificate names
                    # (RFC 4422 appendix A).
                    return mechanism, (self.username or "").encode()
        return None


class SaslServer:
    """The server side: offers mechanisms and judges a client's sasl-init."""

    def __init__(
        self,
        mechanisms: Iterable[str] = (ANONYMOUS,),
        authenticate: Callable[[str, str], bool] | None = None,
        *,
        decide_later: bool = False,
    ) -> None:
        self.mechanisms = [Symbol(m) for m in mechanisms]
        unknown = [m for m in self.mechanisms if m not in (ANONYMOUS, PLAIN, EXTERNAL)]
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms: {', '.join(unknown)}")
        if authenticate is not None and decide_later:
            raise ValueError("give an authenticate callable or decide_later=True, not both")
        if PLAIN in self.mechanisms and authenticate is None and not decide_later:
            raise ValueError("PLAIN needs an authenticate(user, password) callable or decide_later=True")
        self.authenticate = authenticate
        self.decide_later = decide_later
        self._pending: tuple[str, str] | None = None
        self.certificate_user: str | None = None
        """The user the client's verified TLS certificate names (set by the io layer)."""

    @property
    def allows_anonymous(self) -> bool:
        return ANONYMOUS in self.mechanisms

    def offered(self) -> list[Symbol]:
        """The mechanisms to offer this client: EXTERNAL only if its certificate names a user."""
        if self.certificate_user is not None:
            return list(self.mechanisms)
        # The list must not be empty; an EXTERNAL-only listener still offers it, and
        # ``judge`` refuses the client that has no certificate.
        return [m for m in self.mechanisms if m != EXTERNAL] or list(self.mechanisms)

    def judge(self, mechanism: str, response: bytes | None) -> tuple[int, str | None]:
        """Return (sasl-code, authenticated user) for a client's sasl-init.

        With ``decide_later`` a well-formed PLAIN response gets ``(PENDING, user)``; the
        credentials wait in ``take_pending()`` for the owner.
        """
        if mechanism not in self.mechanisms:
            return SaslCode.AUTH, None
        if mechanism == ANONYMOUS:
            return SaslCode.OK, "anonymous"
        if mechanism == EXTERNAL:
            return self._judge_external(response)
        parts = (response or b"").split(b"\x00")
        if len(parts) != 3:
            return SaslCode.AUTH, None
        try:
            user = parts[1].decode("utf-8")
            password = parts[2].decode("utf-8")
        except UnicodeDecodeError:
            return SaslCode.AUTH, None
        if self.decide_later:
            self._pending = (user, password)
            return PENDING, user
        assert self.authenticate is not None
        if self.authenticate(user, password):
            return SaslCode.OK, user
        return SaslCode.AUTH, None

    def take_pending(self) -> tuple[str, str]:
        """The (user, password) behind the last ``PENDING`` answer, forgotten here at once."""
        pending = self._pending
        if pending is None:
            raise LocalProtocolError("no SASL decision is pending")
        self._pending = None
        return pending

    def _judge_external(self, response: bytes | None) -> tuple[int, str | None]:
        user = self.certificate_user
        if user is None:
            return SaslCode.AUTH, None
        if response and response != user.encode("utf-8"):
            return SaslCode.AUTH, None  # asks to act as someone else
        return SaslCode.OK, user
