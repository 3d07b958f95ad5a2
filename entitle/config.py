"""Settings from ``ENTITLE_*`` environment variables or a TOML file.

The TOML file is named by ``ENTITLE_CONFIG`` (default ``entitle.toml`` in the
working directory, if present). Secrets are read from files, never printed.
Build :class:`Settings` where it is used (app factory, CLI command), never at
import time.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
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
    # health ingest, commands, tickets (cloud.health, cloud.tickets)
    health_batch_size: int = Field(default=200, ge=1, le=1000)
    health_flush_delay_s: float = Field(default=0.05, gt=0)
    health_retention_s: int = Field(default=30 * 86400, description="raw reports kept")
    health_hourly_retention_s: int = Field(default=730 * 86400, description="hourly aggregates")
    health_retention_interval_s: float = 3600.0
    # gap repair (cloud.health.gaps): ask devices again for reports the broker lost
    health_gap_interval_s: float = Field(default=30.0, gt=0, description="gap job interval")
    health_gap_grace_s: int = Field(default=10, ge=0, description="in-flight reports, not gaps")
    health_gap_backoff_s: int = Field(default=300, ge=0, description="before asking again")
    health_gap_window_s: int = Field(default=3600, gt=0, description="how far back to look")
    command_timeout_s: int = 300
    tickets_interval_s: float = 300.0
    # accounts: dashboard login sessions; vendor staff are not customers' contacts
    session_ttl_s: int = Field(default=12 * 3600, description="a login lasts at most this long")
    session_idle_s: int = Field(default=30 * 60, description="a login ends after this idle time")
    staff_email_domains: list[str] = Field(
        default=["entitle.example"], description="e-mail domains of vendor staff"
    )

    # e-mail (notification outbox); no smtp_host: mails stay queued (logged at startup)
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (587), tls (implicit, 465) or none"
    )
    smtp_username: str | None = None
    smtp_password_file: Path | None = Field(default=None, description="file holding the password")
    smtp_ca_file: Path | None = Field(default=None, description="CA bundle; default system CAs")
    smtp_sender: str = "Entitle <no-reply@entitle.invalid>"
    smtp_timeout_s: float = 30.0
    outbox_interval_s: float = 30.0
    # invoices (cloud.invoices): the seller printed on every invoice
    invoice_seller_name: str = "Entitle"
    invoice_seller_address: str = Field(default="", description="lines separated by '\\n'")
    invoice_seller_vat_id: str | None = None
    invoice_vat_percent: Decimal = Field(default=Decimal(0), description="VAT in the prices")
    test_clock: bool = Field(
        default=False,
        description="a settable cloud clock and POST /api/v1/test-clock/advance (demos, tests)",
    )
    # orders and payments (cloud.billing); "sandbox" is a test double that moves no money
    payment_provider: Literal["sandbox"] = Field(
        default="sandbox", description="card processor; only the sandbox test double for now"
    )
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    billing_notify: list[str] = Field(
        default=[], description="e-mails told about failed refunds, besides each buyer"
    )

    # agent
    device_id: str | None = None
    agent_data_dir: Path | None = Field(default=None, description="default data_dir/agent-<id>")
    root_keyset_file: Path | None = Field(default=None, description="provisioned root key set")
    installation_id: str | None = Field(
        default=None, description="bind the device to this installation at provisioning"
    )
    api_socket: Path | None = Field(default=None, description="local query API Unix socket")
    clock_skew_s: int = 300
    serial_port: str | None = Field(default=None, description="firmware serial port (tty)")
    firmware_kind: Literal["gateway", "camera", "counter"] | None = Field(
        default=None, description="device kind; without serial_port: in-process emulator"
    )
    recordings_dir: Path | None = Field(default=None, description="camera recordings to prune")
    health_interval_s: float = Field(default=60.0, gt=0, description="health report interval")

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
