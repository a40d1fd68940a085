"""TLS contexts from configuration, with the standard library's ``ssl``."""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["server_context", "client_context"]


def server_context(
    certfile: str | Path,
    keyfile: str | Path | None = None,
    cafile: str | Path | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A listener's context: our certificate; verify clients against ``cafile`` if given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
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
    """A connector's context: verify the server (against ``cafile`` or the system store)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
