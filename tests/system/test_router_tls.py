"""Listener security with real router processes: --listen, ANONYMOUS beyond loopback,
mutual TLS, TLS versions, the TLS handshake bound, SASL EXTERNAL, and certificate reload.

Certificates come from throw-away CAs made with the openssl command (``tls_support.Pki``):
CA "A" and CA "B" each sign a server certificate (``server-A``, ``server-B``) and client
certificates (``/O=Switchboard tests/CN=<user>``).  Clients are ours (``Client``, the
``switchboard`` CLI) and Qpid Proton's.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from proton import Message as ProtonMessage, SSLDomain

from system_support import (
    HOST,
    ProtonClient,
    run_async,
    run_proton,
    start_router_process,
    switchboard_command,
    wait_socket_closed,
)
from tls_support import Issued, Pki
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted
from switchboard.router.credentials import Credentials
from switchboard.client.connection import Client, ClientError
from switchboard.io.tls import client_context

EXIT_BOUND = 15.0
"""Seconds for a router refusing its configuration to exit."""
HANDSHAKE_WAIT = 20.0
"""How long a test waits for the router to cut a stalled TLS handshake: well under
asyncio's own 60 s, well over the 1 s configured, for a loaded machine."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def tls_listener(server: Issued, ca: Issued | None = None, extra: str = "", port: int = 0) -> str:
    text = f"[[listeners]]\nhost = '{HOST}'\nport = {port}\ntls_cert = '{server.cert}'\ntls_key = '{server.key}'\n"
    if ca is not None:
        text += f"tls_ca = '{ca.cert}'\n"
    return text + extra


def refused_config(tmp_path: Path, config: str | None, *args: str) -> str:
    """Start a router that must refuse to start; return its stderr."""
    process = start_router_process(tmp_path, config, listen=False, args=args)
    try:
        code = process.proc.wait(EXIT_BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"router still running after {EXIT_BOUND} s:\n{process.output()}")
    process.stdout.join(5)
    process.stderr.join(5)
    err = process.stderr.text()
    assert code != 0, process.output()
    assert "Traceback" not in err, err
    assert "listening on" not in process.stdout.text()
    return err


def context(ca: Issued, client: Issued | None = None) -> ssl.SSLContext:
    return client_context(cafile=ca.cert, certfile=client.cert if client else None, keyfile=client.key if client else None)


async def attempt(url: str, ssl_context: ssl.SSLContext | None, mechanism: str | None = None) -> Any:
    """Connect, attach a receiver, exchange one message: "ok", or the exception raised."""
    try:
        async with await Client.connect(url, ssl_context=ssl_context, sasl_mechanism=mechanism, timeout=10) as client:
            receiver = await client.receiver("tls/check")
            sender = await client.sender("tls/check")
            outcome = await sender.send(Message(b"checked"), wait=False)
            item = await receiver.receive(timeout=10)
            item.accept()
            assert isinstance(await outcome, Accepted)
            return "ok"
    except (ClientError, OSError, TimeoutError) as exc:
        return exc


def refused_text(result: Any) -> str:
    assert isinstance(result, (ClientError, OSError)), f"expected a refusal, got {result!r}"
    return str(result).lower()


# ======================================================================================
# --listen keeps the configured security
# ======================================================================================
def plain_users(directory: Path) -> str:
    """A credentials file with alice (password s3cret) in ``directory``, and the
    configuration lines that use it."""
    credentials = Credentials()
    credentials.set_password("alice", "s3cret")
    credentials.save(directory / "users.creds")
    return '\n[authentication]\ncredentials_file = "users.creds"\n'


def test_listen_keeps_the_configured_tls_and_sasl(router, pki, tmp_path) -> None:
    """The README's `--listen ... --config router.toml`: the listener moves, its
    PLAIN-over-TLS stays (it used to become plain text and anonymous)."""
    ca = pki.ca("A")
    # Port 5999 is never opened: --listen moves the listener to 127.0.0.1:0.
    config = tls_listener(pki.server("A"), extra="sasl_mechanisms = ['PLAIN']\n", port=5999) + plain_users(tmp_path)
    r = router(config)  # with --listen 127.0.0.1:0
    line = r.stdout.lines[0]
    assert line.startswith("listening on amqps://127.0.0.1:"), line
    assert "tls=on" in line and "sasl=PLAIN" in line, line

    async def scenario() -> tuple[Any, Any, Any]:
        plain_text = await attempt(f"amqp://{HOST}:{r.port}", None)
        anonymous = await attempt(f"amqps://{HOST}:{r.port}", context(ca))
        with_password = await attempt(f"amqps://alice:s3cret@{HOST}:{r.port}", context(ca))
        return plain_text, anonymous, with_password

    plain_text, anonymous, with_password = run_async(scenario, timeout=60)
    assert with_password == "ok"
    refused_text(plain_text)
    assert "unauthorized-access" in refused_text(anonymous) or "no acceptable sasl" in refused_text(anonymous)


def test_listen_moves_only_the_client_listener(router) -> None:
    r = router("[[listeners]]\nport = 5999\n\n[[listeners]]\nport = 0\nrole = 'inter-router'\n")
    assert r.stdout.wait_for(r"\(inter-router\)", 10), r.output()
    lines = [line for line in r.stdout.lines if line.startswith("listening on")]
    assert len(lines) == 2, lines
    assert f"127.0.0.1:{r.port} (normal)" in lines[0], lines
    assert ":5999" not in lines[1] and "(inter-router)" in lines[1], lines


def test_listen_refused_when_it_could_stand_for_several_listeners(tmp_path) -> None:
    config = "[[listeners]]\nport = 0\n\n[[listeners]]\nport = 0\nsasl_mechanisms = ['PLAIN']\n" + plain_users(tmp_path)
    err = refused_config(tmp_path, config, "--listen", f"{HOST}:0")
    assert "--listen" in err and "has 2" in err, err
    assert "set the addresses in the configuration file" in err, err


def test_listen_refused_without_a_client_listener(tmp_path) -> None:
    err = refused_config(tmp_path, "[[listeners]]\nport = 0\nrole = 'inter-router'\n", "--listen", f"{HOST}:0")
    assert "--listen" in err and "has 0" in err, err


# ======================================================================================
# ANONYMOUS beyond loopback is a choice
# ======================================================================================
def test_anonymous_on_a_remote_listen_address_needs_the_opt_in(tmp_path) -> None:
    err = refused_config(tmp_path, None, "--listen", "0.0.0.0:5672")
    assert "ANONYMOUS" in err and "allow_remote_anonymous" in err and "--allow-remote-anonymous" in err, err


def test_anonymous_on_a_remote_configured_listener_needs_the_key(tmp_path) -> None:
    err = refused_config(tmp_path, "[[listeners]]\nhost = '0.0.0.0'\nport = 0\n")
    assert "listeners[0].sasl_mechanisms" in err and "allow_remote_anonymous = true" in err, err


def test_opt_in_flag_only_with_listen(tmp_path) -> None:
    err = refused_config(tmp_path, None, "--allow-remote-anonymous")
    assert "--allow-remote-anonymous" in err and "allow_remote_anonymous = true" in err, err


def test_loopback_anonymous_needs_nothing(router) -> None:
    """`make run`: no configuration, 127.0.0.1, anonymous."""
    r = router(listen=False, args=("--listen", f"{HOST}:0"))
    assert "tls=off sasl=ANONYMOUS" in r.stdout.lines[0]
    assert run_async(lambda: attempt(r.url, None), timeout=30) == "ok"


# ======================================================================================
# Mutual TLS and TLS versions
# ======================================================================================
def test_tls_ca_requires_a_client_certificate(router, pki) -> None:
    ca = pki.ca("A")
    r = router(tls_listener(pki.server("A"), ca), listen=False)
    line = r.stdout.lines[0]
    assert "tls=on tls_min=1.2 client_certificate=required sasl=ANONYMOUS" in line, line
    url = f"amqps://{HOST}:{r.port}"

    async def scenario() -> tuple[Any, Any, Any]:
        return (
            await attempt(url, context(ca)),
            await attempt(url, context(ca, pki.client("B", "mallory"))),
            await attempt(url, context(ca, pki.client("A", "alice"))),
        )

    without, foreign, valid = run_async(scenario, timeout=60)
    assert valid == "ok"
    # The client reads why, from the TLS alert the router sent.
    assert "certificate required" in refused_text(without), without
    assert "unknown ca" in refused_text(foreign), foreign
    assert r.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ refused", 10), r.output()


def test_client_certificate_optional_when_switched_off(router, pki) -> None:
    ca = pki.ca("A")
    r = router(tls_listener(pki.server("A"), ca, "require_client_certificate = false\n"), listen=False)
    assert "client_certificate=optional" in r.stdout.lines[0]
    url = f"amqps://{HOST}:{r.port}"

    async def scenario() -> tuple[Any, Any]:
        return await attempt(url, context(ca)), await attempt(url, context(ca, pki.client("B", "mallory")))

    without, foreign = run_async(scenario, timeout=60)
    assert without == "ok"
    assert "unknown ca" in refused_text(foreign), foreign  # one presented must still verify


def test_proton_without_a_client_certificate_is_refused(router, pki) -> None:
    ca = pki.ca("A")
    r = router(tls_listener(pki.server("A"), ca), listen=False)

    class Connector(ProtonClient):
        def __init__(self) -> None:
            super().__init__()
            self.opened = False
            self.description = ""

        def on_start(self, event: Any) -> None:
            domain = SSLDomain(SSLDomain.MODE_CLIENT)
            domain.set_trusted_ca_db(str(ca.cert))
            domain.set_peer_authentication(SSLDomain.VERIFY_PEER)
            self.connect(event.container, f"amqps://{HOST}:{r.port}", ssl_domain=domain)

        def on_connection_opened(self, event: Any) -> None:
            self.opened = True
            self.finish()

        def on_transport_error(self, event: Any) -> None:
            condition = event.transport.condition
            self.description = condition.description if condition else ""
            super().on_transport_error(event)

    result = run_proton(Connector(), timeout=30)
    assert not result.opened
    assert "certificate required" in result.description.lower(), result.describe()


def test_tls_1_1_client_is_refused(router, pki) -> None:
    ca = pki.ca("A")
    r = router(tls_listener(pki.server("A")), listen=False)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(ca.cert)
    old.check_hostname = False
    # Let this client's own OpenSSL speak TLS 1.1, so that any refusal is the router's.
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection((HOST, r.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as caught:
            with old.wrap_socket(raw):
                pass
    # The router's alert, not a local inability to speak TLS 1.1.
    assert "protocol version" in str(caught.value).lower() or "PROTOCOL_VERSION" in str(caught.value), caught.value


def test_tls_min_version_1_3(router, pki) -> None:
    ca = pki.ca("A")
    r = router(tls_listener(pki.server("A"), extra="tls_min_version = '1.3'\n"), listen=False)
    assert "tls_min=1.3" in r.stdout.lines[0]
    tls12 = context(ca)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    url = f"amqps://{HOST}:{r.port}"

    async def scenario() -> tuple[Any, Any]:
        return await attempt(url, tls12), await attempt(url, context(ca))

    refused, accepted = run_async(scenario, timeout=60)
    assert accepted == "ok"
    assert "protocol version" in refused_text(refused), refused


def test_large_messages_over_tls_both_ways(router, pki) -> None:
    """Messages spanning many TLS records and many frames, in both directions."""
    ca = pki.ca("A")
    r = router(tls_listener(pki.server("A")) + "\n[limits]\nmax_message_size = 8388608\n", listen=False)
    url = f"amqps://{HOST}:{r.port}"
    bodies = [bytes([i]) * (3 * 1024 * 1024 + i) for i in range(3)]

    async def scenario() -> list[bytes]:
        async with await Client.connect(url, ssl_context=context(ca)) as consumer, \
                await Client.connect(url, ssl_context=context(ca)) as producer:
            receiver = await consumer.receiver("tls/large", credit=2)
            sender = await producer.sender("tls/large")

            async def receive_all() -> list[bytes]:
                received = []
                for _ in bodies:
                    item = await receiver.receive(timeout=30)
                    received.append(item.message().body)
                    item.accept()
                return received

            # Credit is end to end: the third message waits for the consumer to take one.
            receiving = asyncio.ensure_future(receive_all())
            outcomes = [await sender.send(Message(body), wait=False) for body in bodies]
            for outcome in outcomes:
                assert isinstance(await outcome, Accepted)
            return await receiving

    assert run_async(scenario, timeout=90) == bodies


# ======================================================================================
# The TLS handshake is bounded by limits.handshake_timeout
# ======================================================================================
@pytest.mark.parametrize("sent", [b"", bytes.fromhex("16030100c8010000c40303") + b"\x00" * 16], ids=["silent", "half-client-hello"])
def test_stalled_tls_handshake_is_cut_at_handshake_timeout(router, pki, sent: bytes) -> None:
    r = router(tls_listener(pki.server("A")) + "\n[limits]\nhandshake_timeout = 1.0\n", listen=False)
    with socket.create_connection((HOST, r.port), timeout=10) as sock:
        if sent:
            sock.sendall(sent)
        received = wait_socket_closed(sock, HANDSHAKE_WAIT)
    assert received is not None, f"router kept a stalled TLS handshake open for {HANDSHAKE_WAIT} s"
    assert r.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ not complete within 1 s", 10), r.output()


# ======================================================================================
# SASL EXTERNAL
# ======================================================================================
def external_listener(pki: Pki, extra: str = "", mechanisms: str = "['EXTERNAL']") -> str:
    return tls_listener(pki.server("A"), pki.ca("A"), f"sasl_mechanisms = {mechanisms}\n" + extra)


def test_external_with_our_client(router, pki) -> None:
    ca = pki.ca("A")
    r = router(external_listener(pki), listen=False)
    assert "client_certificate=required sasl=EXTERNAL" in r.stdout.lines[0]
    alice = context(ca, pki.client("A", "alice"))
    no_cn = context(ca, pki.client("A", None))

    async def scenario() -> tuple[Any, Any, Any, Any]:
        base = f"{HOST}:{r.port}"
        return (
            await attempt(f"amqps://{base}", alice, "EXTERNAL"),
            # The identity asked for must be the one the certificate names (its CN).
            await attempt(f"amqps://alice@{base}", alice, "EXTERNAL"),
            await attempt(f"amqps://mallory@{base}", alice, "EXTERNAL"),
            await attempt(f"amqps://{base}", no_cn, "EXTERNAL"),
        )

    plain, as_alice, as_mallory, without_cn = run_async(scenario, timeout=60)
    assert plain == "ok"
    assert as_alice == "ok"
    assert "unauthorized-access" in refused_text(as_mallory), as_mallory
    assert "unauthorized-access" in refused_text(without_cn), without_cn


def test_external_not_offered_without_a_certificate(router, pki, tmp_path) -> None:
    ca = pki.ca("A")
    config = external_listener(pki, "require_client_certificate = false\n", "['EXTERNAL', 'PLAIN']") + plain_users(tmp_path)
    r = router(config, listen=False)
    refused = run_async(lambda: attempt(f"amqps://{HOST}:{r.port}", context(ca), "EXTERNAL"), timeout=30)
    text = refused_text(refused)
    assert "no acceptable sasl mechanism among: plain" in text, refused


def test_external_with_proton(router, pki) -> None:
    ca = pki.ca("A")
    r = router(external_listener(pki), listen=False)
    alice = pki.client("A", "alice")

    class Exchange(ProtonClient):
        def __init__(self, credentials: Issued | None) -> None:
            super().__init__()
            self.credentials = credentials
            self.received: list[Any] = []
            self.accepted = 0
            self.sent = False

        def on_start(self, event: Any) -> None:
            domain = SSLDomain(SSLDomain.MODE_CLIENT)
            domain.set_trusted_ca_db(str(ca.cert))
            domain.set_peer_authentication(SSLDomain.VERIFY_PEER)
            if self.credentials is not None:
                domain.set_credentials(str(self.credentials.cert), str(self.credentials.key), None)
            connection = self.connect(
                event.container, f"amqps://{HOST}:{r.port}", ssl_domain=domain,
                allowed_mechs="EXTERNAL", sasl_enabled=True,
            )
            event.container.create_receiver(connection, "tls/proton")
            event.container.create_sender(connection, "tls/proton")

        def on_sendable(self, event: Any) -> None:
            if not self.sent and event.sender.credit:
                self.sent = True
                event.sender.send(ProtonMessage(body="over EXTERNAL"))

        def on_message(self, event: Any) -> None:
            self.received.append(event.message.body)

        def on_accepted(self, event: Any) -> None:
            self.accepted += 1
            self.finish()

    accepted = run_proton(Exchange(alice), timeout=30)
    assert accepted.received == ["over EXTERNAL"] and accepted.accepted == 1, accepted.describe()

    # Without a certificate the TLS handshake already refuses it (the listener requires one).
    refused = run_proton(Exchange(None), timeout=30)
    assert refused.accepted == 0 and refused.errors, refused.describe()


def test_external_with_proton_refused_by_sasl(router, pki) -> None:
    """Optional client certificates: a Proton client without one cannot use EXTERNAL."""
    ca = pki.ca("A")
    r = router(external_listener(pki, "require_client_certificate = false\n"), listen=False)

    class Connector(ProtonClient):
        def __init__(self) -> None:
            super().__init__()
            self.opened = False
            self.condition = ""

        def on_start(self, event: Any) -> None:
            domain = SSLDomain(SSLDomain.MODE_CLIENT)
            domain.set_trusted_ca_db(str(ca.cert))
            domain.set_peer_authentication(SSLDomain.VERIFY_PEER)
            self.connect(event.container, f"amqps://{HOST}:{r.port}", ssl_domain=domain, allowed_mechs="EXTERNAL", sasl_enabled=True)

        def on_connection_opened(self, event: Any) -> None:
            self.opened = True
            self.finish()

        def on_transport_error(self, event: Any) -> None:
            condition = event.transport.condition
            self.condition = condition.name if condition else ""
            super().on_transport_error(event)

    result = run_proton(Connector(), timeout=30)
    assert not result.opened
    assert result.condition == "amqp:unauthorized-access", result.describe()


def test_cli_send_and_receive_with_a_client_certificate(router, pki) -> None:
    ca = pki.ca("A")
    r = router(external_listener(pki), listen=False)
    alice = pki.client("A", "alice")
    url = f"amqps://{HOST}:{r.port}/tls/cli"
    tls_args = ["--ca-file", str(ca.cert), "--cert-file", str(alice.cert), "--key-file", str(alice.key)]
    receiver = subprocess.Popen(
        [*switchboard_command(), "receive", url, "--count", "1", "--timeout", "20", *tls_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # The sender waits for credit, which only the receiver's attach brings.
        sent = subprocess.run(
            [*switchboard_command(), "send", url, "--body", "by certificate", "--timeout", "20", *tls_args],
            capture_output=True, text=True, timeout=60,
        )
        out, err = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait(10)
    assert sent.returncode == 0, sent.stderr
    assert "1 accepted" in sent.stdout
    assert receiver.returncode == 0, err
    assert out.strip() == "by certificate"

    without = subprocess.run(
        [*switchboard_command(), "send", url, "--timeout", "10", "--ca-file", str(ca.cert)],
        capture_output=True, text=True, timeout=60,
    )
    assert without.returncode != 0
    assert "certificate required" in without.stderr.lower(), without.stderr


# ======================================================================================
# SIGHUP reloads certificate files; open connections stay
# ======================================================================================
def _peer_cn(client: Client) -> str:
    assert client.protocol is not None and client.protocol.transport is not None
    peercert = client.protocol.transport.get_extra_info("peercert")
    return dict(item for rdn in peercert["subject"] for item in rdn)["commonName"]


def test_sighup_reloads_the_certificate_without_dropping_connections(router, pki, tmp_path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(pki.server("A").cert.read_bytes())
    key.write_bytes(pki.server("A").key.read_bytes())
    r = router(tls_listener(Issued(cert, key)), listen=False)
    trusts_both = tmp_path / "trusted.pem"
    trusts_both.write_bytes(pki.ca("A").cert.read_bytes() + pki.ca("B").cert.read_bytes())
    url = f"amqps://{HOST}:{r.port}"

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with await Client.connect(url, ssl_context=client_context(cafile=trusts_both)) as old:
            seen["before"] = _peer_cn(old)
            receiver = await old.receiver("tls/reload")
            sender = await old.sender("tls/reload")

            cert.write_bytes(pki.server("B").cert.read_bytes())
            key.write_bytes(pki.server("B").key.read_bytes())
            r.signal(signal.SIGHUP)
            seen["logged"] = await asyncio.to_thread(r.wait_log, r"listeners\[0\]: TLS files reloaded", 15)
            async with await Client.connect(url, ssl_context=client_context(cafile=trusts_both)) as new:
                seen["after"] = _peer_cn(new)

            # A bad file: logged, the previous (B) kept.
            cert.write_text("not a certificate\n")
            r.signal(signal.SIGHUP)
            seen["bad"] = await asyncio.to_thread(r.wait_log, r"listeners\[0\]\.tls_cert: .*keeping the previous TLS files", 15)
            async with await Client.connect(url, ssl_context=client_context(cafile=trusts_both)) as later:
                seen["after_bad"] = _peer_cn(later)

            # The connection made before both reloads still sends and receives.
            outcome = await sender.send(Message(b"still here"), wait=False)
            item = await receiver.receive(timeout=10)
            item.accept()
            seen["old_body"] = item.message().body
            seen["old_outcome"] = await outcome
        return seen

    seen = run_async(scenario, timeout=90)
    assert seen["logged"], r.output()
    assert seen["bad"], r.output()
    assert (seen["before"], seen["after"], seen["after_bad"]) == ("server-A", "server-B", "server-B")
    assert seen["old_body"] == b"still here"
    assert isinstance(seen["old_outcome"], Accepted)


def test_sighup_reloads_the_ca(router, pki, tmp_path) -> None:
    ca_file = tmp_path / "clients-ca.pem"
    ca_file.write_bytes(pki.ca("A").cert.read_bytes())
    r = router(tls_listener(pki.server("A"), Issued(ca_file, ca_file)), listen=False)
    trusts = pki.ca("A")
    url = f"amqps://{HOST}:{r.port}"
    from_a = context(trusts, pki.client("A", "alice"))
    from_b = context(trusts, pki.client("B", "bob"))

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with await Client.connect(url, ssl_context=from_a) as old:
            receiver = await old.receiver("tls/ca")
            sender = await old.sender("tls/ca")
            seen["b_before"] = await attempt(url, from_b)
            ca_file.write_bytes(pki.ca("B").cert.read_bytes())
            r.signal(signal.SIGHUP)
            seen["logged"] = await asyncio.to_thread(r.wait_log, r"listeners\[0\]: TLS files reloaded", 15)
            seen["a_after"] = await attempt(url, from_a)
            seen["b_after"] = await attempt(url, from_b)
            outcome = await sender.send(Message(b"admitted under CA A"), wait=False)
            item = await receiver.receive(timeout=10)
            item.accept()
            seen["old_outcome"] = await outcome
        return seen

    seen = run_async(scenario, timeout=90)
    assert seen["logged"], r.output()
    assert "unknown ca" in refused_text(seen["b_before"])
    assert seen["b_after"] == "ok"
    assert "unknown ca" in refused_text(seen["a_after"])
    assert isinstance(seen["old_outcome"], Accepted)
