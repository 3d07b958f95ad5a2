"""FirmwareClient over a real pty with pyserial (PtyFirmware) and over InProcessLink.

Every behaviour runs on both links: the same bytes go through the same codec,
so the in-process link used by large simulated fleets is held to what the
serial port does.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.firmware import FirmwareClient, FirmwareLink, InProcessLink, SerialLink
from firmware_stubs import CameraEmulator, GatewayEmulator, PtyFirmware
from protocol import serial as codec
from protocol.errors import (
    BadCrc,
    FirmwareErrorReply,
    FirmwareUnavailable,
    SerialFrameError,
    SerialTimeout,
    TransportError,
)

pytestmark = pytest.mark.timeout(60)


@dataclass
class Rig:
    emulator: CameraEmulator
    link: FirmwareLink
    cut: Callable[[], None]  # the cable is pulled / the pty closes under the client


@pytest.fixture(params=["pty", "in_process"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    emulator = CameraEmulator(recordings=tmp_path / "rec", seed=7)
    if request.param == "pty":
        with PtyFirmware(emulator) as firmware:
            link = SerialLink(firmware.port)
            yield Rig(emulator, link, firmware.close)
            await link.close()
    else:
        in_process = InProcessLink(emulator)
        yield Rig(emulator, in_process, in_process.disconnect)
        await in_process.close()


async def test_every_request_round_trips(rig: Rig) -> None:
    client = FirmwareClient(rig.link, timeout_s=1.0)
    info = await client.get_info()
    assert info["kind"] == "camera" and info["serial_number"] == "EMU-000001"

    await client.set_features({"video_retention": {"days": 30, "until": 1_900_000_000}})
    assert (await client.get_info())["features"] == {
        "video_retention": {"days": 30, "until": 1_900_000_000}
    }
    health = await client.get_health()
    assert health["kind_specific"]["retention_days"] == 30
    assert health["kind_specific"]["recordings"] == 1

    assert await client.self_test() == {"passed": True, "hardware_fault": False, "faults": []}
    log = await client.get_log(max_bytes=2000)
    assert "features: video_retention" in log and len(log.encode()) <= 2000

    await client.reboot()
    assert (await client.get_health())["reboots"] == {"count": 1, "last_reason": "requested"}
    assert client.counters == {
        "requests": 8,
        "crc_errors": 0,
        "timeouts": 0,
        "retries": 0,
        "error_replies": 0,
        "bad_frames": 0,
        "frame_too_large": 0,
        "garbage": 0,
        "stale_frames": 0,
        "skipped_bytes": 0,
    }


async def test_self_test_reports_a_hardware_fault(rig: Rig) -> None:
    rig.emulator.faults.overheating = True
    rig.emulator.faults.lens_obstruction = True
    result = await FirmwareClient(rig.link).self_test()
    assert result["passed"] is False and result["hardware_fault"] is True
    assert [fault["code"] for fault in result["faults"]] == ["fan_failure", "lens_obstructed"]


async def test_noisy_line_is_retried_and_counted(rig: Rig) -> None:
    rig.emulator.faults.noisy_line = 0.002
    client = FirmwareClient(rig.link, timeout_s=1.0, retries=8)
    for _ in range(20):
        health = await client.get_health()
        assert health["kind"] == "camera"
    assert client.counters["crc_errors"] >= 1
    assert client.counters["retries"] >= client.counters["crc_errors"] - 1
    assert client.counters["requests"] == 20


async def test_silent_firmware_gives_up_after_the_retries(rig: Rig) -> None:
    rig.emulator.faults.silent = True
    client = FirmwareClient(rig.link, timeout_s=0.05, retries=2)
    with pytest.raises(FirmwareUnavailable) as caught:
        await client.get_info()
    assert isinstance(caught.value.__cause__, SerialTimeout)
    assert client.counters["timeouts"] == 3 and client.counters["retries"] == 2
    rig.emulator.faults.silent = False  # the device comes back: the client recovers
    assert (await client.get_info())["kind"] == "camera"


async def test_a_closed_port_mid_session_is_unavailable(rig: Rig) -> None:
    client = FirmwareClient(rig.link, timeout_s=0.5)
    assert (await client.get_info())["kind"] == "camera"
    rig.cut()
    with pytest.raises(FirmwareUnavailable) as caught:
        await client.get_health()
    assert isinstance(caught.value, TransportError)
    assert client.counters["timeouts"] == 0  # failed at once, not after the retries


async def test_an_error_reply_is_raised_and_not_retried(rig: Rig) -> None:
    client = FirmwareClient(rig.link)
    with pytest.raises(FirmwareErrorReply) as caught:
        await client.set_features({"video_retention": {"days": 0}})
    assert caught.value.code == "bad_request" and caught.value.reason == "firmware_error_reply"
    assert client.counters["error_replies"] == 1 and client.counters["retries"] == 0


async def test_stale_answers_are_discarded(rig: Rig) -> None:
    # an answer to a request the client never made (or gave up on) is waiting
    await rig.link.send(codec.write(codec.request(codec.Op.GET_HEALTH, 0xBEEF)))
    client = FirmwareClient(rig.link)
    assert (await client.get_info())["kind"] == "camera"
    assert client.counters["stale_frames"] == 1


async def test_a_corrupted_answer_is_retried_with_the_same_id(rig: Rig) -> None:
    sent: list[bytes] = []
    received = 0
    real_send, real_receive = rig.link.send, rig.link.receive

    async def tap_send(data: bytes) -> None:
        sent.append(data)
        await real_send(data)

    async def tap_receive(*, max_bytes: int, timeout_s: float) -> bytes:
        # one bit flipped in the payload of the first answer, wherever chunks split
        nonlocal received
        chunk = bytearray(await real_receive(max_bytes=max_bytes, timeout_s=timeout_s))
        if received <= 10 < received + len(chunk):
            chunk[10 - received] ^= 0x04
        received += len(chunk)
        return bytes(chunk)

    rig.link.send = tap_send  # type: ignore[method-assign]
    rig.link.receive = tap_receive  # type: ignore[method-assign]
    client = FirmwareClient(rig.link)
    await client.reboot()
    assert len(sent) == 2 and sent[0] == sent[1]
    assert rig.emulator.reboots == 1  # answered from the firmware's cache the second time
    assert client.counters["crc_errors"] == 1 and client.counters["retries"] == 1
    assert client.counters["timeouts"] == 0  # retried at once, not after a timeout


async def test_an_answer_waiting_when_the_deadline_passed_is_read_not_timed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent stalled past its deadline (a busy CPU, a GC pause) with the answer in the
    buffer: the answer counts. Each look at the clock here is 10 s after the last; before,
    the deadline was checked before the buffer, so a loaded machine saw timeouts and
    retries where the firmware had answered at once. In process only: over a pty the
    answer may not have arrived yet when the clock is read."""
    emulator = GatewayEmulator()
    client = FirmwareClient(InProcessLink(emulator), timeout_s=0.2, retries=0)
    loop = asyncio.get_running_loop()
    real_time, looks = loop.time, itertools.count()
    with monkeypatch.context() as patched:
        patched.setattr(loop, "time", lambda: real_time() + 10 * next(looks))
        info = await client.get_info()
        await client.reboot()
    assert info["kind"] == "gateway" and emulator.reboots == 1
    assert client.counters["timeouts"] == 0 and client.counters["retries"] == 0


def test_a_missing_port_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(FirmwareUnavailable) as caught:
        SerialLink(str(tmp_path / "ttyUSB9"))
    assert "cannot open serial port" in str(caught.value)


class BrokenLinkSimulator:
    """A link whose driver fails with a foreign exception."""

    async def send(self, data: bytes) -> None:
        raise RuntimeError("driver exploded")

    async def receive(self, *, max_bytes: int, timeout_s: float) -> bytes:
        raise RuntimeError("driver exploded")

    async def close(self) -> None:
        raise RuntimeError("driver exploded")


async def test_foreign_exceptions_never_escape() -> None:
    async with FirmwareClient(BrokenLinkSimulator()) as client:
        with pytest.raises(FirmwareUnavailable) as caught:
            await client.get_info()
        assert isinstance(caught.value.__cause__, RuntimeError)


def test_bad_crc_is_untrusted_data_not_transport() -> None:
    assert not issubclass(BadCrc, TransportError)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    noise=st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.5]),
    calls=st.lists(st.sampled_from(["get_info", "get_health", "self_test", "reboot"]), max_size=6),
)
async def test_any_noise_ends_in_an_answer_or_unavailable(
    seed: int, noise: float, calls: list[str]
) -> None:
    emulator = GatewayEmulator(seed=seed)
    emulator.faults.noisy_line = noise
    client = FirmwareClient(InProcessLink(emulator), timeout_s=0.01, retries=2)
    answered = 0
    for name in calls:
        try:
            await getattr(client, name)()
            answered += 1
        except FirmwareUnavailable as exc:
            assert isinstance(exc.__cause__, SerialTimeout | SerialFrameError)
    counters = client.counters
    assert counters["requests"] == len(calls)
    assert counters["retries"] <= 2 * len(calls)
    assert counters["error_replies"] == 0
    if noise == 0.0:
        assert answered == len(calls) and counters["retries"] == 0
    # every reboot that got an answer ran exactly once; an unanswered one at most once
    assert calls.count("reboot") >= emulator.reboots
