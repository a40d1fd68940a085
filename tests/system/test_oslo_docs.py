"""The example in docs/oslo.md runs, as written, against a real router (its real port in
place of 5672), and the options table lists the driver's options with their defaults."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from system_support import HOST

from switchboard.oslo.options import OPTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "oslo.md"
TEXT = DOC.read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def test_the_example_runs(router, tmp_path: Path) -> None:
    assert len(EXAMPLES) == 1
    r = router()
    script = tmp_path / "example.py"
    script.write_text(EXAMPLES[0].replace("127.0.0.1:5672", f"{HOST}:{r.port}"), encoding="utf-8")
    result = subprocess.run([sys.executable, "-W", "ignore", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["5"]


def test_the_options_table_matches_the_driver() -> None:
    documented = dict(re.findall(r"^\| `([a-z_]+)` \| `([^`]+)` \|", TEXT, re.M))
    assert documented == {option.name: str(option.default) for option in OPTIONS}
