"""One asyncio loop in a background thread, for callers on other threads.

oslo.messaging calls its driver from the application's threads (the threading executor's
workers, the service's own threads).  The client is asyncio; every
call crosses to the loop thread here and blocks its caller until the coroutine ends.
Coroutines bound themselves (deadlines inside), so ``run`` has no timeout of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, Coroutine, TypeVar

from ..io.loop import new_event_loop

__all__ = ["LoopThread"]

T = TypeVar("T")

STOP_WAIT_SECONDS = 10.0
"""How long ``stop`` waits for the loop thread to finish its last callbacks."""


class LoopThread:
    """An event loop running forever in a daemon thread until ``stop()``."""

    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result (or exception)."""
        if self.in_loop_thread:
            coroutine.close()
            raise RuntimeError("a blocking driver call was made from the driver's own loop thread")
        if self._stopped:
            coroutine.close()
            raise RuntimeError("the driver has been cleaned up")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coroutine`` on the loop without waiting for it."""
        if self._stopped:
            coroutine.close()
            raise RuntimeError("the driver has been cleaned up")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call_soon(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the loop soon, in the order of the calls."""
        if not self._stopped:
            self.loop.call_soon_threadsafe(function, *args)

    def stop(self) -> None:
        """Stop the loop and wait (bounded) for its thread; the loop is closed."""
        if self._stopped:
            return
        self._stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop_thread:
            self._thread.join(STOP_WAIT_SECONDS)
            if not self._thread.is_alive():
                self.loop.close()
