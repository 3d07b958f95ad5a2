"""A cloud clock that moves only when told to: demos and tests fast-forward a year in seconds.

Enabled with ``settings.test_clock`` (never in production): ``create_app``
then uses a :class:`TestClock` and ``POST /api/v1/test-clock/advance`` moves
it day by day, running every job's pass each day, so renewal notices and
charges happen on their own days.
"""

from __future__ import annotations

import time

__all__ = ["TestClock"]


class TestClock:
    """A :data:`common.clock.Clock` (callable → epoch seconds) that can be set and advanced."""

    __test__ = False  # not a pytest test class

    def __init__(self, now: int | None = None) -> None:
        self.now = int(time.time()) if now is None else int(now)

    def __call__(self) -> int:
        return self.now

    def set(self, now: int) -> None:
        """Jump to ``now``; time never goes backwards (devices would refuse it)."""
        if now < self.now:
            raise ValueError("the test clock never goes backwards")
        self.now = int(now)

    def advance(self, seconds: int) -> int:
        """Move forward by ``seconds`` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError("the test clock never goes backwards")
        self.now += int(seconds)
        return self.now
