"""The examples in docs/rpc.md run, as written, against a router with the embedded
defaults, and print what the guide says they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from system_support import HOST

DOC = Path(__file__).resolve().parents[2] / "docs" / "rpc.md"
PAIRS = re.findall(r"```python\n((?:(?!```).)*)```\n\n```text\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_guide_has_its_examples() -> None:
    assert len(PAIRS) == 3


@pytest.mark.parametrize("number", range(len(PAIRS)))
def test_example_prints_what_the_guide_says(router, tmp_path: Path, number: int) -> None:
    r = router()
    source, expected = PAIRS[number]
    script = tmp_path / f"example{number}.py"
    script.write_text(source.replace("127.0.0.1:5672", f"{HOST}:{r.port}"), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # Lines from different listeners may interleave: compare as sets of lines, in full.
    assert sorted(result.stdout.splitlines()) == sorted(expected.splitlines()), result.stdout
