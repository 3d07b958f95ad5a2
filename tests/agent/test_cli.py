"""``entitle-agent``, the agent's own command (agent.cli): what a gateway runs.

These run where only the agent is installed (tests/packaging/test_agent_alone.py);
``entitle agent`` mounts the same app with the firmware emulators added.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from agent.cli import app, make_app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_entitle_environment")


def _refused(*args: str, **env: str) -> list[str]:
    result: Result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit: no traceback
    return result.stderr.splitlines()


def test_run_help_names_its_options() -> None:
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--serial-port", "--firmware-kind", "--recordings-dir", "--health-interval"):
        assert option in result.stdout


def test_run_without_a_device_id_says_which_variable() -> None:
    assert _refused("run") == ["error: set ENTITLE_DEVICE_ID to this device's id"]


@pytest.mark.parametrize("device_id", ["../escape", "a/b", "gw 1", "x" * 65])
def test_a_device_id_outside_the_rule_is_refused_before_it_names_a_folder(
    device_id: str, tmp_path: Path
) -> None:
    lines = _refused("run", ENTITLE_DEVICE_ID=device_id, ENTITLE_DATA_DIR=str(tmp_path))
    assert any("ENTITLE_DEVICE_ID" in line for line in lines), lines
    assert list(tmp_path.iterdir()) == []


def test_a_firmware_kind_without_a_serial_port_needs_the_emulators_it_does_not_have() -> None:
    lines = _refused("run", "--firmware-kind", "gateway", ENTITLE_DEVICE_ID="gw-1")
    assert len(lines) == 1
    assert "--firmware-kind gateway without --serial-port" in lines[0]
    assert "ENTITLE_SERIAL_PORT" in lines[0]


def test_an_unknown_firmware_kind_is_refused() -> None:
    assert _refused("run", "--firmware-kind", "toaster", ENTITLE_DEVICE_ID="gw-1") == [
        "error: --firmware-kind 'toaster': use gateway, camera or counter"
    ]


def test_check_on_an_unprovisioned_device_says_how_to_start() -> None:
    lines = _refused("check", "remote_access", ENTITLE_DEVICE_ID="gw-1")
    assert len(lines) == 1 and "agent run" in lines[0]


def test_the_emulator_factory_is_asked_for_the_kind_and_recordings(tmp_path: Path) -> None:
    asked: list[tuple[str, Path]] = []

    def emulator(kind: str, recordings: Path) -> object:
        asked.append((kind, recordings))
        raise RuntimeError("stop here: the factory was reached")

    result = runner.invoke(
        make_app(emulator=emulator),  # type: ignore[arg-type]
        ["run", "--firmware-kind", "camera", "--recordings-dir", str(tmp_path / "rec")],
        env={"ENTITLE_DEVICE_ID": "cam-1"},
    )
    assert isinstance(result.exception, RuntimeError)
    assert asked == [("camera", tmp_path / "rec")]
