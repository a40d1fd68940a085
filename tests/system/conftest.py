"""Fixtures for the system tests; the helpers themselves live in system_support.py and
network_support.py, so test modules import them by names no other test directory uses."""

from network_support import network  # noqa: F401  (fixture)
from system_support import router, spawn_script  # noqa: F401  (fixtures)

import sys
from pathlib import Path

# The PostgreSQL cluster fixture is shared with the store tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
from postgres_cluster import postgres_cluster, postgres_dsn  # noqa: E402,F401  (fixtures)
