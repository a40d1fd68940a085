"""Running the router: configuration mistakes stop it at once; SIGTERM stops it cleanly.

    sender ──► router ──► consumer (holds 5 unsettled)
                 │
                 └─ 5 more held in the router for want of credit

On SIGTERM the router stops accepting, releases what it holds, lets the consumer settle
what it can within ``shutdown_timeout``, fails the rest back to the sender as
``modified(delivery-failed)``, closes every connection with ``amqp:connection:forced``
and exits 0.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time

import pytest

from system_support import HOST, start_router_process, run_async, run_proton, wait_until
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, Modified, Properties, Released
from switchboard.client.connection import Client, ClientError
from switchboard.io.tls import client_context

CONFIG_EXIT_BOUND = 15.0
"""Seconds for a misconfigured router to exit: interpreter start-up, then nothing to wait for."""


@pytest.mark.parametrize(
    ("config", "key"),
    [
        pytest.param("[limits]\nmax_conections = 5\n", "limits.max_conections", id="unknown-key"),
        pytest.param("[routr]\nid = 'a'\n", "routr", id="unknown-table"),
        pytest.param("[[listeners]]\nport = 70000\n", "listeners[0].port", id="port-out-of-range"),
        pytest.param("[[listeners]]\nport = 'amqp'\n", "listeners[0].port", id="port-not-a-number"),
        pytest.param(
            "[[addresses]]\nprefix = 'fan/'\ndistribution = 'fanout'\n",
            "addresses[0].distribution",
            id="bad-distribution",
        ),
        pytest.param(
            "[[listeners]]\nport = 0\nsasl_mechanisms = ['PLAIN']\n",
            "listeners[0].sasl_mechanisms",
            id="plain-without-credentials",
        ),
        pytest.param("[users]\nalice = 's3cret'\n", "users: plain-text passwords are not accepted", id="plain-text-passwords"),
        pytest.param(
            "[[listeners]]\nport = 0\ntls_cert = 'missing-cert.pem'\ntls_key = 'missing-key.pem'\n",
            "listeners[0].tls_cert",
            id="missing-tls-file",
        ),
        pytest.param("[limits]\nidle_timeout = -1\n", "limits.idle_timeout", id="negative-timeout"),
        pytest.param("[limits\nmax_connections = 1\n", "not valid TOML", id="not-toml"),
    ],
)
def test_bad_config_exits_at_once_naming_the_key(tmp_path, config: str, key: str) -> None:
    process = start_router_process(tmp_path, config, listen=False)
    try:
        code = process.proc.wait(CONFIG_EXIT_BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"router with a bad config still running after {CONFIG_EXIT_BOUND} s:\n{process.output()}")
    process.stdout.join(5)
    process.stderr.join(5)
    assert code != 0
    err = process.stderr.text()
    assert "configuration error" in err
    assert key in err, err
    assert "Traceback" not in err
    assert "listening on" not in process.stdout.text()


def test_missing_config_file_is_named(tmp_path) -> None:
    command = start_router_process(tmp_path, None, listen=False, args=("--config", str(tmp_path / "nope.toml")))
    code = command.proc.wait(CONFIG_EXIT_BOUND)
    command.stderr.join(5)
    assert code != 0
    assert "nope.toml" in command.stderr.text()


def _self_signed(tmp_path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(tmp_path / "good-key.pem"), "-out", str(tmp_path / "good-cert.pem"),
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return "good-cert.pem", "good-key.pem"


@pytest.mark.parametrize(
    ("bad", "key"),
    [("cert", "listeners[0].tls_cert"), ("key", "listeners[0].tls_key"), ("ca", "listeners[0].tls_ca")],
)
def test_tls_file_with_the_wrong_content_is_named(tmp_path, bad: str, key: str) -> None:
    cert, private = _self_signed(tmp_path)
    (tmp_path / "junk.pem").write_text("this is not PEM at all\n")
    files = {"cert": cert, "key": private, "ca": cert}
    files[bad] = "junk.pem"
    config = (
        "[[listeners]]\nport = 0\n"
        f"tls_cert = '{files['cert']}'\ntls_key = '{files['key']}'\ntls_ca = '{files['ca']}'\n"
    )
    process = start_router_process(tmp_path, config, listen=False)
    code = process.proc.wait(CONFIG_EXIT_BOUND)
    process.stderr.join(5)
    err = process.stderr.text()
    assert code != 0
    assert "Traceback" not in err
    assert key in err, err  # named before any listener opened its socket


def test_bad_tls_file_on_a_later_listener_stops_the_router_before_any_listens(tmp_path) -> None:
    (tmp_path / "junk.pem").write_text("this is not PEM at all\n")
    config = "[[listeners]]\nport = 0\n\n[[listeners]]\nport = 0\ntls_cert = 'junk.pem'\n"
    process = start_router_process(tmp_path, config, listen=False)
    code = process.proc.wait(CONFIG_EXIT_BOUND)
    process.stdout.join(5)
    process.stderr.join(5)
    assert code != 0
    assert "listeners[1].tls_cert" in process.stderr.text()
    assert "listening on" not in process.stdout.text()


def test_tls_listener_serves_our_client(router, tmp_path) -> None:
    cert, private = _self_signed(tmp_path)
    r = router(f"[[listeners]]\nport = 0\ntls_cert = '{cert}'\ntls_key = '{private}'\n", listen=False)
    assert "amqps://" in r.stdout.text()

    async def exchange() -> bytes:
        context = client_context(cafile=tmp_path / cert)
        async with await Client.connect(f"amqps://{HOST}:{r.port}", ssl_context=context) as client:
            receiver = await client.receiver("tls/check")
            sender = await client.sender("tls/check")
            outcome = await sender.send(Message(b"over TLS"), wait=False)
            item = await receiver.receive(timeout=5)
            item.accept()
            assert isinstance(await outcome, Accepted)
            return item.message().body

    assert run_async(exchange, timeout=30) == b"over TLS"


def test_bad_listen_option_is_named(tmp_path) -> None:
    process = start_router_process(tmp_path, None, listen=False, args=("--listen", f"{HOST}:99999"))
    code = process.proc.wait(CONFIG_EXIT_BOUND)
    process.stderr.join(5)
    assert code != 0
    assert "--listen" in process.stderr.text()


def test_port_in_use_fails_to_start(router, tmp_path) -> None:
    first = router()
    second = start_router_process(tmp_path, None, listen=False, args=("--listen", f"{HOST}:{first.port}"), name="second")
    code = second.proc.wait(CONFIG_EXIT_BOUND)
    second.stderr.join(5)
    assert code != 0
    assert "cannot start" in second.stderr.text()
    assert "Traceback" not in second.stderr.text()


SHUTDOWN_CONFIG = """
[limits]
shutdown_timeout = 2.0
"""


def test_sigterm_with_deliveries_in_flight(router) -> None:
    r = router(SHUTDOWN_CONFIG)
    r.expect_exit = True
    held_by_consumer = 5
    total = 10

    async def scenario() -> dict:
        consumer_client = await Client.connect(r.url, idle_timeout=None)
        sender_client = await Client.connect(r.url, idle_timeout=None)
        receiver = await consumer_client.receiver("work", credit=held_by_consumer)
        sender = await sender_client.sender(None)  # anonymous relay: credit without consumer capacity
        futures = []
        for i in range(total):
            message = Message(f"job {i}".encode(), properties=Properties(to="work", message_id=i))
            futures.append(await sender.send(message.encode(), wait=False))
        await wait_until(lambda: len(receiver.link.unsettled) == held_by_consumer, 10, "the consumer to hold 5 deliveries")

        r.signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert await asyncio.to_thread(r.wait_log, "shutting down", 10), r.output()

        # It no longer accepts connections.
        with pytest.raises((OSError, ClientError)):
            late = await Client.connect(r.url, timeout=5)
            await late.close()

        # The 5 held in the router for want of credit come back released, at once.
        outcomes = {}
        done, _ = await asyncio.wait(futures, timeout=1.5)
        for i, future in enumerate(futures):
            if future in done:
                outcomes[i] = future.result()
        released_early = [i for i, o in outcomes.items() if isinstance(o, Released)]
        assert len(released_early) == total - held_by_consumer, outcomes

        # The consumer finishes two of its five within the shutdown bound...
        for _ in range(2):
            item = await receiver.receive(timeout=5)
            item.accept()
        # ...and the rest are failed back to the sender when the bound expires.
        results = await asyncio.gather(*futures, return_exceptions=True)
        await wait_until(lambda: sender.error is not None and receiver.error is not None, 10, "both connections to close")
        return {
            "results": results,
            "sender_error": sender.error,
            "receiver_error": receiver.error,
            "signalled": signalled,
        }

    result = run_async(scenario, timeout=40)
    code = r.proc.wait(15)
    exited = time.monotonic() - result["signalled"]
    assert code == 0, r.output()
    assert exited < 2.0 + 8.0, f"router took {exited:.1f} s to exit"

    results = result["results"]
    kinds = [type(x).__name__ for x in results]
    assert not any(isinstance(x, BaseException) for x in results), kinds
    assert kinds.count("Released") == total - held_by_consumer, kinds
    assert kinds.count("Accepted") == 2, kinds
    assert kinds.count("Modified") == held_by_consumer - 2, kinds
    for outcome in results:
        if isinstance(outcome, Modified):
            assert outcome.delivery_failed
    for error in (result["sender_error"], result["receiver_error"]):
        assert error is not None
        assert str(error.condition) == "amqp:connection:forced"
        assert "shutting down" in (error.description or "")


def test_sigterm_closes_proton_connection_with_reason(router) -> None:
    from proton.handlers import MessagingHandler

    r = router(SHUTDOWN_CONFIG)
    r.expect_exit = True

    class Watcher(MessagingHandler):
        def __init__(self) -> None:
            super().__init__()
            self.condition = None
            self.description = None

        def on_start(self, event):
            conn = event.container.connect(r.url)
            event.container.create_receiver(conn, "anything")

        def on_link_opened(self, event):
            r.signal(signal.SIGTERM)

        def on_connection_error(self, event):
            cond = event.connection.remote_condition
            self.condition = cond.name if cond else None
            self.description = cond.description if cond else None
            event.connection.close()
            event.container.stop()

        def on_connection_remote_close(self, event):
            if self.condition is None:
                cond = event.connection.remote_condition
                self.condition = cond.name if cond else "none"
                self.description = cond.description if cond else None
            event.connection.close()
            event.container.stop()

        def on_transport_error(self, event):
            if self.condition is None:
                self.condition = "transport-error"
            event.container.stop()

    watcher = run_proton(Watcher(), timeout=20)
    assert watcher.condition == "amqp:connection:forced", vars(watcher)
    assert "shutting down" in (watcher.description or "")
    assert r.proc.wait(15) == 0


def test_idle_router_exits_zero_quickly_on_sigterm(router) -> None:
    r = router()
    r.expect_exit = True

    async def scenario() -> None:
        client = await Client.connect(r.url)
        receiver = await client.receiver("idle")
        started = time.monotonic()
        r.signal(signal.SIGTERM)
        await wait_until(lambda: receiver.error is not None, 10, "the connection to close")
        assert str(receiver.error.condition) == "amqp:connection:forced"
        assert time.monotonic() - started < 5

    run_async(scenario, timeout=20)
    assert r.proc.wait(10) == 0


PLAIN_CONFIG = """
[[listeners]]
host = "127.0.0.1"
port = 0
sasl_mechanisms = ["PLAIN"]

[authentication]
credentials_file = "users.creds"
"""


def test_plain_authentication(router, tmp_path) -> None:
    from switchboard.router.credentials import Credentials

    credentials = Credentials()
    credentials.set_password("alice", "s3cret")
    credentials.save(tmp_path / "users.creds")
    r = router(PLAIN_CONFIG, listen=False)

    async def attempt(userinfo: str):
        url = f"amqp://{userinfo}127.0.0.1:{r.port}"
        try:
            async with await Client.connect(url, timeout=10) as client:
                await client.receiver("secured")
                return "ok"
        except (ClientError, OSError, TimeoutError) as exc:
            return exc

    async def scenario():
        return await attempt("alice:s3cret@"), await attempt("alice:wrong@"), await attempt("mallory:s3cret@"), await attempt("")

    good, wrong_password, unknown_user, anonymous = run_async(scenario, timeout=60)
    assert good == "ok"
    for refused in (wrong_password, unknown_user, anonymous):
        assert isinstance(refused, (ClientError, OSError)), refused
    assert "Traceback" not in r.stderr.text()


def test_messages_arriving_during_shutdown_are_not_held(router) -> None:
    """A sender that used credit granted before SIGTERM: what the router cannot place at
    once is released at once, not held until the shutdown bound expires."""
    from system_support import RawPeer
    from switchboard.amqp.connection import Connection
    from switchboard.amqp.spec import Source, Target

    r = router("[limits]\nshutdown_timeout = 5.0\n")
    r.expect_exit = True
    peer = RawPeer(r.port, Connection("late-sender", idle_timeout=None))

    async def scenario():
        async with await Client.connect(r.url, idle_timeout=None) as consumer_client, \
                await Client.connect(r.url, idle_timeout=None) as client:
            receiver = await consumer_client.receiver("work/late", credit=1)
            sender = await client.sender("work/late")
            first = await sender.send(Message("in flight"), wait=False)
            await wait_until(lambda: len(receiver.link.unsettled) == 1, 10, "the consumer to hold one delivery")

            engine = peer.engine
            engine.open()
            relay = engine.begin_session().sender("relay", source=Source(address="late"), target=Target(address=None))
            assert await asyncio.to_thread(peer.pump, lambda: relay.credit > 0, 5)

            r.signal(signal.SIGTERM)
            assert await asyncio.to_thread(r.wait_log, "shutting down", 10)
            # The router has withheld credit by now, but this peer has not read that yet.
            late = [relay.send(Message(f"late {i}", properties=Properties(to="work/late")).encode()) for i in range(3)]
            sent = time.monotonic()
            settled = await asyncio.to_thread(peer.pump, lambda: all(d.remote_settled for d in late), 4.0)
            elapsed = time.monotonic() - sent
            item = await receiver.receive(timeout=5)
            item.accept()
            return settled, elapsed, [type(d.remote_state).__name__ for d in late], await first

    try:
        settled, elapsed, states, first = run_async(scenario, timeout=40)
    finally:
        peer.close()
    assert settled, f"late messages still unsettled after {elapsed:.1f} s: {states}"
    assert states == ["Released"] * 3
    assert isinstance(first, Accepted)
    assert r.proc.wait(15) == 0
