"""The credentials file: salted, deliberately slow password hashes (``hashlib.scrypt``).

One user per line; ``#`` starts a comment::

    # switchboard credentials: NAME:scrypt:N:R:P:SALT:HASH (salt and hash in base64)
    alice:scrypt:16384:8:1:kq0TgXH0v6...==:3Jx6...=

Each line carries its own scrypt parameters, so they can be raised later: new and
changed passwords get the current defaults while older lines keep verifying with theirs.

Verifying costs the same work whether or not the user exists (an unknown name is checked
against a decoy hash with the file's usual parameters), and digests are compared in
constant time, so neither the answer's timing nor its content tells a guesser which
names exist.  Verification is slow on purpose: callers run it off the event loop.

The file is written atomically (a temporary file beside it, then a rename) with mode
0600, and is managed with ``switchboard user add / del / list``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Credentials",
    "CredentialsError",
    "ScryptHash",
    "DEFAULT_N",
    "DEFAULT_R",
    "DEFAULT_P",
    "RESERVED_NAMES",
    "check_name",
]

SCHEME = "scrypt"
DEFAULT_N = 2**14
"""CPU/memory cost; each verification takes 128 * N * R bytes (16 MiB by default)."""
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
"""Parameters needing more memory than this per verification are refused."""
MAX_NAME_BYTES = 255

RESERVED_NAMES = frozenset({"anonymous"})
"""Names a password user may not take: SASL ANONYMOUS clients are known by it."""

_HEADER = "# switchboard credentials: NAME:scrypt:N:R:P:SALT:HASH (salt and hash in base64)\n"


class CredentialsError(ValueError):
    """A credentials file, name or password that cannot be used; the message says why."""


def check_name(name: str) -> None:
    """Raise ``CredentialsError`` unless ``name`` can be a user name in the file."""
    if not name:
        raise CredentialsError("a user name must not be empty")
    if name in RESERVED_NAMES:
        raise CredentialsError(f"{name!r} is reserved for clients that do not authenticate")
    if name.startswith("#"):
        raise CredentialsError(f"a user name may not start with '#' (it would read as a comment): {name!r}")
    if ":" in name or any(ch.isspace() or not ch.isprintable() for ch in name):
        raise CredentialsError(f"a user name may not contain ':', spaces or control characters: {name!r}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise CredentialsError(f"a user name may have at most {MAX_NAME_BYTES} bytes")


def _check_parameters(n: int, r: int, p: int) -> None:
    if n < 2 or n & (n - 1):
        raise CredentialsError(f"scrypt N must be a power of two of at least 2, got {n}")
    if not 1 <= r <= 64 or not 1 <= p <= 16:
        raise CredentialsError(f"scrypt R must be 1..64 and P 1..16, got R={r} P={p}")
    if 128 * n * r > MAX_SCRYPT_MEMORY:
        raise CredentialsError(
            f"scrypt N={n} R={r} needs {128 * n * r // 2**20} MiB per verification"
            f" (at most {MAX_SCRYPT_MEMORY // 2**20} MiB)"
        )


@dataclass(frozen=True)
class ScryptHash:
    """One password's hash with the parameters and salt that made it."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def of(cls, password: str, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> "ScryptHash":
        """Hash ``password`` with a fresh random salt."""
        _check_parameters(n, r, p)
        salt = secrets.token_bytes(SALT_BYTES)
        return cls(n, r, p, salt, _derive(password, salt, n, r, p, HASH_BYTES))

    def matches(self, password: str) -> bool:
        """Whether ``password`` is the one hashed (constant-time comparison)."""
        derived = _derive(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(derived, self.digest)

    def to_text(self) -> str:
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        return f"{SCHEME}:{self.n}:{self.r}:{self.p}:{salt}:{digest}"

    @classmethod
    def from_text(cls, text: str) -> "ScryptHash":
        parts = text.split(":")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise CredentialsError(f"expected {SCHEME}:N:R:P:SALT:HASH")
        try:
            n, r, p = (int(part) for part in parts[1:4])
        except ValueError:
            raise CredentialsError("scrypt N, R and P must be integers") from None
        _check_parameters(n, r, p)
        try:
            salt = base64.b64decode(parts[4], validate=True)
            digest = base64.b64decode(parts[5], validate=True)
        except (binascii.Error, ValueError):
            raise CredentialsError("the salt and hash must be base64") from None
        if len(salt) < 8 or len(digest) < 16:
            raise CredentialsError("the salt or the hash is too short")
        return cls(n, r, p, salt, digest)

    @property
    def parameters(self) -> str:
        return f"{SCHEME} N={self.n} R={self.r} P={self.p}"


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # scrypt refuses to use more than maxmem; allow what these parameters need.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


class Credentials:
    """The users and password hashes of one credentials file."""

    def __init__(self, entries: dict[str, ScryptHash] | None = None) -> None:
        self._entries: dict[str, ScryptHash] = dict(entries or {})
        self._decoy: ScryptHash | None = None

    # -- reading and writing -----------------------------------------------------------
    @classmethod
    def parse(cls, text: str, where: str = "credentials") -> "Credentials":
        """Read the file's text; errors name ``where`` and the line."""
        entries: dict[str, ScryptHash] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, rest = line.partition(":")
            try:
                if not sep:
                    raise CredentialsError("expected NAME:scrypt:N:R:P:SALT:HASH")
                check_name(name)
                if name in entries:
                    raise CredentialsError(f"user {name!r} appears twice")
                entries[name] = ScryptHash.from_text(rest)
            except CredentialsError as exc:
                raise CredentialsError(f"{where} line {number}: {exc}") from None
        return cls(entries)

    @classmethod
    def load(cls, path: str | Path) -> "Credentials":
        """Read a credentials file (``CredentialsError`` if it cannot be read or parsed)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        return cls.parse(text, str(path))

    def format(self) -> str:
        lines = [f"{name}:{entry.to_text()}\n" for name, entry in sorted(self._entries.items())]
        return _HEADER + "".join(lines)

    def save(self, path: str | Path) -> None:
        """Write the file atomically with mode 0600 (readers see the old or the new file)."""
        path = Path(path)
        directory = path.parent
        # mkstemp creates the file with mode 0600 before anything is written to it.
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(self.format())
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
        try:
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    # -- managing users ----------------------------------------------------------------
    def set_password(self, name: str, password: str, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> bool:
        """Hash and store ``name``'s password; True if the user already existed."""
        check_name(name)
        if not password:
            raise CredentialsError("the password must not be empty")
        if "\x00" in password:
            raise CredentialsError("the password must not contain NUL (SASL PLAIN cannot carry it)")
        existed = name in self._entries
        self._entries[name] = ScryptHash.of(password, n, r, p)
        self._decoy = None
        return existed

    def remove(self, name: str) -> None:
        if name not in self._entries:
            raise CredentialsError(f"no user {name!r}")
        del self._entries[name]
        self._decoy = None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> ScryptHash | None:
        return self._entries.get(name)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    # -- verifying ---------------------------------------------------------------------
    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s.  Slow (scrypt), and as slow for unknown names."""
        entry = self._entries.get(name)
        matched = (entry if entry is not None else self.decoy()).matches(password)
        return entry is not None and matched

    def decoy(self) -> ScryptHash:
        """A hash of a random password with the parameters most entries use."""
        if self._decoy is None:
            usual = Counter((e.n, e.r, e.p, len(e.digest)) for e in self._entries.values()).most_common(1)
            n, r, p, length = usual[0][0] if usual else (DEFAULT_N, DEFAULT_R, DEFAULT_P, HASH_BYTES)
            salt = secrets.token_bytes(SALT_BYTES)
            digest = _derive(secrets.token_urlsafe(16), salt, n, r, p, length)
            self._decoy = ScryptHash(n, r, p, salt, digest)
        return self._decoy
