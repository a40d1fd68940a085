"""Compiled (non-Python) AMQP 1.0 peers for benchmarks.

Benchmarks of the router need clients that are not themselves the bottleneck, and a
reference server to compare against. This module builds and runs both:

* the Qpid Proton C examples shipped by Debian (``broker``, ``send``, ``receive``,
  ``direct``), the broker being the reference server;
* our own Proton C peers in ``bench/peers/`` (``sb_send``, ``sb_recv``, ``sb_rpc``,
  ``sb_echo``), which add what the examples lack for throughput work: a body size, a
  window of unsettled deliveries, presettled sending, outcome counts, latency
  percentiles and a one-line JSON result. See ``bench/peers/README.md``.

Binaries are compiled with gcc into ``bench/.build/`` on first use and rebuilt when a
source is newer than the binary. Everything here talks to 127.0.0.1 only, and every wait
is bounded.

Run ``python3 bench/_peers.py`` for the reference measurement against the C broker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
PEERS_SRC_DIR = BENCH_DIR / "peers"
DEFAULT_BUILD_DIR = BENCH_DIR / ".build"
PROTON_EXAMPLES_DIR = Path("/usr/share/proton/examples/c")
PROTON_INCLUDE_DIR = Path("/usr/include/proton")
LOCALHOST = "127.0.0.1"

# Stock examples worth having: the broker is the reference server; send/receive are the
# simplest possible clients; direct is a receiver that listens, for broker-less runs.
PROTON_EXAMPLES = ("broker", "send", "receive", "direct")
SB_PEERS = ("sb_send", "sb_recv", "sb_rpc", "sb_echo")

_EXAMPLES_PACKAGE = "libqpid-proton11-dev-examples"
_HEADERS_PACKAGE = "libqpid-proton11-dev"


class PeerBuildError(RuntimeError):
    """A peer could not be compiled; the message says which Debian package is missing."""


class PeerError(RuntimeError):
    """A peer process failed to start or to become ready in time."""


# --------------------------------------------------------------------------- building


def _proton_flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags for Proton's core + proactor libraries.

    Debian ships only ``libqpid-proton.pc`` (the combined library); upstream also has the
    split core/proactor ``.pc`` files, so try those first and fall back.
    """
    if not (PROTON_INCLUDE_DIR / "proactor.h").is_file():
        raise PeerBuildError(
            f"Proton C headers not found ({PROTON_INCLUDE_DIR}/proactor.h): "
            f"apt-get install {_HEADERS_PACKAGE}"
        )
    if shutil.which("pkg-config"):
        for modules in (
            ["libqpid-proton-core", "libqpid-proton-proactor"],
            ["libqpid-proton"],
        ):
            cflags = subprocess.run(
                ["pkg-config", "--cflags", *modules],
                capture_output=True,
                text=True,
                check=False,
            )
            libs = subprocess.run(
                ["pkg-config", "--libs", *modules],
                capture_output=True,
                text=True,
                check=False,
            )
            if cflags.returncode == 0 and libs.returncode == 0:
                return cflags.stdout.split(), libs.stdout.split()
    return [], ["-lqpid-proton"]


def _compile(
    sources: Sequence[Path], deps: Sequence[Path], out: Path, extra: Sequence[str] = ()
) -> Path:
    """Compile ``sources`` into ``out`` unless ``out`` is newer than every source and dep."""
    newest = max(p.stat().st_mtime for p in [*sources, *deps])
    if out.is_file() and out.stat().st_mtime >= newest:
        return out
    gcc = shutil.which("gcc")
    if gcc is None:
        raise PeerBuildError("gcc not found: apt-get install gcc")
    cflags, libs = _proton_flags()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build under a private name and rename, so concurrent benchmark runs never execute a
    # half-written binary.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [
        gcc,
        "-O2",
        "-g",
        "-Wall",
        *extra,
        *cflags,
        "-o",
        str(tmp),
        *map(str, sources),
        *libs,
        "-lpthread",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise PeerBuildError(
            f"compiling {out.name} failed:\n$ {' '.join(cmd)}\n{proc.stderr}"
        )
    os.replace(tmp, out)
    return out


def build_proton_examples(cache_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, Path]:
    """Compile the Qpid Proton C examples; return ``{name: binary}``.

    Sources come from the Debian package ``libqpid-proton11-dev-examples``; binaries go
    to ``cache_dir/proton/`` and are rebuilt only when a source is newer.
    """
    if not (PROTON_EXAMPLES_DIR / "broker.c").is_file():
        raise PeerBuildError(
            f"Qpid Proton C example sources not found in {PROTON_EXAMPLES_DIR}: "
            f"apt-get install {_EXAMPLES_PACKAGE} {_HEADERS_PACKAGE}"
        )
    deps = [PROTON_EXAMPLES_DIR / "thread.h"]
    return {
        # -w: upstream example code, its warnings are not ours to fix.
        name: _compile(
            [PROTON_EXAMPLES_DIR / f"{name}.c"],
            deps,
            cache_dir / "proton" / name,
            ["-w"],
        )
        for name in PROTON_EXAMPLES
    }


def build_sb_peers(cache_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, Path]:
    """Compile our C peers from ``bench/peers/``; return ``{name: binary}``."""
    deps = [PEERS_SRC_DIR / "sb_common.h"]
    return {
        name: _compile(
            [PEERS_SRC_DIR / f"{name}.c"], deps, cache_dir / "peers" / name, ["-Wextra"]
        )
        for name in SB_PEERS
    }


def build_all(cache_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, Path]:
    """Both sets of binaries in one mapping (the names do not overlap)."""
    return {**build_proton_examples(cache_dir), **build_sb_peers(cache_dir)}


# --------------------------------------------------------------------------- processes


def amqp_url(port: int, address: str, host: str = LOCALHOST) -> str:
    return f"amqp://{host}:{port}/{address}"


@dataclass
class PeerResult:
    """How one peer process ended, with its own resource usage."""

    argv: list[str]
    returncode: int
    wall_seconds: float  # process start to exit, as seen from here
    cpu_user: float
    cpu_system: float
    max_rss_kib: int
    stdout: str
    stderr: str
    timed_out: bool = False
    # time.monotonic() at start and exit, to relate peers that ran side by side.
    started_at: float = 0.0
    ended_at: float = 0.0
    # The last JSON object the peer printed (our peers print exactly one), else None.
    result: dict[str, Any] | None = field(default=None)

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_user + self.cpu_system

    @property
    def ok(self) -> bool:
        if self.returncode != 0 or self.timed_out:
            return False
        return self.result is None or bool(self.result.get("ok", True))

    def describe_failure(self) -> str:
        return (
            f"{self.argv[0]} exited {self.returncode} (timed_out={self.timed_out})\n"
            f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
        )


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


class RunningPeer:
    """A started peer process.

    The child is reaped with ``os.wait4`` on a helper thread, which yields that child's
    own rusage; ``getrusage(RUSAGE_CHILDREN)`` deltas would mix up peers that run at the
    same time. Signals go through a pidfd, so they can never hit a recycled pid once the
    reaper has collected the child. Output goes to temporary files so a chatty peer
    cannot block on a full pipe.
    """

    def __init__(self, argv: Sequence[str | Path], *, cwd: Path | None = None) -> None:
        self.argv = [str(a) for a in argv]
        # Closed in _result(), which every path through wait()/stop() reaches.
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._started = time.monotonic()
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            cwd=cwd,
        )
        self._pidfd = os.pidfd_open(self.proc.pid)
        self._rusage: Any = None
        self._ended = 0.0
        self._reaper = threading.Thread(
            target=self._reap, name=f"reap-{self.proc.pid}", daemon=True
        )
        self._reaper.start()

    def _reap(self) -> None:
        _, status, rusage = os.wait4(self.proc.pid, 0)
        self._ended = time.monotonic()
        self._rusage = rusage
        # Popen must learn the child is gone, or it would waitpid() on a reused pid.
        # Popen.poll/terminate/kill are not used on this process for the same reason.
        self.proc.returncode = os.waitstatus_to_exitcode(status)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, sig)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self._reaper.is_alive()

    def wait(self, timeout: float) -> PeerResult:
        """Wait up to ``timeout`` seconds; past that, SIGTERM, then SIGKILL, and report it."""
        self._reaper.join(timeout)
        timed_out = self._reaper.is_alive()
        if timed_out:
            # SIGTERM first: our peers print their partial result on it.
            self._signal(signal.SIGTERM)
            self._reaper.join(3.0)
            if self._reaper.is_alive():
                self._signal(signal.SIGKILL)
                self._reaper.join(10.0)
        return self._result(timed_out)

    def stop(self, timeout: float = 5.0) -> PeerResult:
        """SIGTERM the peer (if still running) and collect its result."""
        if self._reaper.is_alive():
            self._signal(signal.SIGTERM)
        return self.wait(timeout)

    def _result(self, timed_out: bool) -> PeerResult:
        self._out.seek(0)
        self._err.seek(0)
        stdout = self._out.read().decode("utf-8", "replace")
        stderr = self._err.read().decode("utf-8", "replace")
        self._out.close()
        self._err.close()
        if not self._reaper.is_alive():
            os.close(self._pidfd)
        ru = self._rusage
        return PeerResult(
            argv=self.argv,
            returncode=self.proc.returncode if self.proc.returncode is not None else -1,
            wall_seconds=(self._ended or time.monotonic()) - self._started,
            cpu_user=ru.ru_utime if ru else 0.0,
            cpu_system=ru.ru_stime if ru else 0.0,
            max_rss_kib=ru.ru_maxrss if ru else 0,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            started_at=self._started,
            ended_at=self._ended,
            result=_last_json(stdout),
        )


def start_peer(argv: Sequence[str | Path], *, cwd: Path | None = None) -> RunningPeer:
    return RunningPeer(argv, cwd=cwd)


def run_peer(argv: Sequence[str | Path], timeout: float) -> PeerResult:
    """Run a peer to completion (bounded by ``timeout`` seconds)."""
    return RunningPeer(argv).wait(timeout)


def wait_for_port(port: int, timeout: float = 10.0, host: str = LOCALHOST) -> None:
    """Poll TCP connects until something listens on ``host:port``, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise PeerError(
                    f"nothing listening on {host}:{port} after {timeout:.1f}s"
                ) from None
            time.sleep(0.02)


def process_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds a running process (all its threads) has used so far.

    For long-running servers such as the broker, which are not reaped between
    measurements. Linux only (reads /proc).
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read().decode()
    # The command name (field 2) may contain spaces; fields after its ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` s; return the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def start_proton_broker(
    port: int = 0, *, build_dir: Path = DEFAULT_BUILD_DIR, timeout: float = 10.0
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the Proton C example broker on 127.0.0.1; return it once it accepts connections.

    ``port=0`` picks a free port. The broker runs in the examples directory so that it
    finds its test certificates (``ssl-certs/``) and also accepts amqps. Notable traits of
    this broker: 4 threads, only 5 credit per incoming link, an in-memory queue per
    address created on first use, and everything delivered to receivers presettled.
    """
    binary = build_proton_examples(build_dir)["broker"]
    if port == 0:
        port = _free_port()
    proc = subprocess.Popen(
        [str(binary), LOCALHOST, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=PROTON_EXAMPLES_DIR,
    )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise PeerError(
                f"proton broker exited with {proc.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.5):
                return proc, port
        except OSError:
            if time.monotonic() >= deadline:
                stop_process(proc)
                raise PeerError(
                    f"proton broker not listening on {port} after {timeout:.1f}s"
                ) from None
            time.sleep(0.02)


@contextlib.contextmanager
def proton_broker(
    port: int = 0, *, build_dir: Path = DEFAULT_BUILD_DIR
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``with proton_broker() as (proc, port):`` — started and always stopped."""
    proc, port = start_proton_broker(port, build_dir=build_dir)
    try:
        yield proc, port
    finally:
        stop_process(proc)


def _start_until_ready(argv: list[str], timeout: float) -> RunningPeer:
    """Start a peer with ``--ready-file`` and wait (bounded) for it to create the file.

    The peer creates it once its link is attached (or once listening), which is the
    only moment after which a sender can rely on it being there.
    """
    ready_dir = Path(tempfile.mkdtemp(prefix="sb_peer-"))
    ready = ready_dir / "ready"
    peer = start_peer([*argv, "--ready-file", str(ready)])
    deadline = time.monotonic() + timeout
    try:
        while not ready.exists():
            if not peer.running():
                failure = peer.wait(0).describe_failure()
                raise PeerError(f"{argv[0]} ended before it was ready:\n{failure}")
            if time.monotonic() >= deadline:
                peer.stop()
                raise PeerError(f"{argv[0]} not ready within {timeout:.1f}s")
            time.sleep(0.005)
    finally:
        ready.unlink(missing_ok=True)
        ready_dir.rmdir()
    return peer


# --------------------------------------------------------------------------- clients


def run_example_send(
    port: int,
    address: str,
    count: int,
    *,
    timeout: float = 120.0,
    build_dir: Path = DEFAULT_BUILD_DIR,
) -> PeerResult:
    """Run the stock C ``send`` example (no body-size option: its body is a small map).

    It sends whenever it has credit and waits for every acknowledgement before exiting.
    """
    binary = build_proton_examples(build_dir)["send"]
    return run_peer([binary, LOCALHOST, str(port), address, str(count)], timeout)


def start_example_receive(
    port: int, address: str, count: int, *, build_dir: Path = DEFAULT_BUILD_DIR
) -> RunningPeer:
    """Start the stock C ``receive`` example. It grants all ``count`` credit at once and
    prints every message body, so its own CPU includes that printing."""
    binary = build_proton_examples(build_dir)["receive"]
    return start_peer([binary, LOCALHOST, str(port), address, str(count)])


def sb_send_argv(
    port: int,
    address: str,
    count: int,
    size: int = 100,
    *,
    window: int = 1000,
    presettled: bool = False,
    timeout: float = 120.0,
    sasl: bool = True,
    build_dir: Path = DEFAULT_BUILD_DIR,
) -> list[str]:
    binary = build_sb_peers(build_dir)["sb_send"]
    argv = [str(binary), "-u", amqp_url(port, address), "-c", str(count)]
    argv += ["-s", str(size), "-w", str(window), "-t", str(timeout)]
    if presettled:
        argv.append("--presettled")
    if not sasl:
        argv.append("--no-sasl")
    return argv


def run_sb_send(
    port: int,
    address: str,
    count: int,
    size: int = 100,
    *,
    window: int = 1000,
    presettled: bool = False,
    timeout: float = 120.0,
    sasl: bool = True,
    build_dir: Path = DEFAULT_BUILD_DIR,
) -> PeerResult:
    """Send ``count`` messages of ``size`` bytes; ``result`` holds sb_send's JSON."""
    argv = sb_send_argv(
        port,
        address,
        count,
        size,
        window=window,
        presettled=presettled,
        timeout=timeout,
        sasl=sasl,
        build_dir=build_dir,
    )
    # The peer enforces ``timeout`` itself; the margin lets it print its partial result.
    return run_peer(argv, timeout + 5.0)


def start_sb_recv(
    port: int,
    address: str,
    count: int,
    *,
    credit: int = 1000,
    decode: bool = False,
    listen: bool = False,
    timeout: float = 120.0,
    sasl: bool = True,
    ready_timeout: float = 10.0,
    build_dir: Path = DEFAULT_BUILD_DIR,
) -> RunningPeer:
    """Start sb_recv and return once its link is attached (so nothing sent later is missed).

    ``count=0`` receives until ``timeout`` or ``RunningPeer.stop()``. ``listen=True``
    makes it the server on ``port`` instead (ready once listening), for broker-less runs.
    """
    binary = build_sb_peers(build_dir)["sb_recv"]
    argv = [str(binary), "-u", amqp_url(port, address), "-c", str(count)]
    argv += ["-C", str(credit), "-t", str(timeout)]
    if decode:
        argv.append("--decode")
    if listen:
        argv.append("--listen")
    if not sasl:
        argv.append("--no-sasl")
    return _start_until_ready(argv, ready_timeout)


def send_receive(
    port: int,
    address: str,
    count: int,
    size: int = 100,
    *,
    presettled: bool = False,
    window: int = 1000,
    credit: int = 1000,
    timeout: float = 120.0,
    sasl: bool = True,
    build_dir: Path = DEFAULT_BUILD_DIR,
) -> tuple[PeerResult, PeerResult]:
    """One sb_send and one sb_recv on ``address``, receiver attached first; (send, recv)."""
    receiver = start_sb_recv(
        port,
        address,
        count,
        credit=credit,
        timeout=timeout,
        sasl=sasl,
        build_dir=build_dir,
    )
    try:
        sent = run_sb_send(
            port,
            address,
            count,
            size,
            window=window,
            presettled=presettled,
            timeout=timeout,
            sasl=sasl,
            build_dir=build_dir,
        )
    finally:
        received = receiver.wait(timeout + 5.0)
    return sent, received


def send_receive_direct(
    count: int,
    size: int = 100,
    *,
    presettled: bool = False,
    window: int = 1000,
    credit: int = 1000,
    timeout: float = 120.0,
    build_dir: Path = DEFAULT_BUILD_DIR,
) -> tuple[PeerResult, PeerResult]:
    """sb_send straight into a listening sb_recv, no server between: the peers' ceiling."""
    port = _free_port()
    receiver = start_sb_recv(
        port,
        "direct",
        count,
        credit=credit,
        listen=True,
        timeout=timeout,
        build_dir=build_dir,
    )
    try:
        sent = run_sb_send(
            port,
            "direct",
            count,
            size,
            window=window,
            presettled=presettled,
            timeout=timeout,
            build_dir=build_dir,
        )
    finally:
        received = receiver.wait(timeout + 5.0)
    return sent, received


def start_sb_echo(
    port: int,
    address: str,
    *,
    count: int = 0,
    credit: int = 100,
    presettled: bool = False,
    anonymous: bool = False,
    timeout: float = 120.0,
    sasl: bool = True,
    ready_timeout: float = 10.0,
    build_dir: Path = DEFAULT_BUILD_DIR,
) -> RunningPeer:
    """Start the echo responder on ``address`` and return once it is attached."""
    binary = build_sb_peers(build_dir)["sb_echo"]
    argv = [str(binary), "-u", amqp_url(port, address), "-c", str(count)]
    argv += ["-C", str(credit), "-t", str(timeout)]
    if presettled:
        argv.append("--presettled")
    if anonymous:
        argv.append("--anonymous")
    if not sasl:
        argv.append("--no-sasl")
    return _start_until_ready(argv, ready_timeout)


def run_sb_rpc(
    port: int,
    address: str,
    count: int,
    *,
    concurrency: int = 1,
    size: int = 100,
    reply_to: str | None = None,
    timeout: float = 120.0,
    sasl: bool = True,
    build_dir: Path = DEFAULT_BUILD_DIR,
) -> PeerResult:
    """``count`` request/response calls with ``concurrency`` in flight.

    ``reply_to=None`` asks the server for a dynamic reply address; the Proton example
    broker cannot do that, so give it a fixed one there.
    """
    binary = build_sb_peers(build_dir)["sb_rpc"]
    argv = [str(binary), "-u", amqp_url(port, address), "-c", str(count)]
    argv += ["-k", str(concurrency), "-s", str(size), "-t", str(timeout)]
    if reply_to is not None:
        argv += ["--reply-to", reply_to]
    if not sasl:
        argv.append("--no-sasl")
    return run_peer(argv, timeout + 5.0)


# ------------------------------------------------------------------------ reference run


@dataclass
class Row:
    scenario: str
    size: int | None
    sender_rate: float
    receiver_rate: float
    sender_cpu: float
    receiver_cpu: float
    broker_cpu: float
    latency: str


def _check(*results: PeerResult) -> None:
    for r in results:
        if not r.ok:
            raise PeerError(r.describe_failure())


def _mode(presettled: bool) -> str:
    return "presettled" if presettled else "unsettled, window 1000"


def _latency(result: dict[str, Any] | None, key: str) -> str:
    lat = (result or {}).get(key)
    if not lat:
        return "-"
    return f"{lat['p50']:.0f} / {lat['p99']:.0f}"


def _measure_send_receive(
    count: int, size: int, presettled: bool, timeout: float
) -> Row:
    with proton_broker() as (broker, port):
        cpu0 = process_cpu_seconds(broker.pid)
        sent, received = send_receive(
            port, "bench", count, size, presettled=presettled, timeout=timeout
        )
        broker_cpu = process_cpu_seconds(broker.pid) - cpu0
    _check(sent, received)
    assert sent.result is not None and received.result is not None
    return Row(
        scenario=f"sb_send -> broker -> sb_recv, {_mode(presettled)}",
        size=size,
        sender_rate=sent.result["msgs_per_sec"],
        receiver_rate=received.result["msgs_per_sec"],
        sender_cpu=sent.cpu_seconds,
        receiver_cpu=received.cpu_seconds,
        broker_cpu=broker_cpu,
        latency=_latency(sent.result, "latency_us"),
    )


def _measure_direct(count: int, size: int, presettled: bool, timeout: float) -> Row:
    sent, received = send_receive_direct(
        count, size, presettled=presettled, timeout=timeout
    )
    _check(sent, received)
    assert sent.result is not None and received.result is not None
    return Row(
        scenario=f"sb_send -> sb_recv --listen (no broker), {_mode(presettled)}",
        size=size,
        sender_rate=sent.result["msgs_per_sec"],
        receiver_rate=received.result["msgs_per_sec"],
        sender_cpu=sent.cpu_seconds,
        receiver_cpu=received.cpu_seconds,
        broker_cpu=0.0,
        latency=_latency(sent.result, "latency_us"),
    )


def _measure_examples(count: int, timeout: float) -> Row:
    with proton_broker() as (broker, port):
        cpu0 = process_cpu_seconds(broker.pid)
        receiver = start_example_receive(port, "bench", count)
        time.sleep(0.2)  # the stock receive has no ready signal; let it attach first
        sent = run_example_send(port, "bench", count, timeout=timeout)
        received = receiver.wait(timeout)
        broker_cpu = process_cpu_seconds(broker.pid) - cpu0
    _check(sent, received)
    return Row(
        scenario="stock send -> broker -> stock receive (map body)",
        size=None,
        # The stock clients report no timing: use process times, which include start-up
        # and connecting; the receiver is timed from the sender's start.
        sender_rate=count / sent.wall_seconds,
        receiver_rate=count / (received.ended_at - sent.started_at),
        sender_cpu=sent.cpu_seconds,
        receiver_cpu=received.cpu_seconds,
        broker_cpu=broker_cpu,
        latency="-",
    )


def _measure_rpc(count: int, size: int, concurrency: int, timeout: float) -> Row:
    with proton_broker() as (broker, port):
        cpu0 = process_cpu_seconds(broker.pid)
        echo = start_sb_echo(port, "service", count=count, timeout=timeout)
        calls = run_sb_rpc(
            port,
            "service",
            count,
            concurrency=concurrency,
            size=size,
            reply_to="replies",
            timeout=timeout,
        )
        served = echo.wait(timeout)
        broker_cpu = process_cpu_seconds(broker.pid) - cpu0
    _check(calls, served)
    assert calls.result is not None and served.result is not None
    return Row(
        scenario=f"sb_rpc -> broker -> sb_echo, {concurrency} in flight",
        size=size,
        sender_rate=calls.result["calls_per_sec"],
        receiver_rate=served.result["requests_per_sec"],
        sender_cpu=calls.cpu_seconds,
        receiver_cpu=served.cpu_seconds,
        broker_cpu=broker_cpu,
        latency=_latency(calls.result, "rtt_us"),
    )


def _median_row(rows: list[Row]) -> Row:
    """The run with the median sender rate (a real run, not a blend of several)."""
    ordered = sorted(rows, key=lambda r: r.sender_rate)
    return ordered[len(ordered) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Reference numbers: compiled peers against the Proton C example broker."
    )
    parser.add_argument(
        "--count", type=int, default=100_000, help="messages per throughput run"
    )
    parser.add_argument(
        "--rpc-count", type=int, default=20_000, help="calls per request/response run"
    )
    parser.add_argument(
        "--sizes", default="100,1024", help="comma-separated body sizes in bytes"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per scenario; the median is shown"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="bound on each peer, seconds"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    def median_of(measure: Callable[..., Row], *measure_args: Any) -> Row:
        return _median_row([measure(*measure_args) for _ in range(args.repeat)])

    build_all()
    rows: list[Row] = []
    for pair in (_measure_send_receive, _measure_direct):
        for size in sizes:
            for presettled in (False, True):
                rows.append(median_of(pair, args.count, size, presettled, args.timeout))
    rows.append(median_of(_measure_examples, args.count, args.timeout))
    for k in (1, 16):
        rows.append(median_of(_measure_rpc, args.rpc_count, sizes[0], k, args.timeout))

    print(
        f"count={args.count} rpc_count={args.rpc_count} repeat={args.repeat} (median run shown), "
        f"cpus={os.cpu_count()}"
    )
    print(
        "| scenario | body B | sender msg/s | receiver msg/s | sender CPU s | receiver CPU s "
        "| broker CPU s | p50 / p99 µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        body = "-" if r.size is None else str(r.size)
        print(
            f"| {r.scenario} | {body} | {r.sender_rate:,.0f} | {r.receiver_rate:,.0f} | "
            f"{r.sender_cpu:.2f} | {r.receiver_cpu:.2f} | {r.broker_cpu:.2f} | {r.latency} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
