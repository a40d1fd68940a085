"""Shared tools of the interop and io tests: event loops, peer processes, certificates, frames.

Every wait here is bounded: a peer that does not answer fails the test, it never hangs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from switchboard.amqp.codec import decode_value
from switchboard.amqp.framing import AMQP_HEADER, SASL_HEADER
from switchboard.io.loop import new_event_loop

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SWITCHBOARD = str(Path(PYTHON).with_name("switchboard"))
_FRAME_HEADER = struct.Struct(">IB")
PROTON_PEERS = str(HERE / "proton_peers.py")
AMQP_BROKER = str(HERE / "amqp_broker.py")


LOOP_FACTORIES = {"uvloop": new_event_loop, "asyncio": asyncio.new_event_loop}
"""``io.loop.new_event_loop`` is uvloop where installed, as in production."""


def arun(main: Callable[[], Awaitable[Any]], timeout: float = 60.0, loop: str = "uvloop") -> Any:
    """Run ``main()`` on a fresh event loop (uvloop unless ``loop="asyncio"``), within ``timeout``."""

    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await main()

    with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop]) as runner:
        return runner.run(bounded())


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------
@dataclass
class Server:
    """A server in a subprocess that printed ``LISTENING <port>``."""

    process: subprocess.Popen
    port: int
    log: Any = None
    """The file its stderr goes to (a pipe could fill up and stall a busy server)."""

    def stderr(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read()

    def url(self, address: str = "", scheme: str = "amqp", userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}127.0.0.1:{self.port}" + (f"/{address}" if address else "")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=5)
        if self.log is not None:
            self.log.close()


def start_server(args: list[str], timeout: float = 15.0, env: dict[str, str] | None = None) -> Server:
    """Start ``python args...``; wait (bounded) for its ``LISTENING <port>`` line."""
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [PYTHON, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not line or not line[0].startswith("LISTENING "):
        process.kill()
        process.wait(timeout=5)
        server = Server(process, 0, log)
        raise AssertionError(f"{args[0]} did not start: {line!r}\n{server.stderr()}")
    return Server(process, int(line[0].split()[1]), log)


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        """The last line of stdout, parsed (the proton peers' report)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no output; stderr:\n{self.stderr}"
        return json.loads(lines[-1])


def run_process(args: list[str], timeout: float = 60.0, env: dict[str, str] | None = None) -> Finished:
    """Run a program to completion within ``timeout`` (killed past it) and capture its output."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{args} did not finish in {timeout} s:\n{exc.stdout}\n{exc.stderr}") from None
    return Finished(done.returncode, done.stdout, done.stderr)


async def run_process_async(args: list[str], timeout: float = 60.0, env: dict[str, str] | None = None) -> Finished:
    """``run_process`` for code running in an event loop (a server in the same loop)."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        raise AssertionError(f"{args} did not finish in {timeout} s:\n{out.decode()}\n{err.decode()}") from None
    return Finished(process.returncode or 0, out.decode(), err.decode())


def proton(command: str, *args: Any) -> list[str]:
    """The argument list that runs one of ``proton_peers.py``'s commands."""
    return [PYTHON, PROTON_PEERS, command, *map(str, args)]


def switchboard(command: str, *args: Any) -> list[str]:
    """The argument list that runs the installed ``switchboard`` command."""
    return [SWITCHBOARD, command, *map(str, args)]


# --------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------
def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for localhost and 127.0.0.1: (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def env_trusting(cert: Path) -> dict[str, str]:
    """The environment for a subprocess whose default TLS trust store is ``cert``."""
    return {**os.environ, "SSL_CERT_FILE": str(cert)}


# --------------------------------------------------------------------------------------
# Reading what a server wrote
# --------------------------------------------------------------------------------------
def performatives(data: bytes) -> list[Any]:
    """Decode a server's output: protocol headers (as bytes) and performatives, in order.

    Stops quietly at the first incomplete or undecodable frame (a test looks for what is
    there, it does not judge the server's framing here).
    """
    found: list[Any] = []
    offset = 0
    while offset + 8 <= len(data):
        if data[offset : offset + 4] == b"AMQP":
            found.append(data[offset : offset + 8])
            offset += 8
            continue
        size, doff = _FRAME_HEADER.unpack_from(data, offset)
        if size < 8 or doff < 2 or offset + size > len(data):
            break
        body = data[offset + doff * 4 : offset + size]
        offset += size
        if body:
            try:
                found.append(decode_value(body, 0)[0])
            except Exception:
                break
    return found


def header_exchange_succeeded(data: bytes) -> bool:
    """Did the server accept a protocol header and send its open (AMQP frames began)?"""
    return AMQP_HEADER in data and b"\x00\x53\x10" in data


__all__ = [
    "AMQP_BROKER",
    "PROTON_PEERS",
    "AMQP_HEADER",
    "SASL_HEADER",
    "arun",
    "LOOP_FACTORIES",
    "Server",
    "start_server",
    "run_process",
    "run_process_async",
    "proton",
    "switchboard",
    "make_certificate",
    "env_trusting",
    "performatives",
    "header_exchange_succeeded",
]
