"""One timer per connection, re-armed from the engine's next deadline.

Deadlines mostly move later (each frame received pushes the idle deadline back), so the
armed handle is kept when the new deadline is later: it fires, the engine's ``tick``
reports the real next deadline, and the timer is armed again.  That keeps a busy
connection from creating a timer handle per batch.
"""

from __future__ import annotations

import asyncio
from typing import Callable

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    __slots__ = ("_loop", "_callback", "_handle", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None

    def arm(self, deadline: float | None) -> None:
        """Make sure the callback runs no later than ``deadline`` (None: no deadline)."""
        if deadline is None:
            return
        if self._handle is not None and self._when is not None and self._when <= deadline:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._when = deadline
        self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._when = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._when = None
