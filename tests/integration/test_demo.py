"""`entitle demo` as a user runs it: a subprocess, real broker, real cloud, real agents."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

# the subprocess timeouts below (up to 300 s) are the hang guards; pytest's own
# per-test timeout (120 s) must not cut a slow machine's run short of them
pytestmark = pytest.mark.timeout(330)


def _run_demo(*args: str, columns: int = 120, timeout: float = 120) -> str:
    env = dict(os.environ, COLUMNS=str(columns), NO_COLOR="1", TERM="dumb")
    result = subprocess.run(
        [sys.executable, "-m", "entitle.cli", "demo", "--cycles", "1", "--interval", "2", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.usefixtures("require_mosquitto")
def test_demo_shows_devices_switching_a_feature_on_and_off():
    out = _run_demo()
    assert "broker: mosquitto" in out
    dashboard = r"dashboard: http://127\.0\.0\.1:\d+/ — sign in as admin@demo\.example"
    assert re.search(dashboard + r" with password \S+", out)
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


# bought on 31 January 2026 (UTC): the notice on 1 December, the renewal charge on
# 1 January 2027, the end on 1 February 2027 (day 366); one more day shows what follows
START = "2026-01-31"
YEAR_AND_A_BIT = "367"


def _fast_forward(*args: str) -> str:
    days = ("--fast-forward", YEAR_AND_A_BIT, "--start", START, "--devices", "2", *args)
    return _run_demo(*days, columns=250, timeout=300)  # wide: one event per line


@pytest.mark.usefixtures("require_mosquitto")
def test_fast_forward_renews_and_the_devices_keep_the_feature_past_the_first_end():
    out = _fast_forward()
    assert "owner bought Remote Services with a test card (order Succeed" in out
    first_end = re.search(r"day 0\) all 2 devices ON until (\d{4}-\d\d-\d\d)", out)
    assert first_end, out
    assert f"e-mail renewal_notice: Remote Services renews on {first_end[1]}" in out
    renewed = re.search(
        r"renewal charge EN-\S+ 60\.00 EUR: Succeed\n"
        r"  subscription: active, renews at (\d{4}-\d\d-\d\d)T.*\n"
        r"  all 2 devices ON until (\d{4}-\d\d-\d\d)",
        out,
    )
    assert renewed, out
    assert first_end[1] == "2027-02-01"
    assert renewed[1] == renewed[2] == "2028-02-01"  # the devices enforce the new end
    last = out.split(f"after {YEAR_AND_A_BIT} days")[1]
    assert f"all 2 devices ON until {renewed[1]}" in last  # still on after the first end
    assert "OFF" not in out


@pytest.mark.usefixtures("require_mosquitto")
def test_fast_forward_with_a_declining_card_ends_the_feature_on_the_devices():
    out = _fast_forward("--card", "declined")
    assert "card on file replaced by a declining test card" in out
    failed = re.findall(r"renewal charge EN-\S+ 60\.00 EUR: Failed", out)
    assert len(failed) == 11  # 1 January 2027 and its retries every 3 days until the end
    assert out.count("e-mail charge_failed: Payment for Remote Services failed") == len(failed)
    assert "Succeed\n" not in out.split("card on file replaced")[1]
    expired = re.search(
        r"e-mail expired: Remote Services has expired\n"
        r"  subscription: expired\n"
        # the token's own "until" already ends the service: no re-signing (issue 16), each
        # device turns it off by itself at the paid-through second
        r"  all 2 devices OFF \(paid through 2027-02-01T00:00:00Z",
        out,
    )
    assert expired, out
    assert "subscription expired; all 2 devices OFF" in out.split(f"after {YEAR_AND_A_BIT} days")[1]
