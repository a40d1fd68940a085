"""The build the install asked for is the one imported: compiled hot modules, or pure Python.

``SWITCHBOARD_PURE_PYTHON=1`` at install time asks for the pure-Python build; without it
the hot modules are compiled when a C compiler is present (``docs/building.md``).  The
test reads the same variable, so run it in the environment the package was installed in
(``make test`` and ``make test-pure`` do).
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import switchboard

ROOT = Path(__file__).resolve().parents[2]


def compiled_modules() -> list[str]:
    """The module names setup.py compiles, read from its COMPILED_MODULES list."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPILED_MODULES" for t in node.targets):
            paths = ast.literal_eval(node.value)
            return [p[: -len(".py")].replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no COMPILED_MODULES list")


def pure_python_asked() -> bool:
    return os.environ.get("SWITCHBOARD_PURE_PYTHON", "").strip() not in ("", "0")


def compiler_present() -> bool:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(cc.split()[0]) is not None


def test_the_build_asked_for_is_the_one_imported():
    modules = compiled_modules()
    assert "switchboard.amqp.connection" in modules
    assert "switchboard.router.core" in modules
    kinds = {
        name: importlib.import_module(name).__file__.endswith(tuple(EXTENSION_SUFFIXES)) for name in modules
    }
    if pure_python_asked():
        assert not any(kinds.values()), f"compiled modules in a pure-Python build: {kinds}"
        assert switchboard.build_kind() == "pure Python"
    elif compiler_present():
        assert all(kinds.values()), f"interpreted modules in a compiled build: {kinds}"
        assert switchboard.build_kind() == "compiled (mypyc)"
    else:
        pytest.skip("no C compiler here: the install falls back to pure Python")


def test_version_names_the_build():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "switchboard"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(switchboard.build_kind())


def test_compiled_modules_are_built_from_the_current_source():
    """An editable install imports the extension module beside the .py: after an edit of
    the source it runs the old code until built again (``make venv``)."""
    stale = []
    for name in compiled_modules():
        path = Path(importlib.import_module(name).__file__)
        if path.suffix in (".so", ".pyd") and path.is_relative_to(ROOT):  # an editable install
            source = path.with_name(path.name.split(".")[0] + ".py")
            if source.stat().st_mtime > path.stat().st_mtime:
                stale.append(source.relative_to(ROOT).as_posix())
    assert not stale, f"edited since compiled, build again (make venv, or pip install -e .): {stale}"
