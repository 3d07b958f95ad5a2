"""The calendar of terms, in UTC: month starts, months added, the end of a term. Pure.

Every term ends at the first second (00:00:00 UTC) of a calendar month, so
adding months never meets a 29th-31st and needs no clamping.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["DAY_S", "add_months", "iso", "month_start", "term_end"]

DAY_S = 86_400


def month_start(at: int) -> int:
    """The first second (UTC) of the month containing ``at``."""
    d = datetime.fromtimestamp(at, UTC)
    return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp())


def add_months(at: int, months: int) -> int:
    """``at`` moved by whole months; ``at`` must be the first second of a month (UTC)."""
    d = datetime.fromtimestamp(at, UTC)
    if (d.day, d.hour, d.minute, d.second) != (1, 0, 0, 0):
        raise ValueError("add_months works on month starts only")
    index = d.year * 12 + d.month - 1 + months
    return int(datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC).timestamp())


def term_end(at: int, months: int) -> int:
    """End of a term bought at ``at``: the end of that month plus ``months`` (exclusive)."""
    return add_months(month_start(at), months + 1)


def iso(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
