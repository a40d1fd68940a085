"""Qpid Proton as the CLIENT, against our engine and io layer as the server.

::

    proton send ──▶ ┌────────────────────────────────┐ ──▶ proton receive
                    │ amqp_broker.Broker             │
                    │ (io.listen + engine, test loop) │
                    └────────────────────────────────┘

The broker runs in the test's own event loop; the Proton clients are subprocesses
(``proton_peers.py send|receive``) awaited with a bound, and report what they saw as
JSON.  SASL PLAIN with password checking is tested in this direction because Proton's
built-in SASL cannot verify PLAIN as a server (see ``test_interop_proton_broker.py``).
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from amqp_broker import Broker, plain_sasl
from interop_support import arun, env_trusting, proton, run_process_async, switchboard
from switchboard.amqp.message import Message
from switchboard.client.connection import Client
from switchboard.io.tls import server_context

COUNT = 10_000
MIB = 1 << 20


def _digest(bodies: list[bytes]) -> str:
    digest = hashlib.sha256()
    for body in bodies:
        digest.update(body)
    return digest.hexdigest()


def _numbered(count: int) -> list[bytes]:
    return [f"message {n}".encode() for n in range(count)]


def _url(port: int, scheme: str = "amqp") -> str:
    return f"{scheme}://127.0.0.1:{port}"


@pytest.mark.parametrize("presettled", [False, True], ids=["settled", "presettled"])
def test_proton_sends_and_receives_10000(presettled: bool) -> None:
    flag = ["--presettled"] if presettled else []

    async def main() -> None:
        broker = Broker()
        port = await broker.start()
        try:
            sent = (await run_process_async(proton("send", _url(port), "q", "--count", COUNT, *flag), timeout=90)).json()
            assert sent["error"] is None, sent
            if presettled:
                assert sent["sent"] == COUNT
            else:
                assert (sent["accepted"], sent["rejected"], sent["released"]) == (COUNT, 0, 0)
            # Presettled transfers may still be in flight when Proton's process exits.
            await broker.wait_for(lambda: broker.received["q"] == COUNT, timeout=20)

            received = (await run_process_async(proton("receive", _url(port), "q", "--count", COUNT, *flag), timeout=90)).json()
            assert received["error"] is None, received
            assert received["received"] == COUNT
            assert received["digest"] == _digest(_numbered(COUNT))
            assert received["settled_by_sender"] == (COUNT if presettled else 0)
            # Every delivery to Proton was settled: nothing is left, nothing went back.
            await broker.wait_for(lambda: not broker.protocols, timeout=10)
            assert not broker.queues["q"]
        finally:
            await broker.stop()

    arun(main, timeout=150)


def test_proton_1mib_messages_intact() -> None:
    async def main() -> None:
        broker = Broker(max_frame_size=16384)  # many frames per message, both directions
        port = await broker.start()
        try:
            sent = (await run_process_async(
                proton("send", _url(port), "large", "--count", 3, "--size", MIB, "--random"), timeout=60
            )).json()
            assert sent["error"] is None and sent["accepted"] == 3, sent
            stored = [Message.decode(payload).body for payload in broker.queues["large"]]
            assert [hashlib.sha256(body).hexdigest() for body in stored] == sent["sha256"]

            received = (await run_process_async(proton("receive", _url(port), "large", "--count", 3), timeout=60)).json()
            assert received["error"] is None, received
            assert received["sha256"] == sent["sha256"]
        finally:
            await broker.stop()

    arun(main, timeout=120)


def test_proton_sasl_plain_accepted_and_wrong_password_refused() -> None:
    async def main() -> None:
        broker = Broker(sasl=plain_sasl({"alice": "s3cret"}))
        port = await broker.start()
        try:
            good = (await run_process_async(
                proton("send", _url(port), "auth", "--count", 10, "--user", "alice", "--password", "s3cret"), timeout=30
            )).json()
            assert good["error"] is None and good["accepted"] == 10, good
            assert broker.authenticated == [("PLAIN", "alice")]

            bad = await run_process_async(
                proton("send", _url(port), "auth", "--count", 10, "--user", "alice", "--password", "wrong"), timeout=30
            )
            assert bad.returncode == 1
            report = bad.json()
            assert report["condition"] == "amqp:unauthorized-access", report
            assert report["accepted"] == 0
            assert broker.received["auth"] == 10
            assert broker.authenticated == [("PLAIN", "alice")]
        finally:
            await broker.stop()

    arun(main, timeout=60)


def test_cli_sasl_plain_credentials_in_the_url() -> None:
    """Our CLI takes user:password from the URL (Proton cannot verify PLAIN as a server)."""

    async def main() -> None:
        broker = Broker(sasl=plain_sasl({"alice": "s3cret"}))
        port = await broker.start()
        try:
            good = await run_process_async(switchboard("send", f"amqp://alice:s3cret@127.0.0.1:{port}/auth", "--count", 5))
            assert good.returncode == 0 and "5 accepted" in good.stdout, good
            bad = await run_process_async(switchboard("send", f"amqp://alice:wrong@127.0.0.1:{port}/auth", "--count", 5))
            assert bad.returncode != 0
            assert "unauthorized-access" in bad.stderr, bad.stderr
            assert broker.received["auth"] == 5
        finally:
            await broker.stop()

    arun(main, timeout=60)


def test_proton_over_tls(certificate) -> None:
    cert, key = certificate

    async def main() -> None:
        broker = Broker()
        port = await broker.start(ssl_context=server_context(cert, key))
        try:
            url = _url(port, "amqps")
            sent = (await run_process_async(proton("send", url, "tls", "--count", 500, "--ca", cert), timeout=60)).json()
            assert sent["error"] is None and sent["accepted"] == 500, sent
            sent = (await run_process_async(
                proton("send", url, "tls", "--count", 1, "--size", MIB, "--random", "--ca", cert), timeout=60
            )).json()
            assert sent["error"] is None and sent["accepted"] == 1, sent
            received = (await run_process_async(proton("receive", url, "tls", "--count", 501, "--ca", cert), timeout=60)).json()
            assert received["error"] is None and received["received"] == 501, received
            assert received["sha256"] == sent["sha256"]
            assert received["bodies"] == ["message 0", "message 1", "message 2"]
            # Our CLI over TLS to our own listener, too (trusting the certificate by env).
            cli = await run_process_async(
                switchboard("send", f"amqps://127.0.0.1:{port}/tls", "--count", 100), env=env_trusting(cert)
            )
            assert cli.returncode == 0 and "100 accepted" in cli.stdout, cli
        finally:
            await broker.stop()

    arun(main, timeout=120)


def test_proton_client_keeps_a_quiet_connection_inside_our_idle_timeout() -> None:
    """Our listener closes after 0.5 s of silence (and advertises half of it); a Proton
    receiver that waits four such periods for its message is kept open by its heartbeats."""
    idle = 0.5

    async def main() -> None:
        broker = Broker(idle_timeout=idle)
        port = await broker.start()
        try:
            receiving = asyncio.ensure_future(run_process_async(proton("receive", _url(port), "quiet", "--count", 1), timeout=30))
            await broker.wait_for(lambda: broker.consumers.get("quiet"), timeout=20)
            await asyncio.sleep(4 * idle)  # the silence is the input under test
            assert not broker.closed, [event.error for event in broker.closed]
            async with await Client.connect(_url(port)) as client:
                sender = await client.sender("quiet")
                await sender.send(Message(b"worth the wait"))
            received = (await receiving).json()
            assert received["error"] is None and received["bodies"] == ["worth the wait"], received
            assert all(event.error is None or event.error.condition != "amqp:resource-limit-exceeded" for event in broker.closed)
        finally:
            await broker.stop()

    arun(main, timeout=60)


def test_proton_plain_tcp_refused_by_tls_listener(certificate) -> None:
    """A client speaking plain AMQP to a TLS listener fails (and the listener survives)."""
    cert, key = certificate

    async def main() -> None:
        broker = Broker()
        port = await broker.start(ssl_context=server_context(cert, key))
        try:
            plain = await run_process_async(proton("send", _url(port), "tls", "--count", 1, "--timeout", 20), timeout=30)
            assert plain.returncode == 1
            assert plain.json()["accepted"] == 0
            ok = (await run_process_async(proton("send", _url(port, "amqps"), "tls", "--count", 1, "--ca", cert), timeout=30)).json()
            assert ok["error"] is None and ok["accepted"] == 1
        finally:
            await broker.stop()

    arun(main, timeout=60)
