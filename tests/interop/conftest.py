"""Fixtures of the interop tests: a throw-away certificate, and Proton brokers in subprocesses."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from interop_support import PROTON_PEERS, Server, make_certificate, start_server


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert.pem, key.pem): self-signed for localhost and 127.0.0.1, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def proton_broker_factory() -> Iterator[Callable[..., Server]]:
    """Start Proton brokers (``proton_peers.py broker`` with extra arguments); stop them after."""
    started: list[Server] = []

    def start(*args: str) -> Server:
        server = start_server([PROTON_PEERS, "broker", *args])
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def proton_broker(proton_broker_factory: Callable[..., Server]) -> Server:
    """A plain Proton broker on 127.0.0.1 (SASL ANONYMOUS, no TLS)."""
    return proton_broker_factory()
