"""How the cloud and the broker read their settings: ``ENTITLE_*`` variables or a TOML file.

The TOML file is named by ``ENTITLE_CONFIG`` (default ``entitle.toml`` in the
working directory, if present). Secrets are read from files, never printed.
:class:`EntitleSettings` is the pydantic-settings base of the cloud's and the
broker's settings; :class:`BrokerClientSettings` adds how to reach the broker. A
value that cannot be loaded raises :class:`ConfigError`, one sentence per problem
naming the variable or TOML key the person set. The file, the errors, their
wording and the broker address live in :mod:`common.config`, which the agent's
settings stand on without pydantic (re-exported here for the cloud's callers).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from common.config import (
    DEFAULT_DATA_DIR,
    ENV_PREFIX,
    BrokerAddress,
    BrokerLogin,
    ConfigError,
    broker_url,
    check_broker_url,
    check_mqtt_protocol,
    parse_broker_url,
    read_toml,
    shown,
    toml_path,
    without_password,
)

__all__ = [
    "ENV_PREFIX",
    "BrokerAddress",
    "BrokerClientSettings",
    "ConfigError",
    "EntitleSettings",
    "broker_url",
    "parse_broker_url",
    "toml_path",
    "without_password",
]


class EntitleSettings(BaseSettings):
    """What every process reads the same way: ``ENTITLE_*`` variables, then the TOML file.

    Each process has its own subclass (``cloud.settings.CloudSettings``,
    ``broker.settings.BrokerSettings``; the agent's is :class:`common.config.Settings`'s)
    with only its own fields; build it with :meth:`load` where it is used, never at
    import time.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Field(default=DEFAULT_DATA_DIR)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = toml_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @classmethod
    def load(cls) -> Self:
        """The settings, or a :class:`ConfigError` a person can act on.

        pydantic names the field (``http_port``) where the person set
        ``ENTITLE_HTTP_PORT`` or a TOML key; this names what they set.

        Raises:
            ConfigError: one problem per invalid value, or an unreadable TOML file.
        """
        try:
            return cls()
        except ValidationError as exc:
            toml = _toml_or_nothing()
            raise ConfigError([_problem(error, toml) for error in exc.errors()]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{toml_path()} is not valid TOML: {exc}"]) from exc
        except SettingsError as exc:  # a list or map variable that is not JSON
            field = str(exc).partition('field "')[2].partition('"')[0]
            where = _source(field, _toml_or_nothing()) if field else "a setting"
            raise ConfigError([f'{where}: must be JSON, like ["a", "b"] for a list']) from exc

    def redacted(self) -> dict[str, Any]:
        """The settings as shown by `entitle config show`: no secret values."""
        return self.model_dump(mode="json")


class BrokerClientSettings(BrokerLogin, EntitleSettings):
    """The settings of a process that logs in to the MQTT broker (the cloud).

    The agent's are the same fields on :class:`common.config.BrokerClient`; a test
    keeps the two lists equal.
    """

    broker_url: str = "mqtt://127.0.0.1:1883"
    broker_password_file: Path | None = Field(
        default=None, description="file holding the MQTT password (overrides the URL's)"
    )
    broker_ca_file: Path | None = None
    broker_cert_file: Path | None = None
    broker_key_file: Path | None = None
    mqtt_protocol: int = Field(default=5, description="5 or 4 (MQTT 3.1.1)")

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return check_broker_url(value)

    @field_validator("mqtt_protocol")
    @classmethod
    def _protocol(cls, value: int) -> int:
        return check_mqtt_protocol(value)

    def redacted(self) -> dict[str, Any]:
        out = super().redacted()
        out["broker_url"] = without_password(self.broker_url)
        return out


# --- errors a person can act on ---------------------------------------------
# pydantic's wording, for the types settings use, said the way a person types them
_EXPECTED = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "decimal_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "list_type": 'must be a JSON list, like ["a", "b"]',
}


def _toml_or_nothing() -> dict[str, Any]:
    """The TOML file's table; ``{}`` without one or when it cannot be read."""
    try:
        return read_toml()
    except (OSError, ConfigError):
        return {}


def _source(field: str, toml: Mapping[str, Any]) -> str:
    """Where ``field``'s value came from: its variable if set, else its key in ``toml``
    (the TOML file's table)."""
    env = f"{ENV_PREFIX}{field}".upper()
    if any(name.upper() == env for name in os.environ):
        return env
    return f"{field} in {toml_path()}" if field in toml else env


def _problem(error: Any, toml: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    where = _source(loc[0], toml) if loc else "the configuration"
    if len(loc) > 1:
        where += f" (item {'.'.join(loc[1:])})"
    kind = error.get("type", "")
    cause = (error.get("ctx") or {}).get("error")
    if kind == "value_error" and cause is not None:
        message = str(cause)
    else:
        message = _EXPECTED.get(kind) or str(error.get("msg", "is not valid"))
        message = message.replace("Input should be", "must be", 1)
        message = message.replace("String should", "must", 1)
    return f"{where}: {message}{shown(error.get('input'))}"
