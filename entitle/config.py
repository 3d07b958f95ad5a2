"""Settings from ``ENTITLE_*`` environment variables or a TOML file.

The TOML file is named by ``ENTITLE_CONFIG`` (default ``entitle.toml`` in the
working directory, if present). Secrets are read from files, never printed.
Build :class:`Settings` where it is used (app factory, CLI command), never at
import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = ["BrokerAddress", "Settings", "parse_broker_url"]


class BrokerAddress(BaseModel):
    """Where and how to reach the MQTT broker."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: SecretStr | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://user:pass@host:port`` or ``mqtts://...`` into its parts."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password else None,
    )


class Settings(BaseSettings):
    """Effective configuration of every entitle command."""

    model_config = SettingsConfigDict(env_prefix="ENTITLE_", extra="ignore")

    data_dir: Path = Field(default=Path.home() / ".local/share/entitle")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite file in data_dir"
    )
    broker_url: str = "mqtt://127.0.0.1:1883"
    broker_password_file: Path | None = Field(
        default=None, description="file holding the MQTT password (overrides the URL's)"
    )
    broker_ca_file: Path | None = None
    broker_cert_file: Path | None = None
    broker_key_file: Path | None = None
    mqtt_protocol: int = Field(default=5, description="5 or 4 (MQTT 3.1.1)")

    # cloud
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    token_ttl_s: int = 14 * 86400
    refresh_before_s: int = 3 * 86400
    refresh_interval_s: float = 60.0

    # agent
    device_id: str | None = None
    agent_data_dir: Path | None = Field(default=None, description="default data_dir/agent-<id>")
    root_keyset_file: Path | None = Field(default=None, description="provisioned root key set")
    installation_id: str | None = Field(
        default=None, description="bind the device to this installation at provisioning"
    )
    api_socket: Path | None = Field(default=None, description="local query API Unix socket")
    clock_skew_s: int = 300

    @field_validator("mqtt_protocol")
    @classmethod
    def _protocol(cls, value: int) -> int:
        if value not in (4, 5):
            raise ValueError("mqtt_protocol must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = Path(os.environ.get("ENTITLE_CONFIG", "entitle.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    # derived values ---------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cloud.db'}"

    @property
    def broker(self) -> BrokerAddress:
        address = parse_broker_url(self.broker_url)
        if self.broker_password_file is not None:
            secret = self.broker_password_file.read_text().strip()
            address = address.model_copy(update={"password": SecretStr(secret)})
        return address

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    def agent_dir(self) -> Path:
        if self.agent_data_dir is not None:
            return self.agent_data_dir
        if not self.device_id:
            raise ValueError("set ENTITLE_DEVICE_ID (or agent_data_dir) for the agent")
        return self.data_dir / f"agent-{self.device_id}"

    def redacted(self) -> dict[str, Any]:
        """The settings as shown by `entitle config show`: no secret values."""
        shown = self.model_dump(mode="json")
        parts = urlsplit(self.broker_url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            shown["broker_url"] = parts._replace(netloc=netloc).geturl()
        shown["effective_database_url"] = self.effective_database_url
        return shown
