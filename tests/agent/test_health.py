"""Health collection (host + firmware over the serial codec) and publishing.

Delivery through a real Mosquitto (in order, kept during an outage) is in
tests/integration/test_health_publisher.py.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.firmware import FirmwareClient, InProcessLink, SerialLink
from agent.health import HealthCollector
from agent.hoststats import HostSampler, ProcFS, host, net_counters
from agent.outbox import Outbox
from agent.runtime import open_agent
from firmware_stubs import CameraEmulator, Faults, GatewayEmulator, PtyFirmware
from protocol import serial as codec
from protocol.errors import BadCrc, BadFrame, FrameTooLarge, SerialFrameError
from protocol.health import parse_health
from simulators import TokenRepositorySimulator


async def test_report_combines_host_firmware_and_error_counts(tmp_path):
    camera = CameraEmulator(recordings=tmp_path / "rec", faults=Faults(overheating=True))
    firmware = FirmwareClient(InProcessLink(camera), timeout_s=0.2)
    with Outbox(tmp_path / "outbox.db") as outbox:
        collector = HealthCollector(
            device_id="cam-7",
            outbox=outbox,
            clock=time.time,
            kind="camera",
            firmware=firmware,
            error_counts=lambda: {"rejected_tokens": {"expired": 3}, "cmd": {"bad_json": 1}},
            disk_path=tmp_path,
        )
        assert await collector.collect_once() == 1
        report = outbox.pending()[0].report
    parsed = parse_health(json.dumps(report).encode(), topic_device_id="cam-7")
    assert parsed.kind == "camera" and parsed.fw == "2.4.1"
    assert parsed.cpu_temp_c == 93.5  # the firmware's figure, not the host's
    assert parsed.kind_specific["retention_days"] == 1
    assert parsed.errors["rejected_tokens"] == {"expired": 3}
    assert parsed.errors["cmd"] == {"bad_json": 1}
    assert parsed.mem_used_pct is not None and parsed.disk.used_pct is not None


async def test_silent_firmware_still_reports_the_host_and_counts_the_failure(tmp_path):
    with PtyFirmware(GatewayEmulator(faults=Faults(silent=True))) as pty:
        firmware = FirmwareClient(SerialLink(pty.port), timeout_s=0.1, retries=1)
        with Outbox(tmp_path / "outbox.db") as outbox:
            collector = HealthCollector(
                device_id="gw-7", outbox=outbox, clock=time.time, firmware=firmware
            )
            try:
                await collector.collect_once()
            finally:
                await firmware.close()
            report = outbox.pending()[0].report
    assert report["fw"] is None and report["uptime_s"] > 0
    assert report["serial"]["timeouts"] == 2  # over the real pty
    assert report["errors"]["serial"]["firmware_unavailable"] == 1


async def test_kind_comes_from_the_firmware_when_not_configured(tmp_path):
    camera = CameraEmulator(recordings=tmp_path / "rec")
    firmware = FirmwareClient(InProcessLink(camera), timeout_s=0.2)
    with Outbox(tmp_path / "outbox.db") as outbox:
        collector = HealthCollector(
            device_id="cam-8", outbox=outbox, clock=time.time, firmware=firmware
        )
        await collector.collect_once()
        report = outbox.pending()[0].report
    assert report["kind"] == "camera" and report["kind_specific"]["recordings"] >= 1


class _LyingGateway(GatewayEmulator):
    """Firmware whose health figures are out of range (a corrupted sensor register)."""

    def health(self) -> dict:
        return {**super().health(), "cpu_temp_c": 900.0, "mem_used_pct": "lots"}


async def test_firmware_figures_out_of_range_are_refused_and_counted(tmp_path):
    firmware = FirmwareClient(InProcessLink(_LyingGateway()), timeout_s=0.2)
    with Outbox(tmp_path / "outbox.db") as outbox:
        collector = HealthCollector(
            device_id="gw-9", outbox=outbox, clock=time.time, firmware=firmware
        )
        await collector.collect_once()
        report = outbox.pending()[0].report
    assert report["cpu_temp_c"] != 900.0 and report["mem_used_pct"] != "lots"
    assert report["errors"]["serial"]["bad_health"] == 1
    parse_health(json.dumps(report).encode(), topic_device_id="gw-9")


# --- every byte on the line is accounted for in the next report -------------------------
class RawBytesLinkSimulator:
    """A line that answers the first request with the given bytes, then stays silent."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pending = b""

    async def send(self, data: bytes) -> None:
        self._pending, self._data = self._pending + self._data, b""

    async def receive(self, *, max_bytes: int, timeout_s: float) -> bytes:
        if not self._pending:
            await asyncio.sleep(timeout_s)
            return b""
        chunk, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return chunk

    async def close(self) -> None:
        pass


_COUNTER_OF = {
    codec.Garbage: "garbage",
    BadCrc: "crc_errors",
    FrameTooLarge: "frame_too_large",
    BadFrame: "bad_frames",
}
_line_pieces = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            codec.SOF,
            codec.SOF + b"\x01",
            struct.pack(">2sBBBHH", codec.SOF, 1, 2, 1, 7, codec.MAX_PAYLOAD + 1),  # too large
            struct.pack(">2sBBBHH", codec.SOF, 9, 2, 1, 7, 0),  # unknown version
        ]
    ),
    # answers to requests nobody made (stale), and the same with a bit flipped
    st.builds(
        lambda rid, flip: bytes(
            b ^ (1 << (flip % 8)) if i == flip // 8 else b
            for i, b in enumerate(codec.write(codec.response(codec.Op.GET_INFO, rid, {"a": 1})))
        ),
        st.integers(0, 0xFFFF),
        st.integers(0, 200),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    # too_slow as in every profile: a list given here replaces the profile's
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pieces=st.lists(_line_pieces, max_size=12))
async def test_arbitrary_line_bytes_are_typed_errors_counted_in_the_next_report(
    tmp_path_factory, pieces
):
    """Whatever the line carries, the agent's serial path never crashes and the next health
    report's ``errors.serial`` counts each error under its type and every byte it dropped."""
    data = b"".join(pieces)
    results, consumed = codec.read_all(data)
    expected: dict[str, int] = {}
    for item in results:
        key = _COUNTER_OF[type(item)] if isinstance(item, SerialFrameError) else "stale_frames"
        expected[key] = expected.get(key, 0) + 1
    skipped = sum(item.consumed for item in results if isinstance(item, SerialFrameError))
    in_frames = sum(len(codec.write(item)) for item in results if isinstance(item, codec.Frame))
    assert skipped + in_frames == consumed  # no byte is dropped without an error saying so
    if skipped:
        expected["skipped_bytes"] = skipped

    repo = TokenRepositorySimulator()
    agent = open_agent(
        device_id="gw-line",
        data_dir=tmp_path_factory.mktemp("agent"),
        connection=None,
        root_keyset=repo.root_keyset,
        firmware=FirmwareClient(RawBytesLinkSimulator(data), timeout_s=0.001, retries=1),
        health_interval_s=3600,
    )
    try:
        assert agent.health is not None
        await agent.health.collect_once()  # GET_INFO: no answer in that noise
        report = agent.health.outbox.pending(1)[0].report
    finally:
        agent.close()
    # a broken frame (maybe the answer) is retried at once; noise alone waits the attempt out
    broken = any(
        isinstance(r, SerialFrameError) and not isinstance(r, codec.Garbage) for r in results
    )
    assert report["errors"]["serial"] == {
        **expected,
        "timeouts": 1 if broken else 2,
        "retries": 1,
        "firmware_unavailable": 1,
    }
    parse_health(json.dumps({**report, "seq": 1, "dropped": 0}).encode(), topic_device_id="gw-line")


# --- host figures ---------------------------------------------------------------------------
def test_host_figures_come_from_psutil(tmp_path):
    readings = iter([(10, 1000), (15, 1100), (15, 1100)])
    sampler = HostSampler(disk_path=tmp_path, net=lambda: next(readings))
    now = time.time()
    first = sampler.sample(now=now)
    assert first.uptime_s == int(now - psutil.boot_time())
    assert abs(first.mem_used_pct - psutil.virtual_memory().percent) < 5
    assert abs(first.disk.used_pct - psutil.disk_usage(str(tmp_path)).percent) < 1
    assert first.disk.write_errors is None and first.net.rssi_dbm is None
    assert first.net.loss_pct is None  # a ratio needs two samples
    # 5 more lost while 100 more went through: 5 of 105
    assert sampler.sample(now=now).net.loss_pct == round(100 * 5 / 105, 3)
    assert sampler.sample(now=now).net.loss_pct is None  # no traffic, no ratio
    lost, packets = net_counters() or (0, 0)
    assert isinstance(lost, int) and isinstance(packets, int) and 0 <= lost


@pytest.mark.skipif(not ProcFS.available(), reason="Linux with /proc/meminfo's MemAvailable")
def test_procfs_reads_what_psutil_reads(tmp_path):
    """On Linux the sampler reads /proc and /sys itself (psutil's import costs the idle
    agent memory); each figure is psutil's, read from the same files the same way."""
    assert host() is ProcFS
    assert ProcFS.boot_time() == psutil.boot_time()
    assert ProcFS.disk_usage(str(tmp_path)).percent == pytest.approx(
        psutil.disk_usage(str(tmp_path)).percent, abs=0.2
    )
    assert ProcFS.virtual_memory().percent == pytest.approx(psutil.virtual_memory().percent, abs=5)
    theirs = psutil.net_io_counters(pernic=True)
    ours = ProcFS.net_io_counters(pernic=True)  # read after theirs: never fewer
    assert ours.keys() == theirs.keys()
    for nic, counters in ours.items():
        for name, value in counters._asdict().items():
            assert value >= getattr(theirs[nic], name), (nic, name)
    sensors = {
        unit: [entry.label for entry in entries]
        for unit, entries in psutil.sensors_temperatures().items()
    }
    assert {u: [e.label for e in es] for u, es in ProcFS.sensors_temperatures().items()} == (
        sensors
    )


def test_a_failing_host_source_leaves_the_figure_unknown(tmp_path):
    def broken() -> tuple[int, int]:
        raise OSError("no such interface")

    sampler = HostSampler(disk_path=tmp_path / "gone", net=broken)
    figures = sampler.sample(now=time.time())
    assert figures.net.loss_pct is None and figures.disk.used_pct is None


async def test_publisher_sends_the_stored_bytes_and_skips_an_oversized_report(tmp_path):
    from agent.health import HealthPublisher
    from protocol.health import MAX_HEALTH_BYTES, HealthReport
    from tests.agent.test_commands import RecordingPublisherSimulator

    with Outbox(tmp_path / "o.db") as outbox:
        collector = HealthCollector(
            device_id="gw-bytes",
            outbox=outbox,
            clock=time.time,
            firmware=FirmwareClient(InProcessLink(GatewayEmulator()), timeout_s=0.2),
        )
        await collector.collect_once()
        padded = {"padding": "x" * MAX_HEALTH_BYTES}  # no collector builds this
        outbox.append(
            HealthReport(
                device_id="gw-bytes", seq=0, ts=0, kind="gateway", uptime_s=0, kind_specific=padded
            )
        )
        await collector.collect_once()
        stored = {q.seq: q.body for q in outbox.pending()}
        sink = RecordingPublisherSimulator(expect=2)
        publisher = HealthPublisher(device_id="gw-bytes", outbox=outbox, publisher=sink)
        assert await publisher.drain_once() == 3
        assert [p for _, p in sink.sent] == [stored[1], stored[3]]
        assert publisher.unpublishable == 1 and len(outbox) == 0
        for _, payload in sink.sent:  # what the cloud will parse, as it arrives
            assert parse_health(payload, topic_device_id="gw-bytes").device_id == "gw-bytes"
