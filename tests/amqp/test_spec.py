"""switchboard/amqp/spec.py is generated from the spec XML: it must match what the generator makes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC_DIR = Path(__file__).resolve().parents[3] / "shared" / "spec" / "amqp-1.0"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_spec", REPO / "tools" / "gen_spec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not SPEC_DIR.is_dir(), reason=f"AMQP 1.0 spec XML not found at {SPEC_DIR}")
def test_committed_spec_module_is_what_the_generator_makes() -> None:
    generated = _load_generator().generate(SPEC_DIR)
    committed = (REPO / "switchboard" / "amqp" / "spec.py").read_text()
    assert generated == committed, (
        "switchboard/amqp/spec.py is stale: run "
        "`python tools/gen_spec.py > switchboard/amqp/spec.py`"
    )
