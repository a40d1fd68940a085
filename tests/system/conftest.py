"""Fixtures for the system tests; the helpers themselves live in system_support.py and
network_support.py, so test modules import them by names no other test directory uses."""

from network_support import network  # noqa: F401  (fixture)
from system_support import router, spawn_script  # noqa: F401  (fixtures)
