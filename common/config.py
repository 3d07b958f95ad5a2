"""Settings on the standard library alone: where they come from, how they are refused.

Every process reads ``ENTITLE_*`` variables (names compared without case), then
the TOML file named by ``ENTITLE_CONFIG`` (default ``entitle.toml`` in the working
directory, if present); a value that cannot be loaded raises :class:`ConfigError`,
one sentence per problem naming the variable or TOML key the person set.

:class:`Settings` is a typed base for a process whose memory budget has no room
for pydantic (the agent: :class:`agent.settings.AgentSettings`); the cloud's and
the broker's settings are pydantic-settings models (:mod:`common.settings`) that
share this module's file, errors, wording and broker address, so a person meets
the same variables and the same sentences whichever process reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import ssl
import tomllib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol, Self, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote, unquote, urlsplit

from common.tls import client_tls_context

__all__ = [
    "ENV_PREFIX",
    "BrokerAddress",
    "BrokerClient",
    "BrokerLogin",
    "ConfigError",
    "Secret",
    "Settings",
    "broker_tls_context",
    "broker_url",
    "parse_broker_url",
    "read_broker",
    "setting",
    "shown",
    "toml_path",
    "without_password",
]

ENV_PREFIX = "ENTITLE_"
"""Every setting's variable is this plus the field name in capitals."""

DEFAULT_DATA_DIR = Path.home() / ".local/share/entitle"
LIST_NOT_JSON = 'must be JSON, like ["a", "b"] for a list'


def toml_path() -> Path:
    """The TOML file named by ``ENTITLE_CONFIG`` (read only if it exists)."""
    return Path(os.environ.get(f"{ENV_PREFIX}CONFIG", "entitle.toml"))


class ConfigError(ValueError):
    """Settings that cannot be loaded: one sentence per problem, each naming the
    ``ENTITLE_*`` variable or the TOML key it came from."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_toml() -> dict[str, Any]:
    """The TOML file's table, or ``{}`` without one.

    Raises:
        ConfigError: the file is not valid TOML.
    """
    path = toml_path()
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path} is not valid TOML: {exc}"]) from exc


_SHOWN_CHARS = 60


def shown(value: Any) -> str:
    """`` (got 'value')`` as a person typed it, without a URL's password, cut short."""
    if not isinstance(value, str | int | float | Decimal) or isinstance(value, bool):
        return ""
    text = without_password(str(value))
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 1] + "…"
    return f" (got {text!r})"


# scheme://user:password@host: the netloc ends at "/", "?" or "#", its userinfo at its last "@"
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#:@]*):[^/?#]*@")


def without_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part shown as ``***`` (in
    each URL of a comma-separated list)."""
    return ",".join(_URL_PASSWORD.sub(r"\1:***@", part, count=1) for part in url.split(","))


# --- the broker -------------------------------------------------------------
class Secret:
    """A password that is never printed: ``repr`` and ``str`` show stars."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how to reach the MQTT broker."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: Secret | None = None
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
    return dataclasses.replace(address, fallbacks=tuple(fallbacks))


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
        password=Secret(unquote(parts.password)) if parts.password else None,
    )


def broker_url(host: str, port: int, username: str, password: str) -> str:
    """``mqtt://user:pass@host:port``, each part quoted: the inverse of :func:`parse_broker_url`."""
    return f"mqtt://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}"


def read_broker(url: str, password_file: Path | None) -> BrokerAddress:
    """The broker URL's parts, with the password file (if any) read over the URL's.

    Raises:
        OSError: ``password_file`` cannot be read.
    """
    address = parse_broker_url(url)
    if password_file is not None:
        secret = password_file.read_text().strip()
        address = dataclasses.replace(address, password=Secret(secret))
    return address


def broker_tls_context(
    url: str, *, ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext | None:
    """For ``mqtts://``: trust ``ca_file`` (else the system's) and present the client
    certificate when one is set; ``None`` for plain ``mqtt://``."""
    if not parse_broker_url(url).tls:
        return None
    return client_tls_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file)


def check_mqtt_protocol(value: int) -> int:
    """5 or 4, else a sentence saying so."""
    if value not in (4, 5):
        raise ValueError("must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
    return value


def check_broker_url(value: str) -> str:
    """Refused at load, not when the process first connects."""
    parse_broker_url(value)
    return value


# --- a typed settings base without pydantic --------------------------------
@dataclass(frozen=True, slots=True)
class _Rule:
    description: str = ""
    pattern: str | None = None
    gt: float | None = None
    check: Callable[[Any], Any] | None = None


def setting(
    default: Any,
    *,
    description: str = "",
    pattern: str | None = None,
    gt: float | None = None,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A field of a :class:`Settings` class: its default and what a value must be.

    ``pattern`` is searched like pydantic's (anchor it), ``gt`` is a lower bound,
    ``check`` takes the typed value and raises ``ValueError`` with a sentence.
    """
    rule = _Rule(description=description, pattern=pattern, gt=gt, check=check)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


_BOOLS = {
    **dict.fromkeys(("1", "true", "t", "yes", "y", "on"), True),
    **dict.fromkeys(("0", "false", "f", "no", "n", "off"), False),
}


def _typed(raw: Any, kind: Any, *, from_env: bool) -> Any:
    """``raw`` (a variable's text or a TOML value) as ``kind``, or ValueError with a sentence."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):
        if raw is None:
            return None
        (kind,) = (arg for arg in args if arg is not type(None))
        origin, args = get_origin(kind), get_args(kind)
    if origin is Literal:
        if raw not in args:
            names = [repr(arg) for arg in args]
            raise ValueError(f"must be {', '.join(names[:-1])} or {names[-1]}")
        return raw
    if origin is list:
        if from_env:
            try:
                raw = json.loads(raw)
            except ValueError:
                raise ValueError(LIST_NOT_JSON) from None
        if not isinstance(raw, list):
            raise ValueError('must be a JSON list, like ["a", "b"]')
        return [_typed(item, args[0], from_env=False) for item in raw]
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
            return _BOOLS[raw.strip().lower()]
        raise ValueError("must be true or false")
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ValueError("must be a whole number")
    if kind is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
        raise ValueError("must be a number")
    if kind is str or kind is Path:
        if not isinstance(raw, str):
            raise ValueError("must be text")
        return kind(raw)
    raise TypeError(f"a setting of type {kind!r} is not supported")


def _checked(value: Any, rule: _Rule) -> Any:
    if value is None:
        return value
    if rule.pattern is not None and re.search(rule.pattern, value) is None:
        raise ValueError(f"must match pattern '{rule.pattern}'")
    if rule.gt is not None and not value > rule.gt:
        raise ValueError(f"must be greater than {rule.gt:g}")
    if rule.check is not None:
        value = rule.check(value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What every process reads the same way: ``ENTITLE_*`` variables, then the TOML file.

    A subclass is a ``@dataclass(frozen=True, slots=True, kw_only=True)`` whose
    fields are made with :func:`setting` (or a plain default); build it with
    :meth:`load` where it is used, never at import time. Field types: ``str``,
    ``int``, ``float``, ``bool``, ``Path``, ``Literal[...]``, ``list[...]`` (JSON
    in a variable), each optionally ``| None``.
    """

    data_dir: Path = setting(DEFAULT_DATA_DIR)

    @classmethod
    def field_names(cls) -> list[str]:
        """Every setting of this process, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The settings, or a :class:`ConfigError` a person can act on.

        A variable wins over the TOML file; names the class does not declare are
        ignored (they are another process's).

        Raises:
            ConfigError: one problem per invalid value, or an unreadable TOML file.
        """
        env = {name.upper(): value for name, value in (environ or os.environ).items()}
        toml = read_toml()
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in dataclasses.fields(cls):
            variable = f"{ENV_PREFIX}{spec.name}".upper()
            if variable in env:
                raw, where, from_env = env[variable], variable, True
            elif spec.name in toml:
                raw, where, from_env = toml[spec.name], f"{spec.name} in {toml_path()}", False
            else:
                continue
            rule = spec.metadata.get("rule", _Rule())
            try:
                values[spec.name] = _checked(_typed(raw, hints[spec.name], from_env=from_env), rule)
            except ValueError as exc:
                message = str(exc)
                problems.append(
                    f"{where}: {message}" + ("" if message == LIST_NOT_JSON else shown(raw))
                )
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def redacted(self) -> dict[str, Any]:
        """The settings as shown by `entitle config show`: no secret values."""
        return {name: _json(getattr(self, name)) for name in self.field_names()}


def _json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_json(item) for item in value]
    return value


class _BrokerFields(Protocol):
    @property
    def broker_url(self) -> str: ...
    @property
    def broker_password_file(self) -> Path | None: ...
    @property
    def broker_ca_file(self) -> Path | None: ...
    @property
    def broker_cert_file(self) -> Path | None: ...
    @property
    def broker_key_file(self) -> Path | None: ...


class BrokerLogin:
    """What a process that logs in to the broker derives from its ``broker_*`` fields:
    mixed into :class:`BrokerClient` and :class:`common.settings.BrokerClientSettings`."""

    __slots__ = ()

    @property
    def broker(self: _BrokerFields) -> BrokerAddress:
        """The broker URL's parts, with the password file read.

        Raises:
            OSError: ``broker_password_file`` cannot be read.
        """
        return read_broker(self.broker_url, self.broker_password_file)

    def broker_tls_context(self: _BrokerFields) -> ssl.SSLContext | None:
        """See :func:`broker_tls_context`, with this process's files."""
        return broker_tls_context(
            self.broker_url,
            ca_file=self.broker_ca_file,
            cert_file=self.broker_cert_file,
            key_file=self.broker_key_file,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerClient(BrokerLogin, Settings):
    """The settings of a process that logs in to the MQTT broker, without pydantic.

    The same fields as :class:`common.settings.BrokerClientSettings` (the cloud's
    base); a test keeps the two lists equal.
    """

    broker_url: str = setting("mqtt://127.0.0.1:1883", check=check_broker_url)
    broker_password_file: Path | None = setting(
        None, description="file holding the MQTT password (overrides the URL's)"
    )
    broker_ca_file: Path | None = None
    broker_cert_file: Path | None = None
    broker_key_file: Path | None = None
    mqtt_protocol: int = setting(5, description="5 or 4 (MQTT 3.1.1)", check=check_mqtt_protocol)

    def redacted(self) -> dict[str, Any]:
        shown = Settings.redacted(self)
        shown["broker_url"] = without_password(self.broker_url)
        return shown
