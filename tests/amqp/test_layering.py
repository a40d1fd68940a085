"""The amqp package is sans-IO: it imports the standard library (minus I/O, clocks,
threads and logging) and itself, nothing else."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

AMQP_DIR = Path(__file__).resolve().parents[2] / "switchboard" / "amqp"
BANNED = {"asyncio", "socket", "ssl", "selectors", "threading", "time", "logging"}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) for every import in ``path``; relative imports as ".x"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _violation(module: str) -> str | None:
    if module.startswith("."):
        # Relative: ".x" is a sibling in switchboard.amqp; ".." would leave the package.
        return None if not module.startswith("..") else "reaches outside switchboard.amqp"
    top = module.split(".")[0]
    if top in BANNED:
        return "does I/O, keeps time, starts threads or logs"
    if module == "switchboard.amqp" or module.startswith("switchboard.amqp."):
        return None
    if top not in sys.stdlib_module_names and top != "__future__":
        return "is not in the standard library"
    return None


AMQP_MODULES = sorted(AMQP_DIR.glob("*.py"))


@pytest.mark.parametrize("path", AMQP_MODULES, ids=lambda p: p.name)
def test_amqp_module_imports_only_the_allowed_standard_library(path: Path) -> None:
    problems = [
        f"{path.name}:{line}: import {module} {reason}"
        for line, module in _imported_modules(path)
        if (reason := _violation(module)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_the_check_catches_banned_and_foreign_imports(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "import asyncio\nfrom time import monotonic\nimport proton\n"
        "from ..io import loop\nfrom .codec import encode\nimport struct\n"
    )
    reasons = {m: _violation(m) for _, m in _imported_modules(source)}
    assert reasons["asyncio"] and reasons["time"] and reasons["proton"] and reasons["..io"]
    assert reasons[".codec"] is None and reasons["struct"] is None


def test_every_amqp_module_is_checked() -> None:
    assert {p.name for p in AMQP_MODULES} >= {"codec.py", "composite.py", "message.py", "types.py", "spec.py"}
