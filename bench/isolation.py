"""Isolation benchmark: does a hostile client slow anyone else down, or blow up the router?

    .venv/bin/python bench/isolation.py [--only KIND,...] [--seconds 10] [--warmup 2] [--repeat 1]
                                        [--json] [--rss-guard-mib 2048] [--hostile-args "..."]

For each case a fresh router is started (``switchboard router --listen 127.0.0.1:0``, a
real process, default configuration). Two clients then measure request/response beside
it: the compiled Proton C peers ``sb_echo`` (the server, replies over the anonymous
relay) and ``sb_rpc`` (one call in flight, a dynamic reply address, 100-byte bodies),
which calls for ``--seconds`` and reports round-trip percentiles. The case ``alone`` has
nothing else connected; every other case first starts one kind of ``bench/hostile.py``
in its own process, waits until all its connections are set up, lets it run for
``--warmup`` seconds and keeps it running while the calls are measured:

* ``credit-hog``: a consumer granting 1,000,000 credit and reading one message a second,
  two senders pushing 1 KiB messages at it with up to 100,000 unsettled each;
* ``closed-window``: the same, the consumer's session incoming window kept at 0;
* ``presettled-flood``: two senders flooding presettled 1 KiB messages, one fast consumer;
* ``multicast-flood``: two senders flooding a ``multicast/`` address, one fast and one slow
  consumer;
* ``heartbeat-demand``: 300 connections asking for a 1 ms idle time-out;
* ``tricklers``: 500 sockets trickling one byte a second into a frame.

The router's resident memory is sampled (psutil, every 50 ms) from its start to its stop;
the peak reported is the larger of the samples and the kernel's high-water mark
(``VmHWM``). If it passes ``--rss-guard-mib`` the router is killed, so that a run can
never take the machine's memory, and the case fails.

Targets (issue 6): p99 within 1.5x of ``alone``; router peak RSS under 256 MiB in every
case. A case also fails if the router dies, if the calls fail, or if a hostile sender is
left without the outcome of a delivery (``lost``: every sender must learn every outcome).
``--repeat N`` runs every case N times, round by round (alone, then each kind), and
reports the run with the median p99; peak RSS is the largest of the N.

Every process started here is bounded in time and stopped on exit, on an error, on
Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import _peers  # noqa: E402
import router as router_bench  # noqa: E402  (bench/router.py: router process, peers, cleanup)
from _peers import LOCALHOST, PeerError  # noqa: E402

ALONE = "alone"
HOSTILE_KINDS = ("credit-hog", "closed-window", "presettled-flood", "multicast-flood", "heartbeat-demand", "tricklers")
CASES = (ALONE, *HOSTILE_KINDS)

TARGET_P99_RATIO = 1.5
TARGET_RSS_MIB = 256.0

RSS_SAMPLE_SECONDS = 0.05
RPC_COUNT = 10_000_000
"""sb_rpc stops at ``--seconds``; the count only has to be out of reach."""
HOSTILE_SETUP_SECONDS = 45.0
HOSTILE_STOP_SECONDS = 25.0
"""A hostile run winds down on SIGTERM: senders wait up to 5 s for outcomes, closes 2 s."""


# =============================================================================== memory


class RssSampler:
    """Samples a process's RSS on a thread; kills it past ``guard_kib`` (and says so)."""

    def __init__(self, pid: int, guard_kib: int) -> None:
        self.process = psutil.Process(pid)
        self.guard_kib = guard_kib
        self.peak_kib = 0
        self.samples = 0
        self.tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss_kib = self.process.memory_info().rss // 1024
            except psutil.Error:
                return
            self.samples += 1
            if rss_kib > self.peak_kib:
                self.peak_kib = rss_kib
            if rss_kib > self.guard_kib and not self.tripped:
                self.tripped = True
                try:
                    self.process.kill()
                except psutil.Error:
                    pass
                return
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


# =============================================================================== one run


@dataclass
class Run:
    case: str
    ok: bool
    problems: list[str]
    p50_us: float | None
    p99_us: float | None
    calls_per_sec: float
    calls: int
    peak_rss_kib: int
    router_cpu_pct: float
    rss_guard_tripped: bool
    router_alive: bool
    lost: int | None
    rpc: dict[str, Any] | None = None
    echo: dict[str, Any] | None = None
    hostile: dict[str, Any] | None = None
    hostile_setup_seconds: float | None = None
    hostile_cpu_pct: float | None = None
    """The hostile process's own CPU over its life, % of one CPU: on a small machine its
    load is part of what the calls compete with."""


@dataclass
class Settings:
    seconds: float
    warmup: float
    rpc_size: int
    echo_credit: int
    rss_guard_kib: int
    hostile_args: list[str]
    router_cmd: list[str]


def _hostile_argv(kind: str, port: int, st: Settings) -> list[str]:
    bound = st.warmup + st.seconds + 30.0  # a bound only: it is stopped with SIGTERM before
    return [sys.executable, str(BENCH_DIR / "hostile.py"), kind, "--url", f"amqp://{LOCALHOST}:{port}",
            "--seconds", f"{bound:g}", *st.hostile_args]


def run_case(case: str, st: Settings) -> Run:
    """One fresh router, the two measuring peers and (unless ``alone``) one hostile kind."""
    bins = _peers.build_sb_peers()
    problems: list[str] = []
    server = router_bench.start_switchboard(st.router_cmd)
    sampler = RssSampler(server.pid, st.rss_guard_kib)
    hostile = echo = None
    rpc_result = echo_result = hostile_result = None
    setup_seconds = None
    rpc: dict[str, Any] = {}
    router_cpu_pct = 0.0
    try:
        service = f"isolation-{case}"
        url = _peers.amqp_url(server.port, service)
        bound = st.warmup + st.seconds + HOSTILE_SETUP_SECONDS + 60.0
        echo = router_bench._ready_file_peer(
            [str(bins["sb_echo"]), "-u", url, "-c", "0", "-C", str(st.echo_credit), "--anonymous", "-t", f"{bound:g}"],
            10.0,
        )
        if case != ALONE:
            started = time.monotonic()
            hostile = router_bench._ready_file_peer(_hostile_argv(case, server.port, st), HOSTILE_SETUP_SECONDS)
            setup_seconds = time.monotonic() - started
            # Let the hostile client reach its full effect (buffers filled, floods running).
            deadline = time.monotonic() + st.warmup
            while time.monotonic() < deadline and server.alive() and hostile.running():
                time.sleep(0.05)
        cpu0, t0 = server.cpu_seconds() if server.alive() else 0.0, time.monotonic()
        caller = router_bench._start_peer(
            [str(bins["sb_rpc"]), "-u", url, "-c", str(RPC_COUNT), "-k", "1", "-s", str(st.rpc_size),
             "-t", f"{st.seconds:g}"]
        )
        rpc_result = caller.wait(st.seconds + 10.0)
        if server.alive():
            router_cpu_pct = 100.0 * (server.cpu_seconds() - cpu0) / max(1e-9, time.monotonic() - t0)
        rpc = rpc_result.result or {}
        # sb_rpc runs until its timeout by design: the error "timeout" is its normal end.
        if rpc_result.result is None:
            problems.append(f"sb_rpc printed no result:\n{rpc_result.describe_failure()}")
        elif not rpc.get("ok") and rpc.get("error") != "timeout":
            problems.append(f"sb_rpc: {rpc.get('error')}")
        elif rpc.get("failed") or rpc.get("unmatched"):
            problems.append(f"sb_rpc: {rpc.get('failed')} calls failed, {rpc.get('unmatched')} replies unmatched")
        if not rpc.get("replied"):
            problems.append("no call was answered")
    except PeerError as exc:
        problems.append(str(exc))
    finally:
        if hostile is not None:
            hostile_result = hostile.stop(HOSTILE_STOP_SECONDS)
        if echo is not None:
            echo_result = echo.stop(5.0)
        sampler.stop()
        alive = server.alive()
        peak_kib = max(sampler.peak_kib, server.peak_rss_kib() if alive else 0)
        if not alive and not sampler.tripped:
            problems.append(f"the router exited with {server.proc.returncode}:\n{server.log_tail()}")
        server.stop()
    if sampler.tripped:
        problems.append(f"router RSS passed the guard of {st.rss_guard_kib // 1024} MiB: killed")
    hostile_doc = hostile_result.result if hostile_result is not None else None
    lost = None
    if hostile_result is not None:
        if hostile_doc is None:
            problems.append(f"hostile.py printed no result:\n{hostile_result.describe_failure()}")
        else:
            lost = int(hostile_doc.get("lost_without_outcome") or 0)
            if hostile_doc.get("error"):
                problems.append(f"hostile.py: {hostile_doc['error']}")
    latency = rpc.get("rtt_us") or {}
    return Run(
        case=case,
        ok=not problems,
        problems=problems,
        p50_us=latency.get("p50"),
        p99_us=latency.get("p99"),
        calls_per_sec=float(rpc.get("calls_per_sec") or 0.0),
        calls=int(rpc.get("replied") or 0),
        peak_rss_kib=peak_kib,
        router_cpu_pct=router_cpu_pct,
        rss_guard_tripped=sampler.tripped,
        router_alive=alive,
        lost=lost,
        rpc=rpc_result.result if rpc_result is not None else None,
        echo=echo_result.result if echo_result is not None else None,
        hostile=hostile_doc,
        hostile_setup_seconds=setup_seconds,
        hostile_cpu_pct=(100.0 * hostile_result.cpu_seconds / hostile_result.wall_seconds
                         if hostile_result is not None and hostile_result.wall_seconds > 0 else None),
    )


# =============================================================================== verdicts


@dataclass
class CaseResult:
    case: str
    runs: list[Run]
    shown: Run | None  # the run with the median p99
    peak_rss_kib: int  # the largest of the runs
    ratio: float | None = None  # shown p99 / alone's shown p99
    verdict: str = "FAIL"
    reasons: list[str] = field(default_factory=list)


def summarize(case: str, runs: list[Run]) -> CaseResult:
    measured = sorted((r for r in runs if r.p99_us is not None), key=lambda r: r.p99_us or 0.0)
    shown = measured[len(measured) // 2] if measured else None
    return CaseResult(case, runs, shown, max((r.peak_rss_kib for r in runs), default=0))


def judge(results: list[CaseResult]) -> None:
    alone = next((r for r in results if r.case == ALONE), None)
    base = alone.shown.p99_us if alone is not None and alone.shown is not None else None
    for res in results:
        reasons = []
        if res.shown is None:
            reasons.append("no measurement")
        elif base:
            res.ratio = (res.shown.p99_us or 0.0) / base
            if res.ratio > TARGET_P99_RATIO:
                reasons.append(f"p99 {res.ratio:.2f}x alone > {TARGET_P99_RATIO}x")
        else:
            reasons.append("no p99 alone to compare with")
        if res.peak_rss_kib >= TARGET_RSS_MIB * 1024:
            reasons.append(f"RSS {res.peak_rss_kib / 1024:.0f} MiB >= {TARGET_RSS_MIB:.0f} MiB")
        lost = sum(r.lost or 0 for r in res.runs)
        if lost:
            in_doubt = sum(int((r.hostile or {}).get("lost_in_doubt") or 0) for r in res.runs)
            reasons.append(f"{lost} deliveries without an outcome"
                           + (f" ({in_doubt} of them when their connection or link ended)" if in_doubt else ""))
        for run in res.runs:
            for problem in run.problems:
                first_line = problem.splitlines()[0] if problem else problem
                if first_line not in reasons:
                    reasons.append(first_line)
        res.reasons = reasons
        res.verdict = "PASS" if not reasons else "FAIL"


# =============================================================================== reporting


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _hostile_line(doc: dict[str, Any] | None) -> str:
    """What the hostile client did and was told, in one line."""
    if not doc:
        return ""
    parts = [f"{doc.get('connections_set_up')}/{doc.get('connections')} connections set up in "
             f"{doc.get('setup_seconds')} s"]
    for role, totals in (doc.get("roles") or {}).items():
        shown = ", ".join(f"{k} {v:,}" for k, v in totals.items() if k != "connections" and v)
        parts.append(f"{totals.get('connections')} {role}{'s' if totals.get('connections', 0) > 1 else ''}"
                     + (f" ({shown})" if shown else ""))
    for key, value in (doc.get("counts") or {}).items():
        if key != "connections opened":
            parts.append(f"{key}: {value:,}")
    said = doc.get("router_said") or {}
    if said:
        parts.append("router said: " + "; ".join(f"{k} x{v}" for k, v in said.items()))
    parts.append(f"lost without outcome: {doc.get('lost_without_outcome')}")
    return "; ".join(parts)


def table(results: list[CaseResult]) -> str:
    lines = [
        "| case | p50 µs | p99 µs | p99 / alone | calls/s | router peak RSS MiB | router CPU % | hostile CPU % "
        "| lost | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for res in results:
        run = res.shown
        lost = sum(r.lost or 0 for r in res.runs) if res.case != ALONE else None
        verdict = res.verdict + (f" ({'; '.join(res.reasons)})" if res.reasons else "")
        lines.append(
            f"| {res.case} | {_us(run.p50_us if run else None)} | {_us(run.p99_us if run else None)} | "
            f"{'-' if res.ratio is None else f'{res.ratio:.2f}x'} | "
            f"{'-' if run is None else f'{run.calls_per_sec:,.0f}'} | {res.peak_rss_kib / 1024:.0f} | "
            f"{'-' if run is None else f'{run.router_cpu_pct:.0f}'} | "
            f"{'-' if run is None or run.hostile_cpu_pct is None else f'{run.hostile_cpu_pct:.0f}'} | "
            f"{'-' if lost is None else lost} | {verdict} |"
        )
    return "\n".join(lines)


def describe_run(run: Run) -> str:
    head = (f"{run.case:<17} p50/p99 {_us(run.p50_us)}/{_us(run.p99_us)} µs, {run.calls:,} calls "
            f"({run.calls_per_sec:,.0f}/s), router peak RSS {run.peak_rss_kib / 1024:.0f} MiB, "
            f"router CPU {run.router_cpu_pct:.0f}%")
    if run.hostile_setup_seconds is not None:
        cpu = "" if run.hostile_cpu_pct is None else f" (its own CPU {run.hostile_cpu_pct:.0f}%)"
        head += f"\n    hostile{cpu}: {_hostile_line(run.hostile)}"
    for problem in run.problems:
        head += f"\n    problem: {problem}"
    return head


# =============================================================================== main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="",
                   help=f"comma-separated hostile kinds ({', '.join(HOSTILE_KINDS)}); 'alone' always runs")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of calls measured per case (default 10)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds a hostile client runs before the calls start (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="runs per case; the run with the median p99 is shown")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout (the rest to stderr)")
    p.add_argument("--rpc-size", type=int, default=100, help="request body bytes (default 100)")
    p.add_argument("--echo-credit", type=int, default=100, help="sb_echo's request credit (default 100)")
    p.add_argument("--rss-guard-mib", type=int, default=2048,
                   help="kill the router if its RSS passes this (default 2048 MiB): protects the machine")
    p.add_argument("--hostile-args", type=shlex.split, default=[],
                   help='extra options for every hostile.py run, e.g. "--senders 4 --window 20000"')
    p.add_argument("--router-cmd", type=shlex.split, default=None,
                   help="command that runs the switchboard CLI (default: the venv's switchboard)")
    args = p.parse_args(argv)
    chosen = [k for k in args.only.split(",") if k and k != ALONE]
    unknown = [k for k in chosen if k not in HOSTILE_KINDS]
    if unknown:
        p.error(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(HOSTILE_KINDS)}")
    args.cases = [ALONE, *(chosen if args.only else HOSTILE_KINDS)]
    if args.seconds <= 0 or args.warmup < 0 or args.repeat < 1:
        p.error("--seconds must be positive, --warmup not negative, --repeat at least 1")
    if args.router_cmd is None:
        args.router_cmd = router_bench._default_router_cmd()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: IO[str] = sys.stderr if args.json else sys.stdout
    st = Settings(args.seconds, args.warmup, args.rpc_size, args.echo_credit, args.rss_guard_mib * 1024,
                  args.hostile_args, args.router_cmd)
    info = router_bench.machine()
    _peers.build_sb_peers()

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"cases: {', '.join(args.cases)}; {args.seconds:g} s of calls each after {args.warmup:g} s of warm-up, "
          f"repeat {args.repeat}; {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
          f"load average {' '.join(info['loadavg_at_start'])}, commit {info['commit']}"
          + (f" + uncommitted changes to {', '.join(info['dirty_files'])}" if info["dirty_files"] else ""),
          file=out, flush=True)
    started = time.monotonic()
    runs: dict[str, list[Run]] = {case: [] for case in args.cases}
    interrupted = False
    try:
        for _ in range(args.repeat):
            for case in args.cases:
                try:
                    run = run_case(case, st)
                except PeerError as exc:  # the router did not start
                    run = Run(case, False, [str(exc)], None, None, 0.0, 0, 0, 0.0, False, False, None)
                finally:
                    router_bench.cleanup()
                runs[case].append(run)
                print(describe_run(run), file=out, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping every process started here", file=sys.stderr)
    finally:
        router_bench.cleanup()
    results = [summarize(case, runs[case]) for case in args.cases if runs[case]]
    judge(results)
    elapsed = time.monotonic() - started
    print(f"\n{elapsed:.0f} s in all; targets: p99 <= {TARGET_P99_RATIO}x alone, router peak RSS < "
          f"{TARGET_RSS_MIB:.0f} MiB, no delivery without an outcome", file=out)
    print(table(results), file=out)
    if args.json:
        doc = {
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "machine": info,
            "elapsed_seconds": elapsed,
            "targets": {"p99_ratio": TARGET_P99_RATIO, "rss_mib": TARGET_RSS_MIB},
            "results": [
                {"case": r.case, "verdict": r.verdict, "reasons": r.reasons, "ratio": r.ratio,
                 "peak_rss_kib": r.peak_rss_kib, "shown": asdict(r.shown) if r.shown else None,
                 "runs": [asdict(x) for x in r.runs]}
                for r in results
            ],
        }
        json.dump(doc, sys.stdout, indent=1, default=str)
        print()
    if interrupted:
        return 130
    return 0 if all(r.verdict == "PASS" for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        router_bench.cleanup()
