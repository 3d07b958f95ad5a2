"""The fleet overview's vocabulary: filters, sorts and entitlement freshness (pure).

The freshness rule itself is SQL (``queries._fleet_columns``): the counts, the filter
and the page's labels all read that one expression.

A device's entitlement is *fresh* when the cloud's current token for it was
delivered and is not close to its ``exp``; the refresh job re-issues well
before then, so anything else is worth a look: ``expiring`` (within
:data:`EXPIRING_SOON_S`), ``expired``, ``undelivered`` (issued, never
confirmed published) or ``none`` (no token yet).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "EXPIRING_SOON_S",
    "FLEET_SORTS",
    "Freshness",
    "FleetQuery",
    "Online",
]

EXPIRING_SOON_S = 86_400


class Freshness(enum.StrEnum):
    FRESH = "fresh"
    EXPIRING = "expiring"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    NONE = "none"


class Online(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # never sent a status


# what the overview sorts by (the query parameter's words); severity sorts by verdict's rank
FLEET_SORTS = ("device", "installation", "kind", "verdict", "online", "fw", "last_seen", "token")


@dataclass(frozen=True, slots=True)
class FleetQuery:
    """One page of the fleet: filters (None: any), a search text, sort and page."""

    kind: str | None = None
    verdict: str | None = None  # a Verdict value, or "pending" (not diagnosed yet)
    attention: bool = False  # only devices whose verdict is neither healthy nor pending
    online: Online | None = None
    freshness: Freshness | None = None
    search: str = ""  # part of the device id, installation id or firmware version
    sort: str = "verdict"
    descending: bool = True
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.sort not in FLEET_SORTS:
            raise ValueError(f"sort {self.sort!r} is not one of {FLEET_SORTS}")
        if not 1 <= self.limit <= 1000 or self.offset < 0:
            raise ValueError("limit must be 1..1000 and offset at least 0")
