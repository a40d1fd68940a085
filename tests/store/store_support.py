"""Helpers for the durable store's tests: a stand-in for the router's event loop.

``Completions`` is what a store under test is built with: its ``post`` queues what the
store hands back, and the callables run only when the test waits, on the test's thread,
as they would on the loop.  ``completions.call(store.fetch, "q", 0, 10, 1 << 20)`` makes
the call with a ``done`` of its own and returns what ``done`` got, within a bound.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

WAIT_SECONDS = 30.0
"""Bound on any one wait for a store's answer (generous: the machine is shared)."""


class Pending:
    """A ``done`` callback that remembers what it was called with, and on which thread."""

    def __init__(self) -> None:
        self.called = False
        self.result: Any = None
        self.thread: int | None = None
        self.calls = 0

    def __call__(self, result: Any) -> None:
        self.calls += 1
        self.called = True
        self.result = result
        self.thread = threading.get_ident()


class Completions:
    """The event loop's side of a store: ``post`` queues, ``wait`` runs what was posted."""

    def __init__(self) -> None:
        self._posted: queue.Queue[Callable[[], None]] = queue.Queue()

    def post(self, callback: Callable[[], None]) -> None:
        self._posted.put(callback)

    def pending(self) -> Pending:
        return Pending()

    def wait(self, pending: Pending, timeout: float = WAIT_SECONDS) -> Any:
        """Run posted callables until ``pending`` has been called; return its result."""
        deadline = time.monotonic() + timeout
        while not pending.called:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no completion within {timeout} s")
            try:
                callback = self._posted.get(timeout=remaining)
            except queue.Empty:
                continue
            callback()
        return pending.result

    def run_posted(self) -> int:
        """Run what has been posted so far, without waiting; return how many ran."""
        ran = 0
        while True:
            try:
                callback = self._posted.get_nowait()
            except queue.Empty:
                return ran
            callback()
            ran += 1

    def call(self, method: Callable[..., None], *args: Any, timeout: float = WAIT_SECONDS) -> Any:
        """``method(*args, done)`` and wait for ``done``'s argument."""
        pending = Pending()
        method(*args, pending)
        return self.wait(pending, timeout)
