"""Check before you report (pure): what the device's own health says, shown to the customer
before a data-accuracy or device ticket reaches support.

:func:`report_check` reads the device's state and its diagnosis (the rules of
:mod:`cloud.health.rules.diagnostics`) and says it in the customer's words: "this counter
reported zero counts during opening hours ...", "the camera lens looks obstructed",
"offline since ...". A finding the customer can act on themselves (clean the lens,
power the device) is a likely false alarm: the page offers to fix it first, and lets
them go on. Nothing here stops a ticket; it only informs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cloud.errors import N_, Msg
from cloud.tickets.rules import Category

__all__ = ["CHECKED", "EvidenceLike", "Finding", "ReportCheck", "report_check"]

CHECKED: frozenset[Category] = frozenset({Category.DATA_ACCURACY, Category.DEVICE_FAULT})
"""The categories a device's own health can answer before support does."""

_HOUR = 3600


class EvidenceLike(Protocol):
    """One fired rule of a diagnosis (the health module's evidence, any shape with these)."""

    @property
    def rule(self) -> str: ...

    @property
    def value(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the device says about itself; ``self_fix``: the customer can act on it."""

    code: str
    message: Msg
    params: Mapping[str, Any] = field(default_factory=dict)
    self_fix: bool = False

    def text(self, gettext: Callable[[str], str] = str) -> str:
        return gettext(self.message) % dict(self.params) if self.params else gettext(self.message)


@dataclass(frozen=True, slots=True)
class ReportCheck:
    device_id: str
    category: Category
    applies: bool  # the category is one the device's health can answer
    verdict: str | None
    findings: tuple[Finding, ...]

    @property
    def likely_false_alarm(self) -> bool:
        return any(f.self_fix for f in self.findings)


def _when(at: int) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def report_check(
    category: Category,
    *,
    device_id: str,
    online: bool | None,
    status_at: int | None,
    last_seen: int | None,
    verdict: str | None,
    evidence: Sequence[EvidenceLike],
    now: int,
) -> ReportCheck:
    """What to show the customer about ``device_id`` before they open a ``category`` ticket."""
    if category not in CHECKED:
        return ReportCheck(device_id, category, False, verdict, ())
    findings: list[Finding] = []
    if last_seen is None:
        findings.append(Finding("no_reports", N_("the device has not reported its health yet")))
    if online is False and status_at is not None:
        findings.append(
            Finding(
                "offline",
                N_(
                    "the device is offline since %(since)s: check its power and network "
                    "before reporting"
                ),
                {"since": _when(status_at)},
                self_fix=True,
            )
        )
    for e in evidence:
        if e.rule == "counter.zero_counts":
            hours = int(e.value // _HOUR)
            since = (last_seen or now) - int(e.value)
            findings.append(
                Finding(
                    "zero_counts",
                    N_(
                        "this counter reported zero counts during opening hours since "
                        "%(since)s (%(hours)s opening hours): check that nothing blocks "
                        "its view and the entrance was open"
                    ),
                    {"since": _when(since), "hours": hours},
                    self_fix=True,
                )
            )
        elif e.rule == "camera.obstructed":
            findings.append(
                Finding(
                    "lens_obstructed",
                    N_(
                        "the camera lens looks obstructed (image contrast %(pct)s%% of "
                        "normal): clean or uncover the lens"
                    ),
                    {"pct": int(e.value)},
                    self_fix=True,
                )
            )
        else:
            findings.append(
                Finding(
                    "health_rule",
                    N_("the device's health check found a problem: %(rule)s"),
                    {"rule": e.rule},
                )
            )
    if not findings and last_seen is not None:
        findings.append(
            Finding(
                "healthy",
                N_(
                    "the device's own health check finds nothing wrong (last report "
                    "%(at)s): report the problem if you still see it"
                ),
                {"at": _when(last_seen)},
            )
        )
    return ReportCheck(device_id, category, True, verdict, tuple(findings))
