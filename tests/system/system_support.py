"""System tests: a real ``switchboard router`` process and real clients.

Fixtures and helpers:

* ``router`` — a factory: ``router(config_toml=None)`` starts ``switchboard router`` on
  127.0.0.1 port 0 (the config, if any, is written to ``tmp_path``), waits (bounded) for
  its ``listening on amqp://HOST:PORT`` line and returns a ``RouterProcess`` with the
  port.  At teardown each router gets SIGTERM and is killed if it has not exited within
  a bound; a router that died during the test, or logged a traceback, fails the test.
* ``run_async(factory, timeout)`` — run a coroutine of our asyncio client on a fresh
  loop, bounded.
* ``run_proton(handler, timeout)`` — run a Qpid Proton ``Container`` in a thread,
  bounded: on the deadline the container is stopped from its own reactor and the call
  raises ``TimeoutError``; an exception inside a handler is re-raised here.
* ``RawPeer`` — our sans-IO engine over a blocking socket, for clients that misbehave on
  purpose (silence, violations): it is pumped only when the test says so.
* ``spawn_script(tmp_path, source, *args)`` — a Python client in its own process (for
  SIGKILL and SIGSTOP), with a bounded wait for a line on its stdout.

Every wait here has a deadline; nothing sleeps in the hope that something happened.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from proton import Endpoint, Handler
from proton.handlers import MessagingHandler
from proton.reactor import Container

from switchboard.amqp.connection import Connection
from switchboard.amqp.events import Event
from switchboard.io.loop import new_event_loop
from switchboard.router.config import ConfigError, parse_config

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
"""Seconds for a router to print its listening line (a cold interpreter on a busy CI box)."""
STOP_TIMEOUT = 20.0
"""Seconds for a router to exit after SIGTERM before it is killed (shutdown_timeout is 10 s
by default; tests that care set it lower)."""

_LISTENING = re.compile(r"listening on (amqps?)://([^:\s]+|\[[^\]]+\]):(\d+) \((\S+)\)")


def switchboard_command() -> list[str]:
    """The ``switchboard`` entry point of the interpreter running the tests."""
    script = Path(sys.executable).with_name("switchboard")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from switchboard.cli.main import main; main()"]


class _LineReader:
    """Reads a stream line by line in a daemon thread; lines are kept and can be awaited."""

    def __init__(self, stream: Any, name: str) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._run, args=(stream,), name=name, daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        try:
            for raw in iter(stream.readline, ""):
                with self._cond:
                    self.lines.append(raw.rstrip("\n"))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float, start: int = 0) -> re.Match[str] | None:
        """The first match of ``pattern`` in a line (from line ``start``), or None at the deadline/EOF."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    index += 1
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


class RouterProcess:
    """A running ``switchboard router``: its process, port, and output."""

    def __init__(self, proc: subprocess.Popen[str], config_path: Path | None) -> None:
        self.proc = proc
        self.config_path = config_path
        self.stdout = _LineReader(proc.stdout, "router-stdout")
        self.stderr = _LineReader(proc.stderr, "router-stderr")
        self.port = 0
        self.expect_exit = False
        """Set by a test that stops the router itself (teardown then only reaps it)."""
        self.allow_tracebacks = False

    @property
    def url(self) -> str:
        return f"amqp://{HOST}:{self.port}"

    def address_url(self, address: str) -> str:
        return f"{self.url}/{address}"

    def wait_listening(self, timeout: float = START_TIMEOUT) -> int:
        match = self.stdout.wait_for(_LISTENING, timeout)
        if match is None:
            self.kill()
            raise AssertionError(
                f"router did not print its listening line within {timeout} s"
                f" (exit code {self.proc.poll()}):\n{self.output()}"
            )
        self.port = int(match.group(3))
        return self.port

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait up to ``timeout``; return the exit code (kill on the deadline)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"router did not exit within {timeout} s of SIGTERM:\n{self.output()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def wait_log(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """Wait (bounded) for a line matching ``pattern`` in the router's log (stderr)."""
        return self.stderr.wait_for(pattern, timeout)

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout.text()}\n--- stderr ---\n{self.stderr.text()}"


def start_router_process(
    tmp_path: Path,
    config_toml: str | None = None,
    *,
    listen: bool = True,
    args: tuple[str, ...] = (),
    name: str = "router",
) -> RouterProcess:
    """Start ``switchboard router`` (without waiting for it)."""
    command = [*switchboard_command(), "router"]
    config_path = None
    if config_toml is not None:
        config_path = tmp_path / f"{name}.toml"
        config_path.write_text(config_toml, encoding="utf-8")
        command += ["--config", str(config_path)]
    if listen:
        command += ["--listen", f"{HOST}:0"]
    if "--admin" not in args and (config_toml is None or "[admin]" not in config_toml):
        # The admin listener on a port the kernel picks, not the default one: routers of
        # tests running side by side (pytest-xdist) would otherwise take turns holding
        # 8672, and the test of that port itself would find it taken.
        command += ["--admin", f"{HOST}:0"]
    if _uses_embedded_queues_only(config_toml, tmp_path) and "--data-dir" not in args:
        # The embedded defaults host queues (notify/), so each router opens a store: give
        # each its own, as several routers started from one directory must have.
        command += ["--data-dir", str(tmp_path / f"{name}-data")]
    command += list(args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    return RouterProcess(proc, config_path)


def _uses_embedded_queues_only(config_toml: str | None, tmp_path: Path) -> bool:
    """The configuration names no data directory or store and hosts no queue of its own
    here: only the embedded defaults' queues (notify/), whose store no test looks at."""
    if config_toml is None:
        return True
    try:
        data = tomllib.loads(config_toml)
        config = parse_config(data, tmp_path)
    except (tomllib.TOMLDecodeError, ConfigError):
        return False  # the router says what is wrong with it
    if "data_dir" in data.get("router", {}) or "store" in data:
        return False
    configured = {entry.get("prefix") for entry in data.get("addresses", []) if isinstance(entry, dict)}
    return not any(
        a.queue is not None and a.queue.host in (None, config.router_id) and a.prefix in configured
        for a in config.addresses
    )


@pytest.fixture
def router(tmp_path: Path) -> Any:
    """Factory: ``router(config_toml=None, listen=True)`` -> a listening ``RouterProcess``."""
    started: list[RouterProcess] = []

    def start(config_toml: str | None = None, *, listen: bool = True, args: tuple[str, ...] = ()) -> RouterProcess:
        process = start_router_process(tmp_path, config_toml, listen=listen, args=args, name=f"router{len(started)}")
        started.append(process)
        process.wait_listening()
        return process

    yield start

    problems = []
    for process in started:
        died = process.proc.poll()
        if died is not None and not process.expect_exit:
            problems.append(f"router exited with code {died} during the test:\n{process.output()}")
            continue
        try:
            code = process.terminate()
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        process.stdout.join(5)
        process.stderr.join(5)
        if code != 0 and not process.expect_exit:
            problems.append(f"router exited with code {code} after SIGTERM:\n{process.output()}")
        if not process.allow_tracebacks and "Traceback" in process.stderr.text():
            problems.append(f"router logged a traceback:\n{process.output()}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


# ======================================================================================
# Our asyncio client
# ======================================================================================
def run_async(factory: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Run ``factory()`` on a new event loop (uvloop if installed), bounded by ``timeout``."""

    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await factory()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(bounded())


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    """Poll ``predicate`` on the running loop until it holds; fail with ``what`` at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


# ======================================================================================
# Qpid Proton
# ======================================================================================
class ProtonTimeout(TimeoutError):
    pass


class ProtonClient(MessagingHandler):
    """Connections without reconnect; ``finish()`` closes them and lets the container end."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connections: list[Any] = []
        self.errors: list[str] = []
        self.finished = False
        self._deadline_task: Any = None

    def connect(self, container: Any, url: str, **kwargs: Any) -> Any:
        kwargs.setdefault("reconnect", False)
        connection = container.connect(url, **kwargs)
        self.connections.append(connection)
        return connection

    def finish(self) -> None:
        self.finished = True
        if self._deadline_task is not None:
            self._deadline_task.cancel()
        for connection in self.connections:
            if connection.state & Endpoint.LOCAL_ACTIVE:
                connection.close()

    def on_transport_error(self, event: Any) -> None:
        condition = event.transport.condition
        self.errors.append(f"transport: {condition.name if condition else None}")
        if not self.finished:
            self.finish()

    def on_connection_error(self, event: Any) -> None:
        condition = event.connection.remote_condition
        self.errors.append(f"connection: {condition.name if condition else None}")
        self.finish()

    def on_link_error(self, event: Any) -> None:
        condition = event.link.remote_condition
        self.errors.append(f"link: {condition.name if condition else None}")
        event.link.close()

    def describe(self) -> str:
        return repr({k: v for k, v in vars(self).items() if not k.startswith("_") and k != "handlers"})


def run_proton(handler: Any, timeout: float = 30.0, *, container_id: str | None = None) -> Any:
    """Run ``Container(handler)`` to completion in a thread, bounded; return the handler.

    The handler (a ``ProtonClient``) calls ``finish()`` when it is done, which cancels the
    deadline and closes its connections, so the container runs out of work.  At the
    deadline a task scheduled on the container stops it and ``ProtonTimeout`` is raised;
    an exception raised by the handler is re-raised in the caller.
    """
    thread = ProtonThread(handler, timeout, container_id=container_id)
    thread.start()
    return thread.join_result()


class ProtonThread:
    """A Proton ``Container`` running in a thread (start it, do other work, join it)."""

    def __init__(self, handler: Any, timeout: float = 30.0, *, container_id: str | None = None) -> None:
        self.handler = handler
        self.timeout = timeout
        self.timed_out = False
        self.error: BaseException | None = None
        self.container = Container(handler) if container_id is None else Container(handler, container_id=container_id)
        self._thread = threading.Thread(target=self._run, name="proton", daemon=True)

    def _run(self) -> None:
        outer = self

        class Deadline(Handler):
            def on_timer_task(self, event: Any) -> None:
                outer.timed_out = True
                event.container.stop()

        try:
            task = self.container.schedule(self.timeout, Deadline())
            if hasattr(self.handler, "_deadline_task"):
                self.handler._deadline_task = task
            self.container.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self.error = exc

    def start(self) -> "ProtonThread":
        self._thread.start()
        return self

    def join_result(self) -> Any:
        self._thread.join(self.timeout + 10)
        if self._thread.is_alive():
            raise ProtonTimeout(f"proton container still running {self.timeout + 10} s after start")
        if self.error is not None:
            raise self.error
        if self.timed_out:
            state = getattr(self.handler, "describe", lambda: repr(vars(self.handler)))()
            raise ProtonTimeout(f"proton client did not finish within {self.timeout} s: {state}")
        return self.handler


# ======================================================================================
# A raw engine on a blocking socket, for misbehaving clients
# ======================================================================================
class RawPeer:
    """Our engine over a plain socket, pumped only when the test calls ``pump``.

    Between pumps it is silent: no heartbeats, no reads — a peer that has gone quiet.
    """

    def __init__(self, port: int, engine: Connection, timeout: float = 10.0) -> None:
        self.engine = engine
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setblocking(False)
        self.events: list[Event] = []
        self.eof = False

    def pump(self, until: Callable[[], bool] = lambda: False, timeout: float = 5.0) -> bool:
        """Exchange bytes until ``until()`` holds (True), EOF, or the deadline (False)."""
        deadline = time.monotonic() + timeout
        while True:
            self._write()
            if until():
                return True
            if self.eof:
                return until()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self.sock], [], [], min(remaining, 0.05))
            if readable:
                self._read()
            self.engine.tick(time.monotonic())
            self.events += self.engine.take_events()

    def _write(self) -> None:
        if self.eof:
            return
        for chunk in self.engine.data_to_send():
            try:
                self.sock.setblocking(True)
                self.sock.sendall(chunk)
            except OSError:
                self.eof = True
                return
            finally:
                self.sock.setblocking(False)

    def _read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            self.engine.connection_lost()
        else:
            self.engine.receive_data(data)
        self.events += self.engine.take_events()

    def send_raw(self, data: bytes) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def of_type(self, kind: type) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def wait_socket_closed(sock: socket.socket, timeout: float) -> bytes | None:
    """Read until the peer closes ``sock``; return all bytes read, or None at the deadline."""
    sock.setblocking(False)
    received = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            continue
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            return bytes(received)
        if not data:
            return bytes(received)
        received += data


# ======================================================================================
# Client processes (for SIGKILL and SIGSTOP)
# ======================================================================================
class ScriptProcess:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.stdout = _LineReader(proc.stdout, "script-stdout")
        self.stderr = _LineReader(proc.stderr, "script-stderr")

    def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        match = self.stdout.wait_for(pattern, timeout)
        if match is None:
            raise AssertionError(
                f"client process printed no line matching {pattern!r} within {timeout} s"
                f" (exit code {self.proc.poll()}):\n{self.stdout.text()}\n{self.stderr.text()}"
            )
        return match

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def spawn_script(tmp_path: Path) -> Any:
    """Factory: ``spawn_script(source, *args)`` runs ``source`` as a Python program."""
    spawned: list[ScriptProcess] = []

    def spawn(source: str, *args: str) -> ScriptProcess:
        path = tmp_path / f"client{len(spawned)}.py"
        path.write_text(source, encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, str(path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        process = ScriptProcess(proc)
        spawned.append(process)
        return process

    yield spawn

    for process in spawned:
        if process.proc.poll() is None:
            try:
                process.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
        process.kill()
