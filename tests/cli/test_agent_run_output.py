"""What `entitle agent run` tells the person watching it, against a real Mosquitto.

A wrong MQTT password is said once, as an error naming the settings to check
(the agent keeps retrying: the broker may get the account later); then the
agent says where it connected, as which device, and what it enforces until
when, in ISO 8601 UTC dates.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.topics import device_topic
from simulators import TokenRepositorySimulator
from tests.broker_fixtures import FixtureBroker

DEVICE = "gw-says"
_EPOCH_SECONDS = re.compile(r"\b1\d{9}\b")  # 2001-2286 as epoch seconds


class _Lines:
    """A process's stderr lines, read on a thread as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, *, within: float) -> str:
        deadline = time.monotonic() + within
        with self._changed:
            while True:
                found = [line for line in self.lines if text in line]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines))
                self._changed.wait(left)

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)


@pytest.fixture
def agent_env(tmp_path: Path, broker: FixtureBroker) -> Iterator[tuple[dict[str, str], Path]]:
    repo = TokenRepositorySimulator()
    now = int(time.time())

    async def retain_token() -> None:
        async with broker.client(broker.cloud_username) as cloud:
            await cloud.publish(
                device_topic(DEVICE, "entitlement"),
                repo.token(DEVICE, {"remote_access": now + 30 * 86400}, now=now),
                qos=1,
                retain=True,
            )

    asyncio.run(retain_token())
    keyset = tmp_path / "root-keyset.cbor"
    keyset.write_bytes(repo.root_keyset)
    password = tmp_path / "mqtt-password"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ENTITLE_")}
    env.update(
        ENTITLE_DATA_DIR=str(tmp_path / "data"),
        ENTITLE_DEVICE_ID=DEVICE,
        ENTITLE_BROKER_URL=f"mqtt://{DEVICE}@{broker.host}:{broker.port}",
        ENTITLE_BROKER_PASSWORD_FILE=str(password),
        ENTITLE_ROOT_KEYSET_FILE=str(keyset),
    )
    yield env, password


def test_wrong_password_is_said_once_then_connection_and_enforcement_are_said(
    broker: FixtureBroker, agent_env: tuple[dict[str, str], Path]
) -> None:
    env, password_file = agent_env
    broker.add_device(DEVICE)  # the broker knows the device, with another password
    password_file.write_text("not-the-password\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "entitle.cli", "agent", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = _Lines(proc)
    try:
        refused = out.wait_for("refused login", within=30)
        assert f"ERROR agent.session: the broker at {broker.host}:{broker.port} refused login " in (
            refused
        )
        assert f"'{DEVICE}'" in refused
        assert "ENTITLE_BROKER_URL" in refused and "ENTITLE_BROKER_PASSWORD_FILE" in refused
        assert "retrying" in refused
        # it was enforcing from its store all along: nothing yet
        out.wait_for("no entitlement token accepted yet: every feature is denied", within=5)

        time.sleep(3)  # several more attempts (0.5 s backoff, doubling), no more lines
        assert out.count("refused login") == 1, out.lines
        assert proc.poll() is None

        broker.add_device(DEVICE, "not-the-password")  # the account catches up
        connected = out.wait_for("connected to the broker", within=40)
        assert connected.endswith(
            f"INFO agent.session: connected to the broker at {broker.host}:{broker.port} "
            f"as device {DEVICE}"
        )
        allowed = out.wait_for("feature remote_access ALLOWED", within=10)
        assert re.search(
            r"paid through \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(token ver 1, "
            r"fresh until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)$",
            allowed,
        ), allowed
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert not [line for line in out.lines if _EPOCH_SECONDS.search(line)], out.lines
    assert not [line for line in out.lines if "Traceback" in line], out.lines
