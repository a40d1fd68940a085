"""The examples in docs/client.md run, as written, against a real router.

Each ``python`` block is run as a program with the router's real port in place of 5672,
and a port where nothing listens in place of 5673 (the "router that is down").
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from system_support import HOST

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_guide_has_its_examples() -> None:
    assert len(EXAMPLES) == 5


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_example_runs(router, tmp_path: Path, number: int) -> None:
    r = router()
    down = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        down.bind((HOST, 0))  # bound, never listening: connections are refused
        source = EXAMPLES[number].replace("127.0.0.1:5672", f"{HOST}:{r.port}")
        source = source.replace("127.0.0.1:5673", f"{HOST}:{down.getsockname()[1]}")
        script = tmp_path / f"example{number}.py"
        script.write_text(source, encoding="utf-8")
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    finally:
        down.close()
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {
        0: [f"connected to {HOST}:{r.port}"],
        1: ["received hello", "the sender learns: Accepted()"],
        2: ["reply: HELLO", "replies: ['REQUEST 0', 'REQUEST 1', 'REQUEST 2']"],
        3: ["last outcome: Accepted()"],
        4: [f"connected to {HOST}:{r.port}", "Accepted()"],
    }[number]
    lines = result.stdout.splitlines()
    assert [line for line in lines if not line.startswith("client event:")] == expected, result.stdout
    if number == 4:
        events = [line for line in lines if line.startswith("client event:")]
        assert events[0].startswith("client event: ConnectAttemptFailed(")
        assert events[1].startswith("client event: Connected(")
