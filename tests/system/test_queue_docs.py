"""The examples in docs/queues.md run, as written, against a real router.

The guide's first ``toml`` block is the configuration the router runs with; every other
``toml`` block must be a valid configuration.  The quick start's ``switchboard`` commands
are run in order, and each ``python`` block is run as a program, in order, on one router
(they follow on from one another), its output compared with the ``text`` block after it.
The router's real port replaces 5672.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from system_support import HOST, switchboard_command

from switchboard.router.config import parse_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "queues.md"
TEXT = DOC.read_text(encoding="utf-8")
CONFIGS = re.findall(r"```toml\n(.*?)```", TEXT, re.S)
EXAMPLES = re.findall(r"```python\n(.*?)```\n\n```text\n(.*?)```", TEXT, re.S)
QUICK_START = re.search(r"## Quick start\n.*?```sh\n(.*?)```", TEXT, re.S).group(1)  # type: ignore[union-attr]


def commands() -> list[list[str]]:
    """The quick start's client commands (the router itself is started by the test)."""
    found = []
    for line in QUICK_START.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "switchboard" and words[1] != "router":
            found.append(words[1:])
    return found


def test_the_guide_has_its_examples() -> None:
    assert len(CONFIGS) == 3
    assert len(EXAMPLES) == 5
    assert [words[0] for words in commands()] == ["send", "queues", "receive", "queues", "queues"]
    assert "## Failover with PostgreSQL" in TEXT


def test_every_configuration_in_the_guide_is_valid() -> None:
    for config in CONFIGS:
        parse_config(tomllib.loads(config))


def test_the_quick_start_commands(router) -> None:
    r = router(CONFIGS[0])
    outputs = []
    for words in commands():
        words = [word.replace("127.0.0.1:5672", f"{HOST}:{r.port}") for word in words]
        result = subprocess.run([*switchboard_command(), *words], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"switchboard {' '.join(words)}:\n{result.stdout}{result.stderr}"
        outputs.append(result.stdout)
    sent, listed, received, purged, deleted = outputs
    assert sent.startswith("3 accepted, 0 rejected, 0 released, 0 modified;"), sent
    row = next(line.split() for line in listed.splitlines() if line.startswith("jobs/backup "))
    assert row[1] == "3", listed
    assert received.splitlines() == ["back up vm-17"] * 3, received
    assert purged.strip() == "queue jobs/backup: 0 messages removed", purged
    assert deleted.strip() == "queue jobs/backup deleted (0 messages)", deleted


def test_the_python_examples_print_what_the_guide_says(router, tmp_path: Path) -> None:
    r = router(CONFIGS[0])
    for number, (source, expected) in enumerate(EXAMPLES):
        script = tmp_path / f"example{number}.py"
        script.write_text(source.replace("127.0.0.1:5672", f"{HOST}:{r.port}"), encoding="utf-8")
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"example {number}:\n{source}\n{result.stdout}{result.stderr}"
        assert result.stdout == expected, f"example {number}:\n{source}\nprinted:\n{result.stdout}"
