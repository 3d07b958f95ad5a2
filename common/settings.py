"""How every process reads its settings: ``ENTITLE_*`` variables or a TOML file.

The TOML file is named by ``ENTITLE_CONFIG`` (default ``entitle.toml`` in the
working directory, if present). Secrets are read from files, never printed.
:class:`EntitleSettings` is the base of each process's own settings (the agent's,
the cloud's, the broker's); :class:`BrokerClientSettings` adds how to reach the
broker. A value that cannot be loaded raises :class:`ConfigError`, one sentence per
problem naming the variable or TOML key the person set.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from common.tls import client_tls_context

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

ENV_PREFIX = "ENTITLE_"
"""Every setting's variable is this plus the field name in capitals."""


def toml_path() -> Path:
    """The TOML file named by ``ENTITLE_CONFIG`` (read only if it exists)."""
    return Path(os.environ.get(f"{ENV_PREFIX}CONFIG", "entitle.toml"))


class BrokerAddress(BaseModel):
    """Where and how to reach the MQTT broker."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: SecretStr | None = None
    # the other nodes of a clustered broker, tried in turn when this one fails
    fallbacks: tuple[tuple[str, int], ...] = ()


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://user:pass@host:port`` or ``mqtts://...`` into its parts.

    Several URLs separated by commas name the nodes of one broker cluster: the
    first gives the login and scheme, the others add ``fallbacks`` (their own
    login, if any, must be the same).

    Raises:
        ValueError: another scheme, or a port that is not 1-65535 (the message
            never repeats the URL: it may hold a password).
    """
    first, *others = (part.strip() for part in url.split(","))
    address = _parse_one_broker_url(first)
    fallbacks = []
    for other in others:
        node = _parse_one_broker_url(other)
        if node.tls != address.tls or (node.username or address.username) != address.username:
            raise ValueError("every URL of a broker cluster needs the same scheme and login")
        fallbacks.append((node.host, node.port))
    return address.model_copy(update={"fallbacks": tuple(fallbacks)})


def _parse_one_broker_url(url: str) -> BrokerAddress:
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


def broker_url(host: str, port: int, username: str, password: str) -> str:
    """``mqtt://user:pass@host:port``, each part quoted: the inverse of :func:`parse_broker_url`."""
    return f"mqtt://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}"


class EntitleSettings(BaseSettings):
    """What every process reads the same way: ``ENTITLE_*`` variables, then the TOML file.

    Each process has its own subclass (``agent.settings.AgentSettings``,
    ``cloud.settings.CloudSettings``, ``broker.settings.BrokerSettings``) with only
    its own fields; build it with :meth:`load` where it is used, never at import time.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Field(default=Path.home() / ".local/share/entitle")

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
            raise ConfigError([_problem(error) for error in exc.errors()]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{toml_path()} is not valid TOML: {exc}"]) from exc
        except SettingsError as exc:  # a list or map variable that is not JSON
            field = str(exc).partition('field "')[2].partition('"')[0]
            where = _source(field) if field else "a setting"
            raise ConfigError([f'{where}: must be JSON, like ["a", "b"] for a list']) from exc

    def redacted(self) -> dict[str, Any]:
        """The settings as shown by `entitle config show`: no secret values."""
        return self.model_dump(mode="json")


class BrokerClientSettings(EntitleSettings):
    """The settings of a process that logs in to the MQTT broker (the agent, the cloud)."""

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
        parse_broker_url(value)  # refused at load, not when the agent first connects
        return value

    @field_validator("mqtt_protocol")
    @classmethod
    def _protocol(cls, value: int) -> int:
        if value not in (4, 5):
            raise ValueError("must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        return value

    @property
    def broker(self) -> BrokerAddress:
        """The broker URL's parts, with the password file read.

        Raises:
            OSError: ``broker_password_file`` cannot be read.
        """
        address = parse_broker_url(self.broker_url)
        if self.broker_password_file is not None:
            secret = self.broker_password_file.read_text().strip()
            address = address.model_copy(update={"password": SecretStr(secret)})
        return address

    def broker_tls_context(self) -> ssl.SSLContext | None:
        """For ``mqtts://``: trust ``broker_ca_file`` (else the system's) and present the
        client certificate when one is set; ``None`` for plain ``mqtt://``."""
        if not parse_broker_url(self.broker_url).tls:
            return None
        return client_tls_context(
            ca_file=self.broker_ca_file,
            cert_file=self.broker_cert_file,
            key_file=self.broker_key_file,
        )

    def redacted(self) -> dict[str, Any]:
        shown = super().redacted()
        shown["broker_url"] = without_password(self.broker_url)
        return shown


# scheme://user:password@host: the netloc ends at "/", "?" or "#", its userinfo at its last "@"
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#:@]*):[^/?#]*@")


def without_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part shown as ``***`` (in
    each URL of a comma-separated list)."""
    return ",".join(_URL_PASSWORD.sub(r"\1:***@", part, count=1) for part in url.split(","))


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
    env = f"{ENV_PREFIX}{field}".upper()
    if any(name.upper() == env for name in os.environ):
        return env
    toml = toml_path()
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
    text = without_password(str(value))
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
