"""`entitle agent run` as its own process: check, LWT on kill -9, reconnect, restart.

The agent here is the installed command a gateway runs, not an in-process
object: it is killed with SIGKILL, its broker is restarted under it, and
`entitle agent check` is the enforcement surface other programs call.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.runtime import open_agent
from protocol.topics import device_topic
from simulators import TokenRepositorySimulator
from tests.waiting import HANG_S

DEVICE = "gw-proc"


def _env(tmp_path: Path, broker, **extra: str) -> dict[str, str]:
    if DEVICE not in broker.passwords:
        broker.add_device(DEVICE)
    return dict(
        os.environ,
        ENTITLE_DATA_DIR=str(tmp_path),
        ENTITLE_DEVICE_ID=DEVICE,
        ENTITLE_BROKER_URL=broker.url(DEVICE),
        **extra,
    )


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entitle.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def _wait_status(broker, want: str, *, within: float = HANG_S) -> dict:
    """The agent's status once it says ``want``: the retained one, then each update."""
    seen: list[str] = []
    async with broker.client(broker.cloud_username) as client:
        await client.subscribe(device_topic(DEVICE, "status"), qos=1)
        try:
            async with asyncio.timeout(within):
                async for message in client.messages:
                    status = json.loads(bytes(message.payload))
                    if status["status"] == want:
                        return dict(status)
                    seen.append(status["status"])
        except TimeoutError:
            pass
    raise AssertionError(f"status never became {want!r} within {within:g} s (saw {seen})")


def _wait_check(env: dict[str, str], feature: str, *, code: int, within: float = HANG_S) -> str:
    deadline = time.monotonic() + within
    while True:
        result = _cli(env, "agent", "check", feature)
        if result.returncode == code:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"check {feature} never exited {code}: {result.stdout}")
        time.sleep(0.1)


@pytest.fixture
def provisioned(tmp_path, broker):
    repo = TokenRepositorySimulator()
    broker.add_device(DEVICE)
    keyset = tmp_path / "root-keyset.cbor"
    keyset.write_bytes(repo.root_keyset)
    return repo, keyset


async def test_agent_process_enforces_reports_offline_and_reconnects(tmp_path, broker, provisioned):
    repo, keyset = provisioned
    env = _env(tmp_path, broker, ENTITLE_ROOT_KEYSET_FILE=str(keyset))
    now = int(time.time())
    async with broker.client(broker.cloud_username) as cloud:
        await cloud.publish(
            device_topic(DEVICE, "entitlement"),
            repo.token(DEVICE, {"remote_access": now + 3600}, now=now),
            qos=1,
            retain=True,
        )

    # the agent is another process; nothing on this loop needs to run meanwhile
    proc = subprocess.Popen([sys.executable, "-m", "entitle.cli", "agent", "run"], env=env)  # noqa: ASYNC220
    try:
        out = _wait_check(env, "remote_access", code=0)
        assert "ALLOWED" in out and "running agent" in out
        out = _cli(env, "agent", "check", "voice_control")
        assert out.returncode == 1 and "DENIED" in out.stdout
        status = await _wait_status(broker, "online")
        assert status["token_ver"] == 1 and status["stale_token"] is False

        broker.restart()  # same port; the agent's session drops and comes back
        await _wait_status(broker, "online", within=40)
        assert _cli(env, "agent", "check", "remote_access").returncode == 0

        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the broker publishes the retained will for the dead connection
        await _wait_status(broker, "offline")
        # with no agent running, check reads the store: still enforced offline
        out = _wait_check(env, "remote_access", code=0)
        assert "agent not running" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_check_without_provisioning_says_what_to_do(tmp_path, broker):
    env = _env(tmp_path, broker)
    result = _cli(env, "agent", "check", "remote_access")
    assert result.returncode == 2
    assert "entitle agent run" in result.stderr + result.stdout


def test_agent_run_unprovisioned_fails_with_next_step(tmp_path, broker):
    env = _env(tmp_path, broker)
    result = _cli(env, "agent", "run")
    assert result.returncode == 2
    assert "ENTITLE_ROOT_KEYSET_FILE" in result.stderr + result.stdout


def test_store_from_another_device_is_refused(tmp_path, broker, provisioned):
    repo, _ = provisioned
    other = open_agent(
        device_id="someone-else",
        data_dir=tmp_path / f"agent-{DEVICE}",
        connection=None,
        root_keyset=repo.root_keyset,
    )
    other.store.close()
    result = _cli(_env(tmp_path, broker), "agent", "check", "remote_access")
    assert result.returncode == 2 and "belongs to device" in result.stderr + result.stdout
