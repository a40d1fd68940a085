"""One loop's turn for all its connections: write what waits, then share out input.

A connection handles at most ``ARRIVAL_BATCH`` frames (its engine's ``frame_budget``)
when its bytes arrive; more waits for the turn.  Each turn, once per loop iteration:

1. every connection's pending output is written, so a request routed in this
   iteration's reads leaves before any more of a flood is handled;
2. ``frames_per_turn`` frames are shared out among the connections with input waiting,
   round robin, at least ``MIN_SHARE`` each; only ``MIN_SHARE`` each for
   ``SHORT_TURNS`` turns after a message from a connection with nothing waiting (a
   request, say), so that it, and its answer, get through after short turns;
3. what that produced is written at the start of the next turn, with whatever the next
   iteration's reads add to it.

A flood (on any number of connections) therefore delays anyone else's message by one
turn's share at most, and each connection's output of a turn goes out in one write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import AmqpProtocol

__all__ = ["TurnScheduler", "MIN_SHARE", "ARRIVAL_BATCH"]

MIN_SHARE = 8
"""Frames a connection with input waiting handles per turn, however many are waiting."""
ARRIVAL_BATCH = 32
SHORT_TURNS = 32
"""Turns kept short after a message on a connection with nothing waiting: requests and
their replies come in bursts, and each hop of theirs needs a short turn."""
"""Frames a connection handles as its bytes arrive (its engine's ``frame_budget``); the
rest waits for the turn."""


class TurnScheduler:
    def __init__(self, loop: asyncio.AbstractEventLoop, frames_per_turn: int) -> None:
        self._loop = loop
        self.frames_per_turn = frames_per_turn
        self._flushes: list["AmqpProtocol"] = []
        self._waiting: deque["AmqpProtocol"] = deque()
        self._scheduled = False
        self._short_turns = 0

    @property
    def input_is_waiting(self) -> bool:
        return bool(self._waiting)

    def message_arrived(self) -> None:
        """A connection with nothing waiting received a message: keep the next turn short."""
        self._short_turns = SHORT_TURNS

    def flush_soon(self, protocol: "AmqpProtocol") -> None:
        """Write ``protocol``'s output this turn (the protocol asks once per turn)."""
        self._flushes.append(protocol)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._turn)

    def input_waiting(self, protocol: "AmqpProtocol") -> None:
        """``protocol`` has frames beyond its budget: give it a share of coming turns."""
        self._waiting.append(protocol)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        self._flush_all()
        waiting = self._waiting
        if waiting:
            if self._short_turns:
                self._short_turns -= 1
                share = MIN_SHARE
            else:
                share = max(MIN_SHARE, self.frames_per_turn // len(waiting))
            for _ in range(len(waiting)):
                protocol = waiting.popleft()
                if protocol.continue_input(share):
                    waiting.append(protocol)
        if (waiting or self._flushes) and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._turn)

    def _flush_all(self) -> None:
        flushes = self._flushes
        if flushes:
            self._flushes = []
            for protocol in flushes:
                protocol.flush()
