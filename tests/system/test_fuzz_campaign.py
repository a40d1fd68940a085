"""A short budget of the fuzz campaign (``bench/fuzz.py``) against a real router process.

About 20,000 frames (6,000 of them mutated) over connections driven into every state the
campaign knows, from a fixed seed.  The router must neither crash (exit, log a traceback
or an internal error, answer ``amqp:internal-error``) nor hang (leave a probe unanswered,
fail a checkpoint round trip), must say nothing malformed, must accept every valid set-up
exchange, and must serve a request/response and a multicast at the end and exit cleanly.
The histogram of conditions it answered with shows the mutations reached its error paths
at the connection, session and link levels.

A failing run leaves the byte streams of its crashes and hangs in the test's temporary
directory; ``bench/fuzz.py --replay FILE`` sends one to a fresh router.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"
SEED = 20240611
MUTATED_FRAMES = 6000


@pytest.mark.timeout(240)
def test_short_fuzz_campaign_finds_no_crash_and_no_hang(tmp_path: Path) -> None:
    reproducers = tmp_path / "reproducers"
    finished = subprocess.run(
        [sys.executable, str(FUZZ), "--frames", str(MUTATED_FRAMES), "--seconds", "90", "--jobs", "1",
         "--seed", str(SEED), "--reproducers", str(reproducers), "--json"],
        capture_output=True, text=True, timeout=200, cwd=tmp_path,
    )
    assert finished.stdout.strip(), f"no report (exit code {finished.returncode}):\n{finished.stderr[-4000:]}"
    report = json.loads(finished.stdout)
    summary = json.dumps({k: report[k] for k in ("crash_details", "hang_details", "anomalies", "setup_failures",
                                                  "fuzzer_failures", "service_failures", "reproducers")}, indent=2)

    assert report["mutated_frames"] >= MUTATED_FRAMES, summary
    assert report["crashes"] == 0, summary
    assert report["hangs"] == 0, summary
    assert report["anomalies"] == [], summary
    assert report["setup_failures"] == [], summary
    assert report["fuzzer_failures"] == [], summary
    assert report["healthy_at_end"], summary
    assert report["checkpoints"]["count"] >= 2 and report["checkpoints"]["failures"] == 0, report["checkpoints"]
    assert report["router"]["exit_code"] == 0, report["router"]
    assert report["probes_answered"] > 0

    conditions = report["conditions"]
    for level in ("close:", "end:", "detach:"):
        assert any(name.startswith(level) for name in conditions), f"no {level} condition reached: {conditions}"
    assert "close:amqp:decode-error" in conditions, conditions
    assert finished.returncode == 0, finished.stderr[-4000:]
