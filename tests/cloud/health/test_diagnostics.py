"""Diagnostic rules: every rule fires with its evidence; healthy fleets never get an RMA."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.health.rules.diagnostics import (
    RULES,
    Action,
    History,
    StatusEvent,
    Verdict,
    diagnose,
)

NOW = 1_767_225_600
STEP = 300  # one report every 5 minutes


def report(seq: int, ts: int, kind: str = "gateway", **changes: Any) -> dict[str, Any]:
    """A healthy report; ``changes`` use ``__`` for nesting (``disk__write_errors=3``)."""
    body: dict[str, Any] = {
        "v": 1,
        "device_id": "dev-1",
        "seq": seq,
        "ts": ts,
        "kind": kind,
        "fw": "1.0.0",
        "uptime_s": 10_000 + ts - NOW,
        "reboots": {"count": 0, "last_reason": None},
        "cpu_temp_c": 45.0,
        "mem_used_pct": 40.0,
        "disk": {"used_pct": 50.0, "write_errors": 0, "reallocated": 0},
        "net": {"rssi_dbm": -60.0, "loss_pct": 0.5},
        "serial": {"crc_errors": 0, "timeouts": 0},
        "kind_specific": {
            "camera": {"frame_drops": 0, "lens_contrast_pct": 87.0},
            "counter": {"open_s_since_last_count": 0.0},
        }.get(kind, {}),
        "dropped": 0,
        "errors": {"serial": {}, "cmd": {}, "rejected_tokens": {}},
    }
    for key, value in changes.items():
        target = body
        *parents, leaf = key.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return body


def series(values: list[dict[str, Any]], *, kind: str = "gateway", step: int = STEP) -> list[dict]:
    """Reports ending at NOW, one per ``step``, each with its own changes."""
    start = NOW - step * (len(values) - 1)
    return [report(i + 1, start + i * step, kind, **v) for i, v in enumerate(values)]


def offline_flaps(n: int) -> list[StatusEvent]:
    events = []
    for i in range(n):
        events += [
            StatusEvent(NOW - 3000 + i * 200, False),
            StatusEvent(NOW - 2900 + i * 200, True),
        ]
    return events


# rule id -> (history that makes it fire, the value its evidence must show)
CASES: dict[str, tuple[Callable[[], History], float]] = {
    "storage.write_errors_many": (
        lambda: History(series([{"disk__write_errors": 0}, {"disk__write_errors": 60}])),
        60,
    ),
    "storage.reallocated": (
        lambda: History(series([{"disk__reallocated": 3}, {"disk__reallocated": 15}])),
        12,
    ),
    "thermal.critical": (lambda: History(series([{"cpu_temp_c": 93.0}] * 4)), 93),
    "reboot.persistent_loop": (
        lambda: History(series([{"reboots__count": 0}, {"reboots__count": 31}], step=12 * 3600)),
        31,
    ),
    "reboot.loop": (
        lambda: History(
            series([{"reboots__count": 2}, {"reboots__count": 4}, {"reboots__count": 8}])
        ),
        6,
    ),
    "storage.write_errors": (
        lambda: History(series([{"disk__write_errors": 1}, {"disk__write_errors": 3}])),
        2,
    ),
    "storage.full": (lambda: History(series([{}, {"disk__used_pct": 97.5}])), 97.5),
    "thermal.hot": (
        lambda: History(series([{"cpu_temp_c": 80.0}, {"cpu_temp_c": 78.0}, {"cpu_temp_c": 82.0}])),
        78,
    ),  # noqa: E501
    "memory.exhausted": (lambda: History(series([{"mem_used_pct": 97.0}] * 3)), 97),
    "serial.crc_errors": (
        lambda: History(series([{"serial__crc_errors": 5}, {"serial__crc_errors": 30}])),
        25,
    ),
    "serial.rx_errors": (
        lambda: History(
            series(
                [
                    {"kind_specific__serial": {"rx_errors": 2}},
                    {"kind_specific__serial": {"rx_errors": 30}},
                ]
            )
        ),
        28,
    ),
    "serial.timeouts": (
        lambda: History(series([{"serial__timeouts": 0}, {"serial__timeouts": 21}])),
        21,
    ),
    "connectivity.flapping": (lambda: History(series([{}]), status=offline_flaps(6)), 6),
    "connectivity.loss": (lambda: History(series([{"net__loss_pct": 15.0}] * 3)), 15),
    "connectivity.weak_signal": (
        lambda: History(
            series([{"net__rssi_dbm": -91.0}, {"net__rssi_dbm": -88.0}, {"net__rssi_dbm": -95.0}])
        ),  # noqa: E501
        -88,
    ),
    "camera.frame_drops": (
        lambda: History(
            series(
                [{"kind_specific__frame_drops": 100}, {"kind_specific__frame_drops": 700}],
                kind="camera",
            )
        ),
        600,
    ),
    "camera.obstructed": (
        lambda: History(series([{"kind_specific__lens_contrast_pct": 4.0}] * 2, kind="camera")),
        4,
    ),
    "counter.zero_counts": (
        lambda: History(
            series([{"kind_specific__open_s_since_last_count": 3 * 3600}], kind="counter")
        ),
        3 * 3600,
    ),
}


def test_every_rule_has_a_case() -> None:
    assert {rule.id for rule in RULES} == set(CASES)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.id)
def test_rule_fires_with_its_evidence(rule: Any) -> None:
    make, value = CASES[rule.id]
    diagnosis = diagnose(make(), now=NOW)
    fired = {e.rule: e for e in diagnosis.evidence}
    assert rule.id in fired, f"{rule.id} did not fire: {diagnosis}"
    evidence = fired[rule.id]
    assert evidence.metric == rule.metric
    assert evidence.threshold == rule.threshold
    assert evidence.window_s == rule.window_s
    assert evidence.value == pytest.approx(value)
    assert evidence.values  # the samples it saw
    assert diagnosis.verdict is not Verdict.HEALTHY
    if rule.verdict is Verdict.RMA_RECOMMENDED:
        # reports alone only recommend; the self-test decides
        assert diagnosis.verdict is Verdict.RMA_RECOMMENDED
        assert diagnosis.action is Action.RUN_SELF_TEST
    else:
        assert diagnosis.verdict is Verdict.FIX_REMOTELY
        assert diagnosis.action is rule.action


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.id)
def test_rule_is_quiet_just_outside_its_window(rule: Any) -> None:
    """The same history, seen a window later (plus the newest step), fires nothing of it."""
    make, _ = CASES[rule.id]
    diagnosis = diagnose(make(), now=NOW + rule.window_s + 12 * 3600 + 1)
    assert rule.id not in {e.rule for e in diagnosis.evidence}


def test_a_healthy_history_is_healthy() -> None:
    diagnosis = diagnose(History(series([{}] * 12)), now=NOW)
    assert diagnosis.verdict is Verdict.HEALTHY
    assert diagnosis.action is Action.NONE
    assert diagnosis.evidence == ()


def test_camera_rules_ignore_other_kinds() -> None:
    reports = series([{"kind_specific__frame_drops": 0}, {"kind_specific__frame_drops": 900}])
    assert diagnose(History(reports), now=NOW).verdict is Verdict.HEALTHY  # a gateway


def test_counter_reset_by_reboot_counts_the_new_value() -> None:
    history = History(
        series([{"serial__crc_errors": 40}, {"serial__crc_errors": 25, "uptime_s": 60}])
    )
    evidence = {e.rule: e for e in diagnose(history, now=NOW).evidence}
    assert evidence["serial.crc_errors"].value == 25


def test_a_drop_without_an_uptime_reset_is_a_bad_read_not_a_reset() -> None:
    """A failed firmware read reported 0: no increase, and never a reboot."""
    history = History(series([{"serial__crc_errors": 40}, {"serial__crc_errors": 25}]))
    assert "serial.crc_errors" not in {e.rule for e in diagnose(history, now=NOW).evidence}


def test_reboot_count_dipping_to_zero_for_single_reports_is_no_reboot() -> None:
    """The false RMA: a count of 12 reading 0 now and then, once every 10 reports, all day.

    Counted as resets, each return to 12 was 12 reboots: hundreds a day, persistent loop.
    """
    step = 600
    values: list[dict[str, Any]] = [
        {"reboots__count": 0 if i % 10 == 5 else 12} for i in range(24 * 3600 // step)
    ]
    values += [{"reboots__count": None}, {}]  # unknown or absent: no sample, not 0
    reports = series(values, step=step)
    del reports[-1]["reboots"]
    diagnosis = diagnose(History(reports), now=NOW)
    assert diagnosis.verdict is Verdict.HEALTHY, diagnosis
    # a real reboot loop still counts: the count goes up with each boot
    looping = series([{"reboots__count": 12 + i, "uptime_s": 30} for i in range(8)], step=step // 2)
    fired = {e.rule: e.value for e in diagnose(History(looping), now=NOW).evidence}
    assert fired["reboot.loop"] == 7  # 8 boots, each one more


def test_hardware_fault_from_self_test_is_rma_replace() -> None:
    result = {
        "passed": False,
        "hardware_fault": True,
        "faults": [{"component": "flash", "code": "E_WRITE", "detail": "write verify failed"}],
    }
    diagnosis = diagnose(History(series([{}]), self_test=result, self_test_at=NOW), now=NOW)
    assert diagnosis.verdict is Verdict.RMA_RECOMMENDED
    assert diagnosis.action is Action.REPLACE_DEVICE
    assert diagnosis.evidence[0].rule == "self_test.hardware_fault"


def test_failed_self_test_without_hardware_fault_is_fixable() -> None:
    result = {"passed": False, "hardware_fault": False, "faults": [{"component": "config"}]}
    diagnosis = diagnose(History(series([{}]), self_test=result, self_test_at=NOW), now=NOW)
    assert diagnosis.verdict is Verdict.FIX_REMOTELY
    assert diagnosis.evidence[0].rule == "self_test.failed"


def test_failed_self_test_takes_the_remedy_of_its_fault_code() -> None:
    result = {
        "passed": False,
        "hardware_fault": False,
        "faults": [{"component": "serial", "code": "line_noise", "detail": "loopback"}],
    }
    diagnosis = diagnose(History(series([{}]), self_test=result, self_test_at=NOW), now=NOW)
    assert diagnosis.verdict is Verdict.FIX_REMOTELY
    assert diagnosis.action is Action.CHECK_CABLE


def test_self_test_with_only_fixable_faults_overrides_rma_rules() -> None:
    """A reboot loop seen for a day recommends an RMA until the self-test says firmware."""
    make, _ = CASES["reboot.persistent_loop"]
    result = {
        "passed": False,
        "hardware_fault": False,
        "faults": [{"component": "firmware", "code": "reboot_loop", "detail": "watchdog"}],
    }
    history = History(make().reports, self_test=result, self_test_at=NOW - 60)
    diagnosis = diagnose(history, now=NOW)
    assert diagnosis.verdict is Verdict.FIX_REMOTELY
    assert diagnosis.action is Action.FIRMWARE_UPDATE
    assert "reboot.persistent_loop" in {e.rule for e in diagnosis.evidence}  # still shown
    stale = History(history.reports, self_test=result, self_test_at=NOW - 2 * 86_400)
    assert diagnose(stale, now=NOW).action is Action.RUN_SELF_TEST


def test_passed_self_test_overrides_rma_rules() -> None:
    make, _ = CASES["storage.reallocated"]
    history = make()
    passed = History(
        history.reports,
        self_test={"passed": True, "hardware_fault": False, "faults": []},
        self_test_at=NOW - 60,
    )
    diagnosis = diagnose(passed, now=NOW)
    assert diagnosis.verdict is Verdict.FIX_REMOTELY
    assert "storage.reallocated" in {e.rule for e in diagnosis.evidence}  # still shown


# --- healthy fleets: no false RMA ------------------------------------------------------

KINDS = st.sampled_from(["gateway", "camera", "counter"])


@st.composite
def healthy_history(draw: st.DrawFn) -> History:
    """A working device: gauges in normal ranges, counters creeping, rare reboots."""
    kind = draw(KINDS)
    n = draw(st.integers(min_value=1, max_value=60))
    reports = []
    crc = timeouts = writes = frames = reboots = 0
    last_reboot = -24
    for i in range(n):
        crc += draw(st.integers(0, 1))
        timeouts += draw(st.integers(0, 1))
        frames += draw(st.integers(0, 40))
        if i - last_reboot >= 24 and draw(st.integers(0, 50)) == 0:  # at most one per 2 h
            reboots += 1
            last_reboot = i
            crc = timeouts = frames = 0  # counters restart with the device
        ts = NOW - STEP * (n - 1 - i)
        changes: dict[str, Any] = {
            "cpu_temp_c": draw(st.floats(20, 70)),
            "mem_used_pct": draw(st.floats(5, 90)),
            "disk__used_pct": draw(st.floats(1, 90)),
            "disk__write_errors": writes,
            "net__rssi_dbm": draw(st.floats(-80, -30)),
            "net__loss_pct": draw(st.floats(0, 5)),
            "serial__crc_errors": crc,
            "serial__timeouts": timeouts,
            "reboots__count": reboots,
        }
        if kind == "camera":
            changes["kind_specific__frame_drops"] = frames
            changes["kind_specific__lens_contrast_pct"] = draw(st.floats(40, 100))
        if kind == "counter":
            changes["kind_specific__open_s_since_last_count"] = draw(st.floats(0, 3600))
        reports.append(report(i + 1, ts, kind, **changes))
    flaps = draw(st.integers(0, 2))
    return History(reports, status=offline_flaps(flaps))


@settings(max_examples=300, deadline=None)
@given(healthy_history())
def test_healthy_fleet_is_healthy(history: History) -> None:
    diagnosis = diagnose(history, now=NOW)
    assert diagnosis.verdict is Verdict.HEALTHY, diagnosis


@settings(max_examples=300, deadline=None)
@given(healthy_history(), st.data())
def test_isolated_glitches_never_recommend_rma(history: History, data: st.DataObject) -> None:
    """One hot sample, a few write errors or a reboot burst on a working device: no RMA."""
    reports = [copy.deepcopy(dict(r)) for r in history.reports]
    i = data.draw(st.integers(0, len(reports) - 1))
    reports[i]["cpu_temp_c"] = data.draw(st.floats(70, 120))
    bump = data.draw(st.integers(0, 10))
    for later in reports[i:]:
        later["disk"]["write_errors"] += bump
        later["reboots"]["count"] += data.draw(st.integers(0, 2)) if later is reports[i] else 0
    diagnosis = diagnose(History(reports, status=history.status), now=NOW)
    assert diagnosis.verdict is not Verdict.RMA_RECOMMENDED, diagnosis


def test_a_hardware_fault_self_test_counts_only_while_recent() -> None:
    """An old fault does not keep a device at replace_device forever."""
    from cloud.health.rules.diagnostics import SELF_TEST_MAX_AGE_S

    fault = {"passed": False, "hardware_fault": True, "faults": [{"component": "flash"}]}
    recent = History(series([{}]), self_test=fault, self_test_at=NOW - SELF_TEST_MAX_AGE_S)
    assert diagnose(recent, now=NOW).action is Action.REPLACE_DEVICE
    stale = History(series([{}]), self_test=fault, self_test_at=NOW - SELF_TEST_MAX_AGE_S - 1)
    assert diagnose(stale, now=NOW).verdict is Verdict.HEALTHY
    undated = History(series([{}]), self_test=fault, self_test_at=None)
    assert diagnose(undated, now=NOW).verdict is Verdict.HEALTHY
