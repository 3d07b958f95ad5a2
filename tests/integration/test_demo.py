"""`entitle demo` as a user runs it: a subprocess, real broker, real cloud, real agents."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run_demo(*args: str) -> str:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1", TERM="dumb")
    result = subprocess.run(
        [sys.executable, "-m", "entitle.cli", "demo", "--cycles", "1", "--interval", "2", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.usefixtures("require_mosquitto")
def test_demo_shows_devices_switching_a_feature_on_and_off():
    out = _run_demo()
    assert "broker: mosquitto" in out
    assert "3 devices connected" in out
    assert "granted remote_access for a year → every device ON" in out
    assert "voice_control paid-through second reached → every device OFF on its own" in out
    assert "revoked remote_access → every device OFF" in out
    table_rows = [line for line in out.splitlines() if line.startswith("│ gw-")]
    assert any("ON  paid through" in row for row in table_rows)
    assert any("OFF feature not in token" in row for row in table_rows)


def test_demo_runs_on_the_embedded_amqtt_broker():
    out = _run_demo("--embedded-broker")
    assert "broker: amqtt" in out
    assert "revoked remote_access → every device OFF" in out
