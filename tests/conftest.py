"""Suite-wide: a bug of ours is raised where it happens, not turned into a close.

In production the engine and the router core turn an unexpected exception while handling
one connection's input into an ``amqp:internal-error`` close of that connection, so one
peer cannot take the process down.  In-process tests want the traceback instead.  Tests
that check the production behaviour itself turn the switch off for their duration.
"""

from __future__ import annotations

import pytest

from switchboard.amqp.connection import Connection
from switchboard.router.core import RouterCore


@pytest.fixture(autouse=True)
def raise_internal_errors(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("internal_errors_close"):
        yield
        return
    Connection.raise_internal_errors = True
    RouterCore.raise_internal_errors = True
    try:
        yield
    finally:
        Connection.raise_internal_errors = False
        RouterCore.raise_internal_errors = False
