"""Diagnose a device from its recent health history (pure, no I/O, ``now`` passed in).

The rules are a table (:data:`RULES`), not an if-chain: each names a
:class:`Metric` (a figure of the health report, or ``status.offline`` for the
devices' online/offline messages), how it is measured over a window, a
threshold, the verdict and the action. :func:`diagnose` evaluates every rule and returns a
:class:`Diagnosis` carrying the evidence of each rule that fired.

Counters in a report (``disk.write_errors``, ``serial.crc_errors``,
``reboots.count``, ``kind_specific.frame_drops``, ...) are measured as their
*increase* across the window. A counter that drops while ``uptime_s`` also
went back (the device rebooted) was reset, and its new value counts as
increase; a drop *without* an uptime reset is a failed read (a firmware that
answered nothing reported 0), so that sample is skipped and the next one is
measured from the last good value: a dip to 0 and back is no increase, and
never a reboot. An absent or non-numeric value is no sample at all, never 0.

Rules over windows longer than :data:`RAW_WINDOW_S` read
:attr:`History.series`, a narrow per-metric series covering their whole
window (the adapter selects every report's value of just those metrics), so
a 7-day rule sees 7 days at any report interval, not the newest N reports.

The firmware's own ``serial.rx_errors`` (corrupted requests it dropped: the
agent-to-firmware direction of the line, which the agent only sees as a
timeout) arrives in ``kind_specific.serial.rx_errors`` and has its rule,
``serial.rx_errors``, ordered before ``serial.timeouts``: when both fire the
timeouts are line noise, so the action is to check the cable, not reboot.

The device-kind fields in ``kind_specific`` read here are the firmware's
GET_HEALTH fields (docs/serial-protocol.md, "Health body"): camera
``frame_drops`` (counter) and ``lens_contrast_pct`` (image contrast against
its baseline; low means a dirty or covered lens); counter
``open_s_since_last_count`` (opening-hours seconds since anything was counted).

An RMA is only *recommended* from the reports: the verdict's action is
``run_self_test`` until a firmware self-test reports a hardware fault
(``replace_device``). Only the latest self-test counts (a later pass
supersedes an earlier fault), and only for :data:`SELF_TEST_MAX_AGE_S`: an
older result is evidence of nothing, so an old fault does not keep a device
at ``replace_device`` forever. A recent self-test that found no hardware
fault (it passed, or failed only on remotely fixable faults) turns an RMA
recommendation into fix-remotely, so a device whose hardware tests fine is never
sent back. A failed self-test's action is its first fault's remedy from
``protocol.serial.FAULT_CODES`` (e.g. ``firmware_update`` for ``reboot_loop``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.serial import FAULT_CODES

__all__ = [
    "RAW_WINDOW_S",
    "RULES",
    "SELF_TEST_MAX_AGE_S",
    "Action",
    "Diagnosis",
    "Evidence",
    "History",
    "Measure",
    "Metric",
    "Rule",
    "Sample",
    "StatusEvent",
    "Verdict",
    "diagnose",
    "long_window_metrics",
    "metric_values",
]

HOUR = 3600
DAY = 86_400
SELF_TEST_MAX_AGE_S = DAY  # a self-test result older than this is evidence of nothing
RAW_WINDOW_S = HOUR  # rules over longer windows read History.series


class Verdict(enum.StrEnum):
    """What support should do with the device, in increasing severity."""

    HEALTHY = "healthy"
    FIX_REMOTELY = "fix_remotely"
    RMA_RECOMMENDED = "rma_recommended"


class Action(enum.StrEnum):
    """The next step the verdict suggests."""

    NONE = "none"
    REBOOT = "reboot"
    FIRMWARE_UPDATE = "firmware_update"
    RECONFIGURE = "reconfigure"
    CLEAN_LENS = "clean_lens"
    CHECK_CABLE = "check_cable"
    CHECK_NETWORK = "check_network"
    CHECK_COOLING = "check_cooling"
    FREE_STORAGE = "free_storage"
    RUN_SELF_TEST = "run_self_test"
    REPLACE_DEVICE = "replace_device"


class Metric(enum.StrEnum):
    """A figure the rules read. The value is the name evidence shows (stable: the API
    and the tickets carry it), spelled as the figure's place in the report's JSON
    object; :attr:`path` is that place as keys, for stored reports and SQL JSON paths."""

    UPTIME_S = "uptime_s"
    CPU_TEMP_C = "cpu_temp_c"
    MEM_USED_PCT = "mem_used_pct"
    DISK_USED_PCT = "disk.used_pct"
    DISK_WRITE_ERRORS = "disk.write_errors"
    DISK_REALLOCATED = "disk.reallocated"
    NET_LOSS_PCT = "net.loss_pct"
    NET_RSSI_DBM = "net.rssi_dbm"
    REBOOTS = "reboots.count"
    SERIAL_CRC_ERRORS = "serial.crc_errors"
    SERIAL_TIMEOUTS = "serial.timeouts"
    # the device kinds' own fields (docs/serial-protocol.md, "Health body")
    FIRMWARE_RX_ERRORS = "kind_specific.serial.rx_errors"
    FRAME_DROPS = "kind_specific.frame_drops"
    LENS_CONTRAST_PCT = "kind_specific.lens_contrast_pct"
    OPEN_S_SINCE_LAST_COUNT = "kind_specific.open_s_since_last_count"
    # not in a report: one sample per offline status message
    STATUS_OFFLINE = "status.offline"

    @property
    def path(self) -> tuple[str, ...]:
        """The keys leading to this figure in a report's JSON object."""
        return _PATHS[self]

    @property
    def in_report(self) -> bool:
        return self is not Metric.STATUS_OFFLINE

    def read(self, report: Mapping[str, Any]) -> float | None:
        """This figure of a stored report; None when absent, null or not a number."""
        value: Any = report
        for key in self.path:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return None


_PATHS: Mapping[Metric, tuple[str, ...]] = {m: tuple(m.value.split(".")) for m in Metric}


class Measure(enum.StrEnum):
    """How a rule reduces the samples in its window to one value."""

    INCREASE = "increase"  # counter increase, reset-aware
    SUSTAINED_ABOVE = "sustained_above"  # the lowest sample: every sample is at least this
    SUSTAINED_BELOW = "sustained_below"  # the highest sample: every sample is at most this
    MEAN = "mean"
    LATEST = "latest"
    EVENTS = "events"  # number of samples (status events) in the window


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One retained ``status`` message: the device went online or offline at ``at``."""

    at: int
    online: bool


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a metric, when it was reported and the device's uptime then."""

    ts: int
    value: float
    uptime_s: float | None = None


@dataclass(frozen=True, slots=True)
class History:
    """What :func:`diagnose` looks at; reports are health-report dicts with ``ts``.

    ``series`` maps a metric to its samples over a long window (oldest first);
    a metric found there is read from it instead of from ``reports``.
    """

    reports: Sequence[Mapping[str, Any]] = ()
    status: Sequence[StatusEvent] = ()
    self_test: Mapping[str, Any] | None = None  # firmware self-test result, latest
    self_test_at: int | None = None
    series: Mapping[str, Sequence[Sample]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: fires when ``measure(metric over window)`` reaches ``threshold``."""

    id: str
    metric: Metric
    measure: Measure
    threshold: float
    window_s: int
    verdict: Verdict
    action: Action
    min_samples: int = 1
    kinds: frozenset[str] | None = None  # None: every device kind

    def reached(self, value: float) -> bool:
        if self.measure is Measure.SUSTAINED_BELOW:
            return value <= self.threshold
        return value >= self.threshold


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a rule fired: the values it saw in its window and the threshold they reached."""

    rule: str
    metric: str
    measure: str
    value: float
    values: tuple[float, ...]
    threshold: float
    window_s: int


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A verdict, the action to take and the evidence of every rule that fired."""

    verdict: Verdict
    action: Action
    evidence: tuple[Evidence, ...]


_FIX, _RMA = Verdict.FIX_REMOTELY, Verdict.RMA_RECOMMENDED
_M, _A = Measure, Action
_CAMERA, _COUNTER = frozenset({"camera"}), frozenset({"counter"})

# Order matters only within a verdict: the first rule that fires gives the action.
RULES: tuple[Rule, ...] = (
    # hardware: strong, repeated evidence only
    Rule(
        "storage.write_errors_many",
        Metric.DISK_WRITE_ERRORS,
        _M.INCREASE,
        50,
        DAY,
        _RMA,
        _A.REPLACE_DEVICE,
    ),  # noqa: E501
    Rule(
        "storage.reallocated",
        Metric.DISK_REALLOCATED,
        _M.INCREASE,
        10,
        7 * DAY,
        _RMA,
        _A.REPLACE_DEVICE,
    ),  # noqa: E501
    Rule(
        "thermal.critical",
        Metric.CPU_TEMP_C,
        _M.SUSTAINED_ABOVE,
        90,
        HOUR,
        _RMA,
        _A.REPLACE_DEVICE,
        min_samples=3,
    ),  # noqa: E501
    Rule("reboot.persistent_loop", Metric.REBOOTS, _M.INCREASE, 30, DAY, _RMA, _A.REPLACE_DEVICE),  # noqa: E501
    # remotely fixable
    Rule("reboot.loop", Metric.REBOOTS, _M.INCREASE, 5, HOUR, _FIX, _A.FIRMWARE_UPDATE),
    Rule(
        "storage.write_errors", Metric.DISK_WRITE_ERRORS, _M.INCREASE, 1, DAY, _FIX, _A.RECONFIGURE
    ),
    Rule("storage.full", Metric.DISK_USED_PCT, _M.LATEST, 95, DAY, _FIX, _A.FREE_STORAGE),
    Rule(
        "thermal.hot",
        Metric.CPU_TEMP_C,
        _M.SUSTAINED_ABOVE,
        75,
        HOUR,
        _FIX,
        _A.CHECK_COOLING,
        min_samples=3,
    ),  # noqa: E501
    Rule(
        "memory.exhausted",
        Metric.MEM_USED_PCT,
        _M.SUSTAINED_ABOVE,
        95,
        HOUR,
        _FIX,
        _A.REBOOT,
        min_samples=3,
    ),  # noqa: E501
    Rule(
        "serial.crc_errors", Metric.SERIAL_CRC_ERRORS, _M.INCREASE, 20, HOUR, _FIX, _A.CHECK_CABLE
    ),
    Rule(
        "serial.rx_errors",
        Metric.FIRMWARE_RX_ERRORS,
        _M.INCREASE,
        20,
        HOUR,
        _FIX,
        _A.CHECK_CABLE,
    ),
    Rule("serial.timeouts", Metric.SERIAL_TIMEOUTS, _M.INCREASE, 20, HOUR, _FIX, _A.REBOOT),
    Rule(
        "connectivity.flapping", Metric.STATUS_OFFLINE, _M.EVENTS, 5, HOUR, _FIX, _A.CHECK_NETWORK
    ),
    Rule(
        "connectivity.loss",
        Metric.NET_LOSS_PCT,
        _M.MEAN,
        10,
        HOUR,
        _FIX,
        _A.CHECK_NETWORK,
        min_samples=3,
    ),  # noqa: E501
    Rule(
        "connectivity.weak_signal",
        Metric.NET_RSSI_DBM,
        _M.SUSTAINED_BELOW,
        -85,
        HOUR,
        _FIX,
        _A.CHECK_NETWORK,
        min_samples=3,
    ),  # noqa: E501
    Rule(
        "camera.frame_drops",
        Metric.FRAME_DROPS,
        _M.INCREASE,
        500,
        HOUR,
        _FIX,
        _A.RECONFIGURE,
        kinds=_CAMERA,
    ),  # noqa: E501
    Rule(
        "camera.obstructed",
        Metric.LENS_CONTRAST_PCT,
        _M.SUSTAINED_BELOW,
        20,
        HOUR,
        _FIX,
        _A.CLEAN_LENS,
        min_samples=2,
        kinds=_CAMERA,
    ),  # noqa: E501
    Rule(
        "counter.zero_counts",
        Metric.OPEN_S_SINCE_LAST_COUNT,
        _M.LATEST,
        2 * HOUR,
        DAY,
        _FIX,
        _A.CLEAN_LENS,
        kinds=_COUNTER,
    ),  # noqa: E501
)


def long_window_metrics(rules: Sequence[Rule] = RULES) -> frozenset[Metric]:
    """The report metrics of rules whose window is longer than :data:`RAW_WINDOW_S`."""
    return frozenset(r.metric for r in rules if r.window_s > RAW_WINDOW_S and r.metric.in_report)


def metric_values(
    history: History, metric: Metric, *, since: int, until: int
) -> tuple[Sample, ...]:
    """Samples of ``metric`` in ``[since, until]``, oldest first."""
    if metric is Metric.STATUS_OFFLINE:
        return tuple(
            Sample(e.at, 1.0)
            for e in sorted(history.status, key=lambda e: e.at)
            if since <= e.at <= until and not e.online
        )
    found = history.series.get(metric)
    if found is not None:
        return tuple(sorted((s for s in found if since <= s.ts <= until), key=lambda s: s.ts))
    out: list[Sample] = []
    for report in history.reports:
        ts = report.get("ts")
        if not isinstance(ts, int) or not since <= ts <= until:
            continue
        value = metric.read(report)
        if value is not None:
            out.append(Sample(ts, value, Metric.UPTIME_S.read(report)))
    out.sort(key=lambda item: item.ts)
    return tuple(out)


def _increase(samples: Sequence[Sample]) -> float:
    """Reset-aware increase; a drop without an uptime reset is a bad read, skipped."""
    total = 0.0
    last = samples[0]
    for sample in samples[1:]:
        if sample.value >= last.value:
            total += sample.value - last.value
        elif (
            sample.uptime_s is not None
            and last.uptime_s is not None
            and sample.uptime_s < last.uptime_s
        ):
            total += sample.value  # the device rebooted and the counter restarted
        else:
            continue  # not a reset: keep measuring from the last good value
        last = sample
    return total


_REDUCE: Mapping[Measure, Callable[[Sequence[float]], float]] = {
    Measure.SUSTAINED_ABOVE: min,
    Measure.SUSTAINED_BELOW: max,
    Measure.MEAN: lambda values: sum(values) / len(values),
    Measure.LATEST: lambda values: values[-1],
    Measure.EVENTS: lambda values: float(len(values)),
}


def _evaluate(rule: Rule, history: History, *, now: int) -> Evidence | None:
    samples = metric_values(history, rule.metric, since=now - rule.window_s, until=now)
    values = tuple(sample.value for sample in samples)
    needed = max(rule.min_samples, 2 if rule.measure is Measure.INCREASE else 1)
    if len(values) < needed:
        return None
    if rule.measure is Measure.INCREASE:
        value = _increase(samples)
    else:
        value = _REDUCE[rule.measure](values)
    if not rule.reached(value):
        return None
    return Evidence(
        rule=rule.id,
        metric=rule.metric.value,
        measure=rule.measure.value,
        value=value,
        values=values[-20:],  # the newest: enough to show the trend
        threshold=rule.threshold,
        window_s=rule.window_s,
    )


def _recent_self_test(history: History, *, now: int) -> Mapping[str, Any] | None:
    """The latest self-test result if it is at most :data:`SELF_TEST_MAX_AGE_S` old."""
    at = history.self_test_at
    if history.self_test is None or at is None or not now - SELF_TEST_MAX_AGE_S <= at <= now:
        return None
    return history.self_test


def _self_test_evidence(result: Mapping[str, Any] | None) -> tuple[Verdict, Evidence] | None:
    if result is None or result.get("passed") is True:
        return None
    hardware = result.get("hardware_fault") is True
    rule = "self_test.hardware_fault" if hardware else "self_test.failed"
    evidence = Evidence(
        rule=rule,
        metric="self_test.hardware_fault" if hardware else "self_test.passed",
        measure=Measure.LATEST.value,
        value=1.0 if hardware else 0.0,
        values=(1.0 if hardware else 0.0,),
        threshold=1.0 if hardware else 0.0,
        window_s=0,
    )
    return (Verdict.RMA_RECOMMENDED if hardware else Verdict.FIX_REMOTELY), evidence


_ACTIONS = frozenset(action.value for action in Action)


def _self_test_action(result: Mapping[str, Any]) -> Action:
    """The remedy of the first known, remotely fixable fault a failed self-test names."""
    faults = result.get("faults")
    for fault in faults if isinstance(faults, Sequence) else ():
        code = fault.get("code") if isinstance(fault, Mapping) else None
        known = FAULT_CODES.get(code) if isinstance(code, str) else None
        if known is not None and not known.hardware and known.action in _ACTIONS:
            return Action(known.action)
    return Action.RECONFIGURE


def _kind(history: History) -> str | None:
    for report in reversed(history.reports):
        kind = report.get("kind")
        if isinstance(kind, str):
            return kind
    return None


def diagnose(history: History, *, now: int, rules: Sequence[Rule] = RULES) -> Diagnosis:
    """Evaluate every rule over ``history`` at ``now``; the worst verdict wins.

    Only a self-test of the last :data:`SELF_TEST_MAX_AGE_S` counts; one that
    found no hardware fault overrides RMA rules (the hardware tests fine, so
    what the reports show is treated as fixable).
    """
    kind = _kind(history)
    fired: list[tuple[Verdict, Action, Evidence]] = []
    test_result = _recent_self_test(history, now=now)
    self_test = _self_test_evidence(test_result)
    if self_test is not None:
        verdict, test_evidence = self_test
        action = Action.REPLACE_DEVICE if verdict is _RMA else _self_test_action(test_result or {})
        fired.append((verdict, action, test_evidence))
    for rule in rules:
        if rule.kinds is not None and kind not in rule.kinds:
            continue
        found = _evaluate(rule, history, now=now)
        if found is not None:
            fired.append((rule.verdict, rule.action, found))
    if not fired:
        return Diagnosis(Verdict.HEALTHY, Action.NONE, ())
    evidence = tuple(item for _, _, item in fired)
    if self_test is not None and self_test[0] is _RMA:
        return Diagnosis(_RMA, Action.REPLACE_DEVICE, evidence)
    fixes = [action for verdict, action, _ in fired if verdict is _FIX]
    if any(verdict is _RMA for verdict, _, _ in fired):
        hardware_fine = test_result is not None and (  # passed, or only fixable faults
            test_result.get("passed") is True or test_result.get("hardware_fault") is False
        )
        if not hardware_fine:
            return Diagnosis(_RMA, Action.RUN_SELF_TEST, evidence)
        return Diagnosis(_FIX, fixes[0] if fixes else Action.FIRMWARE_UPDATE, evidence)
    return Diagnosis(_FIX, fixes[0], evidence)
