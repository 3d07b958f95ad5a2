"""`entitle agent run` as a process: health survives kill -9, commands answer over the broker.

Must-show: with the broker stopped, the agent piles up 500+ unsent health
reports, is killed with SIGKILL, and after the broker and the agent come back
every one of them reaches a cloud subscriber (counted by seq).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt

from protocol.commands import parse_command_result
from protocol.health import parse_health
from protocol.topics import device_topic
from simulators import TokenRepositorySimulator

DEVICE = "gw-health-proc"
UNSENT = 500


def _env(tmp_path: Path, broker, repo: TokenRepositorySimulator | None = None) -> dict[str, str]:
    repo = repo or TokenRepositorySimulator()
    keyset = tmp_path / "root-keyset.cbor"
    keyset.write_bytes(repo.root_keyset)
    return dict(
        os.environ,
        ENTITLE_DATA_DIR=str(tmp_path),
        ENTITLE_DEVICE_ID=DEVICE,
        ENTITLE_BROKER_URL=broker.url(DEVICE),
        ENTITLE_ROOT_KEYSET_FILE=str(keyset),
    )


def _agent(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: ASYNC220 - another process; the loop need not run
        [sys.executable, "-m", "entitle.cli", "agent", "run", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _queued(outbox: Path) -> tuple[int, int]:
    """(rows queued, last seq assigned) read from the agent's outbox file."""
    try:
        with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5) as conn:
            (rows,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
            (last,) = conn.execute("SELECT last_seq FROM outbox_meta").fetchone()
            return int(rows), int(last)
    except sqlite3.OperationalError:  # not created yet
        return 0, 0


def _subscriber(broker) -> aiomqtt.Client:
    return broker.client(
        broker.cloud_username, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


async def test_500_unsent_reports_survive_kill_9_and_all_arrive(tmp_path, broker):
    broker.add_device(DEVICE)
    env = _env(tmp_path, broker)
    topic = device_topic(DEVICE, "health")
    async with _subscriber(broker) as cloud:  # the broker keeps this session for the cloud
        await cloud.subscribe(topic, qos=1)
    broker.stop()

    outbox = tmp_path / f"agent-{DEVICE}" / "outbox.db"
    proc = _agent(env, "--health-interval", "0.005")
    try:
        deadline = time.monotonic() + 120
        while _queued(outbox)[0] < UNSENT:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"only {_queued(outbox)} queued"
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        _stop(proc)
    rows, last_seq = _queued(outbox)
    assert rows == last_seq >= UNSENT  # nothing was sent, nothing lost to the kill

    broker.start()
    proc = _agent(env, "--health-interval", "3600")
    seen: dict[int, dict] = {}
    try:
        async with _subscriber(broker) as cloud:
            await cloud.subscribe(topic, qos=1)
            async with asyncio.timeout(120):
                async for message in cloud.messages:
                    report = parse_health(bytes(message.payload), topic_device_id=DEVICE)
                    seen[report.seq] = json.loads(bytes(message.payload))
                    if all(seq in seen for seq in range(1, last_seq + 1)):
                        break
    finally:
        _stop(proc)
    assert set(range(1, last_seq + 1)) <= set(seen)
    assert len([s for s in seen if s <= last_seq]) == last_seq >= UNSENT
    assert sum(seen[s]["dropped"] for s in range(1, last_seq + 1)) == 0


async def test_command_round_trip_through_the_broker(tmp_path):
    """The cloud sends self_test to an agent process with an in-process camera; gets the faults."""
    from tests.broker_fixtures import FixtureBroker

    # two cloud logins: one publishes the command while the other listens for the result
    with FixtureBroker(tmp_path / "broker", clouds=("cloud", "cloud2")) as broker:
        broker.add_device(DEVICE)
        env = _env(tmp_path, broker)
        proc = _agent(env, "--firmware-kind", "camera", "--health-interval", "3600")
        try:
            async with (
                broker.client("cloud") as listener,
                broker.client("cloud2") as sender,
            ):
                await listener.subscribe(device_topic(DEVICE, "cmd/res"), qos=1)
                await _wait_online(listener, broker)
                results = []
                async with asyncio.timeout(30):
                    for body in (
                        {"v": 1, "id": "st-1", "cmd": "self_test", "args": {}},
                        {"v": 1, "id": "bad-1", "cmd": "format_disk", "args": {}},
                    ):
                        payload = json.dumps(body).encode()
                        await sender.publish(device_topic(DEVICE, "cmd"), payload, qos=1)
                        async for message in listener.messages:
                            if message.topic.matches(device_topic(DEVICE, "cmd/res")):
                                results.append(
                                    parse_command_result(
                                        bytes(message.payload), topic_device_id=DEVICE
                                    )
                                )
                                break
        finally:
            _stop(proc)
    ok, bad = results
    assert ok.id == "st-1" and ok.ok and ok.result["passed"] is True
    assert bad.id == "bad-1" and not bad.ok and bad.error_reason == "unknown_command"


async def _wait_online(client: aiomqtt.Client, broker) -> None:
    """Wait for the agent's retained status (it subscribes to cmd before announcing)."""
    await client.subscribe(device_topic(DEVICE, "status"), qos=1)
    async with asyncio.timeout(30):
        async for message in client.messages:
            if message.topic.matches(device_topic(DEVICE, "status")):
                if json.loads(bytes(message.payload))["status"] == "online":
                    await client.unsubscribe(device_topic(DEVICE, "status"))
                    return


async def test_agent_process_drives_pty_firmware_and_prunes_recordings(tmp_path, broker):
    """`agent run --serial-port PTY --recordings-dir DIR`: the grant reaches both."""
    from firmware_stubs import GatewayEmulator, PtyFirmware

    broker.add_device(DEVICE)
    repo = TokenRepositorySimulator()
    env = _env(tmp_path, broker, repo)
    now = int(time.time())
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name, age_days in {"new.mp4": 0.5, "old.mp4": 3.0}.items():
        path = recordings / name
        path.write_bytes(b"mp4")
        os.utime(path, (now - age_days * 86400,) * 2)
    emulator = GatewayEmulator()
    with PtyFirmware(emulator) as pty:
        proc = _agent(
            env,
            "--serial-port",
            pty.port,
            "--recordings-dir",
            str(recordings),
            "--health-interval",
            "3600",
        )
        try:
            async with broker.client(broker.cloud_username) as cloud:
                await cloud.publish(
                    device_topic(DEVICE, "entitlement"),
                    repo.token(
                        DEVICE,
                        {"video_retention": (now + 86400, {"days": 2}), "remote_access": now + 60},
                        now=now,
                    ),
                    qos=1,
                    retain=True,
                )
            deadline = time.monotonic() + 30
            while (
                set(emulator.features) != {"video_retention", "remote_access"}
                or (recordings / "old.mp4").exists()
            ):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, (emulator.features, list(recordings.iterdir()))
                await asyncio.sleep(0.1)
        finally:
            _stop(proc)
    assert emulator.features["video_retention"] == {"days": 2}
    assert sorted(p.name for p in recordings.iterdir()) == ["new.mp4"]
