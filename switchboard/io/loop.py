"""Event loop choice: uvloop where it is installed, asyncio's own otherwise."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine

__all__ = ["new_event_loop", "run", "loop_name"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return type(loop).__module__.split(".")[0]


def run(main: Callable[[], Coroutine[Any, Any, Any]], debug: bool = False) -> Any:
    """Run ``main()`` to completion on a new loop (uvloop if available)."""
    with asyncio.Runner(loop_factory=new_event_loop, debug=debug) as runner:
        return runner.run(main())
