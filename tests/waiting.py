"""Waiting in tests: the awaited thing decides when; a ceiling only catches a hang.

A test awaits the thing itself (an event, a message, an output line, a row).
Where it can only look, it looks with :func:`eventually`. Either way the
ceiling is :data:`HANG_S`, far above what any machine needs, so a busy machine
makes a test slower, never red; a test that asserts how long something takes
says so with its own numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["HANG_S", "eventually"]

HANG_S = 30.0


async def eventually(
    condition: Callable[[], object],
    *,
    what: str | Callable[[], object] = "the condition",
    within: float = HANG_S,
    every: float = 0.02,
) -> None:
    """Return once ``condition()`` is true; fail, saying ``what``, after ``within`` seconds.

    ``what`` may be a callable, called for the failure message only (e.g. the state
    that was awaited as it is now).
    """
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            shown = what() if callable(what) else what
            raise AssertionError(f"not true within {within:g} s: {shown}")
        await asyncio.sleep(every)
