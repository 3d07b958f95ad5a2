"""Issue 9, must-show 1: every fault knob leads to its diagnosis, with evidence; no false RMA.

The real chain in simulated time, nothing replaced: a firmware emulator on a
stepping clock → ``FirmwareClient`` over ``InProcessLink`` (over a real pty
through ``PtyFirmware`` + ``SerialLink`` for ``noisy_line`` and ``silent``, the
knobs that live on the wire) → the agent's ``HealthCollector`` → its ``Outbox``
→ the bytes the publisher sends (``health_to_json``) → ``parse_health`` and
``health_to_dict`` as the cloud's ingest stores them → ``diagnose`` over that
history, plus the firmware's SELF_TEST result carried as the agent's command
result (``result_to_json`` → ``parse_command_result``) the way the cloud gets it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.firmware import FirmwareClient, FirmwareLink, InProcessLink, SerialLink
from agent.health import HealthCollector
from agent.outbox import Outbox
from cloud.health.rules.diagnostics import (
    RULES,
    Action,
    Diagnosis,
    Evidence,
    History,
    Verdict,
    diagnose,
)
from firmware_stubs import Emulator, Faults, PtyFirmware, make_emulator
from protocol import serial as codec
from protocol.commands import ok_result, parse_command_result, result_to_json
from protocol.errors import FirmwareUnavailable
from protocol.health import health_from_dict, health_to_dict, health_to_json, parse_health

# Monday 23 Nov 2026, 08:00 UTC: the counter's shop has just opened
START = int(datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp())
HOUR = 3600
RULE_BY_ID = {rule.id: rule for rule in RULES}


class SteppingClock:
    """Simulated time shared by the emulator and the collector; only the test moves it."""

    def __init__(self, start: float) -> None:
        self.t = float(start)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass(frozen=True)
class Case:
    """One knob: the device it breaks, and what the cloud must conclude from it."""

    knob: str
    kind: str
    rule: str  # the rule whose evidence must name ``metric``
    metric: str
    verdict: Verdict  # from the reports and the firmware's self-test together
    action: Action
    reports_verdict: Verdict  # from the reports alone, before any self-test
    reports_action: Action
    self_test_codes: tuple[str, ...] | None  # None: the firmware does not answer
    faults: dict[str, Any] = field(default_factory=dict)
    over_pty: bool = False
    hours: float = 3.0
    interval_s: int = 300

    def make_faults(self) -> Faults:
        return Faults(**(self.faults or {self.knob: True}))


_RMA, _FIX = Verdict.RMA_RECOMMENDED, Verdict.FIX_REMOTELY

CASES = (
    Case(
        "overheating",
        "gateway",
        "thermal.critical",
        "cpu_temp_c",
        _RMA,
        Action.REPLACE_DEVICE,
        _RMA,
        Action.RUN_SELF_TEST,
        ("fan_failure",),
    ),
    Case(
        "disk_write_errors",
        "gateway",
        "storage.write_errors_many",
        "disk.write_errors",
        _RMA,
        Action.REPLACE_DEVICE,
        _RMA,
        Action.RUN_SELF_TEST,
        ("disk_reallocated_sectors",),
    ),
    Case(  # the reports cannot tell a blocked beam from a dead sensor: the self-test can
        "zero_counts",
        "counter",
        "counter.zero_counts",
        "kind_specific.open_s_since_last_count",
        _RMA,
        Action.REPLACE_DEVICE,
        _FIX,
        Action.CLEAN_LENS,
        ("sensor_failure",),
    ),
    Case(
        "lens_obstruction",
        "camera",
        "camera.obstructed",
        "kind_specific.lens_contrast_pct",
        _FIX,
        Action.CLEAN_LENS,
        _FIX,
        Action.CLEAN_LENS,
        ("lens_obstructed",),
    ),
    Case(  # 40 watchdog resets an hour look like an RMA until the self-test says firmware
        "reboot_loop",
        "gateway",
        "reboot.loop",
        "reboots.count",
        _FIX,
        Action.FIRMWARE_UPDATE,
        _RMA,
        Action.RUN_SELF_TEST,
        ("reboot_loop",),
    ),
    Case(
        "noisy_line",
        "gateway",
        "serial.crc_errors",
        "serial.crc_errors",
        _FIX,
        Action.CHECK_CABLE,
        _FIX,
        Action.CHECK_CABLE,
        ("line_noise",),
        faults={"noisy_line": 0.005},  # ~70 % of health frames arrive with a flipped bit
        over_pty=True,
        hours=1.0,
        interval_s=60,
    ),
    Case(
        "silent",
        "gateway",
        "serial.timeouts",
        "serial.timeouts",
        _FIX,
        Action.REBOOT,
        _FIX,
        Action.REBOOT,
        None,
        over_pty=True,
        hours=1.0,
        interval_s=300,
    ),
)


def test_every_knob_has_a_case() -> None:
    assert {case.knob for case in CASES} == {f.name for f in fields(Faults)}
    assert all(case.rule in RULE_BY_ID for case in CASES)


@asynccontextmanager
async def firmware_link(emulator: Emulator, *, over_pty: bool) -> AsyncIterator[FirmwareLink]:
    if not over_pty:
        link = InProcessLink(emulator)
        yield link
        await link.close()
        return
    with PtyFirmware(emulator) as pty:
        serial_link = SerialLink(pty.port)
        try:
            yield serial_link
        finally:
            await serial_link.close()


def cloud_ingest(outbox: Outbox, *, device_id: str) -> Iterator[dict[str, Any]]:
    """Drain the outbox as the publisher does, and parse each payload as the cloud does."""
    while queued := outbox.pending(100):
        for item in queued:
            payload = health_to_json(health_from_dict(item.report))  # what goes on the wire
            yield health_to_dict(parse_health(payload, topic_device_id=device_id))
        outbox.delete(item.seq for item in queued)


async def cloud_self_test(firmware: FirmwareClient, *, device_id: str) -> dict[str, Any]:
    """The firmware's SELF_TEST, as the agent answers the cmd and the cloud parses it."""
    result = await firmware.self_test()
    payload = result_to_json(ok_result("c-1", device_id=device_id, result=result))
    parsed = parse_command_result(payload, topic_device_id=device_id)
    assert parsed.ok and parsed.result is not None
    return dict(parsed.result)


@dataclass
class Run:
    reports: list[dict[str, Any]]
    self_test: dict[str, Any] | None
    self_test_error: Exception | None
    now: int


async def simulate(
    *,
    kind: str,
    faults: Faults,
    tmp_path: Path,
    device_id: str,
    hours: float,
    interval_s: int,
    over_pty: bool = False,
    seed: int = 0,
    check_every: int = 12,  # reports between two diagnoses (on_check)
    on_check: Callable[[History, int], None] | None = None,
) -> Run:
    """Run one device for ``hours`` of simulated time, a report every ``interval_s``."""
    clock = SteppingClock(START)
    emulator = make_emulator(
        kind,
        recordings=tmp_path / f"rec-{device_id}",
        serial_number=f"SN-{device_id}",
        faults=faults,
        now=clock,
        seed=seed,
    )
    reports: list[dict[str, Any]] = []
    # the wire knobs need short attempts: a timeout is real time even when the clock is not
    timeout_s = 0.1 if over_pty else 1.0
    async with firmware_link(emulator, over_pty=over_pty) as link:
        firmware = FirmwareClient(link, timeout_s=timeout_s, retries=2)
        with Outbox(tmp_path / f"outbox-{device_id}.db") as outbox:
            collector = HealthCollector(
                device_id=device_id,
                outbox=outbox,
                clock=clock,
                kind=kind,
                firmware=firmware,
                interval_s=interval_s,
                disk_path=tmp_path,
            )
            steps = int(hours * HOUR // interval_s)
            for step in range(steps + 1):
                if step:
                    clock.advance(interval_s)
                await collector.collect_once()
                reports.extend(cloud_ingest(outbox, device_id=device_id))
                if on_check is not None and step and step % check_every == 0:
                    on_check(History(reports=list(reports)), int(clock()))
        # support asks for a self-test; on a noisy line the agent may need more attempts
        tester = FirmwareClient(link, timeout_s=timeout_s, retries=20 if faults.noisy_line else 2)
        self_test: dict[str, Any] | None = None
        error: Exception | None = None
        try:
            self_test = await cloud_self_test(tester, device_id=device_id)
        except FirmwareUnavailable as exc:
            error = exc
    return Run(reports=reports, self_test=self_test, self_test_error=error, now=int(clock()))


def evidence_of(diagnosis: Diagnosis, rule: str) -> Evidence:
    fired = {e.rule: e for e in diagnosis.evidence}
    assert rule in fired, f"{rule} did not fire: {diagnosis}"
    return fired[rule]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.knob)
async def test_fault_knob_leads_to_its_diagnosis(case: Case, tmp_path: Path) -> None:
    device_id = f"{case.kind}-{case.knob.replace('_', '-')}"
    run = await simulate(
        kind=case.kind,
        faults=case.make_faults(),
        tmp_path=tmp_path,
        device_id=device_id,
        hours=case.hours,
        interval_s=case.interval_s,
        over_pty=case.over_pty,
    )
    assert len(run.reports) == int(case.hours * HOUR // case.interval_s) + 1
    assert {r["kind"] for r in run.reports} == {case.kind}

    # the reports alone
    before = diagnose(History(reports=run.reports), now=run.now)
    assert (before.verdict, before.action) == (case.reports_verdict, case.reports_action), before
    rule = RULE_BY_ID[case.rule]
    evidence = evidence_of(before, case.rule)
    assert evidence.metric == case.metric
    assert rule.reached(evidence.value) and evidence.values

    # the firmware's self-test, as the cloud receives it
    if case.self_test_codes is None:
        assert isinstance(run.self_test_error, FirmwareUnavailable)
        after = before
    else:
        assert run.self_test is not None, run.self_test_error
        codes = tuple(fault["code"] for fault in run.self_test["faults"])
        assert codes == case.self_test_codes
        hardware = any(codec.FAULT_CODES[code].hardware for code in codes)
        assert run.self_test["hardware_fault"] is hardware
        history = History(reports=run.reports, self_test=run.self_test, self_test_at=run.now)
        after = diagnose(history, now=run.now)
        fired = {e.rule for e in after.evidence}
        assert ("self_test.hardware_fault" in fired) is hardware
        assert ("self_test.failed" in fired) is not hardware
    assert (after.verdict, after.action) == (case.verdict, case.action), after
    assert evidence_of(after, case.rule).metric == case.metric  # still shown with the verdict


FLEET_SIZE = 3  # devices per kind


@pytest.mark.parametrize("kind", ["gateway", "camera", "counter"])
async def test_healthy_fleet_over_a_day_is_healthy(kind: str, tmp_path: Path) -> None:
    """Every healthy device, diagnosed every hour of a simulated day: never an RMA, never a fix."""
    diagnoses: list[Diagnosis] = []

    def check(history: History, now: int) -> None:
        diagnoses.append(diagnose(history, now=now))

    for n in range(FLEET_SIZE):
        device_id = f"{kind}-healthy-{n}"
        run = await simulate(
            kind=kind,
            faults=Faults(),
            tmp_path=tmp_path,
            device_id=device_id,
            hours=24,
            interval_s=300,
            seed=n,
            check_every=HOUR // 300,
            on_check=check,
        )
        assert len(run.reports) == 24 * 12 + 1
        # the diagnosis looked at the firmware's real figures, not at empty reports
        assert all(r["fw"] == "2.4.1" and r["cpu_temp_c"] == 47.5 for r in run.reports)
        assert all(r["disk"]["write_errors"] == 0 for r in run.reports)
        watched = {
            "gateway": "fan_rpm",
            "camera": "lens_contrast_pct",
            "counter": "open_s_since_last_count",
        }[kind]
        assert all(watched in r["kind_specific"] for r in run.reports)
        assert run.self_test == {"passed": True, "hardware_fault": False, "faults": []}
        with_test = History(reports=run.reports, self_test=run.self_test, self_test_at=run.now)
        diagnoses.append(diagnose(with_test, now=run.now))
    assert len(diagnoses) == FLEET_SIZE * 25
    assert all(d.verdict is Verdict.HEALTHY for d in diagnoses), [
        d for d in diagnoses if d.verdict is not Verdict.HEALTHY
    ]
    assert not any(d.action is Action.REPLACE_DEVICE for d in diagnoses)
