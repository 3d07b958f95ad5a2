"""The systemd units of packaging/systemd, checked by systemd itself.

``systemd-analyze verify`` loads each unit as systemd would and refuses unknown
keys, values it cannot parse and an ``ExecStart=`` that is not an executable
file. The units name the paths of a real install (``/opt/entitle/bin/entitle``,
``/opt/entitle-agent/bin/entitle-agent``); for the check they are rendered into a
temporary folder with this environment's own binaries in those places (every
binary a unit names must exist here too), so what is verified is the unit text
as shipped, with only the install prefix changed. Template units are checked as
an instance (``entitle-cloud@8001``). ``systemd-analyze security --offline``
scores each service's exposure; the agent, on the device, must stay "OK" with
room to spare.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "packaging" / "systemd"
BIN = Path(sys.executable).parent  # this environment's bin: entitle, entitle-agent, nats-server
PREFIXES = {"/opt/entitle-agent/bin/": f"{BIN}/", "/opt/entitle/bin/": f"{BIN}/"}
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
MOSQUITTO_UNIT = Path("/lib/systemd/system/mosquitto.service")

pytestmark = pytest.mark.skipif(
    not Path(ANALYZE).exists(),
    reason="systemd-analyze is not installed: the systemd units are NOT checked",
)

# each unit as systemd is asked to load it (a template as one instance)
CHECKED = {
    "entitle-agent.service": "entitle-agent.service",
    "entitle-cloud@.service": "entitle-cloud@8001.service",
    "entitle-jobs.service": "entitle-jobs.service",
    "entitle-cloud.target": "entitle-cloud.target",
    "entitle-broker-nats@.service": "entitle-broker-nats@n1.service",
    "entitle-broker-nats-auth@.service": "entitle-broker-nats-auth@n1.service",
}
# the most a service may expose (systemd-analyze security, 0-100; 100 is "UNSAFE")
EXPOSURE = {"entitle-agent.service": 25}
DEFAULT_EXPOSURE = 50


def _render(into: Path) -> Path:
    """Every unit and drop-in, with this environment's binaries for the install's."""
    for source in UNITS.rglob("*"):
        if source.is_dir():
            continue
        text = source.read_text()
        settings = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        for prefix, here in PREFIXES.items():
            for binary in re.findall(re.escape(prefix) + r"([\w.-]+)", settings):
                assert (Path(here) / binary).exists(), f"{source.name} runs {binary}: not in {BIN}"
            settings = settings.replace(prefix, here)
            text = text.replace(prefix, here)
        assert "/opt/" not in settings, f"{source.name}: an install path the check cannot render"
        target = into / source.relative_to(UNITS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return into


def _analyze(*args: str, units: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "SYSTEMD_LOG_LEVEL": "notice"}
    return subprocess.run(
        [ANALYZE, *args], cwd=units, env=env, capture_output=True, text=True, timeout=120
    )


def test_every_unit_file_is_checked() -> None:
    shipped = {p.name for p in UNITS.iterdir() if p.is_file()}
    assert shipped == set(CHECKED), "a unit without a check, or a check without a unit"


@pytest.mark.parametrize("unit", sorted(CHECKED))
def test_the_unit_verifies_cleanly(unit: str, tmp_path: Path) -> None:
    units = _render(tmp_path)
    done = _analyze("verify", "--man=no", str(units / CHECKED[unit]), units=units)
    said = (done.stdout + done.stderr).strip()
    # verify exits 0 on unknown keys and bad values, and only says so: nothing may be said
    assert done.returncode == 0 and not said, f"{unit}:\n{said}"


@pytest.mark.parametrize("unit", sorted(u for u in CHECKED if ".service" in u))
def test_the_service_exposes_little(unit: str, tmp_path: Path) -> None:
    units = _render(tmp_path)
    limit = EXPOSURE.get(unit, DEFAULT_EXPOSURE)
    done = _analyze(
        "security",
        "--offline=true",
        f"--threshold={limit}",
        str(units / CHECKED[unit]),
        units=units,
    )
    overall = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, f"{unit} exposes more than {limit / 10:g}: {overall}"


def test_the_mosquitto_drop_in_verifies(tmp_path: Path) -> None:
    if not MOSQUITTO_UNIT.exists():
        pytest.skip(f"{MOSQUITTO_UNIT} (Debian's mosquitto package) absent: drop-in NOT checked")
    units = _render(tmp_path)
    shutil.copy(MOSQUITTO_UNIT, units / "mosquitto.service")
    done = _analyze("verify", "--man=no", "mosquitto.service", units=units)
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not said, said
    # the drop-in was read: a key systemd does not know in it is reported
    with (units / "mosquitto.service.d" / "entitle.conf").open("a") as drop_in:
        drop_in.write("NotAKey=1\n")
    done = _analyze("verify", "--man=no", "mosquitto.service", units=units)
    assert "entitle.conf" in done.stderr and "NotAKey" in done.stderr


def test_the_agent_unit_is_what_the_agent_speaks() -> None:
    """Type=notify and WatchdogSec need the agent's sd_notify (tests/agent/test_notify.py)."""
    text = (UNITS / "entitle-agent.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "DynamicUser=yes",
        "SupplementaryGroups=dialout",
        "StateDirectory=entitle-agent",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ExecStart=/opt/entitle-agent/bin/entitle-agent run",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.M)
