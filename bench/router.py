"""Router benchmark: our router and the Proton C example broker, driven by the same peers.

    .venv/bin/python bench/router.py [--count 100000] [--rpc-count 10000] [--sizes 100,1024]
                                     [--repeat 3] [--only PATTERN,...] [--skip-proton]
                                     [--json] [--py-spy DIR [--py-spy-native]] [--cprofile DIR]
    .venv/bin/python bench/router.py --summarize-profile DIR/SCENARIO.txt [--cpu-us-per-msg US]

For every scenario a fresh server process is started (ours: ``switchboard router --listen
127.0.0.1:0``, a real process; theirs: the Qpid Proton C example broker from
``bench/_peers.py``), the compiled Proton C peers of ``bench/peers/`` drive it ``--repeat``
times, and the run with the median rate is reported. Ours and theirs alternate scenario
by scenario so that drift of a shared machine hits both alike.

Scenarios (``--only`` takes comma-separated fnmatch patterns or substrings of these):

* ``send-SIZE-settled``: one sb_send (unsettled, window ``--window``) -> server -> one
  sb_recv (credit ``--credit``). Through our router the acknowledgement is end to end
  (the sender's delivery is settled with the receiver's outcome); the Proton broker
  accepts on arrival and forwards presettled, with only 5 credit per sender.
* ``send-SIZE-presettled``: the same, sent presettled.
* ``rpc-kK-fixed``: sb_rpc with K requests in flight and a fixed reply address; sb_echo
  answers on one sender link per reply address. The only RPC shape the Proton broker
  survives (it crashes on dynamic sources).
* ``rpc-kK-dynamic`` (ours only): sb_rpc asks for a dynamic reply address; sb_echo sends
  every reply on one anonymous-relay link (``--anonymous``), as RPC servers on a router
  network do. Its ours/Proton ratio is against Proton's ``rpc-kK-fixed``.
* ``...-2r`` (ours only): the same across two routers joined by an inter-router
  connection: the sender (or the caller) on router A, the receiver (or sb_echo) on router
  B. Its ratio is two routers over one (the same scenario without ``-2r``), and its server
  CPU is both routers'.

Per scenario and server: messages/s (for send scenarios the lower of the sender's and the
receiver's own rate; for RPC the calls/s of sb_rpc), p50/p99 latency from the peers'
JSON (send->settle, request->reply), the server's CPU seconds (``/proc/PID/stat`` delta
from the sender's start to the last peer's exit) and CPU% over that wall time, its CPU
per message and the kernel's share of it, its read/write system calls per message
(``/proc/PID/io``; ours only), its peak RSS (``VmHWM``, the process is fresh per
scenario), the clients' CPU seconds (``wait4``), the CPU the rest of the machine used
meanwhile (a shared machine's noise), and ours/Proton for messages/s: the median of the
ratios of the runs made side by side.

``--py-spy DIR`` records our router with py-spy during each scenario (folded stacks, which
speedscope and flamegraph.pl read; add ``--py-spy-native`` for C frames, the only mode
that tells CPU from preemption on a busy machine); ``--summarize-profile`` turns such a
file into the categories of docs/PROFILE.md. ``--cprofile DIR`` runs the router under
cProfile instead (for call counts; it slows the router ~4x).

Every peer runs with ``--timeout`` (and is killed a few seconds after it), every server
start and readiness wait is bounded, and every process started here is stopped on exit,
on an error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import _peers  # noqa: E402
from _peers import LOCALHOST, PeerError, PeerResult, RunningPeer  # noqa: E402

OURS = "switchboard"
PROTON = "proton"
LISTENING = re.compile(rb"listening on amqps?://([^\s:]+):(\d+)")

# Targets from the issue.
TARGET_SETTLED_RATIO = 1.0
TARGET_RPC_P50_US = 250.0
TARGET_RSS_MIB = 100.0


# =============================================================================== processes

_children: list[Any] = []
"""Everything started here (Popen or RunningPeer), for the cleanup on any exit."""


def _start_peer(argv: Sequence[str | Path]) -> RunningPeer:
    peer = _peers.start_peer(argv)
    _children.append(peer)
    return peer


def _own_children() -> list[int]:
    """Pids whose parent is this process (a last sweep for anything a helper started)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry))
    return found


def cleanup() -> None:
    """Stop every process started here: SIGTERM, a bounded wait, then SIGKILL."""
    while _children:
        child = _children.pop()
        with contextlib.suppress(Exception):
            if isinstance(child, RunningPeer):
                if child.running():
                    child.stop(3.0)
            elif child.poll() is None:
                _peers.stop_process(child, 3.0)
    for pid in _own_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and _own_children():
        time.sleep(0.05)
    for pid in _own_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _proc_stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read().decode()
    return stat[stat.rindex(")") + 2 :].split()


def _proc_status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (VmHWM: peak RSS, VmRSS: current)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent not idle since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _default_router_cmd() -> list[str]:
    """``switchboard`` next to this interpreter, else the repo's venv, else ``python -c``."""
    for candidate in (Path(sys.executable).parent / "switchboard", REPO_DIR / ".venv/bin/switchboard"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-c", "from switchboard.cli.main import main; main()"]


_CPROFILE_RUNNER = (
    "import cProfile, sys; out = sys.argv.pop(1); "
    "from switchboard.cli.main import main; "
    "cProfile.run('main()', out)"
)


class Server:
    """A server process under test: its pid, port, CPU and memory."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log: IO[bytes] | None = None) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.pid = proc.pid
        self._log = log

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return sum(self.cpu_user_sys())

    def cpu_user_sys(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far, all threads."""
        fields = _proc_stat(self.pid)
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def syscalls(self) -> tuple[int, int]:
        """(read-like, write-like) system calls so far (``/proc/PID/io`` syscr, syscw)."""
        counts = {}
        with open(f"/proc/{self.pid}/io") as f:
            for line in f:
                key, _, value = line.partition(":")
                counts[key] = int(value)
        return counts.get("syscr", 0), counts.get("syscw", 0)

    def threads(self) -> int:
        return int(_proc_stat(self.pid)[17])

    def peak_rss_kib(self) -> int:
        return _proc_status_kib(self.pid, "VmHWM")

    def log_tail(self, chars: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-chars:]

    def stop(self) -> int | None:
        code = _peers.stop_process(self.proc, 10.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


def start_switchboard(cmd: Sequence[str], timeout: float = 20.0, cprofile_out: Path | None = None) -> Server:
    """Start our router on port 0 and return once it prints where it listens."""
    argv = list(cmd)
    if cprofile_out is not None:
        argv = [sys.executable, "-c", _CPROFILE_RUNNER, str(cprofile_out)]
    argv += ["router", "--listen", f"{LOCALHOST}:0"]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Server.stop
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=REPO_DIR)
    _children.append(proc)
    found: list[int] = []
    ready = threading.Event()

    def drain() -> None:  # keep reading so the router never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            match = LISTENING.search(line)
            if match and not found:
                found.append(int(match.group(2)))
                ready.set()
        ready.set()

    threading.Thread(target=drain, name="router-stdout", daemon=True).start()
    ready.wait(timeout)
    server = Server(OURS, proc, found[0] if found else 0, log)
    if not found:
        tail = server.log_tail()
        server.stop()
        raise PeerError(f"router did not report a listening port within {timeout:.0f}s: {argv}\n{tail}")
    _peers.wait_for_port(server.port, timeout)
    return server


PAIR_CONFIG_A = """
[router]
id = "bench-a"
[[listeners]]
host = "127.0.0.1"
port = 0
[[listeners]]
host = "127.0.0.1"
port = 0
role = "inter-router"
"""

PAIR_CONFIG_B = """
[router]
id = "bench-b"
[[listeners]]
host = "127.0.0.1"
port = 0
[[connectors]]
host = "127.0.0.1"
port = {port}
"""

_ROLE_LINE = re.compile(rb"listening on amqps?://([^\s:]+):(\d+) \((\S+)\)")


def _start_configured(cmd: Sequence[str], config: str, roles: int, timeout: float,
                      workdir: Path | None = None) -> tuple[Server, dict[str, int]]:
    """Start our router with ``config`` (written to ``workdir``, default a new temporary
    directory) and wait for its ``roles`` listening lines."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="sb_bench-pair-"))
    path = workdir / "router.toml"
    path.write_text(config, encoding="utf-8")
    argv = [*cmd, "router", "--config", str(path)]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Server.stop
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=REPO_DIR)
    _children.append(proc)
    ports: dict[str, int] = {}
    ready = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _ROLE_LINE.search(line)
            if match:
                ports[match.group(3).decode()] = int(match.group(2))
                if len(ports) >= roles:
                    ready.set()
        ready.set()

    threading.Thread(target=drain, name="router-stdout", daemon=True).start()
    ready.wait(timeout)
    server = Server(OURS, proc, ports.get("normal", 0), log)
    if len(ports) < roles:
        tail = server.log_tail()
        server.stop()
        raise PeerError(f"router did not report its listeners within {timeout:.0f}s: {argv}\n{tail}")
    return server, ports


class RouterPair:
    """Two of our routers joined by an inter-router connection, measured as one server:
    clients that send use A (``port``), clients that receive use B (``receiver_port``)."""

    def __init__(self, a: Server, b: Server) -> None:
        self.name = OURS
        self.a, self.b = a, b
        self.port = a.port
        self.receiver_port = b.port
        self.pid = a.pid

    def alive(self) -> bool:
        return self.a.alive() and self.b.alive()

    def cpu_user_sys(self) -> tuple[float, float]:
        (ua, sa), (ub, sb) = self.a.cpu_user_sys(), self.b.cpu_user_sys()
        return ua + ub, sa + sb

    def cpu_seconds(self) -> float:
        return sum(self.cpu_user_sys())

    def syscalls(self) -> tuple[int, int]:
        (ra, wa), (rb, wb) = self.a.syscalls(), self.b.syscalls()
        return ra + rb, wa + wb

    def threads(self) -> int:
        return self.a.threads() + self.b.threads()

    def peak_rss_kib(self) -> int:
        return max(self.a.peak_rss_kib(), self.b.peak_rss_kib())

    def log_tail(self, chars: int = 3000) -> str:
        return f"--- router A ---\n{self.a.log_tail(chars)}\n--- router B ---\n{self.b.log_tail(chars)}"

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.a.proc if not self.a.alive() else self.b.proc

    def stop(self) -> int | None:
        code_b = self.b.stop()
        code_a = self.a.stop()
        return code_a if code_a else code_b


def start_switchboard_pair(cmd: Sequence[str], timeout: float = 20.0) -> RouterPair:
    """Routers A and B, B connected to A; returns once B's connection to A is up."""
    a, ports = _start_configured(cmd, PAIR_CONFIG_A, 2, timeout)
    try:
        b, _ = _start_configured(cmd, PAIR_CONFIG_B.format(port=ports["inter-router"]), 1, timeout)
    except PeerError:
        a.stop()
        raise
    pair = RouterPair(a, b)
    deadline = time.monotonic() + timeout
    for server, other in ((a, "bench-b"), (b, "bench-a")):
        # Each must route to the other before clients start (`switchboard network`).
        while not _routes_to(cmd, server.port, other):
            if time.monotonic() > deadline or not pair.alive():
                tail = pair.log_tail()
                pair.stop()
                raise PeerError(f"the two routers did not connect within {timeout:.0f}s\n{tail}")
            time.sleep(0.1)
    return pair


def _routes_to(cmd: Sequence[str], port: int, router_id: str) -> bool:
    done = subprocess.run([*cmd, "network", "--router", f"amqp://{LOCALHOST}:{port}", "--json", "--timeout", "5"],
                          capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        return False
    return router_id in json.loads(done.stdout).get("next_hops", {})


def start_proton() -> Server:
    proc, port = _peers.start_proton_broker(0)
    _children.append(proc)
    return Server(PROTON, proc, port)


class PySpy:
    """``py-spy record`` attached to a running router, stopped with SIGINT (it then writes)."""

    def __init__(self, pid: int, out: Path, rate: int, native: bool = False) -> None:
        exe = Path(sys.executable).parent / "py-spy"
        binary = str(exe) if exe.is_file() else "py-spy"
        self.out = out
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate), "--output", str(out),
             *(["--native"] if native else ["--nonblocking"])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _children.append(self.proc)
        time.sleep(0.5)  # attaching takes a moment; do not lose the start of the run

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.returncode not in (0, -signal.SIGINT) or not self.out.exists():
            err = self.proc.stderr.read().decode("utf-8", "replace") if self.proc.stderr else ""
            print(f"py-spy failed ({self.proc.returncode}): {err[-1000:]}", file=sys.stderr)


# =============================================================================== scenarios


@dataclass(frozen=True)
class Scenario:
    key: str
    kind: str  # "send" or "rpc"
    size: int
    presettled: bool = False
    concurrency: int = 1
    reply: str = "fixed"  # rpc: "fixed" or "dynamic"
    servers: tuple[str, ...] = (OURS, PROTON)
    compare_key: str = ""  # the Proton scenario ours is compared with ("" = same key)
    routers: int = 1  # 2: sender on one router, receiver on another

    @property
    def title(self) -> str:
        hops = "router A -> router B" if self.routers == 2 else "server"
        if self.kind == "send":
            mode = "presettled" if self.presettled else "settled (window)"
            return f"1 sender -> {hops} -> 1 receiver, {self.size} B, {mode}"
        reply = "dynamic reply, replies via anonymous relay" if self.reply == "dynamic" else "fixed reply address"
        return f"request/response via {hops}, {self.concurrency} in flight, {self.size} B, {reply}"


def scenarios(sizes: Sequence[int], rpc_size: int, concurrencies: Sequence[int]) -> list[Scenario]:
    out: list[Scenario] = []
    for size in sizes:
        for presettled in (False, True):
            mode = "presettled" if presettled else "settled"
            out.append(Scenario(f"send-{size}-{mode}", "send", size, presettled=presettled))
    for k in concurrencies:
        out.append(Scenario(f"rpc-k{k}-fixed", "rpc", rpc_size, concurrency=k, reply="fixed"))
        out.append(Scenario(f"rpc-k{k}-dynamic", "rpc", rpc_size, concurrency=k, reply="dynamic",
                            servers=(OURS,), compare_key=f"rpc-k{k}-fixed"))
    for size in sizes:
        out.append(Scenario(f"send-{size}-settled-2r", "send", size, servers=(OURS,),
                            compare_key=f"send-{size}-settled", routers=2))
    for k in concurrencies:
        out.append(Scenario(f"rpc-k{k}-dynamic-2r", "rpc", rpc_size, concurrency=k, reply="dynamic",
                            servers=(OURS,), compare_key=f"rpc-k{k}-dynamic", routers=2))
    return out


def selected(scenario: Scenario, patterns: Sequence[str]) -> bool:
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(scenario.key, p) or p in scenario.key for p in patterns)


# =============================================================================== measuring


@dataclass
class Run:
    """One run of one scenario against one server."""

    ok: bool
    error: str | None
    rate: float  # the headline messages (calls) per second
    sender_rate: float
    receiver_rate: float
    p50_us: float | None
    p99_us: float | None
    server_cpu: float
    wall: float
    server_cpu_pct: float
    server_cpu_us_per_msg: float
    server_sys_pct: float  # share of the server's CPU spent in the kernel (socket I/O)
    server_reads_per_msg: float  # read-like system calls per message (per call for RPC)
    server_writes_per_msg: float  # write-like system calls per message (per call for RPC)
    client_cpu: list[float]  # [sender or rpc client, receiver or echo]
    background_cpu_pct: float = 0.0
    """CPU used by other processes on the machine during the run, % of one CPU: a shared
    machine's noise. Everything not idle, less the server's and the clients' CPU."""
    peers: list[dict[str, Any] | None] = field(default_factory=list)


@dataclass
class Result:
    scenario: str
    server: str
    title: str
    runs: list[Run]
    median: Run | None
    peak_rss_kib: int
    server_threads: int
    ratio: float | None = None  # ours / Proton, messages per second (ours only; see compare())
    paired_ratios: list[float] = field(default_factory=list)
    compared_with: str | None = None


class Settings:
    def __init__(self, args: argparse.Namespace) -> None:
        self.count: int = args.count
        self.rpc_count: int = args.rpc_count
        self.window: int = args.window
        self.credit: int = args.credit
        self.timeout: float = args.timeout
        self.echo_credit: int = args.echo_credit
        self.rpc_address: str = args.rpc_address


def _ready_file_peer(argv: list[str], timeout: float) -> RunningPeer:
    """Start a peer with ``--ready-file`` and wait (bounded) until it is attached."""
    ready_dir = Path(tempfile.mkdtemp(prefix="sb_bench-"))
    ready = ready_dir / "ready"
    peer = _start_peer([*argv, "--ready-file", str(ready)])
    deadline = time.monotonic() + timeout
    try:
        while not ready.exists():
            if not peer.running():
                raise PeerError(f"{Path(argv[0]).name} ended before it was ready:\n{peer.wait(0).describe_failure()}")
            if time.monotonic() >= deadline:
                peer.stop()
                raise PeerError(f"{Path(argv[0]).name} not ready within {timeout:.1f}s")
            time.sleep(0.002)
    finally:
        ready.unlink(missing_ok=True)
        ready_dir.rmdir()
    return peer


def _latency(result: dict[str, Any] | None, key: str) -> tuple[float | None, float | None]:
    lat = (result or {}).get(key)
    if not lat:
        return None, None
    return float(lat["p50"]), float(lat["p99"])


def _failure(results: Sequence[PeerResult], server: Server) -> str | None:
    problems = []
    for r in results:
        if not r.ok:
            problems.append(r.describe_failure())
    if not server.alive():
        problems.append(f"the server exited with {server.proc.returncode}\n{server.log_tail()}")
    return "\n".join(problems) or None


def run_once(sc: Scenario, server: Server, st: Settings, serial: int) -> Run:
    bins = _peers.build_sb_peers()
    url = lambda address: _peers.amqp_url(server.port, address)  # noqa: E731
    receiver_port = getattr(server, "receiver_port", server.port)
    receiver_url = lambda address: _peers.amqp_url(receiver_port, address)  # noqa: E731
    t = st.timeout
    if sc.kind == "send":
        address = f"bench-{sc.key}-{serial}"
        recv = _ready_file_peer(
            [str(bins["sb_recv"]), "-u", receiver_url(address), "-c", str(st.count), "-C", str(st.credit),
             "-t", str(t)], 10.0
        )
        argv = [str(bins["sb_send"]), "-u", url(address), "-c", str(st.count), "-s", str(sc.size),
                "-w", str(st.window), "-t", str(t)]
        if sc.presettled:
            argv.append("--presettled")
        count = st.count
        busy0, (user0, sys0), io0 = _machine_busy_seconds(), server.cpu_user_sys(), server.syscalls()
        sender = _start_peer(argv)
        first = sender.wait(t + 5.0)
        second = recv.wait(t + 5.0)
        busy1, (user1, sys1), io1 = _machine_busy_seconds(), server.cpu_user_sys(), server.syscalls()
        s, r = first.result or {}, second.result or {}
        sender_rate = float(s.get("msgs_per_sec") or 0.0)
        receiver_rate = float(r.get("msgs_per_sec") or 0.0)
        rate = min(sender_rate, receiver_rate)
        p50, p99 = _latency(first.result, "latency_us")
        error = _failure([first, second], server)
        if error is None and (s.get("sent") != count or r.get("received") != count):
            error = f"sent {s.get('sent')}, received {r.get('received')} of {count}"
        if error is None and not sc.presettled and s.get("accepted") != count:
            error = f"{s.get('accepted')} of {count} accepted: {s}"
    else:
        service = f"{st.rpc_address}svc-{sc.key}-{serial}"
        echo_argv = [str(bins["sb_echo"]), "-u", receiver_url(service), "-c", str(st.rpc_count),
                     "-C", str(st.echo_credit), "-t", str(t)]
        if sc.reply == "dynamic":
            echo_argv.append("--anonymous")
        echo = _ready_file_peer(echo_argv, 10.0)
        argv = [str(bins["sb_rpc"]), "-u", url(service), "-c", str(st.rpc_count), "-k", str(sc.concurrency),
                "-s", str(sc.size), "-t", str(t)]
        if sc.reply == "fixed":
            argv += ["--reply-to", f"replies-{sc.key}-{serial}"]
        count = st.rpc_count
        busy0, (user0, sys0), io0 = _machine_busy_seconds(), server.cpu_user_sys(), server.syscalls()
        caller = _start_peer(argv)
        first = caller.wait(t + 5.0)
        second = echo.wait(t + 5.0)
        busy1, (user1, sys1), io1 = _machine_busy_seconds(), server.cpu_user_sys(), server.syscalls()
        c, e = first.result or {}, second.result or {}
        sender_rate = float(c.get("calls_per_sec") or 0.0)
        receiver_rate = float(e.get("requests_per_sec") or 0.0)
        rate = sender_rate
        p50, p99 = _latency(first.result, "rtt_us")
        error = _failure([first, second], server)
        if error is None and c.get("replied") != count:
            error = f"{c.get('replied')} of {count} calls answered: {c}"
    wall = max(first.ended_at, second.ended_at) - first.started_at
    server_sys = sys1 - sys0
    server_cpu = user1 - user0 + server_sys
    return Run(
        ok=error is None,
        error=error,
        rate=rate,
        sender_rate=sender_rate,
        receiver_rate=receiver_rate,
        p50_us=p50,
        p99_us=p99,
        server_cpu=server_cpu,
        wall=wall,
        server_cpu_pct=100.0 * server_cpu / wall if wall > 0 else 0.0,
        server_sys_pct=100.0 * server_sys / server_cpu if server_cpu > 0 else 0.0,
        server_reads_per_msg=(io1[0] - io0[0]) / count if count else 0.0,
        server_writes_per_msg=(io1[1] - io0[1]) / count if count else 0.0,
        server_cpu_us_per_msg=1e6 * server_cpu / count if count else 0.0,
        client_cpu=[first.cpu_seconds, second.cpu_seconds],
        peers=[first.result, second.result],
        background_cpu_pct=max(0.0, 100.0 * (busy1 - busy0 - server_cpu - first.cpu_seconds - second.cpu_seconds)
                               / wall) if wall > 0 else 0.0,
    )


def _median_run(runs: list[Run]) -> Run | None:
    good = sorted((r for r in runs if r.ok), key=lambda r: r.rate)
    return good[len(good) // 2] if good else None


def _failed_run(error: str) -> Run:
    return Run(False, error, 0.0, 0.0, 0.0, None, None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, [0.0, 0.0])


def measure(sc: Scenario, names: Sequence[str], st: Settings, repeat: int, args: argparse.Namespace,
            log: IO[str]) -> list[Result]:
    """Start a fresh process of each server, then alternate runs between them.

    Alternating run by run (ours, Proton, ours, Proton, ...) pairs the measurements in
    time, so that a shared machine's changing background load hits both alike.
    """
    servers: dict[str, Server] = {}
    runs: dict[str, list[Run]] = {name: [] for name in names}
    peak: dict[str, int] = {name: 0 for name in names}
    threads: dict[str, int] = {name: 0 for name in names}
    spy = None
    cprofile_out = py_spy_out = None
    try:
        for name in names:
            if name == OURS:
                if args.cprofile:
                    Path(args.cprofile).mkdir(parents=True, exist_ok=True)
                    cprofile_out = Path(args.cprofile).resolve() / f"{sc.key}.prof"
                if sc.routers == 2:
                    servers[name] = start_switchboard_pair(args.router_cmd)  # type: ignore[assignment]
                else:
                    servers[name] = start_switchboard(args.router_cmd, cprofile_out=cprofile_out)
                if args.py_spy:
                    Path(args.py_spy).mkdir(parents=True, exist_ok=True)
                    py_spy_out = Path(args.py_spy).resolve() / f"{sc.key}.txt"
                    spy = PySpy(servers[name].pid, py_spy_out, args.py_spy_rate, args.py_spy_native)
            else:
                servers[name] = start_proton()
        for i in range(repeat):
            for name, server in servers.items():
                if not server.alive():
                    continue
                try:
                    run = run_once(sc, server, st, i)
                except PeerError as exc:
                    run = _failed_run(str(exc))
                runs[name].append(run)
                if not run.ok:
                    print(f"  {sc.key} on {name}, run {i + 1}: FAILED: {run.error}", file=sys.stderr)
        for name, server in servers.items():
            if server.alive():
                peak[name] = server.peak_rss_kib()
                threads[name] = server.threads()
            else:
                runs[name].append(_failed_run(f"{name} exited with {server.proc.returncode}\n{server.log_tail()}"))
    finally:
        if spy is not None:
            spy.stop()
            print(f"  py-spy profile of {sc.key}: {py_spy_out}", file=log)
        for server in servers.values():
            server.stop()
        if cprofile_out is not None:
            print(f"  cProfile of {sc.key}: {cprofile_out}", file=log)
    return [Result(sc.key, name, sc.title, runs[name], _median_run(runs[name]), peak[name], threads[name])
            for name in names]


def compare(ours: Result, base: Result | None) -> None:
    """ours/Proton messages per second: the median of the ratios of runs made side by side
    (run i of ours with run i of Proton, which followed it), else the ratio of medians."""
    if base is None or ours.median is None or base.median is None or not base.median.rate:
        return
    ours.compared_with = f"{PROTON}:{base.scenario}"
    if ours.scenario == base.scenario:
        pairs = [a.rate / b.rate for a, b in zip(ours.runs, base.runs) if a.ok and b.ok and b.rate]
        if pairs:
            ours.paired_ratios = pairs
            ours.ratio = sorted(pairs)[len(pairs) // 2] if len(pairs) % 2 else \
                (sorted(pairs)[len(pairs) // 2 - 1] + sorted(pairs)[len(pairs) // 2]) / 2
            return
    ours.ratio = ours.median.rate / base.median.rate


def compare_routers(two: Result, one: Result | None) -> None:
    """Two routers over one: the ratio of the median rates (measured one after the other)."""
    if one is None or two.median is None or one.median is None or not one.median.rate:
        return
    two.compared_with = f"{OURS}:{one.scenario}"
    two.ratio = two.median.rate / one.median.rate


# =============================================================================== reporting


def _fmt_lat(run: Run) -> str:
    if run.p50_us is None:
        return "-"
    return f"{run.p50_us:.0f} / {run.p99_us:.0f}"


def _fmt_ratio(res: Result) -> str:
    return "-" if res.ratio is None else f"{res.ratio:.2f}x"


def describe(res: Result) -> str:
    m = res.median
    if m is None:
        return f"{res.scenario:<22} {res.server:<11} FAILED ({len(res.runs)} runs)"
    rates = ", ".join(f"{r.rate:,.0f}" for r in res.runs if r.ok)
    # /proc/PID/io counts read(2)/write(2)-family calls only: the Proton broker's send(2)
    # and recv(2) are invisible there, so its figures would mislead.
    io = "" if res.server == PROTON else \
        f", {m.server_reads_per_msg:.3g} reads + {m.server_writes_per_msg:.3g} writes/msg"
    label = "2 routers / 1" if res.scenario.endswith("-2r") else "ours/Proton"
    ratio = "" if res.ratio is None else f"; {label} {res.ratio:.2f}x"
    if res.paired_ratios:
        ratio += f" (run by run: {', '.join(f'{r:.2f}' for r in res.paired_ratios)})"
    elif res.ratio is not None:
        ratio += f" (vs {res.compared_with}, measured separately)"
    return (
        f"{res.scenario:<22} {res.server:<11} {m.rate:>9,.0f} msg/s (runs: {rates}); p50/p99 {_fmt_lat(m)} us; "
        f"server CPU {m.server_cpu:.2f} s = {m.server_cpu_pct:.0f}% of {m.wall:.2f} s, "
        f"{m.server_cpu_us_per_msg:.1f} us/msg ({m.server_sys_pct:.0f}% in kernel){io}; peak RSS {res.peak_rss_kib / 1024:.1f} MiB; "
        f"clients CPU {m.client_cpu[0]:.2f} + {m.client_cpu[1]:.2f} s; others {m.background_cpu_pct:.0f}% CPU{ratio}"
    )


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | server | msg/s (rpc: calls/s) | ours/Proton | p50 / p99 µs | server CPU s | server CPU % "
        "| server µs CPU/msg (rpc: /call) | peak RSS MiB | client CPU s (send+recv / rpc+echo) | other load % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        m = res.median
        if m is None:
            lines.append(f"| {res.scenario} | {res.server} | FAILED | - | - | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {res.scenario} | {res.server} | {m.rate:,.0f} | {_fmt_ratio(res)} | {_fmt_lat(m)} | "
            f"{m.server_cpu:.2f} | {m.server_cpu_pct:.0f} | {m.server_cpu_us_per_msg:.1f} | "
            f"{res.peak_rss_kib / 1024:.1f} | {m.client_cpu[0]:.2f} + {m.client_cpu[1]:.2f} | "
            f"{m.background_cpu_pct:.0f} |"
        )
    return "\n".join(lines)


def targets(results: list[Result]) -> list[dict[str, Any]]:
    """The issue's targets, judged on the median runs of ours."""
    ours = {r.scenario: r for r in results if r.server == OURS}
    verdicts = []
    for key, res in sorted(ours.items()):
        if key.startswith("send-") and key.endswith("-settled") and res.ratio is not None:
            verdicts.append({
                "target": f"{key}: msg/s >= {TARGET_SETTLED_RATIO:.1f}x Proton broker",
                "value": f"{res.ratio:.2f}x",
                "met": res.ratio >= TARGET_SETTLED_RATIO,
            })
        if key.startswith("rpc-k1-") and res.median is not None:
            p50 = res.median.p50_us
            verdicts.append({
                "target": f"{key}: p50 round trip <= {TARGET_RPC_P50_US:.0f} µs",
                "value": "-" if p50 is None else f"{p50:.0f} µs",
                "met": p50 is not None and p50 <= TARGET_RPC_P50_US,
            })
            verdicts.append({
                "target": f"{key}: router peak RSS <= {TARGET_RSS_MIB:.0f} MiB",
                "value": f"{res.peak_rss_kib / 1024:.1f} MiB",
                "met": 0 < res.peak_rss_kib <= TARGET_RSS_MIB * 1024,
            })
    return verdicts


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "commit": _git("rev-parse", "--short", "HEAD").strip(),
        "dirty_files": [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines()],
    }


# =============================================================================== profiles

# Where a py-spy sample's time goes, judged from its stack: walk from the innermost frame
# outwards and take the first frame a rule names. Generic helpers (the codec, composite
# types, frame writing, Delivery objects) carry no category of their own: they count for
# whoever called them, so the encoding of a transfer counts as forwarding and the
# decoding of a performative as performative decode.
_GENERIC_FILES = ("amqp/codec.py", "amqp/composite.py", "amqp/spec.py", "amqp/types.py", "amqp/delivery.py")
_GENERIC_FUNCS = {
    ("amqp/connection.py", "Connection._write_frame"),
    ("amqp/connection.py", "Connection._session_frame"),
    ("amqp/framing.py", "frame_header"),
}
_RULES: list[tuple[str, str, str]] = [  # (path suffix, function name or "*", category)
    ("amqp/delivery.py", "Delivery.settle", "disposition handling"),
    ("amqp/framing.py", "*", "frame decode"),
    ("amqp/connection.py", "Connection.receive_data", "frame decode"),
    ("amqp/connection.py", "Connection._process", "frame decode"),
    ("amqp/connection.py", "Connection._on_transfer", "transfer intake (session/link/delivery state)"),
    ("amqp/session.py", "Session._on_transfer", "transfer intake (session/link/delivery state)"),
    ("amqp/link.py", "ReceiverLink._within_granted", "transfer intake (session/link/delivery state)"),
    ("amqp/message.py", "*", "routing read + decision"),
    ("router/core.py", "RouterCore._on_delivery_received", "routing read + decision"),
    ("router/core.py", "RouterCore._forwarder", "routing read + decision"),
    ("router/addresses.py", "AddressTable.*", "routing read + decision"),
    ("router/forwarders.py", "*", "forwarding + transfer encode"),
    ("router/core.py", "RouterCore.send_to", "forwarding + transfer encode"),
    ("router/core.py", "RouterCore.hold", "forwarding + transfer encode"),
    ("amqp/link.py", "SenderLink.send", "forwarding + transfer encode"),
    ("amqp/session.py", "Session._send_transfer", "forwarding + transfer encode"),
    ("amqp/session.py", "Session._write_transfer", "forwarding + transfer encode"),
    ("amqp/session.py", "Session._allocate_delivery_id", "forwarding + transfer encode"),
    ("amqp/connection.py", "Connection._transfer_room", "forwarding + transfer encode"),
    ("router/core.py", "RouterCore._on_delivery_updated", "disposition handling"),
    ("amqp/connection.py", "Connection._on_disposition", "disposition handling"),
    ("amqp/session.py", "Session._on_disposition", "disposition handling"),
    ("amqp/session.py", "Session._queue_disposition", "disposition handling"),
    ("amqp/session.py", "Session._forget", "disposition handling"),
    ("amqp/session.py", "Session._flush", "disposition handling"),  # ranged dispositions (+ rare flows)
    ("amqp/link.py", "Link._delivery_settled", "disposition handling"),
    ("amqp/link.py", "Link._delivery_updated", "disposition handling"),
    ("router/core.py", "RouterCore._replenish", "credit (flow)"),
    ("router/core.py", "RouterCore._grant", "credit (flow)"),
    ("router/core.py", "RouterCore._on_credit_granted", "credit (flow)"),
    ("router/core.py", "RouterCore._consumer_ready", "credit (flow)"),
    ("router/credit.py", "*", "credit (flow)"),
    ("router/addresses.py", "Address.capacity", "credit (flow)"),
    ("amqp/link.py", "ReceiverLink.flow", "credit (flow)"),
    ("amqp/link.py", "*._on_flow", "credit (flow)"),
    ("amqp/session.py", "Session._on_flow", "credit (flow)"),
    ("amqp/session.py", "Session._request_flow", "credit (flow)"),
    ("amqp/connection.py", "Connection._on_flow", "credit (flow)"),
    ("amqp/events.py", "*", "event dispatch"),
    ("router/core.py", "RouterCore.events_received", "event dispatch"),
    ("amqp/connection.py", "Connection.take_events", "event dispatch"),
    ("io/", "*", "asyncio/uvloop I/O + flush glue"),
    ("amqp/connection.py", "Connection.data_to_send", "asyncio/uvloop I/O + flush glue"),
    ("amqp/connection.py", "Connection.tick", "asyncio/uvloop I/O + flush glue"),
    ("asyncio/", "*", "asyncio/uvloop I/O + flush glue"),
    ("uvloop", "*", "asyncio/uvloop I/O + flush glue"),
]
_NATIVE_IO = ("write", "writev", "send", "sendmsg", "recv", "recvfrom", "read", "readv", "epoll_wait", "epoll_pwait",
              "__libc_write", "__libc_read", "__send", "__recv", "__GI___libc_write")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _categorise(frames: list[tuple[str, str]]) -> str:
    for func, path in reversed(frames):
        if func.startswith("gc_") or "gc_collect" in func:
            return "garbage collection"
        if not path.endswith(".py"):
            if func in _NATIVE_IO or func.startswith(("uv__", "epoll")):
                return "asyncio/uvloop I/O + flush glue"
            continue  # another C frame: it counts for the Python code that called it
        if path.endswith(_GENERIC_FILES) and not (path.endswith("amqp/delivery.py") and func == "Delivery.settle"):
            continue
        if any(path.endswith(f) and func == g for f, g in _GENERIC_FUNCS):
            continue
        for suffix, pattern, category in _RULES:
            if (suffix in path if suffix.endswith("/") or "/" not in suffix else path.endswith(suffix)) and \
                    fnmatch.fnmatchcase(func, pattern):
                return category
    return "other"


def summarize_profile(path: Path, cpu_us_per_msg: float | None, top: int = 25) -> str:
    """Categories and top functions of a py-spy ``raw`` (folded stacks) profile."""
    categories: dict[str, int] = {}
    self_time: dict[str, int] = {}
    total = idle = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = []
        for text in stack.split(";"):
            m = _FRAME.match(text)
            frames.append((m.group(1), m.group(2)) if m else (text, ""))
        if frames[-1][0] in ("epoll_wait", "epoll_pwait", "epoll_pwait2"):
            idle += count  # the loop waiting for the sockets: not CPU (py-spy --native counts it)
            continue
        category = _categorise(frames)
        if category == "frame decode":
            # Codec frames called straight from Connection._process decode the performative.
            process = [i for i, f in enumerate(frames) if f[0] == "Connection._process"]
            inner = frames[process[-1] + 1 :] if process else []
            if inner and inner[0][1].endswith(("amqp/codec.py", "amqp/composite.py", "amqp/spec.py")):
                category = "performative decode"
        categories[category] = categories.get(category, 0) + count
        func, file = frames[-1]
        key = f"{func} ({file.split('site-packages/')[-1]})"
        self_time[key] = self_time.get(key, 0) + count
        total += count
    lines = [f"{path}: {total} samples on CPU" + (f" ({idle} more waiting in epoll, left out)" if idle else ""), "", "| where | % of router CPU |" + (" µs/msg |" if cpu_us_per_msg else ""),
             "|---|---:|" + ("---:|" if cpu_us_per_msg else "")]
    for category, count in sorted(categories.items(), key=lambda kv: -kv[1]):
        share = count / total if total else 0.0
        extra = f" {share * cpu_us_per_msg:.1f} |" if cpu_us_per_msg else ""
        lines.append(f"| {category} | {100 * share:.1f} |{extra}")
    lines += ["", "| function (self time) | % |", "|---|---:|"]
    for key, count in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {key} | {100 * count / total:.1f} |")
    return "\n".join(lines)


# =============================================================================== main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100_000, help="messages per send run (default 100000)")
    p.add_argument("--rpc-count", type=int, default=10_000, help="calls per request/response run (default 10000)")
    p.add_argument("--sizes", default="100,1024", help="body sizes for the send scenarios (default 100,1024)")
    p.add_argument("--rpc-size", type=int, default=100, help="request body size (default 100)")
    p.add_argument("--concurrency", default="1,8,32", help="requests in flight for the RPC scenarios (default 1,8,32)")
    p.add_argument("--repeat", type=int, default=3, help="runs per scenario and server; the median is shown (default 3)")
    p.add_argument("--only", default="", help="comma-separated scenario patterns (fnmatch or substring)")
    p.add_argument("--skip-proton", action="store_true", help="measure our router only")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout (the rest goes to stderr)")
    p.add_argument("--window", type=int, default=1000, help="sb_send's window of unsettled deliveries (default 1000)")
    p.add_argument("--credit", type=int, default=1000, help="sb_recv's credit (default 1000)")
    p.add_argument("--echo-credit", type=int, default=100, help="sb_echo's request credit (default 100)")
    p.add_argument("--rpc-address", default="",
                   help="prefix of the RPC scenarios' service address; 'rpc/bench/' puts the calls where the"
                        " router times them for its RPC latency metrics (default: none)")
    p.add_argument("--timeout", type=float, default=30.0, help="bound on each peer, seconds (default 30)")
    p.add_argument("--router-cmd", type=shlex.split, default=None,
                   help="command that runs the switchboard CLI (default: the venv's switchboard)")
    p.add_argument("--py-spy", metavar="DIR", help="record each scenario of our router with py-spy (raw folded "
                   "stacks, DIR/SCENARIO.txt; speedscope and flamegraph.pl read them). Costs CPU on a small machine.")
    p.add_argument("--py-spy-rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--py-spy-native", action="store_true", help="py-spy --native: C frames too (uvloop, syscalls)")
    p.add_argument("--summarize-profile", metavar="FILE", help="print where the time goes in a py-spy raw profile "
                   "(from --py-spy) and exit; --cpu-us-per-msg turns shares into microseconds per message")
    p.add_argument("--cpu-us-per-msg", type=float, help="the router's CPU per message, for --summarize-profile")
    p.add_argument("--cprofile", metavar="DIR", help="run our router under cProfile, DIR/SCENARIO.prof (slows it)")
    args = p.parse_args(argv)
    if args.router_cmd is None:
        args.router_cmd = _default_router_cmd()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize_profile:
        print(summarize_profile(Path(args.summarize_profile), args.cpu_us_per_msg))
        return 0
    out = sys.stderr if args.json else sys.stdout
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ks = [int(k) for k in args.concurrency.split(",") if k]
    patterns = [p for p in args.only.split(",") if p]
    chosen = [sc for sc in scenarios(sizes, args.rpc_size, ks) if selected(sc, patterns)]
    if not chosen:
        print(f"no scenario matches {args.only!r}", file=sys.stderr)
        return 2
    st = Settings(args)
    info = machine()
    _peers.build_all()

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # Also when started in the background by a shell, which would leave SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(
        f"count={args.count} rpc_count={args.rpc_count} sizes={sizes} concurrency={ks} repeat={args.repeat} "
        f"window={args.window} credit={args.credit}; {info['cpus']} CPUs ({info['cpu_model']}), "
        f"Python {info['python']}, load average {' '.join(info['loadavg_at_start'])}, commit {info['commit']}"
        + (f" + uncommitted changes to {', '.join(info['dirty_files'])}" if info["dirty_files"] else ""),
        file=out,
        flush=True,
    )
    started = time.monotonic()
    results: list[Result] = []
    interrupted = False
    try:
        for sc in chosen:
            names = [n for n in sc.servers if not (n == PROTON and args.skip_proton)]
            try:
                results += measure(sc, names, st, args.repeat, args, out)
            except PeerError as exc:
                print(f"{sc.key}: {exc}", file=sys.stderr)
                results += [Result(sc.key, name, sc.title, [], None, 0, 0) for name in names]
            proton = {r.scenario: r for r in results if r.server == PROTON}
            ours_one = {r.scenario: r for r in results if r.server == OURS}
            for res in results:
                if res.scenario == sc.key and res.server == OURS:
                    if sc.routers == 2:
                        compare_routers(res, ours_one.get(sc.compare_key))
                    else:
                        compare(res, proton.get(sc.compare_key or sc.key))
            for res in results:
                if res.scenario == sc.key:
                    print(describe(res), file=out, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping every process started here", file=sys.stderr)
    finally:
        cleanup()
    elapsed = time.monotonic() - started

    verdicts = targets(results)
    print(f"\nmedian of {args.repeat} runs; {elapsed:.0f} s in all", file=out)
    print(table(results), file=out)
    if verdicts:
        print("\ntargets:", file=out)
        for v in verdicts:
            print(f"  [{'met' if v['met'] else 'NOT met'}] {v['target']}: {v['value']}", file=out)
    if args.json:
        doc = {
            "settings": {k: v for k, v in vars(args).items() if k not in ("json",)},
            "machine": info,
            "elapsed_seconds": elapsed,
            "results": [
                {**{k: v for k, v in asdict(r).items() if k != "runs"}, "runs": [asdict(x) for x in r.runs]}
                for r in results
            ],
            "targets": verdicts,
        }
        json.dump(doc, sys.stdout, indent=1, default=str)
        print()
    failed = [r for r in results if r.median is None or any(not x.ok for x in r.runs)]
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        cleanup()
