"""Throw-away certificate authorities and certificates, made with the openssl command.

``Pki(directory)`` makes a CA on demand (``pki.ca("A")``) and certificates it signs:
``pki.server("A")`` for 127.0.0.1 and localhost, ``pki.client("A", "alice")`` with the
subject ``/O=Switchboard tests/CN=alice``.  Each is a ``Issued`` with ``cert`` and ``key``
paths; each file is made once per ``Pki``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=OPENSSL_TIMEOUT)


class Pki:
    def __init__(self, directory: Path) -> None:
        if shutil.which("openssl") is None:
            pytest.skip("needs the openssl command")
        self.directory = directory
        self._made: dict[str, Issued] = {}

    def ca(self, name: str) -> Issued:
        key = f"ca-{name}"
        if key not in self._made:
            issued = Issued(self.directory / f"{key}.pem", self.directory / f"{key}.key")
            _openssl(
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN=Switchboard test CA {name}",
                "-keyout", str(issued.key), "-out", str(issued.cert),
            )
            self._made[key] = issued
        return self._made[key]

    def server(self, ca: str) -> Issued:
        """A server certificate for 127.0.0.1 and localhost, CN ``server-<ca>``."""
        return self._signed(ca, f"server-{ca}", f"/CN=server-{ca}", "subjectAltName=IP:127.0.0.1,DNS:localhost")

    def client(self, ca: str, subject_cn: str | None, organisation: str = "Switchboard tests") -> Issued:
        """A client certificate; ``subject_cn=None`` makes one whose subject has no CN."""
        subject = f"/O={organisation}" + (f"/CN={subject_cn}" if subject_cn else "")
        name = f"client-{ca}-{subject_cn or 'no-cn'}"
        return self._signed(ca, name, subject, "extendedKeyUsage=clientAuth")

    def _signed(self, ca_name: str, name: str, subject: str, extension: str) -> Issued:
        if name in self._made:
            return self._made[name]
        ca = self.ca(ca_name)
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        request = self.directory / f"{name}.csr"
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(extension + "\n", encoding="utf-8")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(issued.key), "-out", str(request))
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-set_serial", str(len(self._made) + 1), "-days", "2",
            "-extfile", str(extensions), "-out", str(issued.cert),
        )
        self._made[name] = issued
        return issued
