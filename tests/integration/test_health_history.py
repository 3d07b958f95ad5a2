"""Health reports over hours, as the cloud's diagnostics read them.

A report must never claim a figure it does not know: when a firmware read
fails, ``reboots.count`` is null, not a stand-in 0 that the cloud's
reset-aware counter (``cloud.health.rules.diagnostics``) would read as one reboot
each time the real count comes back. The diagnostics are pure, so the test
runs them on the reports the agent really built.

The device's host (whose uptime a report carries when the firmware did not
answer) booted after the firmware, as when the host restarts for an update
while the firmware's controller keeps running: a failed read then also shows
an uptime drop, so even a diagnosis that trusts only drops with an uptime
reset is fooled by a stand-in count.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.firmware import FirmwareClient, InProcessLink
from agent.health import HealthCollector
from agent.outbox import Outbox
from cloud.health.rules.diagnostics import History, diagnose
from firmware_stubs import Faults, GatewayEmulator
from protocol.errors import FirmwareUnavailable
from protocol.health import HealthReport, health_to_dict, health_to_json, parse_health
from simulators.fleet import NOISE

DEV = "gw-noisy"
INTERVAL_S = 60
FIRMWARE_AHEAD_S = 86_400  # the firmware has been up a day longer than the host


class Clock:
    """Simulated time shared by the firmware and the collector, from just after the host booted."""

    def __init__(self) -> None:
        self.now = psutil.boot_time() + 60

    def __call__(self) -> float:
        return self.now


def _gateway(clock: Clock, **kwargs: Any) -> GatewayEmulator:
    """A gateway whose firmware booted (and rebooted once) a day before the host."""
    host_start, clock.now = clock.now, clock.now - FIRMWARE_AHEAD_S
    gateway = GatewayEmulator(now=clock, **kwargs)
    gateway.reboot("power_cut")  # the one earlier reboot
    clock.now = host_start
    return gateway


def _reboot_rules(reports: list[dict[str, Any]], *, now: int) -> list[str]:
    diagnosis = diagnose(History(reports=reports), now=now)
    return [e.rule for e in diagnosis.evidence if e.rule.startswith("reboot.")]


def _as_the_cloud_stores_it(report: HealthReport, seq: int) -> dict[str, Any]:
    data = health_to_json(replace(report, seq=seq, dropped=0))
    return health_to_dict(parse_health(data, topic_device_id=DEV))


async def test_noisy_line_after_one_reboot_is_no_reboot_loop(tmp_path: Path) -> None:
    """The fleet's noisy gateway, rebooted once, reporting every minute for 10 hours."""
    clock = Clock()
    gateway = _gateway(clock, faults=Faults(noisy_line=NOISE), seed=3)
    firmware = FirmwareClient(InProcessLink(gateway), timeout_s=0.005, retries=2)
    reports: list[dict[str, Any]] = []
    with Outbox(tmp_path / "outbox.db") as outbox:
        collector = HealthCollector(
            device_id=DEV, outbox=outbox, clock=clock, kind="gateway", firmware=firmware
        )
        for seq in range(1, 10 * 3600 // INTERVAL_S + 1):
            clock.now += INTERVAL_S
            reports.append(_as_the_cloud_stores_it(await collector.build(), seq))
    failed = sum(collector.firmware_failures.values())
    assert failed >= 20, "the line was meant to make some reads fail"
    assert _reboot_rules(reports, now=int(clock.now)) == []
    assert {r["reboots"]["count"] for r in reports} == {None, 1}  # never a made-up 0


class _FlakyFirmware:
    """A firmware whose reads fail on cue and which reboots on cue (a scripted line)."""

    def __init__(self, gateway: GatewayEmulator) -> None:
        self.gateway = gateway
        self.fail = False
        self.counters: dict[str, int] = {}

    async def get_info(self) -> dict[str, Any]:
        if self.fail:
            raise FirmwareUnavailable("no valid answer")
        return self.gateway.info()

    async def get_health(self) -> dict[str, Any]:
        if self.fail:
            raise FirmwareUnavailable("no valid answer")
        self.gateway.tick()
        return self.gateway.health()


# one step per report: (the read fails, the firmware rebooted since the last report)
healthy_steps = st.lists(
    st.tuples(st.booleans(), st.integers(0, 20).map(lambda n: n == 0)),
    min_size=2,
    max_size=240,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=healthy_steps, earlier_reboots=st.integers(0, 50))
async def test_a_healthy_history_with_failed_reads_shows_no_reboot_loop(
    steps: list[tuple[bool, bool]], earlier_reboots: int
) -> None:
    """Any pattern of failed reads, with rare real reboots (3 an hour at most): no reboot rule."""
    clock = Clock()
    gateway = _gateway(clock)
    gateway.reboots = earlier_reboots
    flaky = _FlakyFirmware(gateway)
    reports: list[dict[str, Any]] = []
    collector = HealthCollector(
        device_id=DEV,
        outbox=None,  # type: ignore[arg-type]  # build() only; nothing is queued
        clock=clock,
        kind="gateway",
        firmware=flaky,
    )
    last_reboot = -3600.0
    for seq, (fail, reboot) in enumerate(steps, start=1):
        clock.now += INTERVAL_S
        if reboot and clock.now - last_reboot >= 1200:  # a healthy device: rare reboots
            gateway.reboot("update")
            last_reboot = clock.now
        flaky.fail = fail
        reports.append(_as_the_cloud_stores_it(await collector.build(), seq))
    assert _reboot_rules(reports, now=int(clock.now)) == []
    assert all(
        r["reboots"]["count"] is None for r, (fail, _) in zip(reports, steps, strict=True) if fail
    )
