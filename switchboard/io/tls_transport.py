"""Server-side TLS for listeners: the ``ssl`` module over memory buffers.

asyncio (and uvloop) can run TLS for a server themselves, but when a handshake fails
they drop the socket without writing the alert OpenSSL produced: a client refused for
its certificate (or its TLS version) learns only "connection reset".  So listeners drive
TLS here: ``ssl.SSLObject`` does every part of TLS; this module only moves bytes between
the socket and it, writes every alert before closing, bounds the handshake, and takes
the context at accept time (a certificate reload reaches new connections only).

Once the handshake is done the inner protocol (``AmqpProtocol``) gets a ``TlsTransport``
and sees plain bytes, exactly as over TCP.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

__all__ = ["TlsServerProtocol", "TlsTransport"]

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
"""Bytes taken from the TLS layer per read call (a received batch may hold several)."""


class TlsServerProtocol(asyncio.Protocol):
    """The socket's protocol: TLS handshake, then plain bytes to and from ``inner``."""

    def __init__(
        self,
        context: ssl.SSLContext,
        inner: asyncio.Protocol,
        handshake_timeout: float | None = None,
    ) -> None:
        self._inner = inner
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._handshake_timeout = handshake_timeout
        self._raw: asyncio.Transport | None = None
        self._transport: TlsTransport | None = None
        """Made when the handshake completes; the inner protocol starts then."""
        self._timer: asyncio.TimerHandle | None = None
        self._shut = False
        """Nothing more is written: we sent close_notify or an alert."""

    # -- the socket ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport  # type: ignore[assignment]
        if self._handshake_timeout:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        if self._shut:
            return  # refused or closing: what the peer still sends means nothing now
        self._incoming.write(data)
        if self._transport is None and not self._handshake():
            return
        self._read()

    def eof_received(self) -> bool | None:
        self._incoming.write_eof()
        if self._transport is None:
            return False
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._raw = None
        if self._transport is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()

    # -- TLS -----------------------------------------------------------------------------
    def _handshake(self) -> bool:
        """Advance the handshake; True once it is complete and the inner protocol runs."""
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._send_pending()
            return False
        except ssl.SSLError as exc:
            # The alert that tells the client why is in the outgoing buffer: send it.
            log.info("TLS handshake with %s refused: %s", self._peer(), _reason(exc))
            self._shut_down_after_error()
            return False
        self._cancel_timer()
        self._send_pending()
        self._transport = TlsTransport(self)
        self._inner.connection_made(self._transport)
        return True

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._transport is None and self._raw is not None:
            log.info(
                "TLS handshake with %s not complete within %g s (limits.handshake_timeout); closing",
                self._peer(), self._handshake_timeout,
            )
            self._raw.abort()

    def _read(self) -> None:
        chunks: list[bytes] = []
        peer_closed = False
        failed = False
        while True:
            try:
                chunk = self._ssl.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                peer_closed = True  # the peer's close_notify
                break
            except ssl.SSLError as exc:
                log.info("TLS error from %s: %s", self._peer(), _reason(exc))
                failed = True
                break
            if not chunk:
                break
            chunks.append(chunk)
        if failed:
            self._shut_down_after_error()
            return
        self._send_pending()  # TLS 1.3 may answer a key update
        if chunks:
            self._inner.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if peer_closed and self._transport is not None:
            self._transport.close()

    def _write(self, data: Any) -> None:
        if self._shut or self._raw is None:
            return
        view = memoryview(data)
        try:
            while view:
                written = self._ssl.write(view)
                view = view[written:]
        except ssl.SSLError as exc:
            log.info("TLS error writing to %s: %s", self._peer(), _reason(exc))
            self._shut_down_after_error()
            return
        self._send_pending()

    def _send_pending(self) -> None:
        if self._outgoing.pending and self._raw is not None:
            self._raw.write(self._outgoing.read())

    def _close(self) -> None:
        """Send close_notify, then close the socket once what is buffered is written."""
        if self._raw is None:
            return
        if not self._shut and self._transport is not None:
            self._shut = True
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass  # we do not wait for the peer's close_notify: ours is written
            self._send_pending()
        self._raw.close()

    def _shut_down_after_error(self) -> None:
        self._shut = True
        self._cancel_timer()
        self._send_pending()
        if self._raw is not None:
            self._raw.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _peer(self) -> str:
        peer = self._raw.get_extra_info("peername") if self._raw is not None else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer)


class TlsTransport(asyncio.Transport):
    """What the inner protocol writes to: plain bytes in, TLS records out."""

    def __init__(self, owner: TlsServerProtocol) -> None:
        super().__init__()
        self._owner = owner

    def write(self, data: Any) -> None:
        self._owner._write(data)

    def writelines(self, list_of_data: Any) -> None:
        chunks = list(list_of_data)
        if chunks:
            self._owner._write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def close(self) -> None:
        self._owner._close()

    def abort(self) -> None:
        raw = self._owner._raw
        if raw is not None:
            raw.abort()

    def is_closing(self) -> bool:
        raw = self._owner._raw
        return raw is None or raw.is_closing() or self._owner._shut

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        tls = self._owner._ssl
        if name == "peercert":
            return tls.getpeercert()
        if name == "ssl_object":
            return tls
        if name == "sslcontext":
            return tls.context
        if name == "cipher":
            return tls.cipher()
        raw = self._owner._raw
        return raw.get_extra_info(name, default) if raw is not None else default

    def pause_reading(self) -> None:
        raw = self._owner._raw
        if raw is not None:
            raw.pause_reading()

    def resume_reading(self) -> None:
        raw = self._owner._raw
        if raw is not None:
            raw.resume_reading()

    def is_reading(self) -> bool:
        raw = self._owner._raw
        return raw is not None and raw.is_reading()

    def get_write_buffer_size(self) -> int:
        raw = self._owner._raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._owner._raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)


def _reason(exc: ssl.SSLError) -> str:
    return getattr(exc, "verify_message", None) or exc.reason or str(exc)
