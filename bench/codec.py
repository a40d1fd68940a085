"""Codec benchmark: a typical RPC message through our codec and Qpid Proton's, side by side.

    .venv/bin/python bench/codec.py [--seconds 2] [--json]

The message is what an oslo.messaging call looks like on the wire: a header with a ttl,
properties (message-id, to, reply-to, correlation-id, content-type, creation-time), four
string application properties and a 1 KiB JSON body in one data section.

Measured, for each side: full encode, full decode, and (ours only) ``read_routing``, the
router's per-message read, compared with Proton's full decode because that is what a
router built on Proton's Python binding would have to do.  Each pair of operations runs in
alternating batches for ``--seconds``; the rate is operations over the time spent in them,
the latencies are per operation within a batch (p50 and p99 over batches), and the ratio
is Proton's median time per operation over ours.  Peak memory is the traced peak of the
Python allocator (tracemalloc) over a separate short run of each operation; Proton's C
allocations are invisible to it, so its column counts only the Python objects it makes.
The process's peak RSS is printed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import proton  # noqa: E402

from switchboard.amqp.message import Message, read_routing  # noqa: E402
from switchboard.amqp.spec import Header, Properties  # noqa: E402
from switchboard.amqp.types import Symbol, Timestamp, UInt  # noqa: E402

BATCH = 200
CREATION_TIME_MS = 1_764_000_000_000
MESSAGE_ID = uuid.UUID("6f1c0b38-2c43-4d7e-9a51-0e3f6f5d2a10")


def json_body(size: int = 1024) -> bytes:
    """An oslo.messaging-like JSON payload padded to ``size`` bytes."""
    payload = {
        "oslo.version": "2.0",
        "oslo.message": {
            "method": "build_and_run_instance",
            "namespace": "compute",
            "version": "6.2",
            "args": {"instance_uuid": str(MESSAGE_ID), "host": "compute-0042", "node": "compute-0042"},
        },
    }
    text = json.dumps(payload)
    payload["padding"] = "x" * (size - len(text) - len(', "padding": ""'))
    body = json.dumps(payload).encode()
    assert len(body) == size, len(body)
    return body


APPLICATION_PROPERTIES = {
    "x-request-id": "req-9f0f3a0e-5a4f-4b3c-8a1e-7d3a2b1c0f00",
    "x-tenant": "f6a2c1d0b9e84c7d",
    "x-service": "nova-conductor",
    "x-method": "build_and_run_instance",
}


def ours_message(body: bytes) -> Message:
    return Message(
        body,
        header=Header(ttl=UInt(60_000)),
        properties=Properties(
            message_id=MESSAGE_ID,
            to="compute.compute-0042",
            reply_to="reply_4b1c8a9e",
            correlation_id=MESSAGE_ID,
            content_type=Symbol("application/json"),
            creation_time=Timestamp(CREATION_TIME_MS),
        ),
        application_properties=dict(APPLICATION_PROPERTIES),
    )


def proton_message(body: bytes) -> proton.Message:
    message = proton.Message(
        body,
        ttl=60.0,
        id=MESSAGE_ID,
        address="compute.compute-0042",
        reply_to="reply_4b1c8a9e",
        correlation_id=MESSAGE_ID,
        content_type="application/json",
        creation_time=CREATION_TIME_MS / 1000,
        properties=dict(APPLICATION_PROPERTIES),
    )
    message.inferred = True  # bytes body as a data section
    return message


def measure_pair(ours: Callable[[], Any], theirs: Callable[[], Any], seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """Run both operations in alternating batches for ``seconds`` in all.

    Alternating keeps a shared machine's changing load from favouring either side.
    Returns, for each side, the rate (operations over the time spent in them) and the
    p50 and p99 of the per-operation time of a batch.
    """
    for _ in range(BATCH):  # warm up caches and lazily built tables
        ours()
        theirs()
    per_op: tuple[list[float], list[float]] = ([], [])
    total_time = [0.0, 0.0]
    gc.collect()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for side, operation in enumerate((ours, theirs)):
            start = time.perf_counter()
            for _ in range(BATCH):
                operation()
            elapsed = time.perf_counter() - start
            per_op[side].append(elapsed / BATCH)
            total_time[side] += elapsed
    results = []
    for side in (0, 1):
        times = sorted(per_op[side])
        results.append({
            "ops_per_s": len(times) * BATCH / total_time[side],
            "p50_us": statistics.median(times) * 1e6,
            "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6,
        })
    return results[0], results[1]


def peak_memory_kib(operation: Callable[[], Any], runs: int = 2000) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(runs):
            operation()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def run(seconds: float) -> dict[str, Any]:
    body = json_body()
    ours = ours_message(body)
    theirs = proton_message(body)
    ours_bytes = ours.encode()
    theirs_bytes = theirs.encode()

    # Both encodings must carry the same message, or the comparison means nothing.
    check = proton.Message()
    check.decode(ours_bytes)
    assert check.address == "compute.compute-0042" and check.body == body
    assert check.properties == APPLICATION_PROPERTIES and check.ttl == 60.0
    assert Message.decode(theirs_bytes).properties.reply_to == "reply_4b1c8a9e"
    routing = read_routing(ours_bytes)
    assert routing.to == "compute.compute-0042" and routing.ttl == 60_000

    def proton_decode() -> None:
        proton.Message().decode(theirs_bytes)

    operations: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "encode": (ours.encode, theirs.encode),
        "decode": (lambda: Message.decode(ours_bytes), proton_decode),
        "read_routing": (lambda: read_routing(ours_bytes), proton_decode),
    }
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "proton": ".".join(map(str, proton.VERSION)),
        "message_bytes": {"ours": len(ours_bytes), "proton": len(theirs_bytes)},
        "seconds_per_measurement": seconds,
        "operations": {},
    }
    for name, (our_op, their_op) in operations.items():
        our, their = measure_pair(our_op, their_op, seconds)
        our["peak_kib"] = peak_memory_kib(our_op)
        their["peak_kib"] = peak_memory_kib(their_op)
        results["operations"][name] = {
            "ours": our,
            "proton": their,
            # Medians: a shared machine's noise moves means far more.
            "ratio": their["p50_us"] / our["p50_us"],
        }
    results["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return results


def print_table(results: dict[str, Any]) -> None:
    print(
        f"Python {results['python']}, Proton {results['proton']}; message {results['message_bytes']['ours']} bytes"
        f" (Proton's encoding: {results['message_bytes']['proton']} bytes)"
    )
    header = f"{'operation':<14}{'side':<8}{'msgs/s':>11}{'p50 µs':>9}{'p99 µs':>9}{'peak KiB':>10}{'ours/proton':>13}"
    print(header)
    print("-" * len(header))
    for name, result in results["operations"].items():
        their_label = "proton" if name != "read_routing" else "proton*"
        for side, label in (("ours", "ours"), ("proton", their_label)):
            r = result[side]
            ratio = f"{result['ratio']:.2f}x" if side == "ours" else ""
            print(f"{name:<14}{label:<8}{r['ops_per_s']:>11,.0f}{r['p50_us']:>9.2f}{r['p99_us']:>9.2f}{r['peak_kib']:>10.1f}{ratio:>13}")
    print("* read_routing is compared with Proton's full decode (proton.Message().decode).")
    print(f"ratio: Proton's p50 time per operation over ours; process peak RSS {results['max_rss_kib'] / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per operation, both sides together (default 2)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    results = run(args.seconds)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
