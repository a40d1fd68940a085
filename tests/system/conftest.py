"""Fixtures for the system tests; the helpers themselves live in system_support.py, so
test modules import them by a name no other test directory uses."""

from system_support import router, spawn_script  # noqa: F401  (fixtures)
