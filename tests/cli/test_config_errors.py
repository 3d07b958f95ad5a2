"""A wrong setting gets one line per problem, naming what the person set; exit 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from entitle.cli import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("clean_entitle_environment")


def _refused(*args: str, **env: str) -> list[str]:
    result: Result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit: no traceback
    assert result.stdout == ""
    return result.stderr.splitlines()


def test_a_word_for_a_port_names_the_variable() -> None:
    assert _refused("config", "show", ENTITLE_HTTP_PORT="abc") == [
        "error: ENTITLE_HTTP_PORT: must be a whole number (got 'abc')"
    ]


@pytest.mark.parametrize("command", [["config", "show"], ["agent", "run"], ["cloud", "serve"]])
def test_an_http_broker_url_is_refused_when_settings_load(command: list[str]) -> None:
    """It was accepted silently, and 'agent run' printed a 37-line traceback."""
    lines = _refused(*command, ENTITLE_BROKER_URL="http://x:1883", ENTITLE_DEVICE_ID="gw-1")
    assert lines == [
        "error: ENTITLE_BROKER_URL: must start with mqtt:// (or mqtts:// for TLS), "
        "like mqtt://user@host:1883 (got 'http://x:1883')"
    ]


def test_the_broker_password_is_never_repeated() -> None:
    [line] = _refused("config", "show", ENTITLE_BROKER_URL="http://gw-1:hunter2@x:1883")
    assert "hunter2" not in line and "(got 'http://gw-1:***@x:1883')" in line
    [line] = _refused("config", "show", ENTITLE_BROKER_URL="mqtt://gw-1:hunter2@x:port")
    assert line == (
        "error: ENTITLE_BROKER_URL: the port must be a number 1-65535, like "
        "mqtt://user@host:1883 (got 'mqtt://gw-1:***@x:port')"
    )


def test_every_problem_gets_its_own_line() -> None:
    lines = _refused(
        "config",
        "show",
        ENTITLE_HTTP_PORT="8o8o",
        ENTITLE_MQTT_PROTOCOL="3",
        ENTITLE_SMTP_SECURITY="ssl",
        ENTITLE_TEST_CLOCK="maybe",
    )
    assert sorted(lines) == [
        "error: ENTITLE_HTTP_PORT: must be a whole number (got '8o8o')",
        "error: ENTITLE_MQTT_PROTOCOL: must be 5 (MQTT 5) or 4 (MQTT 3.1.1) (got '3')",
        "error: ENTITLE_SMTP_SECURITY: must be 'starttls', 'tls' or 'none' (got 'ssl')",
        "error: ENTITLE_TEST_CLOCK: must be true or false (got 'maybe')",
    ]


def test_a_list_that_is_not_json_names_the_variable() -> None:
    assert _refused("config", "show", ENTITLE_STAFF_EMAIL_DOMAINS="staff.example") == [
        'error: ENTITLE_STAFF_EMAIL_DOMAINS: must be JSON, like ["a", "b"] for a list'
    ]


def test_a_toml_value_names_its_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "entitle.toml"
    config.write_text('http_port = "abc"\nbroker_url = "http://x:1883"\n')
    lines = _refused("config", "show", ENTITLE_CONFIG=str(config))
    assert sorted(lines) == [
        f"error: broker_url in {config}: must start with mqtt:// (or mqtts:// for TLS), "
        "like mqtt://user@host:1883 (got 'http://x:1883')",
        f"error: http_port in {config}: must be a whole number (got 'abc')",
    ]
    # the variable wins over the file, and is the one named
    lines = _refused("config", "show", ENTITLE_CONFIG=str(config), ENTITLE_HTTP_PORT="x")
    assert "error: ENTITLE_HTTP_PORT: must be a whole number (got 'x')" in lines


def test_a_toml_file_that_is_broken(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("http_port = \n")
    [line] = _refused("config", "show", ENTITLE_CONFIG=str(broken))
    assert line.startswith(f"error: {broken} is not valid TOML: ")


def test_good_settings_still_show_without_passwords(tmp_path: Path) -> None:
    env = {
        "ENTITLE_BROKER_URL": "mqtts://gw-1:hunter2@broker:8883",
        "ENTITLE_DATABASE_URL": "postgresql+psycopg://entitle:hunter2@db/entitle",
    }
    result = runner.invoke(app, ["config", "show"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["broker_url"] == "mqtts://gw-1:***@broker:8883"
    assert (
        shown["database_url"]
        == shown["effective_database_url"]
        == ("postgresql+psycopg://entitle:***@db/entitle")
    )
    assert "hunter2" not in result.stdout


def test_agent_run_names_an_unreadable_password_file(tmp_path: Path) -> None:
    missing = tmp_path / "password"
    assert _refused(
        "agent",
        "run",
        ENTITLE_DEVICE_ID="gw-1",
        ENTITLE_BROKER_URL="mqtt://gw-1@127.0.0.1:1883",
        ENTITLE_BROKER_PASSWORD_FILE=str(missing),
    ) == [
        f"error: ENTITLE_BROKER_PASSWORD_FILE: cannot read {missing} (No such file or "
        "directory); name a file holding this device's MQTT password"
    ]


def test_cloud_serve_names_an_unreadable_password_file(tmp_path: Path) -> None:
    missing = tmp_path / "password"
    assert _refused(
        "cloud",
        "serve",
        ENTITLE_DATA_DIR=str(tmp_path / "data"),
        ENTITLE_BROKER_URL="mqtt://cloud@127.0.0.1:1883",
        ENTITLE_BROKER_PASSWORD_FILE=str(missing),
    ) == [
        f"error: ENTITLE_BROKER_PASSWORD_FILE: cannot read {missing} (No such file or "
        "directory); name a file holding the cloud's MQTT password"
    ]
