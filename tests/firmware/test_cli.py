"""``python -m firmware_stubs``: serves a device on a pty until interrupted."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from agent.firmware import FirmwareClient, SerialLink

pytestmark = pytest.mark.timeout(60)


# a background job of a non-interactive shell (how CI and job runners often start the
# suite) inherits SIGINT ignored, and so does everything the tests start
_SIGINT_IGNORED = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]


@pytest.mark.parametrize(
    ("stop", "launcher"),
    [(signal.SIGINT, []), (signal.SIGTERM, []), (signal.SIGINT, _SIGINT_IGNORED)],
    ids=["SIGINT", "SIGTERM", "SIGINT-inherited-ignored"],
)
async def test_cli_serves_a_faulty_camera_until_stopped(
    tmp_path: Path, stop: int, launcher: list[str]
) -> None:
    recordings = tmp_path / "rec"
    process = await asyncio.create_subprocess_exec(
        *launcher,
        *[sys.executable, "-m", "firmware_stubs", "--kind", "camera"],
        *["--fault", "overheating", "--recordings", str(recordings)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        port = (await process.stdout.readline()).decode().strip()
        assert port.startswith("/dev/")
        async with FirmwareClient(SerialLink(port), timeout_s=2.0) as client:
            result = await client.self_test()
            assert result["hardware_fault"] is True
            assert [fault["code"] for fault in result["faults"]] == ["fan_failure"]
        assert len(list(recordings.glob("rec-*.mp4"))) == 1
        process.send_signal(stop)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
