"""Settings from ``ENTITLE_*`` environment variables or a TOML file.

The TOML file is named by ``ENTITLE_CONFIG`` (default ``entitle.toml`` in the
working directory, if present). Secrets are read from files, never printed.
Build :class:`Settings` where it is used (app factory, CLI command), never at
import time.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
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

__all__ = ["BrokerAddress", "ConfigError", "Settings", "load_settings", "parse_broker_url"]

_ENV_PREFIX = "ENTITLE_"


def _toml_path() -> Path:
    return Path(os.environ.get(f"{_ENV_PREFIX}CONFIG", "entitle.toml"))


class BrokerAddress(BaseModel):
    """Where and how to reach the MQTT broker."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: SecretStr | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://user:pass@host:port`` or ``mqtts://...`` into its parts.

    Raises:
        ValueError: another scheme, or a port that is not 1-65535 (the message
            never repeats the URL: it may hold a password).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(
            "must start with mqtt:// (or mqtts:// for TLS), like mqtt://user@host:1883"
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port must be a number 1-65535, like mqtt://user@host:1883")
    return BrokerAddress(
        host=parts.hostname or "127.0.0.1",
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password else None,
    )


class Settings(BaseSettings):
    """Effective configuration of every entitle command."""

    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, extra="ignore")

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
    http_max_body_bytes: int = Field(
        default=1 << 20, ge=1, description="larger request bodies get 413, unread"
    )
    token_ttl_s: int = 14 * 86400
    refresh_before_s: int = 3 * 86400
    refresh_interval_s: float = 60.0
    # health ingest, commands, tickets (cloud.health, cloud.tickets.service)
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
    # invoices (cloud.billing.invoices): the seller printed on every invoice
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

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parse_broker_url(value)  # refused at load, not when the agent first connects
        return value

    @field_validator("mqtt_protocol")
    @classmethod
    def _protocol(cls, value: int) -> int:
        if value not in (4, 5):
            raise ValueError("must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
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
        toml = _toml_path()
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

    def broker_tls_context(self) -> ssl.SSLContext | None:
        """For ``mqtts://``: trust ``broker_ca_file`` (else the system's) and present the
        client certificate when one is set; ``None`` for plain ``mqtt://``."""
        if not self.broker.tls:
            return None
        cafile = str(self.broker_ca_file) if self.broker_ca_file else None
        context = ssl.create_default_context(cafile=cafile)
        if self.broker_cert_file is not None:
            context.load_cert_chain(self.broker_cert_file, self.broker_key_file)
        return context

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
        shown["broker_url"] = _without_password(self.broker_url)
        if self.database_url is not None:
            shown["database_url"] = _without_password(self.database_url)
        shown["effective_database_url"] = _without_password(self.effective_database_url)
        return shown


# scheme://user:password@host: the netloc ends at "/", "?" or "#", its userinfo at its last "@"
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#:@]*):[^/?#]*@")


def _without_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part shown as ``***``."""
    return _URL_PASSWORD.sub(r"\1:***@", url, count=1)


# --- errors a person can act on ---------------------------------------------
class ConfigError(ValueError):
    """Settings that cannot be loaded: one sentence per problem, each naming the
    ``ENTITLE_*`` variable or the TOML key it came from."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


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
_SHOWN_CHARS = 60


def _source(field: str) -> str:
    """Where ``field``'s value came from: its variable if set, else its TOML key."""
    env = f"{_ENV_PREFIX}{field}".upper()
    if any(name.upper() == env for name in os.environ):
        return env
    toml = _toml_path()
    try:
        with toml.open("rb") as file:
            in_toml = field in tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        in_toml = False
    return f"{field} in {toml}" if in_toml else env


def _shown(value: Any) -> str:
    """A value as a user typed it, without a URL's password, cut short."""
    if not isinstance(value, str | int | float | Decimal) or isinstance(value, bool):
        return ""
    text = _without_password(str(value))
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 1] + "…"
    return f" (got {text!r})"


def _problem(error: Any) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    where = _source(loc[0]) if loc else "the configuration"
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
    return f"{where}: {message}{_shown(error.get('input'))}"


def load_settings() -> Settings:
    """:class:`Settings`, or a :class:`ConfigError` a person can act on.

    pydantic names the field (``http_port``) where the person set
    ``ENTITLE_HTTP_PORT`` or a TOML key; this names what they set.

    Raises:
        ConfigError: one problem per invalid value, or an unreadable TOML file.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError([_problem(error) for error in exc.errors()]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{_toml_path()} is not valid TOML: {exc}"]) from exc
    except SettingsError as exc:  # a list or map variable that is not JSON
        field = str(exc).partition('field "')[2].partition('"')[0]
        where = _source(field) if field else "a setting"
        raise ConfigError([f'{where}: must be JSON, like ["a", "b"] for a list']) from exc
