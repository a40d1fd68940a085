"""Durable-queue benchmark: our router's queue addresses and RabbitMQ, driven by the same peers.

    .venv/bin/python bench/queue.py [--count 20000] [--always-count 5000] [--size 1024]
                                    [--window 200] [--credit 200]
                                    [--systems sqlite-batch,sqlite-always,postgres-batch,...]
                                    [--skip-rabbitmq] [--dry-balanced] [--json]

Systems under test (``--systems`` takes a comma-separated subset, in the order given):

* ``sqlite-batch``, ``sqlite-always``: ``switchboard router`` with a queue address
  (``prefix = "queue/"``, ``distribution = "queue"``) on the embedded SQLite store, fsync
  policy ``batch`` (group commit) or ``always`` (one sync per message), data directory in
  a fresh temporary directory.
* ``postgres-batch``, ``postgres-always``: the same on the PostgreSQL store; the script
  runs a private PostgreSQL 15 cluster (Debian's ``/usr/lib/postgresql/15/bin``: initdb,
  pg_ctl; as the ``postgres`` user when run as root) on a free loopback port, in a
  temporary directory, with PostgreSQL's own durable defaults (``fsync = on``,
  ``synchronous_commit = on``), and stops it at the end.
* ``rabbitmq-classic``, ``rabbitmq-quorum``: Debian's ``rabbitmq-server``, started here as
  a child process (as the ``rabbitmq`` user when run as root) with its own temporary
  Mnesia/log directories, node name, AMQP, distribution and epmd ports on 127.0.0.1, and
  the AMQP 1.0 plugin (``rabbitmq_amqp1_0``). A durable queue ``bench`` of the given type
  is declared from a definitions file at boot; the peers use the plugin's address
  ``/amq/queue/bench`` (publish to / consume from that existing queue). A sender link
  that is not presettled puts the plugin's channel in confirm mode, so each delivery is
  settled ``accepted`` when the broker confirms it (for persistent messages: once on
  disk); messages carry ``durable = true`` (delivery mode 2), and the consumer accepts
  each message (an ack). ``rabbitmq-classic`` (RabbitMQ's default queue type) is the
  reference for the ratios.

Three phases per system, each with ``--count`` messages of ``--size`` bytes (fsync
``always`` systems: ``--always-count``, as one sync per message is slow), the producer
durable (header ``durable``), unsettled with a window of ``--window`` deliveries, the
consumer with ``--credit``:

* ``produce``: sb_send into the empty queue, no consumer. Its rate (first send to last
  ``accepted``) is the enqueue rate; latency is send -> ``accepted`` (durable).
* ``drain``: sb_recv takes that backlog, accepting each message: the dequeue rate.
* ``both``: sb_recv attached first, then sb_send: the steady enqueue+dequeue rate (the
  lower of the two peers' own rates), send -> ``accepted`` latency and end-to-end latency
  (send -> arrival at the consumer, from a timestamp sb_send writes in the body).

Every server is a fresh process per system; its CPU (``/proc/PID/stat``) and peak RSS
(``VmHWM``) are those of the router (RabbitMQ: ``beam.smp``); for PostgreSQL the CPU of
the cluster's processes is shown apart as store CPU. Whatever cannot be installed or
started (RabbitMQ, PostgreSQL) is reported with the reason and the rest still runs.

``--dry-balanced`` runs our router with ``distribution = "balanced"`` on ``queue/`` and no
store instead (phase ``both`` only: a balanced address holds nothing without a
consumer): it checks the script against a router that has no queue support, and is not a
durable measurement.

Every peer runs with ``--timeout`` and every start and wait is bounded; every process
started here is stopped on exit, on an error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
# This file is named like the standard library's `queue`, and running it puts bench/ first on
# the path: load the real `queue` before that, so a library that imports it gets the right one.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
import queue as _stdlib_queue  # noqa: E402, F401
sys.path.insert(0, str(BENCH_DIR))

import _peers  # noqa: E402
import router as bench_router  # noqa: E402
from _peers import LOCALHOST, PeerError, PeerResult  # noqa: E402

QUEUE_NAME = "bench"
SWITCHBOARD_ADDRESS = f"queue/{QUEUE_NAME}"
RABBITMQ_ADDRESS = f"/amq/queue/{QUEUE_NAME}"
REFERENCE = "rabbitmq-classic"
PHASES = ("produce", "drain", "both")
SWITCHBOARD_SYSTEMS = ("sqlite-batch", "sqlite-always", "postgres-batch", "postgres-always")
RABBITMQ_SYSTEMS = ("rabbitmq-classic", "rabbitmq-quorum")
DEFAULT_SYSTEMS = ("rabbitmq-classic", "sqlite-batch", "sqlite-always", "postgres-batch", "postgres-always",
                   "rabbitmq-quorum")
DRY_SYSTEM = "balanced-dry"

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQ_START_TIMEOUT = 60.0
PG_START_TIMEOUT = 60.0

# Target from the issue: with fsync `batch`, at least RabbitMQ's durable rate.
TARGET_RATIO = 1.0


# =============================================================================== processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = bench_router._proc_stat(int(entry))
        except (OSError, ValueError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo and len(out) < 1000:
        kids = _children_of(todo.pop())
        out += kids
        todo += kids
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cpu_seconds(pid: int, with_reaped_children: bool = False) -> float:
    """user+system CPU of a live process (plus its waited-for children's, if asked)."""
    try:
        fields = bench_router._proc_stat(pid)
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _written_bytes(pid: int) -> int:
    """Bytes a live process caused to be written to storage so far (``/proc/PID/io``)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _as_user(user: str) -> list[str]:
    """A command prefix that runs as ``user`` when we are root (initdb refuses root)."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def _chown_for(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class Unavailable(RuntimeError):
    """A system under test cannot be installed or started here; the message says why."""


# --------------------------------------------------------------------------- PostgreSQL


class PostgresCluster:
    """A private PostgreSQL cluster: initdb in a temporary directory, one loopback port."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").is_file():
            raise Unavailable(f"PostgreSQL 15 not found ({PG_BIN}/initdb): make system-deps (apt-get install postgresql)")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root but there is no 'postgres' user to run PostgreSQL as") from None
        self.dir = Path(tempfile.mkdtemp(prefix="sb_qbench-pg-"))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.user = "bench"
        self.started = False
        _chown_for(self.dir, "postgres")
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"], 120.0, "initdb")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses={LOCALHOST} -c max_connections=20 "
                "-c fsync=on -c synchronous_commit=on")
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                   "-t", str(int(PG_START_TIMEOUT)), "start"], PG_START_TIMEOUT + 10, "pg_ctl start")
        self.started = True

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{LOCALHOST}:{self.port}/postgres"

    def _run(self, argv: list[str], timeout: float, what: str) -> None:
        try:
            done = subprocess.run([*_as_user("postgres"), *argv], capture_output=True, text=True, timeout=timeout,
                                  cwd=self.dir, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"{what}: {exc}\n{_tail(self.log)}") from None
        if done.returncode != 0:
            raise Unavailable(f"{what} exited {done.returncode}: {done.stderr[-2000:]}\n{_tail(self.log)}")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cpu_seconds(self) -> float:
        """The cluster's CPU so far: the postmaster with its reaped children, and the live ones."""
        pid = self.postmaster_pid()
        if pid is None:
            return 0.0
        return _cpu_seconds(pid, with_reaped_children=True) + sum(_cpu_seconds(p) for p in _descendants(pid))

    def written_bytes(self) -> int:
        """Bytes the cluster's live processes wrote to storage (WAL, data files)."""
        pid = self.postmaster_pid()
        return 0 if pid is None else sum(_written_bytes(p) for p in [pid, *_descendants(pid)])

    def stop(self) -> None:
        if self.started:
            self.started = False
            with contextlib.suppress(Unavailable):
                self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"],
                          40.0, "pg_ctl stop")
            pid = self.postmaster_pid()
            if pid is not None:  # pg_ctl could not stop it: do not leave it running
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- RabbitMQ


def _rabbit_password_hash(password: str) -> str:
    """RabbitMQ's default ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


class RabbitMQ:
    """A private RabbitMQ node with the AMQP 1.0 plugin and one durable queue."""

    def __init__(self, queue_type: str) -> None:
        if not RABBITMQ_SERVER.is_file():
            raise Unavailable(f"RabbitMQ not found ({RABBITMQ_SERVER}): make bench-deps (apt-get install rabbitmq-server)")
        self.user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("rabbitmq")
                self.user = "rabbitmq"
            except KeyError:
                raise Unavailable("running as root but there is no 'rabbitmq' user to run RabbitMQ as") from None
        self.dir = Path(tempfile.mkdtemp(prefix="sb_qbench-rabbitmq-"))
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.epmd_port = free_port()
        self.log = self.dir / "rabbitmq.log"
        for sub in ("mnesia", "log"):
            (self.dir / sub).mkdir()
        # Guests come in over SASL ANONYMOUS, which the plugin maps to its default user
        # `guest`; definitions loaded at boot replace the default user and vhost, so both are
        # declared here with the queue.
        definitions = {
            "users": [{"name": "guest", "password_hash": _rabbit_password_hash(secrets.token_hex(16)),
                       "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}],
            "vhosts": [{"name": "/"}],
            "permissions": [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
            "queues": [{"name": QUEUE_NAME, "vhost": "/", "durable": True, "auto_delete": False,
                        "arguments": {"x-queue-type": queue_type}}],
        }
        (self.dir / "definitions.json").write_text(json.dumps(definitions))
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {LOCALHOST}:{self.port}\n"
            f"load_definitions = {self.dir / 'definitions.json'}\n"
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_amqp1_0].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        _chown_for(self.dir, self.user or pwd.getpwuid(os.geteuid()).pw_name)
        self.node = f"sbqbench{os.getpid()}@localhost"
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.dir),  # the Erlang cookie goes here, not into the system's
            "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": LOCALHOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": LOCALHOST,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self._log_file: IO[bytes] = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                [str(RABBITMQ_SERVER)], env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
                user=self.user, group=self.user,
            )
        except OSError as exc:
            self._log_file.close()
            raise Unavailable(f"cannot start {RABBITMQ_SERVER}: {exc}") from None
        self.beam_pid: int | None = None
        try:
            self._wait_ready()
        except Unavailable:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + RABBITMQ_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"rabbitmq-server exited with {self.proc.returncode}:\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                raise Unavailable(f"RabbitMQ not ready within {RABBITMQ_START_TIMEOUT:.0f}s:\n{_tail(self.log)}")
            if b"Server startup complete" in self.log.read_bytes():
                break
            time.sleep(0.2)
        _peers.wait_for_port(self.port, 10.0)
        beams = [p for p in [self.proc.pid, *_descendants(self.proc.pid)] if _comm(p) == "beam.smp"]
        if not beams:
            raise Unavailable("RabbitMQ reports ready but no beam.smp process was found")
        self.beam_pid = beams[0]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.beam_pid) if self.beam_pid else 0.0

    def peak_rss_kib(self) -> int:
        return bench_router._proc_status_kib(self.beam_pid, "VmHWM") if self.beam_pid else 0

    def written_bytes(self) -> int:
        return _written_bytes(self.beam_pid) if self.beam_pid else 0

    def log_tail(self) -> str:
        return _tail(self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # SIGTERM makes the node shut down cleanly; the start script passes it on.
            targets = [self.proc.pid, *([self.beam_pid] if self.beam_pid else [])]
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Whatever else the node started in its session (erl_child_setup, inet_gethost).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        # The node started an epmd of its own on a private port; it outlives the node.
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([epmd, "-kill"], env={**self.env}, capture_output=True, timeout=10)
        if not self._log_file.closed:
            self._log_file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- our router


SWITCHBOARD_CONFIG = """
[router]
id = "bench-queue"
data_dir = "{data_dir}"

[[listeners]]
host = "127.0.0.1"
port = 0

[store]
backend = "{backend}"
fsync = "{fsync}"
{dsn_line}
[[addresses]]
prefix = "queue/"
distribution = "queue"
"""

DRY_CONFIG = """
[router]
id = "bench-queue-dry"

[[listeners]]
host = "127.0.0.1"
port = 0

[[addresses]]
prefix = "queue/"
distribution = "balanced"
"""


def switchboard_config(backend: str, fsync: str, data_dir: Path, dsn: str | None) -> str:
    dsn_line = f'dsn = "{dsn}"\n' if dsn else ""
    return SWITCHBOARD_CONFIG.format(data_dir=data_dir, backend=backend, fsync=fsync, dsn_line=dsn_line)


# =============================================================================== systems


@dataclass
class Running:
    """A system under test while it runs: where to connect, what to measure, how to stop."""

    name: str
    port: int
    address: str
    alive: Callable[[], bool]
    cpu_seconds: Callable[[], float]
    peak_rss_kib: Callable[[], int]
    log_tail: Callable[[], str]
    stop: Callable[[], None]
    written_bytes: Callable[[], int]
    """What the server and its store wrote to storage so far: evidence that messages hit the disk."""
    store_cpu_seconds: Callable[[], float] | None = None


def describe_system(name: str) -> str:
    if name == DRY_SYSTEM:
        return "switchboard, balanced address, no store (dry run, not durable)"
    if name.startswith("rabbitmq-"):
        return f"RabbitMQ, durable {name.split('-', 1)[1]} queue, confirms + acks"
    backend, fsync = name.split("-")
    return f"switchboard, {'SQLite' if backend == 'sqlite' else 'PostgreSQL'} store, fsync {fsync}"


def start_system(name: str, args: argparse.Namespace) -> Running:
    if name.startswith("rabbitmq-"):
        rabbit = RabbitMQ(name.split("-", 1)[1])
        return Running(name, rabbit.port, RABBITMQ_ADDRESS, rabbit.alive, rabbit.cpu_seconds, rabbit.peak_rss_kib,
                       rabbit.log_tail, rabbit.stop, rabbit.written_bytes)
    workdir = Path(tempfile.mkdtemp(prefix="sb_qbench-router-"))
    cluster = None
    if name == DRY_SYSTEM:
        config = DRY_CONFIG
    else:
        backend, fsync = name.split("-")
        try:
            cluster = PostgresCluster() if backend == "postgres" else None
        except Unavailable:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        config = switchboard_config(backend, fsync, workdir / "data", cluster.dsn if cluster else None)
    try:
        server, _ = bench_router._start_configured(args.router_cmd, config, 1, 30.0, workdir)
    except PeerError as exc:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise Unavailable(f"our router did not start: {exc}") from None

    def stop() -> None:
        server.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def written_bytes() -> int:
        return _written_bytes(server.pid) + (cluster.written_bytes() if cluster else 0)

    return Running(name, server.port, SWITCHBOARD_ADDRESS, server.alive, server.cpu_seconds, server.peak_rss_kib,
                   server.log_tail, stop, written_bytes, cluster.cpu_seconds if cluster else None)


# =============================================================================== measuring


@dataclass
class Phase:
    """One phase against one system."""

    phase: str
    ok: bool
    count: int
    error: str | None
    rate: float  # messages/s: the producer's (produce), the consumer's (drain), the lower (both)
    send_rate: float | None
    recv_rate: float | None
    accepted_p50_us: float | None  # send -> settled `accepted` (durable)
    accepted_p99_us: float | None
    e2e_p50_us: float | None  # send -> arrival at the consumer
    e2e_p99_us: float | None
    wall: float
    server_cpu: float
    store_cpu: float | None
    client_cpu: float
    written_bytes: int = 0  # by the server and its store during the phase
    extra_received: int = 0  # the consumer got this many more than the phase sent
    ratio: float | None = None  # rate / the reference's rate in the same phase


@dataclass
class SystemResult:
    system: str
    title: str
    phases: list[Phase] = field(default_factory=list)
    peak_rss_kib: int = 0
    error: str | None = None


def _lat(result: dict[str, Any] | None, key: str) -> tuple[float | None, float | None]:
    lat = (result or {}).get(key)
    if not lat:
        return None, None
    return float(lat["p50"]), float(lat["p99"])


def _check(results: Sequence[PeerResult], system: Running) -> str | None:
    problems = [r.describe_failure() for r in results if not r.ok]
    if not system.alive():
        problems.append(f"{system.name} exited\n{system.log_tail()}")
    return "\n".join(problems) or None


def phase_count(system: str, args: argparse.Namespace) -> int:
    return min(args.count, args.always_count) if system.endswith("-always") else args.count


def run_phase(phase: str, system: Running, args: argparse.Namespace) -> Phase:
    bins = _peers.build_sb_peers()
    count = phase_count(system.name, args)
    url = _peers.amqp_url(system.port, system.address)
    t = args.timeout
    send_argv = [str(bins["sb_send"]), "-u", url, "-c", str(count), "-s", str(args.size), "-w", str(args.window),
                 "--durable", "--stamp", "-t", str(t)]
    recv_argv = [str(bins["sb_recv"]), "-u", url, "-c", str(count), "-C", str(args.credit), "--latency",
                 "-t", str(t)]
    store0 = system.store_cpu_seconds() if system.store_cpu_seconds else None
    written0 = system.written_bytes()
    if phase == "both":
        recv = bench_router._ready_file_peer(recv_argv, 15.0)
        cpu0 = system.cpu_seconds()
        send = bench_router._start_peer(send_argv)
        results = [send.wait(t + 5.0), recv.wait(t + 5.0)]
        started = results[0].started_at
    else:
        cpu0 = system.cpu_seconds()
        peer = bench_router._start_peer(send_argv if phase == "produce" else recv_argv)
        results = [peer.wait(t + 5.0)]
        started = results[0].started_at
    cpu1 = system.cpu_seconds()
    store1 = system.store_cpu_seconds() if system.store_cpu_seconds else None
    written = system.written_bytes() - written0
    wall = max(r.ended_at for r in results) - started
    error = _check(results, system)
    sender = next((r.result for r in results if r.result and r.result.get("peer") == "sb_send"), None)
    receiver = next((r.result for r in results if r.result and r.result.get("peer") == "sb_recv"), None)
    if error is None and sender is not None and sender.get("accepted") != count:
        error = f"{sender.get('accepted')} of {count} accepted: {sender}"
    received = int(receiver.get("received") or 0) if receiver else 0
    if error is None and receiver is not None and received < count:
        error = f"received {received} of {count}: {receiver}"
    # More than were sent in the phase: deliveries left over from the phase before (a
    # server that sent a consumer more than its credit gets them back when it leaves).
    extra = max(0, received - count)
    send_rate = float(sender.get("msgs_per_sec") or 0.0) if sender else None
    recv_rate = float(receiver.get("msgs_per_sec") or 0.0) if receiver else None
    rate = min(r for r in (send_rate, recv_rate) if r is not None) if (send_rate or recv_rate) else 0.0
    acc = _lat(sender, "latency_us")
    # In the drain phase the stamps measure how long the backlog waited, not a latency.
    e2e = _lat(receiver, "latency_us") if phase == "both" else (None, None)
    return Phase(
        phase=phase, ok=error is None, count=count, error=error, rate=rate, send_rate=send_rate, recv_rate=recv_rate,
        accepted_p50_us=acc[0], accepted_p99_us=acc[1], e2e_p50_us=e2e[0], e2e_p99_us=e2e[1], wall=wall,
        server_cpu=cpu1 - cpu0, store_cpu=None if store0 is None or store1 is None else store1 - store0,
        client_cpu=sum(r.cpu_seconds for r in results), written_bytes=written, extra_received=extra,
    )


def measure_system(name: str, args: argparse.Namespace, out: IO[str]) -> SystemResult:
    res = SystemResult(name, describe_system(name))
    started = time.monotonic()
    try:
        system = start_system(name, args)
    except Unavailable as exc:
        res.error = str(exc)
        print(f"{name}: not run: {exc}", file=sys.stderr, flush=True)
        return res
    print(f"{name}: started in {time.monotonic() - started:.1f} s ({res.title})", file=out, flush=True)
    try:
        for phase in (("both",) if name == DRY_SYSTEM else PHASES):
            try:
                ph = run_phase(phase, system, args)
            except PeerError as exc:
                ph = Phase(phase, False, phase_count(name, args), str(exc), 0.0, None, None, None, None, None, None, 0.0, 0.0, None, 0.0)
            res.phases.append(ph)
            if not ph.ok:
                print(f"  {name} {phase}: FAILED: {ph.error}", file=sys.stderr, flush=True)
                break  # a later phase would start from a queue in an unknown state
            print(f"  {describe_phase(ph)}", file=out, flush=True)
        if system.alive():
            res.peak_rss_kib = system.peak_rss_kib()
    finally:
        system.stop()
    return res


def compare(results: list[SystemResult]) -> None:
    ref = next((r for r in results if r.system == REFERENCE), None)
    if ref is None:
        return
    base = {p.phase: p for p in ref.phases if p.ok and p.rate}
    for res in results:
        for ph in res.phases:
            if ph.ok and ph.phase in base and res.system != REFERENCE:
                ph.ratio = ph.rate / base[ph.phase].rate


# =============================================================================== reporting


def _ms(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / 1000:.2f} / {b / 1000:.2f}"


def describe_phase(ph: Phase) -> str:
    store = "" if ph.store_cpu is None else f", store CPU {ph.store_cpu:.2f} s"
    return (f"{ph.phase:<8} {ph.rate:>9,.0f} msg/s; accepted p50/p99 {_ms(ph.accepted_p50_us, ph.accepted_p99_us)} ms; "
            f"end-to-end p50/p99 {_ms(ph.e2e_p50_us, ph.e2e_p99_us)} ms; server CPU {ph.server_cpu:.2f} s "
            f"in {ph.wall:.2f} s{store}; wrote {ph.written_bytes / 2**20:.1f} MiB; clients CPU {ph.client_cpu:.2f} s"
            + (f"; the consumer got {ph.extra_received} more than were sent (left over from before)"
               if ph.extra_received else ""))


def table(results: list[SystemResult]) -> str:
    lines = [
        "| system | phase | messages | msg/s | vs RabbitMQ classic | accepted p50 / p99 ms | end-to-end p50 / p99 ms "
        "| server CPU µs/msg | store CPU µs/msg | written KiB/msg | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        if res.error is not None and not res.phases:
            lines.append(f"| {res.system} | - | - | not run | - | - | - | - | - | - | - |")
            continue
        for ph in res.phases:
            if not ph.ok:
                lines.append(f"| {res.system} | {ph.phase} | {ph.count} | FAILED | - | - | - | - | - | - | - |")
                continue
            ratio = "-" if ph.ratio is None else f"{ph.ratio:.2f}x"
            count = ph.count
            store = "-" if ph.store_cpu is None else f"{1e6 * ph.store_cpu / count:.0f}"
            lines.append(
                f"| {res.system} | {ph.phase} | {count:,} | {ph.rate:,.0f} | {ratio} | {_ms(ph.accepted_p50_us, ph.accepted_p99_us)} "
                f"| {_ms(ph.e2e_p50_us, ph.e2e_p99_us)} | {1e6 * ph.server_cpu / count:.0f} | {store} "
                f"| {ph.written_bytes / 1024 / count:.2f} | {res.peak_rss_kib / 1024:.1f} |"
            )
    return "\n".join(lines)


def targets(results: list[SystemResult]) -> list[dict[str, Any]]:
    verdicts = []
    for res in results:
        if not res.system.endswith("-batch"):
            continue
        both = next((p for p in res.phases if p.phase == "both" and p.ok), None)
        verdicts.append({
            "target": f"{res.system}: enqueue+dequeue msg/s >= {TARGET_RATIO:.1f}x RabbitMQ (durable classic queue)",
            "value": "-" if both is None or both.ratio is None else f"{both.ratio:.2f}x",
            "met": both is not None and both.ratio is not None and both.ratio >= TARGET_RATIO,
        })
    return verdicts


# =============================================================================== main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=20_000, help="messages per phase (default 20000)")
    p.add_argument("--always-count", type=int, default=5_000,
                   help="messages per phase for the fsync `always` systems, one sync per message (default 5000, "
                        "at most --count): keeps a default run short")
    p.add_argument("--size", type=int, default=1024, help="body bytes (default 1024)")
    p.add_argument("--window", type=int, default=200, help="producer's unsettled deliveries in flight (default 200)")
    p.add_argument("--credit", type=int, default=200, help="consumer's credit (default 200)")
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help=f"comma-separated, in order (default {','.join(DEFAULT_SYSTEMS)})")
    p.add_argument("--skip-rabbitmq", action="store_true", help="leave RabbitMQ out")
    p.add_argument("--dry-balanced", action="store_true",
                   help="our router with a balanced (not durable) queue/ address instead of the store-backed ones")
    p.add_argument("--timeout", type=float, default=60.0, help="bound on each peer, seconds (default 60)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout (the rest goes to stderr)")
    p.add_argument("--router-cmd", type=lambda s: s.split(), default=None,
                   help="command that runs the switchboard CLI (default: the venv's switchboard)")
    args = p.parse_args(argv)
    if args.router_cmd is None:
        args.router_cmd = bench_router._default_router_cmd()
    if args.size < 16:
        p.error("--size must be at least 16 (the body carries a timestamp)")
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in (*SWITCHBOARD_SYSTEMS, *RABBITMQ_SYSTEMS)]
    if unknown:
        p.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join((*SWITCHBOARD_SYSTEMS, *RABBITMQ_SYSTEMS))}")
    if args.dry_balanced:
        # One balanced run stands for every store-backed one.
        first = next((i for i, s in enumerate(systems) if s in SWITCHBOARD_SYSTEMS), len(systems))
        systems = [s for s in systems if s not in SWITCHBOARD_SYSTEMS]
        systems.insert(min(first, len(systems)), DRY_SYSTEM)
    if args.skip_rabbitmq:
        systems = [s for s in systems if s not in RABBITMQ_SYSTEMS]
    args.system_list = systems
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    info = bench_router.machine()
    _peers.build_sb_peers()

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(
        f"count={args.count} always_count={args.always_count} size={args.size} window={args.window} credit={args.credit} "
        f"systems={','.join(args.system_list)}; {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"load average {' '.join(info['loadavg_at_start'])}, commit {info['commit']}"
        + (f" + uncommitted changes to {', '.join(info['dirty_files'])}" if info["dirty_files"] else ""),
        file=out, flush=True,
    )
    started = time.monotonic()
    results: list[SystemResult] = []
    interrupted = False
    try:
        for name in args.system_list:
            results.append(measure_system(name, args, out))
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping every process started here", file=sys.stderr)
    finally:
        bench_router.cleanup()
    compare(results)
    elapsed = time.monotonic() - started
    print(f"\n{args.count:,} messages of {args.size} B per phase (fsync `always`: "
          f"{min(args.count, args.always_count):,}); {elapsed:.0f} s in all", file=out)
    print(table(results), file=out)
    verdicts = targets(results)
    if verdicts:
        print("\ntargets:", file=out)
        for v in verdicts:
            print(f"  [{'met' if v['met'] else 'NOT met'}] {v['target']}: {v['value']}", file=out)
    not_run = [r for r in results if r.error is not None and not r.phases]
    for res in not_run:
        print(f"\nnot run: {res.system}: {res.error.splitlines()[0]}", file=out)
    if args.json:
        doc = {
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "machine": info,
            "elapsed_seconds": elapsed,
            "results": [asdict(r) for r in results],
            "targets": verdicts,
        }
        json.dump(doc, sys.stdout, indent=1, default=str)
        print()
    if interrupted:
        return 130
    failed = [r for r in results if any(not p.ok for p in r.phases)]
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        bench_router.cleanup()
