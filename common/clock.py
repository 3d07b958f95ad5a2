"""The one clock type: a callable returning the current time in whole epoch seconds.

Decisions take ``now: int`` (or a :data:`Clock` passed in), never read the time
themselves; tests pass a fixed or stepping clock, production :func:`system_clock`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "system_clock"]

Clock = Callable[[], int]
"""Returns the current time in epoch seconds."""


def system_clock() -> int:
    """Wall-clock epoch seconds: the production :data:`Clock`."""
    return int(time.time())
