"""router/network imports the standard library (minus I/O, clocks, threads and logging),
switchboard.amqp and itself: nothing else, so a network of them runs in one process.

import-linter's contract in pyproject.toml names the forbidden neighbours one by one; this
check works the other way round (what is allowed), so a module added to the router later
is covered without editing the list.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

NETWORK_DIR = Path(__file__).resolve().parents[3] / "switchboard" / "router" / "network"
BANNED = {"asyncio", "socket", "ssl", "selectors", "threading", "time", "logging"}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def _violation(module: str) -> str | None:
    if module.startswith(".."):
        return "reaches outside switchboard.router.network"
    if module.startswith("."):
        return None
    top = module.split(".")[0]
    if top in BANNED:
        return "does I/O, keeps time, starts threads or logs"
    if module == "switchboard.amqp" or module.startswith("switchboard.amqp."):
        return None
    if top == "switchboard":
        return "is a part of switchboard other than amqp"
    if top not in sys.stdlib_module_names and top != "__future__":
        return "is not in the standard library"
    return None


NETWORK_MODULES = sorted(NETWORK_DIR.glob("*.py"))


@pytest.mark.parametrize("path", NETWORK_MODULES, ids=lambda p: p.name)
def test_network_module_imports_only_amqp_and_the_allowed_standard_library(path: Path) -> None:
    problems = [
        f"{path.name}:{line}: import {module} {reason}"
        for line, module in _imported_modules(path)
        if (reason := _violation(module)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_the_check_catches_what_it_should(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "import time\nfrom switchboard.router import core\nfrom ..core import RouterCore\nimport proton\n"
        "from switchboard.amqp.codec import encode\nfrom .paths import shortest_paths\nimport heapq\n"
    )
    reasons = {m: _violation(m) for _, m in _imported_modules(source)}
    assert reasons["time"] and reasons["switchboard.router"] and reasons["..core"] and reasons["proton"]
    assert reasons["switchboard.amqp.codec"] is None and reasons[".paths"] is None and reasons["heapq"] is None


def test_every_network_module_is_checked() -> None:
    assert {p.name for p in NETWORK_MODULES} >= {
        "engine.py", "hello.py", "linkstate.py", "messages.py", "mobile.py", "nodes.py", "paths.py"
    }
