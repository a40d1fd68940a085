"""Qpid Proton as the SERVER; our ``switchboard`` command and asyncio client as clients.

::

    switchboard send ──▶ ┌──────────────────────┐ ──▶ switchboard receive
    Client.sender    ──▶ │ proton_peers broker  │ ──▶ Client.receiver
    proton send      ──▶ │ (Proton's reactor)   │ ──▶ proton receive
                         └──────────────────────┘

The broker is a subprocess (``proton_peers.py broker``), as are the CLI runs and the
Proton clients; our asyncio client runs in the test's own loop.  Proton's Python
container does not send heartbeats, so our in-process clients connect without an idle
timeout; the CLI keeps its default (30 s), far longer than any run here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import statistics
import time

import pytest

from interop_support import Server, arun, env_trusting, performatives, proton, run_process, switchboard
from switchboard.amqp.connection import Connection
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Open
from switchboard.client.connection import Client, ClientError
from switchboard.io.tls import client_context

COUNT = 10_000
MIB = 1 << 20


def _cli_sent(result, count: int, presettled: bool = False) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    expected = f"{count} sent presettled" if presettled else f"{count} accepted, 0 rejected, 0 released, 0 modified"
    assert expected in result.stdout, result.stdout


def _cli_received(result, count: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"received {count} messages" in result.stdout + result.stderr, result.stdout + result.stderr


# --------------------------------------------------------------------------------------
# The switchboard command
# --------------------------------------------------------------------------------------
def test_cli_sends_and_receives_10000_settled(proton_broker: Server) -> None:
    url = proton_broker.url("cli-settled")
    _cli_sent(run_process(switchboard("send", url, "--count", COUNT), timeout=60), COUNT)
    received = run_process(switchboard("receive", url, "--count", COUNT, "--quiet", "--timeout", 20), timeout=60)
    _cli_received(received, COUNT)


def test_cli_sends_and_receives_10000_presettled(proton_broker_factory) -> None:
    """Presettled both ways: our sender presettles, and the broker presettles to us."""
    broker = proton_broker_factory("--presettle-out")
    url = broker.url("cli-presettled")
    _cli_sent(run_process(switchboard("send", url, "--count", COUNT, "--presettled"), timeout=60), COUNT, presettled=True)
    received = run_process(switchboard("receive", url, "--count", COUNT, "--quiet", "--timeout", 20), timeout=60)
    _cli_received(received, COUNT)


def test_cli_1mib_messages_intact(proton_broker: Server) -> None:
    url = proton_broker.url("cli-large")
    _cli_sent(run_process(switchboard("send", url, "--count", 3, "--size", MIB), timeout=60), 3)
    received = run_process(switchboard("receive", url, "--count", 3, "--timeout", 20), timeout=60)
    _cli_received(received, 3)
    bodies = received.stdout.splitlines()
    assert [len(body) for body in bodies] == [MIB] * 3
    assert all(body == "x" * MIB for body in bodies)


def test_cli_and_proton_clients_cross(proton_broker: Server) -> None:
    """Our CLI sends, Proton's client receives; Proton's client sends, our CLI receives."""
    url = proton_broker.url()
    _cli_sent(run_process(switchboard("send", url + "/cross-a", "--count", 1000, "--body", "from switchboard")), 1000)
    report = run_process(proton("receive", url, "cross-a", "--count", 1000, "--timeout", 30)).json()
    assert report["error"] is None and report["received"] == 1000
    assert report["bodies"] == ["from switchboard"] * 3

    report = run_process(proton("send", url, "cross-b", "--count", 1000, "--timeout", 30)).json()
    assert report["error"] is None and report["accepted"] == 1000
    received = run_process(switchboard("receive", url + "/cross-b", "--count", 1000, "--timeout", 20))
    _cli_received(received, 1000)
    assert received.stdout.splitlines()[:3] == ["message 0", "message 1", "message 2"]


# --------------------------------------------------------------------------------------
# The asyncio client
# --------------------------------------------------------------------------------------
async def _send_all(client: Client, address: str, bodies: list[bytes], presettled: bool = False) -> list:
    sender = await client.sender(address, presettled=presettled)
    futures = [await sender.send(Message(body), wait=False) for body in bodies]
    if presettled:
        assert futures == [None] * len(bodies)
        return []
    async with asyncio.timeout(60):
        return await asyncio.gather(*futures)


async def _receive_all(client: Client, address: str, count: int, credit: int = 500) -> list:
    receiver = await client.receiver(address, credit=credit)
    received = []
    for _ in range(count):
        item = await receiver.receive(timeout=20)
        received.append(item)
        item.accept()
    return received


@pytest.mark.parametrize("presettled", [False, True], ids=["settled", "presettled"])
def test_client_10000_each_way(proton_broker_factory, presettled: bool) -> None:
    broker = proton_broker_factory(*(["--presettle-out"] if presettled else []))
    bodies = [f"message {n}".encode() for n in range(COUNT)]

    async def main() -> None:
        async with await Client.connect(broker.url(), idle_timeout=None) as client:
            outcomes = await _send_all(client, "client-queue", bodies, presettled)
            if not presettled:
                assert len(outcomes) == COUNT
                assert all(isinstance(outcome, Accepted) for outcome in outcomes)
            received = await _receive_all(client, "client-queue", COUNT)
            assert [item.message().body for item in received] == bodies
            assert all(item.delivery.remote_settled is presettled for item in received)

    arun(main, timeout=90)


def test_client_1mib_messages_intact_through_proton_codec(proton_broker: Server) -> None:
    """Random 1 MiB bodies, both directions, compared by SHA-256 with what Proton saw."""
    bodies = [os.urandom(MIB) for _ in range(3)]
    url = proton_broker.url()

    async def ours_to_proton() -> None:
        async with await Client.connect(url, idle_timeout=None) as client:
            outcomes = await _send_all(client, "large-in", bodies)
            assert all(isinstance(outcome, Accepted) for outcome in outcomes)

    arun(ours_to_proton)
    report = run_process(proton("receive", url, "large-in", "--count", 3, "--timeout", 30)).json()
    assert report["error"] is None
    assert report["sha256"] == [hashlib.sha256(body).hexdigest() for body in bodies]

    report = run_process(proton("send", url, "large-out", "--count", 3, "--size", MIB, "--random", "--timeout", 30)).json()
    assert report["error"] is None and report["accepted"] == 3

    async def proton_to_ours() -> list[str]:
        async with await Client.connect(url, idle_timeout=None) as client:
            received = await _receive_all(client, "large-out", 3, credit=10)
            return [hashlib.sha256(item.message().body).hexdigest() for item in received]

    assert arun(proton_to_ours) == report["sha256"]


def test_client_dynamic_source(proton_broker: Server) -> None:
    async def main() -> None:
        async with await Client.connect(proton_broker.url(), idle_timeout=None) as client:
            receiver = await client.receiver(None, dynamic=True)
            address = receiver.address
            assert address and address.startswith("dynamic-")
            sender = await client.sender(address)
            assert isinstance(await sender.send(Message(b"reply")), Accepted)
            item = await receiver.receive(timeout=10)
            assert item.message().body == b"reply"
            item.accept()

    arun(main)


# --------------------------------------------------------------------------------------
# SASL
# --------------------------------------------------------------------------------------
def test_proton_server_cannot_offer_plain_and_our_client_fails_cleanly(proton_broker_factory) -> None:
    """Proton's built-in SASL (no Cyrus) cannot check PLAIN passwords as a server.

    Restricted to PLAIN it offers no mechanism at all; our client must refuse with a
    ``ClientError`` (unauthorized-access), promptly.  PLAIN interop is therefore tested
    with Proton as the client (``test_interop_proton_clients.py``).
    """
    broker = proton_broker_factory("--mechs", "PLAIN")

    async def main() -> None:
        with pytest.raises(ClientError) as failure:
            await Client.connect(broker.url(userinfo="user:secret"), idle_timeout=None, timeout=10)
        assert failure.value.condition == "amqp:unauthorized-access"

    arun(main, timeout=20)


# --------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------
def test_client_over_tls(proton_broker_factory, certificate) -> None:
    cert, key = certificate
    broker = proton_broker_factory("--cert", cert, "--key", key)
    bodies = [f"secret {n}".encode() for n in range(200)] + [os.urandom(MIB)]

    async def main() -> None:
        context = client_context(cafile=cert)
        async with await Client.connect(broker.url(scheme="amqps"), idle_timeout=None, ssl_context=context) as client:
            assert client.protocol is not None and client.protocol.transport is not None
            assert client.protocol.transport.get_extra_info("ssl_object") is not None
            outcomes = await _send_all(client, "tls-queue", bodies)
            assert all(isinstance(outcome, Accepted) for outcome in outcomes)
            received = await _receive_all(client, "tls-queue", len(bodies))
            assert [item.message().body for item in received] == bodies

    arun(main)


def test_client_refuses_an_untrusted_certificate(proton_broker_factory, certificate) -> None:
    cert, key = certificate
    broker = proton_broker_factory("--cert", cert, "--key", key)

    async def main() -> None:
        with pytest.raises(ssl.SSLCertVerificationError):
            await Client.connect(broker.url(scheme="amqps"), idle_timeout=None, ssl_context=client_context(), timeout=10)

    arun(main, timeout=20)


def test_cli_over_tls(proton_broker_factory, certificate) -> None:
    """The CLI uses the default trust store; ``SSL_CERT_FILE`` points it at our certificate."""
    cert, key = certificate
    broker = proton_broker_factory("--cert", cert, "--key", key)
    url = broker.url("cli-tls", scheme="amqps")
    env = env_trusting(cert)
    _cli_sent(run_process(switchboard("send", url, "--count", 1000), env=env), 1000)
    _cli_received(run_process(switchboard("receive", url, "--count", 1000, "--quiet", "--timeout", 20), env=env), 1000)


def test_cli_over_tls_with_ca_file(proton_broker_factory, certificate) -> None:
    """``--ca-file`` trusts a certificate outside the system store; without it the CLI
    refuses the same server."""
    cert, key = certificate
    broker = proton_broker_factory("--cert", cert, "--key", key)
    url = broker.url("cli-ca", scheme="amqps")
    _cli_sent(run_process(switchboard("send", url, "--count", 10, "--ca-file", cert)), 10)
    _cli_received(run_process(switchboard("receive", url, "--count", 10, "--quiet", "--timeout", 20, "--ca-file", cert)), 10)
    refused = run_process(switchboard("send", url, "--count", 1, "--timeout", 5))
    assert refused.returncode != 0
    assert "certificate" in refused.stderr.lower()


# --------------------------------------------------------------------------------------
# Heartbeats
# --------------------------------------------------------------------------------------
IDLE_THRESHOLD = 0.5


class _Arrivals(asyncio.Protocol):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.times.append(time.monotonic())
        self.data += data


async def _protons_frames_while_we_are_silent(port: int, engine: Connection, seconds: float) -> tuple[float, list[float]]:
    """Open a connection to Proton with ``engine``'s own header and open, then stay
    silent (a raw socket, so nothing of ours can time out meanwhile).  Return the
    idle-time-out our open advertised (seconds) and the gaps between Proton's frames."""
    engine.open()
    hello = b"".join(bytes(chunk) for chunk in engine.data_to_send())
    (opened,) = [p for p in performatives(hello) if isinstance(p, Open)]
    transport, arrivals = await asyncio.get_running_loop().create_connection(_Arrivals, "127.0.0.1", port)
    try:
        transport.write(hello)
        await asyncio.sleep(seconds)  # the silence is the input under test
    finally:
        transport.close()
    times = arrivals.times
    return opened.idle_time_out / 1000, [later - earlier for earlier, later in zip(times, times[1:])]


def test_protons_heartbeats_stay_inside_our_idle_timeout(proton_broker: Server) -> None:
    """Proton sends an empty frame every idle-time-out *we advertise* (not every half of
    it): our engine advertises half its threshold (spec 2.4.5), so a quiet connection to
    Proton never races our idle timer.  (It did, when we advertised the whole of it.)"""
    engine = Connection("probe", idle_timeout=IDLE_THRESHOLD)

    async def main() -> tuple[float, list[float]]:
        return await _protons_frames_while_we_are_silent(proton_broker.port, engine, 4 * IDLE_THRESHOLD)

    advertised, gaps = arun(main, timeout=30)
    assert advertised <= IDLE_THRESHOLD / 2
    assert len(gaps) >= 5, gaps
    assert statistics.median(gaps) <= advertised * 1.2, gaps  # Proton beats at what we advertise
    assert max(gaps) < IDLE_THRESHOLD, gaps  # and never lets our timer fire


def test_client_with_a_short_idle_timeout_stays_connected_to_proton(proton_broker: Server) -> None:
    async def main() -> None:
        async with await Client.connect(proton_broker.url(), idle_timeout=IDLE_THRESHOLD) as client:
            receiver = await client.receiver("quiet", credit=10)
            await asyncio.sleep(4 * IDLE_THRESHOLD)  # the silence is the input under test
            assert not client.engine.closed, client.engine.error
            sender = await client.sender("quiet")
            assert isinstance(await sender.send(Message(b"still open")), Accepted)
            item = await receiver.receive(timeout=10)
            assert item.message().body == b"still open"
            item.accept()

    arun(main, timeout=30)
