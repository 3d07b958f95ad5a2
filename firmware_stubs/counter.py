"""People counter firmware: counts in and out during opening hours.

Counts accrue at ``people_per_hour`` while the site is open (UTC hours
``[open_hour, close_hour)``) and never while it is closed. With the
``zero_counts`` fault the beam sensor is dead: nothing is counted, and the
opening-hours time since the last count grows — what the cloud's
diagnostics look for.
"""

from __future__ import annotations

from typing import Any

from firmware_stubs.emulator import Emulator

__all__ = ["CounterEmulator", "open_seconds"]

_DAY_S = 86_400


def open_seconds(until: float, *, open_hour: int, close_hour: int) -> float:
    """Seconds of opening time from the epoch to ``until`` (UTC hours, open < close)."""
    day, into = divmod(until, _DAY_S)
    per_day = (close_hour - open_hour) * 3600
    today = min(max(into - open_hour * 3600, 0.0), per_day)
    return day * per_day + today


class CounterEmulator(Emulator):
    """A door counter with opening hours."""

    kind = "counter"
    model = "PC-2"

    def __init__(
        self,
        *,
        open_hour: int = 8,
        close_hour: int = 20,
        people_per_hour: float = 120.0,
        **kwargs: Any,
    ) -> None:
        if not 0 <= open_hour < close_hour <= 24:
            raise ValueError("opening hours need 0 <= open_hour < close_hour <= 24")
        self.open_hour = open_hour
        self.close_hour = close_hour
        self.people_per_hour = people_per_hour
        self.count_in = 0
        self.count_out = 0
        self.open_s_since_last_count = 0.0
        self._budget = 0.0
        super().__init__(**kwargs)

    def is_open(self, at: float) -> bool:
        return self.open_hour * 3600 <= at % _DAY_S < self.close_hour * 3600

    def advance(self, before: float, now: float) -> None:
        hours = dict(open_hour=self.open_hour, close_hour=self.close_hour)
        opened = max(open_seconds(now, **hours) - open_seconds(before, **hours), 0.0)
        if self.faults.zero_counts:
            self.open_s_since_last_count += opened
            return
        self._budget += opened * self.people_per_hour / 3600
        people = int(self._budget)
        self._budget -= people
        if people:
            self.count_in += people
            self.count_out += people
            self.open_s_since_last_count = 0.0
        else:
            self.open_s_since_last_count += opened

    def kind_health(self) -> dict[str, Any]:
        return {
            "count_in": self.count_in,
            "count_out": self.count_out,
            "open_now": self.is_open(self.now()),
            "opening_hours": [self.open_hour, self.close_hour],
            "open_s_since_last_count": round(self.open_s_since_last_count, 1),
        }

    def faults_found(self) -> list[dict[str, str]]:
        found = super().faults_found()
        if self.faults.zero_counts:
            found.append(
                {
                    "component": "sensor",
                    "code": "sensor_failure",
                    "detail": "beam sensor returns no signal with the emitter on: "
                    "the sensor has failed (hardware)",
                }
            )
        return found
