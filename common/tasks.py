"""Stopping asyncio tasks for good: what the demo, the simulators and the tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]], *, every: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until all are done, re-cancelling any that swallowed it."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
