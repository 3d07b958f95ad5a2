"""firmware_stubs: each kind's answers, and what every fault knob does to them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_stubs import (
    CameraEmulator,
    CounterEmulator,
    Emulator,
    Faults,
    GatewayEmulator,
    make_emulator,
)
from firmware_stubs.camera import recording_name
from protocol import serial as codec
from protocol.errors import SerialFrameError

DAY = 86_400
# Wednesday 2026-11-25 00:00 UTC
MIDNIGHT = int(datetime(2026, 11, 25, tzinfo=UTC).timestamp())


class SteppingClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ask(
    emulator: Emulator, op: int, body: dict[str, Any] | None = None, *, request_id: int = 1
) -> codec.Frame:
    """One request through the codec; the single frame that comes back."""
    out = emulator.feed(codec.write(codec.Frame(op=op, request_id=request_id, body=body or {})))
    results, consumed = codec.read_all(out)
    assert consumed == len(out) and len(results) == 1, results
    frame = results[0]
    assert isinstance(frame, codec.Frame)
    assert (frame.op, frame.request_id) == (op, request_id)
    return frame


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(MIDNIGHT + 9 * 3600)  # 09:00, the counter's shop is open


@pytest.fixture(params=["gateway", "camera", "counter"])
def emulator(request: pytest.FixtureRequest, tmp_path: Path, clock: SteppingClock) -> Emulator:
    return make_emulator(request.param, recordings=tmp_path / "rec", now=clock)


def test_healthy_device_answers_every_op(emulator: Emulator, clock: SteppingClock) -> None:
    info = ask(emulator, codec.Op.GET_INFO).body
    assert info["kind"] == emulator.kind and info["protocol"] == 1
    clock.advance(300)
    health = ask(emulator, codec.Op.GET_HEALTH, request_id=2).body
    assert health["uptime_s"] == 300
    assert health["reboots"] == {"count": 0, "last_reason": None}
    assert health["disk"] == {"used_pct": 12.0, "write_errors": 0, "reallocated": 0}
    assert health["cpu_temp_c"] < 60
    result = ask(emulator, codec.Op.SELF_TEST, request_id=3).body
    assert result == {"passed": True, "hardware_fault": False, "faults": []}
    log = ask(emulator, codec.Op.GET_LOG, {"max_bytes": 4096}, request_id=4).body
    assert "boot:" in log["log"] and "self-test: 0 fault(s)" in log["log"]


def test_reboot_resets_uptime_and_counts(emulator: Emulator, clock: SteppingClock) -> None:
    clock.advance(1000)
    assert ask(emulator, codec.Op.REBOOT).body == {"rebooting": True}
    clock.advance(5)
    health = ask(emulator, codec.Op.GET_HEALTH, request_id=2).body
    assert health["uptime_s"] == 5
    assert health["reboots"] == {"count": 1, "last_reason": "requested"}


def test_a_retried_request_is_answered_again_but_run_once(emulator: Emulator) -> None:
    first = codec.write(codec.request(codec.Op.REBOOT, 9))
    replies = [emulator.feed(first), emulator.feed(first)]
    assert replies[0] == replies[1]
    assert emulator.reboots == 1
    ask(emulator, codec.Op.REBOOT, request_id=10)
    assert emulator.reboots == 2


def test_refusals_are_error_frames(emulator: Emulator) -> None:
    unknown = ask(emulator, 0x42)
    assert unknown.kind is codec.FrameKind.ERROR and unknown.body["code"] == "unknown_op"
    bad = ask(emulator, codec.Op.SET_FEATURES, {"features": ["x"]}, request_id=2)
    assert bad.kind is codec.FrameKind.ERROR and bad.body["code"] == "bad_request"
    bad_log = ask(emulator, codec.Op.GET_LOG, {"max_bytes": "all"}, request_id=3)
    assert bad_log.body["code"] == "bad_request"


def test_set_features_replaces_the_set(emulator: Emulator) -> None:
    features = {"remote_services": {"until": MIDNIGHT + DAY}, "voice_control": {"until": 1}}
    reply = ask(emulator, codec.Op.SET_FEATURES, {"features": features})
    assert reply.body == {"applied": ["remote_services", "voice_control"]}
    ask(emulator, codec.Op.SET_FEATURES, {"features": {"voice_control": {}}}, request_id=2)
    assert ask(emulator, codec.Op.GET_INFO, request_id=3).body["features"] == {"voice_control": {}}


def test_log_respects_max_bytes_and_keeps_the_newest_lines(emulator: Emulator) -> None:
    for i in range(300):
        emulator.log("info", f"event {i}")
    body = ask(emulator, codec.Op.GET_LOG, {"max_bytes": 200}).body
    assert len(body["log"].encode()) <= 200 and body["truncated"] is True
    assert body["log"].endswith("INFO event 299")
    whole = ask(emulator, codec.Op.GET_LOG, {"max_bytes": 1_000_000}, request_id=2).body
    assert len(whole["log"]) <= codec.MAX_PAYLOAD  # clamped to one frame


_ids = itertools.count(1000)


def self_test(emulator: Emulator) -> dict[str, Any]:
    """Run the self-test; on a noisy line, retry (same id: the cached answer) until clean."""
    request = codec.write(codec.request(codec.Op.SELF_TEST, next(_ids)))
    for _ in range(50):
        results, _ = codec.read_all(emulator.feed(request))
        frames = [item for item in results if isinstance(item, codec.Frame)]
        if frames:
            break
    result = codec.check_self_test(frames[0].body)
    for fault in result["faults"]:
        assert fault["code"] in codec.FAULT_CODES
    return result


def codes(result: dict[str, Any]) -> list[str]:
    return [fault["code"] for fault in result["faults"]]


def test_overheating_is_a_hardware_fault(tmp_path: Path, clock: SteppingClock) -> None:
    gateway = GatewayEmulator(faults=Faults(overheating=True), now=clock)
    health = ask(gateway, codec.Op.GET_HEALTH).body
    assert health["cpu_temp_c"] > 90 and health["kind_specific"]["fan_rpm"] == 0
    result = self_test(gateway)
    assert result["passed"] is False and result["hardware_fault"] is True
    assert codes(result) == ["fan_failure"]
    healthy = CameraEmulator(recordings=tmp_path / "a", now=clock)
    hot = CameraEmulator(recordings=tmp_path / "b", faults=Faults(overheating=True), now=clock)
    clock.advance(3600)
    drops = [
        ask(cam, codec.Op.GET_HEALTH).body["kind_specific"]["frame_drops"] for cam in (healthy, hot)
    ]
    assert drops == [6, 360]


def test_disk_write_errors_are_a_hardware_fault(clock: SteppingClock) -> None:
    gateway = GatewayEmulator(faults=Faults(disk_write_errors=True), now=clock)
    clock.advance(300)
    disk = ask(gateway, codec.Op.GET_HEALTH).body["disk"]
    assert disk["write_errors"] == 5 and disk["reallocated"] == 64 + 8 * 5
    result = self_test(gateway)
    assert result["hardware_fault"] is True and codes(result) == ["disk_reallocated_sectors"]
    assert "5 write errors" in result["faults"][0]["detail"]


def test_camera_disk_errors_lose_recordings(tmp_path: Path, clock: SteppingClock) -> None:
    camera = CameraEmulator(recordings=tmp_path, faults=Faults(disk_write_errors=True), now=clock)
    clock.advance(5 * 3600)
    health = ask(camera, codec.Op.GET_HEALTH).body
    assert health["disk"]["write_errors"] == 2  # writes 3 and 6 of 6 failed
    assert health["kind_specific"]["recordings"] == 4


def test_lens_obstruction_is_cleanable_not_hardware(tmp_path: Path, clock: SteppingClock) -> None:
    camera = CameraEmulator(recordings=tmp_path, faults=Faults(lens_obstruction=True), now=clock)
    assert ask(camera, codec.Op.GET_HEALTH).body["kind_specific"]["lens_contrast_pct"] < 10
    result = self_test(camera)
    assert result["passed"] is False and result["hardware_fault"] is False
    assert codes(result) == ["lens_obstructed"]
    assert "clean the lens" in result["faults"][0]["detail"]
    assert not codec.FAULT_CODES["lens_obstructed"].hardware


def test_reboot_loop_is_fixed_by_a_firmware_update(
    emulator: Emulator, clock: SteppingClock
) -> None:
    emulator.faults.reboot_loop = True
    clock.advance(10 * 60)
    health = ask(emulator, codec.Op.GET_HEALTH).body
    assert health["reboots"] == {"count": 6, "last_reason": "watchdog"}
    assert health["uptime_s"] < 90
    result = self_test(emulator)
    assert result["hardware_fault"] is False and codes(result) == ["reboot_loop"]
    assert "watchdog reset" in ask(emulator, codec.Op.GET_LOG, request_id=5).body["log"]


def test_noisy_line_corrupts_answers(emulator: Emulator) -> None:
    emulator.faults.noisy_line = 1.0
    out = emulator.feed(codec.write(codec.request(codec.Op.GET_INFO, 1)))
    results, _ = codec.read_all(out)
    assert out and not any(isinstance(item, codec.Frame) for item in results)
    emulator.faults.noisy_line = 0.0
    assert codes(self_test(emulator)) == []
    emulator.faults.noisy_line = 0.001
    found = self_test(emulator)
    assert found["hardware_fault"] is False and codes(found) == ["line_noise"]


def test_silent_firmware_never_answers(emulator: Emulator) -> None:
    emulator.faults.silent = True
    assert emulator.feed(codec.write(codec.request(codec.Op.GET_INFO, 1))) == b""
    assert emulator.feed(codec.write(codec.request(codec.Op.REBOOT, 2))) == b""
    assert emulator.reboots == 0


def test_corrupted_requests_are_dropped_and_counted(emulator: Emulator) -> None:
    data = bytearray(codec.write(codec.request(codec.Op.REBOOT, 1)))
    data[5] ^= 0x10
    assert emulator.feed(bytes(data)) == b""
    assert ask(emulator, codec.Op.GET_HEALTH, request_id=2).body["serial"] == {"rx_errors": 1}
    assert emulator.reboots == 0


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64) | st.sampled_from([b"\xa5\x5a", b"\xa5\x5a\x01"])))
def test_feed_never_raises(chunks: list[bytes]) -> None:
    emulator = GatewayEmulator(now=lambda: MIDNIGHT)
    for chunk in chunks:
        out = emulator.feed(chunk)
        for item in codec.read_all(out)[0]:
            assert not isinstance(item, SerialFrameError)


def test_all_fault_codes_are_in_the_table(tmp_path: Path, clock: SteppingClock) -> None:
    everything = dict(
        overheating=True,
        disk_write_errors=True,
        lens_obstruction=True,
        zero_counts=True,
        reboot_loop=True,
    )
    seen: set[str] = set()
    for kind in ("gateway", "camera", "counter"):
        device = make_emulator(kind, recordings=tmp_path, now=clock, faults=Faults(**everything))
        clock.advance(600)
        seen |= set(codes(self_test(device)))
    device.faults.noisy_line = 0.0001
    seen |= set(codes(self_test(device)))
    assert seen == set(codec.FAULT_CODES)


# -- camera retention ----------------------------------------------------------


@pytest.mark.parametrize(("days", "kept_days"), [(7, 7), (30, 30), (None, 1)])
def test_camera_keeps_what_retention_allows(
    tmp_path: Path, days: int | None, kept_days: int
) -> None:
    clock = SteppingClock(MIDNIGHT)
    camera = CameraEmulator(recordings=tmp_path, interval_s=6 * 3600, now=clock)
    (tmp_path / "notes.txt").write_text("not a recording")
    if days is not None:
        feature = {"video_retention": {"days": days, "until": MIDNIGHT + 90 * DAY}}
        ask(camera, codec.Op.SET_FEATURES, {"features": feature})
    for hour in range(40 * 24):
        clock.advance(3600)
        ask(camera, codec.Op.GET_HEALTH, request_id=hour % 65536)
    now = int(clock())
    expected = sorted(
        recording_name(start)
        for start in range(MIDNIGHT, now + 1, 6 * 3600)
        if start >= now - kept_days * DAY
    )
    assert camera.recording_files() == expected
    assert len(expected) == kept_days * 4 + 1
    assert (tmp_path / "notes.txt").exists()
    health = ask(camera, codec.Op.GET_HEALTH, request_id=9999).body["kind_specific"]
    assert health["retention_days"] == kept_days and health["recordings"] == len(expected)


def test_losing_retention_prunes_at_once_and_regaining_it_restores_nothing(
    tmp_path: Path,
) -> None:
    clock = SteppingClock(MIDNIGHT)
    camera = CameraEmulator(recordings=tmp_path, interval_s=DAY, now=clock)
    ask(camera, codec.Op.SET_FEATURES, {"features": {"video_retention": {"days": 30}}})
    clock.advance(10 * DAY)
    ask(camera, codec.Op.GET_HEALTH, request_id=2)
    assert len(camera.recording_files()) == 11
    ask(camera, codec.Op.SET_FEATURES, {"features": {}}, request_id=3)  # subscription lapsed
    assert len(camera.recording_files()) == 2  # today's and yesterday's
    ask(
        camera, codec.Op.SET_FEATURES, {"features": {"video_retention": {"days": 30}}}, request_id=4
    )
    assert len(camera.recording_files()) == 2
    out_of_range = {"video_retention": {"days": 0}}
    reply = ask(camera, codec.Op.SET_FEATURES, {"features": out_of_range}, request_id=5)
    assert reply.kind is codec.FrameKind.ERROR and reply.body["code"] == "bad_request"


def test_a_clock_jump_writes_only_what_would_be_kept(tmp_path: Path) -> None:
    clock = SteppingClock(MIDNIGHT)
    camera = CameraEmulator(recordings=tmp_path, interval_s=60, now=clock)
    clock.advance(365 * DAY)
    ask(camera, codec.Op.GET_HEALTH)
    assert len(camera.recording_files()) == DAY // 60 + 1


# -- people counter ------------------------------------------------------------


def test_counter_counts_only_in_opening_hours(clock: SteppingClock) -> None:
    counter = CounterEmulator(now=clock, people_per_hour=120)  # open 08-20 UTC, now 09:00
    clock.advance(2 * 3600)
    stats = ask(counter, codec.Op.GET_HEALTH).body["kind_specific"]
    assert stats["count_in"] == 240 and stats["count_out"] == 240 and stats["open_now"] is True
    clock.advance(12 * 3600)  # 23:00: closed since 20:00
    stats = ask(counter, codec.Op.GET_HEALTH, request_id=2).body["kind_specific"]
    assert stats["count_in"] == 240 + 9 * 120 and stats["open_now"] is False
    assert stats["open_s_since_last_count"] < 60


def test_zero_counts_in_opening_hours_is_a_sensor_failure(clock: SteppingClock) -> None:
    counter = CounterEmulator(now=clock, faults=Faults(zero_counts=True))
    clock.advance(2 * 3600)  # 09:00 → 11:00, open
    stats = ask(counter, codec.Op.GET_HEALTH).body["kind_specific"]
    assert stats["count_in"] == 0 and stats["count_out"] == 0
    assert stats["open_s_since_last_count"] == 7200
    clock.advance(10 * 3600)  # to 21:00: only 9 more opening hours
    stats = ask(counter, codec.Op.GET_HEALTH, request_id=2).body["kind_specific"]
    assert stats["open_s_since_last_count"] == 11 * 3600
    result = self_test(counter)
    assert result["hardware_fault"] is True and codes(result) == ["sensor_failure"]


def test_a_failing_disk_is_an_internal_error_reply(tmp_path: Path, clock: SteppingClock) -> None:
    camera = CameraEmulator(recordings=tmp_path / "rec", interval_s=60, now=clock)
    (tmp_path / "rec").rename(tmp_path / "gone")  # the recordings volume disappeared
    (tmp_path / "rec").write_text("not a folder")
    clock.advance(120)
    reply = ask(camera, codec.Op.GET_HEALTH)
    assert reply.kind is codec.FrameKind.ERROR and reply.body["code"] == "internal"


# -- reboots -------------------------------------------------------------------


def test_boot_count_tells_every_reboot_and_a_reboot_clears_the_features(
    emulator: Emulator, clock: SteppingClock
) -> None:
    ask(emulator, codec.Op.SET_FEATURES, {"features": {"remote_access": {}}})
    info = ask(emulator, codec.Op.GET_INFO, request_id=2).body
    assert info["boot_count"] == 1 and info["features"] == {"remote_access": {}}
    ask(emulator, codec.Op.REBOOT, request_id=3)
    info = ask(emulator, codec.Op.GET_INFO, request_id=4).body
    assert info["boot_count"] == 2 and info["features"] == {}  # switches live in RAM
    ask(emulator, codec.Op.SET_FEATURES, {"features": {"remote_access": {}}}, request_id=5)
    emulator.faults.reboot_loop = True
    clock.advance(2 * emulator.REBOOT_LOOP_PERIOD_S)
    info = ask(emulator, codec.Op.GET_INFO, request_id=6).body
    assert info["boot_count"] == 4 and info["features"] == {}


def test_a_rebooted_camera_deletes_nothing_until_told_its_retention(tmp_path: Path) -> None:
    clock = SteppingClock(MIDNIGHT)
    camera = CameraEmulator(recordings=tmp_path, interval_s=DAY, now=clock)
    ask(camera, codec.Op.SET_FEATURES, {"features": {"video_retention": {"days": 30}}})
    clock.advance(10 * DAY)
    ask(camera, codec.Op.REBOOT, request_id=2)
    clock.advance(60)
    ask(camera, codec.Op.GET_HEALTH, request_id=3)
    assert len(camera.recording_files()) == 11  # not cut to the 1-day default
    ask(camera, codec.Op.SET_FEATURES, {"features": {"video_retention": {"days": 3}}}, request_id=4)
    assert len(camera.recording_files()) == 3  # started within the last 3 days
    ask(camera, codec.Op.REBOOT, request_id=5)  # and no host says anything for a while
    clock.advance(CameraEmulator.FEATURES_GRACE_S)
    ask(camera, codec.Op.GET_HEALTH, request_id=6)
    assert len(camera.recording_files()) == 1  # the default day
