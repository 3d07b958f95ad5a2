"""common.config: typed settings on the standard library, read like the cloud's.

Variables (names compared without case) win over the TOML file; each refused
value is one sentence naming the variable or the TOML key and file; the
sentences are pydantic-settings' (tests/cli/test_settings.py compares the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from common.config import (
    BrokerClient,
    ConfigError,
    Secret,
    Settings,
    parse_broker_url,
    read_broker,
    setting,
)

pytestmark = pytest.mark.usefixtures("clean_entitle_environment")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample(Settings):
    """Every field type a Settings class may use."""

    name: str | None = setting(None, pattern=r"^[a-z]+$")
    count: int = 3
    ratio: float = setting(1.5, gt=0)
    enabled: bool = False
    where: Path | None = None
    mode: Literal["fast", "slow"] = "fast"
    tags: list[str] = setting(["a"])


def _refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        Sample.load()
    return refused.value.problems


def test_defaults_without_variables_or_file(tmp_path: Path) -> None:
    loaded = Sample.load()
    assert (loaded.name, loaded.count, loaded.mode, loaded.tags) == (None, 3, "fast", ["a"])
    assert loaded.data_dir == tmp_path / "data"  # ENTITLE_DATA_DIR from the fixture
    assert Sample.load().tags is not loaded.tags  # a list default is not shared


def test_variables_are_typed_and_named_without_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("entitle_count", "7")
    monkeypatch.setenv("ENTITLE_RATIO", " 0.25 ")
    monkeypatch.setenv("ENTITLE_ENABLED", "Yes")
    monkeypatch.setenv("ENTITLE_WHERE", "/srv/x")
    monkeypatch.setenv("ENTITLE_MODE", "slow")
    monkeypatch.setenv("ENTITLE_TAGS", '["x", "y"]')
    loaded = Sample.load()
    assert (loaded.count, loaded.ratio, loaded.enabled) == (7, 0.25, True)
    assert (loaded.where, loaded.mode, loaded.tags) == (Path("/srv/x"), "slow", ["x", "y"])


def test_the_toml_file_and_the_variable_that_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "entitle.toml").write_text(
        'name = "gw"\ncount = 9\nenabled = true\ntags = ["t"]\nother_process = 1\n'
    )
    monkeypatch.setenv("ENTITLE_COUNT", "4")
    loaded = Sample.load()
    assert (loaded.name, loaded.count, loaded.enabled, loaded.tags) == ("gw", 4, True, ["t"])


def test_every_problem_is_one_sentence_naming_what_was_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sorted(
        _refused(
            monkeypatch,
            ENTITLE_NAME="GW 1",
            ENTITLE_COUNT="three",
            ENTITLE_RATIO="0",
            ENTITLE_ENABLED="maybe",
            ENTITLE_MODE="medium",
            ENTITLE_TAGS="x,y",
        )
    ) == [
        "ENTITLE_COUNT: must be a whole number (got 'three')",
        "ENTITLE_ENABLED: must be true or false (got 'maybe')",
        "ENTITLE_MODE: must be 'fast' or 'slow' (got 'medium')",
        "ENTITLE_NAME: must match pattern '^[a-z]+$' (got 'GW 1')",
        "ENTITLE_RATIO: must be greater than 0 (got '0')",
        'ENTITLE_TAGS: must be JSON, like ["a", "b"] for a list',
    ]


def test_a_toml_value_names_its_key_and_file(tmp_path: Path) -> None:
    (tmp_path / "entitle.toml").write_text('count = "many"\nenabled = 1\n')
    with pytest.raises(ConfigError) as refused:
        Sample.load()
    assert sorted(refused.value.problems) == [
        "count in entitle.toml: must be a whole number (got 'many')",  # as ENTITLE_CONFIG says
        "enabled in entitle.toml: must be true or false (got '1')",
    ]


def test_a_broken_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("count = \n")
    monkeypatch.setenv("ENTITLE_CONFIG", str(broken))
    [problem] = _refused(monkeypatch)
    assert problem.startswith(f"{broken} is not valid TOML: ")


def test_redacted_hides_the_broker_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTITLE_BROKER_URL", "mqtt://gw:hunter2@a:1883,mqtt://gw:hunter2@b:1883")
    shown = BrokerClient.load().redacted()
    assert shown["broker_url"] == "mqtt://gw:***@a:1883,mqtt://gw:***@b:1883"
    assert isinstance(shown["data_dir"], str)


def test_a_password_file_overrides_the_url_and_is_never_printed(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    address = read_broker("mqtt://gw:old@h:1883", secret)
    assert address.password == Secret("s3cret")
    assert address.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(address) and "old" not in repr(
        parse_broker_url("mqtt://gw:old@h:1")
    )
    with pytest.raises(OSError):
        read_broker("mqtt://gw@h:1883", tmp_path / "missing")
