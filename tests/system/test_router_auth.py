"""Authentication against a real router: SASL ANONYMOUS and PLAIN, throttling, the pool.

Clients are ours (``switchboard.client``), Qpid Proton's, and raw sockets speaking SASL
byte by byte where a test needs many logins in flight at once or a source address other
than 127.0.0.1 (the whole of 127/8 is loopback on Linux).

    50 bad logins ──► router ──► verification threads (scrypt, off the event loop)
    anonymous client ─ request ─► router ─► the same client: completes meanwhile
"""

from __future__ import annotations

import asyncio
import re
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from system_support import HOST, ProtonClient, run_async, run_proton
from switchboard.amqp.codec import decode_value
from switchboard.amqp.framing import SASL_HEADER, FrameReader
from switchboard.amqp.message import Message
from switchboard.amqp.spec import Accepted, SaslCode, SaslInit, SaslMechanisms, SaslOutcome
from switchboard.amqp.types import Symbol
from switchboard.client.connection import Client, ClientError
from switchboard.router.credentials import Credentials

PASSWORDS = {"alice": "s3cret", "bob": "hunter2"}


def write_credentials(directory: Path, n: int = 2**14, r: int = 8, p: int = 1) -> None:
    credentials = Credentials()
    for name, password in PASSWORDS.items():
        credentials.set_password(name, password, n=n, r=r, p=p)
    credentials.save(directory / "users.creds")


def auth_config(mechanisms: str = '"PLAIN", "ANONYMOUS"', **authentication: Any) -> str:
    extra = "".join(f"{key} = {value!r}\n" for key, value in authentication.items())
    return (
        f'[[listeners]]\nhost = "{HOST}"\nport = 0\nsasl_mechanisms = [{mechanisms}]\n'
        f'[authentication]\ncredentials_file = "users.creds"\n{extra}'
    )


async def attempt(port: int, userinfo: str = "", timeout: float = 20) -> str | ClientError:
    """Connect and attach a receiver: "ok", or the ClientError the client was given."""
    try:
        async with await Client.connect(f"amqp://{userinfo}{HOST}:{port}", timeout=timeout) as client:
            await client.receiver("auth/check")
            return "ok"
    except ClientError as exc:
        return exc


def assert_refused(result: Any, code: int) -> None:
    assert isinstance(result, ClientError), result
    assert result.condition == "amqp:unauthorized-access"
    assert f"SASL authentication refused (code {code}:" in str(result.error.description)


# ======================================================================================
# Raw SASL logins: many at once, from chosen source addresses
# ======================================================================================
class RawLogin:
    """A socket that sends a PLAIN sasl-init at once and reads the server's outcome."""

    def __init__(self, port: int, user: str, password: str, source: str = HOST) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10, source_address=(source, 0))
        self.sock.setblocking(False)
        self._reader = FrameReader(65536)
        self._header_seen = False
        self.offered: list[str] | None = None
        """The server's mechanisms: sent as it reads our header (and the init behind it)."""
        self.code: int | None = None
        body = bytearray()
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        SaslInit(mechanism=Symbol("PLAIN"), initial_response=response).encode_into(body)
        # The router reads a sasl-init pipelined behind the header.
        self.sock.sendall(SASL_HEADER + struct.pack(">IBBH", 8 + len(body), 2, 1, 0) + bytes(body))

    def poll(self, timeout: float = 0.0, until_offered: bool = False) -> int | None:
        """Read what has arrived (waiting up to ``timeout``, or only until the mechanisms
        arrived); the outcome's code once known."""
        deadline = time.monotonic() + timeout
        while self.code is None and not (until_offered and self.offered is not None):
            remaining = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if not readable:
                break
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, ConnectionResetError):
                data = b""
            if not data:
                break
            self._reader.feed(data)
            if not self._header_seen:
                if self._reader.read_header() is None:
                    continue
                self._header_seen = True
            while (frame := self._reader.next_frame()) is not None:
                performative, _ = decode_value(frame[2], 0)
                if isinstance(performative, SaslMechanisms):
                    self.offered = [str(m) for m in performative.sasl_server_mechanisms]
                elif isinstance(performative, SaslOutcome):
                    self.code = int(performative.code)
            if time.monotonic() >= deadline:
                break
        return self.code

    def close(self) -> None:
        self.sock.close()


# ======================================================================================
# SASL mechanisms, accepted and refused
# ======================================================================================
def test_plain_and_anonymous_with_our_client(router, tmp_path) -> None:
    write_credentials(tmp_path)
    r = router(auth_config(), listen=False)

    async def scenario():
        return [await attempt(r.port, info) for info in ("alice:s3cret@", "bob:hunter2@", "", "alice:wrong@", "mallory:s3cret@")]

    alice, bob, anonymous, wrong_password, unknown_user = run_async(scenario, timeout=90)
    assert (alice, bob, anonymous) == ("ok", "ok", "ok")
    assert_refused(wrong_password, SaslCode.AUTH)
    assert_refused(unknown_user, SaslCode.AUTH)


def test_mechanisms_not_offered_are_refused(router, tmp_path) -> None:
    write_credentials(tmp_path)
    plain_only = router(auth_config('"PLAIN"'), listen=False)
    anonymous_only = router(auth_config('"ANONYMOUS"'), listen=False)

    async def scenario():
        return (await attempt(plain_only.port, ""), await attempt(anonymous_only.port, "alice:s3cret@"),
                await attempt(plain_only.port, "alice:s3cret@"))

    anonymous_to_plain, plain_to_anonymous, good = run_async(scenario, timeout=60)
    # Our client sees the offer and refuses to go on with a mechanism the server lacks.
    for refused, offered in ((anonymous_to_plain, "PLAIN"), (plain_to_anonymous, "ANONYMOUS")):
        assert isinstance(refused, ClientError) and refused.condition == "amqp:unauthorized-access"
        assert f"no acceptable SASL mechanism among: {offered}" in str(refused.error.description)
    assert good == "ok"
    # A client that insists on PLAIN where it is not offered gets the auth code.
    login = RawLogin(anonymous_only.port, "alice", "s3cret")
    try:
        assert login.poll(timeout=20) == SaslCode.AUTH
    finally:
        login.close()


class ProtonLogin(ProtonClient):
    """Opens one connection with the given SASL settings; records how it went."""

    def __init__(self, url: str, **connect_kwargs: Any) -> None:
        super().__init__()
        self.url = url
        self.connect_kwargs = connect_kwargs
        self.result: str | None = None
        self.description: str | None = None

    def on_start(self, event):
        self.connect(event.container, self.url, **self.connect_kwargs)

    def on_connection_opened(self, event):
        self.result = "opened"
        self.finish()

    def on_transport_error(self, event):
        condition = event.transport.condition
        self.result = condition.name if condition else "transport error"
        self.description = condition.description if condition else None
        super().on_transport_error(event)


@pytest.mark.parametrize(
    ("mechanisms", "kwargs", "expected"),
    [
        pytest.param('"PLAIN"', {"user": "alice", "password": "s3cret"}, "opened", id="plain-accepted"),
        pytest.param('"PLAIN"', {"user": "alice", "password": "wrong"}, "amqp:unauthorized-access", id="plain-wrong-password"),
        pytest.param('"PLAIN"', {"user": "mallory", "password": "s3cret"}, "amqp:unauthorized-access", id="plain-unknown-user"),
        pytest.param('"ANONYMOUS"', {}, "opened", id="anonymous-accepted"),
        pytest.param('"PLAIN"', {"allowed_mechs": "ANONYMOUS"}, "amqp:unauthorized-access", id="anonymous-not-offered"),
    ],
)
def test_proton_clients(router, tmp_path, mechanisms: str, kwargs: dict, expected: str) -> None:
    write_credentials(tmp_path)
    r = router(auth_config(mechanisms), listen=False)
    if "user" in kwargs:
        kwargs = {**kwargs, "allowed_mechs": "PLAIN", "allow_insecure_mechs": True}
    login = run_proton(ProtonLogin(r.url, **kwargs), timeout=30)
    assert login.result == expected, login.describe()


# ======================================================================================
# Throttling
# ======================================================================================
def test_failed_logins_block_the_host_then_the_block_ends(router, tmp_path) -> None:
    write_credentials(tmp_path)
    r = router(auth_config(max_failed_logins=3, failure_window=60.0, block_period=2.0), listen=False)

    async def scenario():
        failures = [await attempt(r.port, "alice:wrong@") for _ in range(3)]
        blocked = await attempt(r.port, "alice:s3cret@")  # the right password, refused too
        also_blocked = await attempt(r.port, "bob:nope@")
        # Another host (127.0.0.2 is loopback too) is not affected.
        other_host = RawLogin(r.port, "alice", "s3cret", source="127.0.0.2")
        try:
            elsewhere = other_host.poll(timeout=20)
        finally:
            other_host.close()
        # The block lasts block_period: the right password works again after it (polled,
        # bounded: 200 attempts 0.1 s apart).
        result: Any = None
        for _ in range(200):
            result = await attempt(r.port, "alice:s3cret@")
            if result == "ok":
                break
            await asyncio.sleep(0.1)
        return failures, blocked, also_blocked, elsewhere, result

    failures, blocked, also_blocked, elsewhere, after = run_async(scenario, timeout=90)
    for refused in (*failures, blocked, also_blocked):
        assert_refused(refused, SaslCode.AUTH)
    assert elsewhere == SaslCode.OK
    assert after == "ok"
    assert r.wait_log(r"3 failed logins from 127\.0\.0\.1 within 60 s: refusing its logins for 2 s", 10)
    lines = re.findall(r"failed logins from 127\.0\.0\.1", r.stderr.text())
    assert len(lines) == 1, r.stderr.text()  # logged once for the block, not per attempt
    # Each wrong password is a line naming its connection; attempts while blocked are not.
    failed = re.findall(r"WARNING switchboard\.router\.auth: login failed: connection (c\d+) from 127\.0\.0\.1:\d+,"
                        r" user 'alice': wrong user name or password", r.stderr.text())
    assert len(set(failed)) == 3, r.stderr.text()
    assert "user 'bob'" not in r.stderr.text()


# ======================================================================================
# Verification off the event loop, bounded
# ======================================================================================
# p=8 makes each check take a noticeable share of a second (memory stays at 16 MiB).
SLOW = {"n": 2**14, "r": 8, "p": 8}


def test_beyond_max_pending_logins_a_login_fails_at_once_with_sys_temp(router, tmp_path) -> None:
    write_credentials(tmp_path, **SLOW)
    r = router(auth_config(verify_threads=1, max_pending_logins=2, max_failed_logins=1000), listen=False)
    logins = [RawLogin(r.port, "alice", f"wrong-{i}") for i in range(10)]
    try:
        codes = [login.poll(timeout=60) for login in logins]
    finally:
        for login in logins:
            login.close()
    assert None not in codes, codes
    assert set(codes) == {SaslCode.AUTH, SaslCode.SYS_TEMP}, codes
    assert codes.count(SaslCode.AUTH) >= 2  # those that got a place were verified
    assert r.wait_log(r"max_pending_logins", 10)


def test_a_login_burst_does_not_stall_other_traffic(router, tmp_path) -> None:
    """While 50 bad logins wait for their (slow) verification, an anonymous client's
    message goes to its consumer and the outcome comes back: the event loop is free.

    Each login's header and sasl-init go out together, and the router answers the header
    with its mechanisms as it reads them: once every login has its mechanisms, the router
    has taken every sasl-init.  Were the hashing done on the event loop, all 50 would be
    answered before the exchange could start."""
    write_credentials(tmp_path, **SLOW)
    r = router(auth_config(verify_threads=1, max_pending_logins=64, max_failed_logins=1000), listen=False)

    async def scenario():
        async with await Client.connect(r.url, timeout=20) as client:
            receiver = await client.receiver("burst/echo", credit=1)
            sender = await client.sender("burst/echo")
            logins = [RawLogin(r.port, "bob", f"guess-{i}") for i in range(50)]
            try:
                deadline = time.monotonic() + 60
                for login in logins:
                    login.poll(timeout=max(0.0, deadline - time.monotonic()), until_offered=True)
                assert all(login.offered == ["PLAIN", "ANONYMOUS"] for login in logins)
                outcome = await sender.send(Message("while the logins wait"), wait=False)
                item = await receiver.receive(timeout=20)
                item.accept()
                state = await outcome
                answered = sum(login.poll() is not None for login in logins)
            finally:
                for login in logins:
                    login.close()
            return item.message().body, state, answered

    body, state, answered = run_async(scenario, timeout=60)
    assert body == "while the logins wait"
    assert isinstance(state, Accepted)
    assert answered < 50  # the exchange completed while logins were still being verified
