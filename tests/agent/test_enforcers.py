"""Enforcers: SET_FEATURES over a real pty follows the grants and the link; retention pruning."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.enforcers import FirmwareEnforcer, RetentionPruner
from agent.enforcers.retention import DAY_S
from agent.firmware import FirmwareClient, SerialLink
from agent.runtime import open_agent
from common.tasks import cancel_and_wait
from firmware_stubs import CameraEmulator, GatewayEmulator, PtyFirmware
from firmware_stubs.camera import recording_name
from simulators import TokenRepositorySimulator
from tests.agent.test_runtime import SteppingClock
from tests.waiting import eventually

DEV = "dev-enf"


@pytest.fixture
def repo() -> TokenRepositorySimulator:
    return TokenRepositorySimulator()


@contextlib.contextmanager
def _pty_agent(
    emulator: object,
    data_dir: Path,
    repo: TokenRepositorySimulator,
    *,
    client: dict,
    enforcer: dict,
) -> Iterator[tuple[Any, FirmwareEnforcer]]:
    """An agent (no broker) whose FirmwareEnforcer drives ``emulator`` over a real pty."""
    with PtyFirmware(emulator) as pty:
        firmware = FirmwareClient(SerialLink(pty.port), **client)
        pushes = FirmwareEnforcer(firmware, **enforcer)
        yield (
            open_agent(
                device_id=DEV,
                data_dir=data_dir,
                connection=None,
                root_keyset=repo.root_keyset,
                enforcers=[pushes],
                firmware=firmware,
            ),
            pushes,
        )


async def test_set_features_follows_grants_and_the_firmware_coming_back(tmp_path, repo):
    emulator = GatewayEmulator()
    now = int(time.time())
    with _pty_agent(
        emulator,
        tmp_path,
        repo,
        client=dict(timeout_s=0.3, retries=1),
        enforcer=dict(retry_s=0.05, probe_s=0.1),
    ) as (agent, enforcer):
        task = asyncio.create_task(agent.run())
        try:
            # nothing granted yet: the firmware is told "no features" at start
            await eventually(lambda: enforcer.pushes >= 1)
            assert emulator.features == {}

            token = repo.token(
                DEV,
                {"remote_access": now + DAY_S, "voice_control": (now + DAY_S, {"lang": "de"})},
                now=now,
            )
            assert await agent.apply_token(token)
            await eventually(lambda: set(emulator.features) == {"remote_access", "voice_control"})
            assert emulator.features["voice_control"] == {"lang": "de"}

            # the firmware goes quiet (power cut, cable): a grant change cannot be pushed
            emulator.faults.silent = True
            assert await agent.apply_token(repo.token(DEV, {"remote_access": now + DAY_S}, now=now))
            await eventually(lambda: enforcer.failures.get("firmware_unavailable", 0) >= 1)
            assert set(emulator.features) == {"remote_access", "voice_control"}
            assert enforcer.dirty and enforcer.link_up is False

            # it comes back having lost its switches: the agent pushes the current set again
            emulator.features = {}
            emulator.faults.silent = False
            await eventually(lambda: emulator.features == {"remote_access": {}})
            # the firmware sets its switches before it answers: wait for the answer
            await eventually(lambda: not enforcer.dirty and enforcer.link_up is True)
            assert emulator.features == {"remote_access": {}}
            assert agent.status_details()["enforcer_firmware"]["in_sync"] is True
        finally:
            await cancel_and_wait([task])
            agent.close()
    assert agent.firmware.counters["timeouts"] >= 1  # the outage went over the real pty


async def test_reboot_command_makes_the_enforcer_push_again(tmp_path, repo):
    emulator = GatewayEmulator()
    now = int(time.time())
    with _pty_agent(
        emulator, tmp_path, repo, client=dict(timeout_s=0.5), enforcer=dict(retry_s=0.05, probe_s=5)
    ) as (agent, enforcer):
        assert await agent.apply_token(repo.token(DEV, {"app_access": now + DAY_S}, now=now))
        task = asyncio.create_task(agent.run())
        try:
            # the first push counted: the emulator sets its features before the enforcer has
            # the answer and counts the push (a snapshot taken between the two let the
            # first push's count pass for the second: seen beside stress-ng)
            await eventually(lambda: emulator.features == {"app_access": {}} and enforcer.pushes)
            pushes = enforcer.pushes
            emulator.features = {}  # what a real reboot does to volatile switches
            result = await agent.commands.handle(b'{"v":1,"id":"rb-1","cmd":"reboot","args":{}}')
            assert result.ok
            await eventually(
                lambda: enforcer.pushes > pushes and emulator.features == {"app_access": {}}
            )
        finally:
            await cancel_and_wait([task])
            agent.close()


# --- retention ------------------------------------------------------------------------
def _recordings(folder: Path, ages_days: dict[str, float], *, now: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, age in ages_days.items():
        path = folder / name
        path.write_bytes(b"mp4")
        stamp = now - age * DAY_S
        os.utime(path, (stamp, stamp))


def _left(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


AGES = {"a-half-day.mp4": 0.5, "b-two-days.mp4": 2.0, "c-five-days.mp4": 5.0, "d-ten.mp4": 10.0}


async def test_recordings_follow_the_entitled_retention_days(tmp_path, repo):
    clock = SteppingClock()
    now = int(clock())
    folder = tmp_path / "recordings"
    _recordings(folder, AGES, now=now)
    pruner = RetentionPruner(folder)
    agent = open_agent(
        device_id=DEV,
        data_dir=tmp_path / "agent",
        connection=None,
        root_keyset=repo.root_keyset,
        clock=clock,
        enforcers=[pruner],
    )
    try:
        # a 7-day tier keeps up to 7 days
        assert await agent.apply_token(
            repo.token(DEV, {"video_retention": (now + 30 * DAY_S, {"days": 7})}, now=now)
        )
        assert pruner.days == 7
        assert _left(folder) == {"a-half-day.mp4", "b-two-days.mp4", "c-five-days.mp4"}

        # downgraded to 3 days
        assert await agent.apply_token(
            repo.token(DEV, {"video_retention": (now + 30 * DAY_S, {"days": 3})}, now=now)
        )
        assert _left(folder) == {"a-half-day.mp4", "b-two-days.mp4"}

        # two days later, by the injected clock, the 2-day file is 4 days old
        clock.offset = 2 * DAY_S
        pruner.prune(now=agent.trusted_now())
        assert _left(folder) == {"a-half-day.mp4"}
    finally:
        agent.close()


async def test_without_entitlement_one_day_is_kept(tmp_path, repo):
    now = int(time.time())
    folder = tmp_path / "recordings"
    _recordings(folder, AGES, now=now)
    (folder / "cam2").mkdir()
    _recordings(folder / "cam2", {"old.mp4": 3, "new.mp4": 0.1}, now=now)
    outside = tmp_path / "precious.mp4"
    _recordings(tmp_path, {"precious.mp4": 30}, now=now)
    (folder / "link.mp4").symlink_to(outside)
    os.utime(folder / "link.mp4", (now - 30 * DAY_S,) * 2, follow_symlinks=False)

    pruner = RetentionPruner(folder)
    agent = open_agent(
        device_id=DEV,
        data_dir=tmp_path / "agent",
        connection=None,
        root_keyset=repo.root_keyset,
        enforcers=[pruner],
    )
    try:
        # a token without video_retention (and a lapsed one) leave the 1-day default
        assert await agent.apply_token(
            repo.token(
                DEV,
                {"remote_access": now + DAY_S, "video_retention": (now - 1, {"days": 30})},
                now=now,
            )
        )
        assert pruner.days == 1
        assert _left(folder) == {"a-half-day.mp4", "new.mp4", "link.mp4"}
        assert outside.exists()  # never followed out of the folder
    finally:
        agent.close()


class _Clock:
    """The firmware's clock, moved by the test (read from the pty's thread)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_firmware_self_reboot_makes_the_enforcer_push_again(tmp_path, repo):
    """A watchdog reset (the reboot_loop knob) clears the switches; GET_INFO's boot_count
    tells the agent, which pushes SET_FEATURES again over the pty."""
    now = int(time.time())
    clock = _Clock(now)
    emulator = GatewayEmulator(now=clock)
    with _pty_agent(
        emulator,
        tmp_path,
        repo,
        client=dict(timeout_s=0.5),
        enforcer=dict(retry_s=0.05, probe_s=0.05),
    ) as (agent, enforcer):
        assert await agent.apply_token(repo.token(DEV, {"app_access": now + DAY_S}, now=now))
        task = asyncio.create_task(agent.run())
        try:
            await eventually(lambda: emulator.features == {"app_access": {}})
            pushes = enforcer.pushes
            emulator.faults.reboot_loop = True
            clock.now += emulator.REBOOT_LOOP_PERIOD_S + 1  # the watchdog fires once
            await eventually(lambda: emulator.reboots == 1)
            emulator.faults.reboot_loop = False
            await eventually(lambda: enforcer.pushes > pushes)
            await eventually(lambda: emulator.features == {"app_access": {}})
            assert emulator.last_reboot_reason == "watchdog"
        finally:
            await cancel_and_wait([task])
            agent.close()


def _camera_recordings(camera: CameraEmulator, ages_days: list[float], *, now: int) -> None:
    """Files named as the camera itself names them, started ``ages_days`` before ``now``."""
    for age in ages_days:
        (camera.recordings / recording_name(now - int(age * DAY_S))).write_bytes(b"mp4")


def _kept_ages(camera: CameraEmulator, *, now: int) -> list[float]:
    """Days since each recording started, oldest first (the camera's own file is 0)."""
    return [(now - _start(name)) / DAY_S for name in camera.recording_files()]


def _start(name: str) -> int:
    stamp = datetime.strptime(name, "rec-%Y%m%dT%H%M%SZ.mp4").replace(tzinfo=UTC)
    return int(stamp.timestamp())


async def test_camera_firmware_keeps_exactly_the_entitled_days_over_a_pty(tmp_path, repo):
    """The camera prunes its own folder by the days the agent pushed, as the grants change."""
    now = int(time.time())
    now -= now % 3600  # recordings start on whole hours
    clock = _Clock(now)
    camera = CameraEmulator(recordings=tmp_path / "cam", interval_s=3600, now=clock)
    _camera_recordings(camera, [30, 20, 14.5, 13.5, 6, 4.5, 3, 0.5], now=now)
    (camera.recordings / "notes.txt").write_text("not a recording")
    # just booted, not told its retention yet: it deletes nothing
    assert _kept_ages(camera, now=now) == [30, 20, 14.5, 13.5, 6, 4.5, 3, 0.5, 0]
    with _pty_agent(
        camera,
        tmp_path / "agent",
        repo,
        client=dict(timeout_s=1.0),
        enforcer=dict(retry_s=0.05, probe_s=5),
    ) as (agent, enforcer):
        grant = now + 30 * DAY_S
        assert await agent.apply_token(
            repo.token(DEV, {"video_retention": (grant, {"days": 14})}, now=now)
        )
        task = asyncio.create_task(agent.run())
        try:
            # 14 days: what started more than 14 days ago goes, the rest stays
            await eventually(lambda: _kept_ages(camera, now=now) == [13.5, 6, 4.5, 3, 0.5, 0])
            assert camera.features["video_retention"] == {"days": 14}

            # a newer token with 5 days: more goes at once
            assert await agent.apply_token(
                repo.token(DEV, {"video_retention": (grant, {"days": 5})}, now=now)
            )
            await eventually(lambda: _kept_ages(camera, now=now) == [4.5, 3, 0.5, 0])
            assert camera.retention_days == 5

            # the entitlement is gone: the documented one day is kept
            assert await agent.apply_token(repo.token(DEV, {"remote_access": grant}, now=now))
            await eventually(lambda: _kept_ages(camera, now=now) == [0.5, 0])
            assert "video_retention" not in camera.features and camera.retention_days == 1
            assert (camera.recordings / "notes.txt").exists()
        finally:
            await cancel_and_wait([task])
            agent.close()
