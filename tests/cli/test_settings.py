"""Settings per process (common.settings, common.config): each loads only its own fields,
the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.settings import AgentSettings
from broker.settings import BrokerSettings
from cloud.settings import CloudSettings
from common.config import BrokerClient, Settings
from common.settings import BrokerClientSettings, ConfigError, EntitleSettings
from entitle.config import AllSettings


@pytest.fixture(autouse=True)
def _clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("ENTITLE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_each_process_has_only_its_own_fields() -> None:
    agent = set(AgentSettings.field_names())
    cloud, broker = (set(k.model_fields) for k in (CloudSettings, BrokerSettings))
    client = set(BrokerClientSettings.model_fields)
    assert set(EntitleSettings.model_fields) == set(broker) == {"data_dir"}
    assert set(Settings.field_names()) == {"data_dir"}
    assert {"device_id", "root_keyset_file", "clock_skew_s"} <= agent - cloud
    assert {"database_url", "http_port", "smtp_host", "token_ttl_s"} <= cloud - agent
    # what both share is how to reach the broker, declared twice (the agent's without
    # pydantic): a field added to one and not the other fails here
    assert agent & cloud == client == set(BrokerClient.field_names())
    assert AllSettings.field_names() == agent | cloud | broker


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENTITLE_MQTT_PROTOCOL", "3"),
        ("ENTITLE_MQTT_PROTOCOL", "five"),
        ("ENTITLE_BROKER_URL", "http://gw-1:hunter2@x:1883"),
        ("ENTITLE_BROKER_URL", "mqtt://x:port"),
    ],
)
def test_the_agent_and_the_cloud_refuse_a_shared_variable_in_the_same_words(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    refusals = []
    for kind in (AgentSettings, CloudSettings):
        with pytest.raises(ConfigError) as refused:
            kind.load()
        refusals.append(refused.value.problems)
    assert refusals[0] == refusals[1] and refusals[0][0].startswith(f"{variable}: ")


def test_variables_and_the_toml_file_are_read_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "entitle.toml"
    config.write_text('device_id = "gw-1"\nhttp_port = 9000\nclock_skew_s = 60\n')
    monkeypatch.setenv("ENTITLE_CLOCK_SKEW_S", "30")  # the variable wins over the file
    agent = AgentSettings.load()
    assert (agent.device_id, agent.clock_skew_s) == ("gw-1", 30)
    assert CloudSettings.load().http_port == 9000
    assert BrokerSettings.load().broker_dir == agent.data_dir / "broker"


def test_a_process_is_refused_only_for_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTITLE_HTTP_PORT", "abc")
    assert AgentSettings.load().device_id is None  # the cloud's port is not the agent's
    with pytest.raises(ConfigError) as refused:
        CloudSettings.load()
    assert refused.value.problems == ["ENTITLE_HTTP_PORT: must be a whole number (got 'abc')"]


def test_loading_the_agent_settings_loads_nothing_of_the_cloud(tmp_path: Path) -> None:
    probe = (
        "import json, sys\n"
        "from agent.settings import AgentSettings\n"
        "AgentSettings.load().broker_tls_context()\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    loaded = set(json.loads(out))
    assert {"agent", "common"} <= loaded  # the probe did run
    assert not loaded & {"cloud", "broker", "entitle", "fastapi", "sqlalchemy", "amqtt", "rich"}
    # nor the libraries the agent's memory budget has no room for
    assert not loaded & {"pydantic", "pydantic_settings", "typer", "uvicorn", "starlette"}
