"""TLS contexts from configuration, with the standard library's ``ssl``.

Both roles refuse anything older than TLS 1.2.  A listener's files can be read again
while it runs (``ServerTls.reload``): new connections get the new context, and
connections already open keep the one they were accepted with.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

__all__ = [
    "server_context",
    "client_context",
    "ServerTls",
    "TlsFileError",
    "certificate_user",
    "TLS_VERSIONS",
]

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
"""Minimum versions a listener may require (nothing older than 1.2 is accepted)."""


class TlsFileError(OSError):
    """A certificate, key or CA file that cannot be used; ``which`` is cert, key or ca."""

    def __init__(self, which: str, message: str) -> None:
        super().__init__(message)
        self.which = which


def server_context(
    certfile: str | Path,
    keyfile: str | Path | None = None,
    cafile: str | Path | None = None,
    require_client_cert: bool = False,
    minimum_version: str = "1.2",
) -> ssl.SSLContext:
    """A listener's context: our certificate; verify clients against ``cafile`` if given.

    With ``cafile`` a client certificate is verified whenever one is presented, and
    required if ``require_client_cert``; a certificate that does not verify always ends
    the handshake (with the alert that says why).
    """
    if require_client_cert and not cafile:
        raise ValueError("require_client_cert needs a cafile to verify client certificates against")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = TLS_VERSIONS[minimum_version]
    # TLS 1.2 renegotiation is a client's lever on our CPU and is needed by nothing here.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    if cafile:
        context.load_verify_locations(str(cafile))
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(
    cafile: str | Path | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """A connector's context: verify the server (against ``cafile`` or the system store);
    present ``certfile`` (with ``keyfile``) if the server asks for a client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ServerTls:
    """A listener's TLS files and the context made from them.

    ``context`` is what the next accepted connection uses.  ``reload()`` reads the files
    again; if any of them cannot be used it raises ``TlsFileError`` and the previous
    context stays.
    """

    def __init__(
        self,
        certfile: Path,
        keyfile: Path | None = None,
        cafile: Path | None = None,
        require_client_cert: bool = False,
        minimum_version: str = "1.2",
    ) -> None:
        self.certfile = certfile
        self.keyfile = keyfile
        self.cafile = cafile
        self.require_client_cert = require_client_cert
        self.minimum_version = minimum_version
        self.context = self._load()

    def reload(self) -> None:
        self.context = self._load()

    def _load(self) -> ssl.SSLContext:
        # Each file on its own first, so that an error names the one at fault.
        cert, key, ca = self.certfile, self.keyfile, self.cafile
        try:
            ssl.create_default_context(cafile=str(cert))
        except (ssl.SSLError, OSError) as exc:
            raise TlsFileError("cert", f"{cert} holds no PEM certificate ({_why(exc)})") from None
        if ca is not None:
            try:
                ssl.create_default_context(cafile=str(ca))
            except (ssl.SSLError, OSError) as exc:
                raise TlsFileError("ca", f"{ca} holds no PEM CA certificate ({_why(exc)})") from None
        try:
            return server_context(cert, key, ca, self.require_client_cert, self.minimum_version)
        except (ssl.SSLError, OSError) as exc:
            if key is None:
                raise TlsFileError("cert", f"{cert} holds no private key and tls_key is not set ({_why(exc)})") from None
            raise TlsFileError("key", f"{key} is not the private key of {cert} ({_why(exc)})") from None


def certificate_user(peercert: dict[str, Any] | None) -> str | None:
    """The user a verified client certificate names: its subject's common name (CN).

    None when there is no certificate or its subject has no CN, or more than one (which
    one would be the user is not for us to guess).
    """
    if not peercert:
        return None
    names = [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"]
    if len(names) != 1 or not names[0]:
        return None
    return names[0]


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
