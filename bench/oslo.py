"""oslo.messaging benchmark: the switchboard driver against the rabbit driver, side by side.

    .venv/bin/python bench/oslo.py [--seconds 2.5] [--skip-rabbitmq] [--json]

Both systems run the same workload through oslo.messaging's public API (threading
executor), one after the other:

* ``switchboard``: one ``switchboard router`` with the embedded defaults (the addresses
  the driver uses, ``notify/`` queues on SQLite in a temporary directory);
  ``transport_url = switchboard://127.0.0.1:PORT/``.
* ``rabbit``: Debian's ``rabbitmq-server`` (``make bench-deps``), started here as a child
  process (as the ``rabbitmq`` user when run as root) with its own temporary directories,
  node name, ports on 127.0.0.1 and a user of its own; ``transport_url =
  rabbit://bench:bench@127.0.0.1:PORT/``.

Three RPC server processes (``s1``, ``s2``, ``s3`` on topic ``bench``; ``s1`` also runs a
notification listener) serve each system; the measuring client is this process.  Phases,
each ``--seconds`` long:

* ``call``: N threads (1, 8, 32) each calling ``echo`` in a loop with a small (16 B) or a
  10 KiB payload (the reply carries it back): calls/s, p50 and p99 latency;
* ``cast``: 8 threads casting a small payload to the topic; the rate counts until the
  servers have received every cast (asked by a call to each server);
* ``fanout``: one thread casting a small payload with ``fanout=True``; deliveries/s
  until all three servers have every copy;
* ``notify``: 8 threads sending ``info`` notifications; the rate counts until the
  listener has handled every one.

The ratio column is switchboard / rabbit for rates, rabbit / switchboard for latencies
(above 1: switchboard is better).  Targets from the issue: calls/s at least 2x rabbit's
at 8 and 32 callers, and p50 call latency at most half of rabbit's.

Every process started here is stopped on exit, on an error and on Ctrl-C; every wait is
bounded.  The machine's other load shows in the numbers: run it on a quiet machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Running this file puts bench/ first on the path, where bench/queue.py would stand in for
# the standard library's queue (which oslo.messaging's dependencies import).  Nothing here
# needs bench/ on the path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import IO, Any, Callable  # noqa: E402

LOCALHOST = "127.0.0.1"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT = 60.0
DRAIN_TIMEOUT = 60.0
"""Seconds to wait for servers to receive what was cast or notified."""
SERVERS = ("s1", "s2", "s3")
TOPIC = "bench"
SMALL = "x" * 16
LARGE = "x" * 10240
CALLERS = (1, 8, 32)
CASTERS = 8
NOTIFIERS = 8


class Unavailable(RuntimeError):
    """A system cannot be started here; the message says why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return int(probe.getsockname()[1])


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((LOCALHOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise Unavailable(f"nothing listens on {LOCALHOST}:{port} after {timeout:.0f} s") from None
            time.sleep(0.1)


# ================================================================================ brokers
class SwitchboardRouter:
    """``switchboard router`` with the embedded defaults, on a free port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sb_oslobench-"))
        self.port = free_port()
        self.log = self.dir / "router.log"
        self._log_file: IO[bytes] = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        command = [str(Path(sys.executable).with_name("switchboard")), "router",
                   "--listen", f"{LOCALHOST}:{self.port}", "--data-dir", str(self.dir / "data")]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        try:
            wait_for_port(self.port, START_TIMEOUT)
        except Unavailable:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"switchboard://{LOCALHOST}:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RabbitMQ:
    """A private RabbitMQ node with a user of its own, for the rabbit driver (AMQP 0-9-1)."""

    def __init__(self) -> None:
        if not RABBITMQ_SERVER.is_file():
            raise Unavailable(f"RabbitMQ not found ({RABBITMQ_SERVER}): make bench-deps")
        self.user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("rabbitmq")
            except KeyError:
                raise Unavailable("running as root but there is no 'rabbitmq' user to run RabbitMQ as") from None
            self.user = "rabbitmq"
        self.dir = Path(tempfile.mkdtemp(prefix="sb_oslobench-rabbitmq-"))
        os.chmod(self.dir, 0o755)
        for sub in ("mnesia", "log"):
            (self.dir / sub).mkdir()
        self.port = free_port()
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {LOCALHOST}:{self.port}\n"
            "default_user = bench\ndefault_pass = bench\nloopback_users = none\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
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
            "RABBITMQ_NODENAME": f"sboslobench{os.getpid()}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": LOCALHOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": str(free_port()),
            "ERL_EPMD_ADDRESS": LOCALHOST,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.log = self.dir / "rabbitmq.log"
        self._log_file: IO[bytes] = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                [str(RABBITMQ_SERVER)], env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
                user=self.user, group=self.user)
        except OSError as exc:
            self._log_file.close()
            raise Unavailable(f"cannot start {RABBITMQ_SERVER}: {exc}") from None
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while b"Server startup complete" not in self.log.read_bytes():
                if self.proc.poll() is not None:
                    raise Unavailable(f"rabbitmq-server exited with {self.proc.returncode}:\n{_tail(self.log)}")
                if time.monotonic() > deadline:
                    raise Unavailable(f"RabbitMQ not ready within {START_TIMEOUT:.0f} s:\n{_tail(self.log)}")
                time.sleep(0.2)
            wait_for_port(self.port, 10.0)
        except Unavailable:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"rabbit://bench:bench@{LOCALHOST}:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        # The node's helpers (epmd, erl_child_setup) live in its session.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([epmd, "-kill"], env=self.env, capture_output=True, timeout=10)
        self._log_file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ========================================================================= server process
def serve(url: str, name: str, notifications: bool) -> None:
    """An RPC server (and optionally a notification listener) until stdin closes."""
    import oslo_messaging
    from oslo_config import cfg

    counts: dict[str, int] = {}
    lock = threading.Lock()

    def count(tag: str) -> None:
        with lock:
            counts[tag] = counts.get(tag, 0) + 1

    class Endpoint:
        def echo(self, ctxt: Any, payload: str) -> str:
            return payload

        def note(self, ctxt: Any, tag: str, payload: str) -> None:
            count(tag)

        def seen(self, ctxt: Any, tag: str) -> int:
            with lock:
                return counts.get(tag, 0)

    class Listener:
        def info(self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any) -> None:
            count(payload["tag"])

    conf = cfg.CONF
    conf([], project="oslo-bench")
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    server = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic=TOPIC, server=name),
                                           [Endpoint()], executor="threading")
    server.start()
    listener = None
    if notifications:
        notify_transport = oslo_messaging.get_notification_transport(conf, url=url)
        listener = oslo_messaging.get_notification_listener(
            notify_transport, [oslo_messaging.Target(topic=TOPIC)], [Listener()], executor="threading")
        listener.start()
    print("ready", flush=True)
    sys.stdin.read()  # the benchmark closes our stdin to stop us
    for running in (server, listener):
        if running is not None:
            running.stop()
            running.wait()
    transport.cleanup()


class ServerProcess:
    def __init__(self, url: str, name: str, notifications: bool) -> None:
        command = [sys.executable, "-W", "ignore", __file__, "--serve", url, name]
        if notifications:
            command.append("--notifications")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def wait_ready(self) -> None:
        ready = threading.Event()

        def read() -> None:
            if self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready":
                ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT):
            self.stop()
            raise Unavailable("an RPC server process did not start")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# =============================================================================== measuring
def run_threads(count: int, seconds: float, work: Callable[[], None]) -> tuple[int, float, list[float]]:
    """``count`` threads doing ``work`` until ``seconds`` pass: (operations, elapsed, latencies)."""
    latencies: list[list[float]] = [[] for _ in range(count)]
    errors: list[BaseException] = []
    start = time.perf_counter()
    stop_at = start + seconds

    def loop(index: int) -> None:
        mine = latencies[index]
        try:
            while True:
                began = time.perf_counter()
                if began >= stop_at:
                    return
                work()
                mine.append(time.perf_counter() - began)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} operations failed, the first: {errors[0]!r}")
    flat = [value for per_thread in latencies for value in per_thread]
    return len(flat), elapsed, flat


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wait_seen(clients: dict[str, Any], tag: str, expected: int, start: float) -> float:
    """Seconds from ``start`` until the servers report ``expected`` messages tagged ``tag``."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        seen = sum(client.call({}, "seen", tag=tag) for client in clients.values())
        if seen >= expected:
            return time.perf_counter() - start
        if time.monotonic() > deadline:
            raise RuntimeError(f"{tag}: the servers got {seen} of {expected} within {DRAIN_TIMEOUT:.0f} s")
        time.sleep(0.02)


def measure(url: str, seconds: float) -> dict[str, float]:
    import oslo_messaging
    from oslo_config import cfg

    conf = cfg.CONF
    results: dict[str, float] = {}
    servers = [ServerProcess(url, name, notifications=(name == "s1")) for name in SERVERS]
    transport = notify_transport = None
    try:
        for server in servers:
            server.wait_ready()
        transport = oslo_messaging.get_rpc_transport(conf, url=url)
        client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=TOPIC), timeout=60)
        direct = {name: client.prepare(server=name) for name in SERVERS}
        for name in SERVERS:
            direct[name].call({}, "echo", payload="warm-up")

        for size_name, payload in (("small", SMALL), ("10KiB", LARGE)):
            for callers in CALLERS:
                done, elapsed, latencies = run_threads(callers, seconds, lambda: client.call({}, "echo", payload=payload))
                key = f"call {size_name} x{callers}"
                results[f"{key} calls/s"] = done / elapsed
                results[f"{key} p50 ms"] = percentile(latencies, 0.50) * 1000
                results[f"{key} p99 ms"] = percentile(latencies, 0.99) * 1000
                print(f"  {key}: {done / elapsed:8.0f} calls/s  p50 {results[f'{key} p50 ms']:.2f} ms"
                      f"  p99 {results[f'{key} p99 ms']:.2f} ms", flush=True)

        start = time.perf_counter()
        sent, _, _ = run_threads(CASTERS, seconds, lambda: client.cast({}, "note", tag="cast", payload=SMALL))
        results["casts/s"] = sent / wait_seen(direct, "cast", sent, start)
        print(f"  cast x{CASTERS}: {results['casts/s']:8.0f} casts/s (received)", flush=True)

        fanout = client.prepare(fanout=True)
        start = time.perf_counter()
        sent, _, _ = run_threads(1, seconds, lambda: fanout.cast({}, "note", tag="fanout", payload=SMALL))
        results["fanout deliveries/s"] = 3 * sent / wait_seen(direct, "fanout", 3 * sent, start)
        print(f"  fanout to 3: {results['fanout deliveries/s']:8.0f} deliveries/s", flush=True)

        notify_transport = oslo_messaging.get_notification_transport(conf, url=url)
        notifier = oslo_messaging.Notifier(notify_transport, publisher_id="bench", driver="messaging",
                                           topics=[TOPIC])
        notifier.info({}, "bench.warmup", {"tag": "warm-up"})
        start = time.perf_counter()
        sent, _, _ = run_threads(NOTIFIERS, seconds, lambda: notifier.info({}, "bench.event", {"tag": "notify"}))
        results["notifications/s"] = sent / wait_seen({"s1": direct["s1"]}, "notify", sent, start)
        print(f"  notify x{NOTIFIERS}: {results['notifications/s']:8.0f} notifications/s (handled)", flush=True)
    finally:
        for used in (transport, notify_transport):
            if used is not None:
                used.cleanup()
        for server in servers:
            server.stop()
    return results


def report(results: dict[str, dict[str, float]]) -> None:
    systems = list(results)
    keys = [key for key in results[systems[0]]]
    header = f"{'measure':<28}" + "".join(f"{system:>14}" for system in systems)
    if len(systems) == 2:
        header += f"{'ratio':>10}"
    print("\n" + header)
    for key in keys:
        row = f"{key:<28}" + "".join(f"{results[system].get(key, float('nan')):>14.1f}" for system in systems)
        if len(systems) == 2:
            ours, theirs = results[systems[0]].get(key), results[systems[1]].get(key)
            if ours and theirs:
                ratio = theirs / ours if key.endswith(" ms") else ours / theirs
                row += f"{ratio:>9.2f}x"
        print(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="length of each phase")
    parser.add_argument("--skip-rabbitmq", action="store_true", help="measure the switchboard driver only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    parser.add_argument("--serve", nargs=2, metavar=("URL", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--notifications", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], args.notifications)
        return 0

    from oslo_config import cfg

    cfg.CONF([], project="oslo-bench")
    results: dict[str, dict[str, float]] = {}
    systems: list[tuple[str, Callable[[], Any]]] = [("switchboard", SwitchboardRouter)]
    if not args.skip_rabbitmq:
        systems.append(("rabbit", RabbitMQ))
    for name, start in systems:
        print(f"{name}:", flush=True)
        try:
            broker = start()
        except Unavailable as exc:
            print(f"  unavailable: {exc}", flush=True)
            continue
        try:
            results[name] = measure(broker.url, args.seconds)
        finally:
            broker.stop()
    if results:
        report(results)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
