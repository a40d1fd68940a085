"""Instructions per message through a router core in-process: an A/B that load cannot blur.

On a shared machine the wall-clock and CPU-time numbers of ``bench/router.py`` move by
±30% from run to run; an instruction count does not.  This runs a router core with two
in-memory clients (``tests/router/router_harness.py``) under ``valgrind --tool=cachegrind``
twice, with ``--count`` messages and with a fifth of them, and prints the difference per
message: what a message costs the core, its engines and the two client engines (the
clients' share is the same on both sides of an A/B).  ``TREE`` is a checkout (its
``switchboard`` and ``tests/router`` are imported), so two trees compare directly::

    .venv/bin/python bench/core_instructions.py /tmp/main-checkout . --scenario send
    .venv/bin/python bench/core_instructions.py /tmp/main-checkout . --scenario rpc

Scenarios: ``send``, 100-byte messages to ``bench/x`` accepted by one consumer; ``rpc``,
requests with a ``reply-to`` and a subject to ``rpc/bench/svc`` (timed by the router for
its RPC latency metrics), accepted the same way.  Needs valgrind; takes about a minute
per tree and scenario.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path


def run_messages(tree: str, scenario: str, count: int) -> None:
    """Send ``count`` messages through a harness router (the measured part)."""
    here = Path(__file__).resolve().parent  # bench/ holds a queue.py: not the stdlib's
    sys.path[:] = [tree, str(Path(tree) / "tests" / "router"), *(p for p in sys.path if Path(p or ".").resolve() != here)]
    from router_harness import RouterHarness  # type: ignore[import-not-found]

    from switchboard.amqp import events as ev
    from switchboard.amqp.delivery import ACCEPTED
    from switchboard.amqp.message import Message
    from switchboard.amqp.spec import Properties

    harness = RouterHarness()
    harness.core.clock = time.monotonic  # the real router's clock, not the simulated one
    if scenario == "send":
        address = "bench/x"
        payload = Message(b"x" * 100, properties=Properties(to=address)).encode()
    else:
        address = "rpc/bench/svc"
        payload = Message(b'{"v":1,"method":"resize","args":{}}' + b"x" * 64, properties=Properties(
            message_id="m1", subject="resize", reply_to="replies", to=address)).encode()
    consumer = harness.connect("consumer")
    link = consumer.receiver(address, credit=1000)
    sender = harness.connect("producer").sender(address)
    harness.run()
    sent = accepted = 0
    for _ in range(count * 10):  # bounded; each round moves at least one message
        if accepted >= count:
            break
        while sender.credit > 0 and sent < count and sent - accepted < 1000:
            sender.send(payload)
            sent += 1
        harness.run()
        received = consumer.take(ev.DeliveryReceived)
        for event in received:
            event.delivery.settle(ACCEPTED)
        accepted += len(received)
        link.flow(1000)
        harness.run()
    if accepted < count:
        raise SystemExit(f"only {accepted} of {count} messages were accepted")


def instructions(tree: str, scenario: str, count: int) -> int:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, __file__, "--inner", tree, "--scenario", scenario, "--count", str(count)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    match = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"valgrind failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", help="checkouts to compare (default: this one)")
    parser.add_argument("--scenario", choices=("send", "rpc"), default="send")
    parser.add_argument("--count", type=int, default=12000, help="messages in the long run (default 12000)")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        run_messages(args.inner, args.scenario, args.count)
        return
    trees = args.trees or [str(Path(__file__).resolve().parent.parent)]
    short = max(1, args.count // 5)
    baseline = None
    for tree in trees:
        per_message = (instructions(tree, args.scenario, args.count) - instructions(tree, args.scenario, short)) / (args.count - short)
        versus = f"  ({per_message / baseline - 1:+.1%} against the first)" if baseline else ""
        print(f"{args.scenario}: {tree}: {per_message:,.0f} instructions per message{versus}", flush=True)
        baseline = baseline or per_message


if __name__ == "__main__":
    main()
