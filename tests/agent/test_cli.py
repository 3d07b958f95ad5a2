"""``entitle-agent``, the agent's own command (agent.cli): what a gateway runs.

These run where only the agent is installed (tests/packaging/test_agent_alone.py);
``entitle agent`` mounts the same :func:`agent.cli.main` with the firmware emulators
added.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main

pytestmark = pytest.mark.usefixtures("clean_entitle_environment")


def _refused(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    **env: str,
) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(list(args)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    return err.splitlines()


def test_run_help_names_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: entitle-agent run")
    for option in ("--serial-port", "--firmware-kind", "--recordings-dir", "--health-interval"):
        assert option in out


def test_a_health_interval_under_a_millisecond_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["run", "--health-interval", "0"])
    assert done.value.code == 2
    assert "--health-interval: 0 is not at least 0.001" in capsys.readouterr().err


def test_run_without_a_device_id_says_which_variable(capsys, monkeypatch) -> None:
    assert _refused(capsys, monkeypatch, "run") == [
        "error: set ENTITLE_DEVICE_ID to this device's id"
    ]


@pytest.mark.parametrize("device_id", ["../escape", "a/b", "gw 1", "x" * 65])
def test_a_device_id_outside_the_rule_is_refused_before_it_names_a_folder(
    device_id: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    lines = _refused(
        capsys, monkeypatch, "run", ENTITLE_DEVICE_ID=device_id, ENTITLE_DATA_DIR=str(tmp_path)
    )
    assert lines and all(line.startswith("error: ENTITLE_DEVICE_ID: must match") for line in lines)
    assert list(tmp_path.iterdir()) == []


def test_a_firmware_kind_without_a_serial_port_needs_the_emulators_it_does_not_have(
    capsys, monkeypatch
) -> None:
    lines = _refused(
        capsys, monkeypatch, "run", "--firmware-kind", "gateway", ENTITLE_DEVICE_ID="gw-1"
    )
    assert len(lines) == 1
    assert "--firmware-kind gateway without --serial-port" in lines[0]
    assert "ENTITLE_SERIAL_PORT" in lines[0]


def test_an_unknown_firmware_kind_is_refused(capsys, monkeypatch) -> None:
    assert _refused(
        capsys, monkeypatch, "run", "--firmware-kind", "toaster", ENTITLE_DEVICE_ID="gw-1"
    ) == ["error: --firmware-kind 'toaster': use gateway, camera or counter"]


def test_check_on_an_unprovisioned_device_says_how_to_start(capsys, monkeypatch) -> None:
    lines = _refused(capsys, monkeypatch, "check", "remote_access", ENTITLE_DEVICE_ID="gw-1")
    assert len(lines) == 1 and "agent run" in lines[0]


def test_the_emulator_factory_is_asked_for_the_kind_and_recordings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, Path]] = []

    def emulator(kind: str, recordings: Path) -> object:
        asked.append((kind, recordings))
        raise RuntimeError("stop here: the factory was reached")

    monkeypatch.setenv("ENTITLE_DEVICE_ID", "cam-1")
    with pytest.raises(RuntimeError, match="factory was reached"):
        main(
            ["run", "--firmware-kind", "camera", "--recordings-dir", str(tmp_path / "rec")],
            emulator=emulator,  # type: ignore[arg-type]
        )
    assert asked == [("camera", tmp_path / "rec")]


def test_agent_run_loads_no_pydantic_typer_uvicorn_or_starlette(tmp_path: Path) -> None:
    """What `entitle-agent run` imports before it runs: its RSS budget (< 40 MB) is tight."""
    probe = (
        "import json, sys\n"
        "import agent.cli, agent.api, agent.notify, agent.settings, agent.runtime\n"
        "import agent.enforcers, agent.session\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    loaded = set(json.loads(out))
    assert {"agent", "common", "h11", "aiomqtt"} <= loaded  # the probe did run
    heavy = {"pydantic", "pydantic_settings", "typer", "uvicorn", "starlette", "httpx", "rich"}
    assert not loaded & heavy


def test_a_socket_path_too_long_for_the_os_says_what_to_set(capsys, monkeypatch, tmp_path) -> None:
    deep = tmp_path / ("x" * 110)
    monkeypatch.setenv("ENTITLE_DEVICE_ID", "gw-1")
    monkeypatch.setenv("ENTITLE_DATA_DIR", str(deep))
    monkeypatch.setenv("ENTITLE_BROKER_URL", "mqtt://gw-1:secret@127.0.0.1:1")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "over the 107 a Unix socket path may have: set ENTITLE_API_SOCKET" in err
    assert not deep.exists()  # refused before anything was made
