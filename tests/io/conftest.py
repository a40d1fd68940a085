"""The io tests share the test-side broker and tools of ``tests/interop``."""

from __future__ import annotations

import sys
from pathlib import Path

_INTEROP = str(Path(__file__).resolve().parent.parent / "interop")
if _INTEROP not in sys.path:
    sys.path.insert(0, _INTEROP)
