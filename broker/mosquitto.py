"""The MQTT broker the contract needs: Mosquitto with the dynamic-security plugin.

Every device logs in as its own id (its client id pinned to it) and may only
subscribe to and read its own ``entitlement`` and ``cmd`` (plus ``keys``) and only
write its own ``health``, ``status`` and ``cmd/res``; the cloud's logins read and
write everything under ``entitle/v1/`` and administer device logins. The rules come
from one table (:mod:`protocol.topics`); :mod:`common.dynsec` renders them as
dynamic-security roles, which Mosquitto checks at SUBSCRIBE as well as on each
delivery and publish. Device logins are added and removed at run time over
``$CONTROL`` (:class:`common.dynsec.DynsecAccounts`): nothing is rewritten or
reloaded. The embedded amqtt fallback (:mod:`broker.embedded`) enforces the same
table from a password file.

Errors: :mod:`broker.errors`; an invalid device id raises
:class:`~protocol.errors.TopicError`.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from broker.errors import BrokerError, DynsecPluginNotFound, MosquittoNotFound
from broker.passwd import PASSWD_NAME, write_private
from broker.process import log_size, spawn, stop_all, tail, wait_logged
from common.dynsec import DynsecAccounts, merge_config
from common.settings import broker_url
from protocol.topics import check_device_id

__all__ = [
    "CONF_NAME",
    "DYNSEC_NAME",
    "MosquittoBroker",
    "TlsListener",
    "dynsec_plugin_path",
    "ensure_mosquitto",
    "find_free_port",
    "mosquitto_path",
    "write_broker_config",
]

log = logging.getLogger(__name__)

CONF_NAME, DYNSEC_NAME = "mosquitto.conf", "dynamic-security.json"
PID_NAME, LOG_NAME, OUT_NAME, DATA_NAME = "mosquitto.pid", "mosquitto.log", "mosquitto.out", "data"
_RUNNING = " running\n"  # Mosquitto's "mosquitto version X running", once listening
_DYNSEC_GLOBS = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


def dynsec_plugin_path() -> str:
    """Mosquitto's dynamic-security plugin (Debian's ``mosquitto`` package ships it)."""
    for pattern in _DYNSEC_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise DynsecPluginNotFound(
        "mosquitto_dynamic_security.so not found: install Mosquitto 2.0 or newer "
        "('apt-get install mosquitto') or run with --embedded-broker"
    )


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener; with client certificates the certificate CN is the username."""

    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True


def _safe_path(path: Path) -> str:
    text = str(path.resolve())
    if any(c.isspace() for c in text):
        raise BrokerError(f"broker path {text!r} must not contain whitespace (mosquitto.conf)")
    return text


def write_broker_config(
    directory: Path | str,
    *,
    port: int,
    bind: str = "127.0.0.1",
    accounts: Mapping[str, str],
    cloud_username: str | Collection[str] = "cloud",
    max_queued_messages: int = 100_000,
    max_packet_size: int = 262_144,
    persistence: bool = False,
    autosave_interval_s: int = 60,
    tls: TlsListener | None = None,
    replace_accounts: bool = False,
) -> Path:
    """Write ``mosquitto.conf`` and the dynamic-security file (both 0600) into ``directory``.

    Args:
        accounts: username -> clear-text password; usernames must be valid device ids.
            Those named in ``cloud_username`` get the cloud's role, the rest a device's.
        cloud_username: the cloud's login(s); one per cloud worker, so that each
            worker's persistent session (client id = username) is its own.
        replace_accounts: drop logins already in an existing dynamic-security file (by
            default they are kept, so a regenerated config keeps the devices the cloud
            added at run time).

    Returns:
        The path of ``mosquitto.conf``.

    Raises:
        TopicError: a username that is not a valid device id.
        DynsecPluginNotFound: Mosquitto's dynamic-security plugin is not installed.
    """
    directory = Path(directory)
    clouds = [cloud_username] if isinstance(cloud_username, str) else list(cloud_username)
    for user in [*accounts, *clouds]:
        check_device_id(user)
    plugin = dynsec_plugin_path()
    directory.mkdir(parents=True, exist_ok=True)
    d = _safe_path(directory)

    dynsec = directory / DYNSEC_NAME
    existing = None
    if dynsec.exists() and not replace_accounts:
        try:
            existing = json.loads(dynsec.read_text())
        except ValueError as exc:
            raise BrokerError(
                f"{dynsec} is not valid JSON ({exc}): restore it from a backup, or delete it "
                "to start with no device logins"
            ) from exc
    config = merge_config(
        existing,
        clouds={u: p for u, p in accounts.items() if u in clouds},
        devices={u: p for u, p in accounts.items() if u not in clouds},
    )
    write_private(dynsec, json.dumps(config, indent=1) + "\n")
    # a password file here would be the embedded broker's, and stale
    (directory / PASSWD_NAME).unlink(missing_ok=True)

    conf = [
        "# generated by entitle; edits are overwritten",
        "per_listener_settings false",
        "allow_anonymous false",
        # Logins and access rules: devices are added and removed at run time over
        # $CONTROL; the plugin checks SUBSCRIBE, each delivery and each publish.
        f"plugin {plugin}",
        f"plugin_opt_config_file {d}/{DYNSEC_NAME}",
        f"max_queued_messages {max_queued_messages}",
        f"max_packet_size {max_packet_size}",
        "set_tcp_nodelay true",
        f"pid_file {d}/{PID_NAME}",
        # Run as whoever started us: as root, Mosquitto would otherwise switch to the
        # `mosquitto` user, which cannot write this directory (nor the plugin's file).
        f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        f"log_dest file {d}/{LOG_NAME}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if persistence:
        (directory / DATA_NAME).mkdir(exist_ok=True)
        conf += [
            "persistence true",
            f"persistence_location {d}/{DATA_NAME}/",
            f"autosave_interval {autosave_interval_s}",
        ]
    else:
        conf.append("persistence false")
    # No use_username_as_clientid here: the plugin pins each device's client id to its
    # username instead, and the cloud's login may then hold two connections (its
    # bridge and its accounts channel).
    conf += ["", f"listener {port} {bind}"]
    if tls is not None:
        conf += [
            "",
            f"listener {tls.port} {bind}",
            f"cafile {_safe_path(tls.ca_file)}",
            f"certfile {_safe_path(tls.cert_file)}",
            f"keyfile {_safe_path(tls.key_file)}",
            "tls_version tlsv1.2",
            # a certificate identity skips the plugin's login check, so its pinned
            # client id too: the listener pins it instead
            "use_username_as_clientid true",
        ]
        if tls.require_certificate:
            conf += ["require_certificate true", "use_identity_as_username true"]
    path = directory / CONF_NAME
    write_private(path, "\n".join(conf) + "\n")
    return path


# --- Mosquitto process ---------------------------------------------------------------


def mosquitto_path() -> str | None:
    """The ``mosquitto`` executable: on PATH, else the Debian location, else None."""
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


def ensure_mosquitto() -> str:
    """The ``mosquitto`` executable, or :class:`MosquittoNotFound` saying what to do."""
    found = mosquitto_path()
    if found is None:
        raise MosquittoNotFound(
            "mosquitto not found: install it with 'apt-get install mosquitto' "
            "or run with --embedded-broker"
        )
    return found


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (racy by nature; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """A Mosquitto process with a generated config in ``directory``, on a free port.

    Usable as a context manager (also from async tests: start and stop are quick).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        accounts: Mapping[str, str],
        cloud_username: str | Collection[str] = "cloud",
        host: str = "127.0.0.1",
        port: int | None = None,
        persistence: bool = False,
        max_queued_messages: int = 100_000,
        max_packet_size: int = 262_144,
        tls: TlsListener | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.executable = ensure_mosquitto()
        self.directory = Path(directory)
        self.host = host
        self._fixed_port = port
        self.port = port or 0
        self.startup_timeout = startup_timeout
        clouds = [cloud_username] if isinstance(cloud_username, str) else list(cloud_username)
        self._admin = next(((u, accounts[u]) for u in clouds if u in accounts), None)
        self._accounts: DynsecAccounts | None = None
        self._config: dict[str, Any] = dict(
            bind=host,
            accounts=dict(accounts),
            cloud_username=clouds,
            persistence=persistence,
            max_queued_messages=max_queued_messages,
            max_packet_size=max_packet_size,
            tls=tls,
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._configured = False

    # paths
    @property
    def config_path(self) -> Path:
        return self.directory / CONF_NAME

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_NAME

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.is_running else None  # type: ignore[union-attr]

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def url_for(self, username: str, password: str) -> str:
        """``mqtt://user:pass@host:port`` for ``ENTITLE_BROKER_URL``."""
        return broker_url(self.host, self.port, username, password)

    @property
    def accounts(self) -> DynsecAccounts:
        """Device logins of this running broker, administered with the first cloud login."""
        if self._admin is None:
            raise BrokerError("no cloud login with a known password was given to this broker")
        if not self.port:
            raise BrokerError("mosquitto is not running; start() it first")
        if self._accounts is None:
            user, password = self._admin
            self._accounts = DynsecAccounts(self.host, self.port, username=user, password=password)
        return self._accounts

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log_path, lines) + "\n" + tail(self.directory / OUT_NAME, lines)

    # lifecycle
    def start(self) -> MosquittoBroker:
        """Write the config (first start only) and wait until the port accepts."""
        if self.is_running:
            return self
        attempts = 1 if (self._configured or self._fixed_port) else 3
        for attempt in range(attempts):
            if not self._configured:
                self.port = self._fixed_port or find_free_port(self.host)
                write_broker_config(self.directory, port=self.port, **self._config)
            if self._spawn():
                self._configured = True
                log.info("mosquitto pid %s on %s:%d", self.pid, self.host, self.port)
                return self
            if attempt + 1 < attempts and "in use" in self.log_tail():
                continue  # lost the free-port race; try another port
            break
        raise BrokerError(
            f"mosquitto did not start on {self.host}:{self.port} within "
            f"{self.startup_timeout}s (config {self.config_path}); log tail:\n{self.log_tail()}"
        )

    def _spawn(self) -> bool:
        # Ready = this process logged "running" (listeners open) and the port accepts;
        # the port alone could be another broker's when it was taken meanwhile.
        offset = log_size(self.log_path)
        self._process = spawn(
            [self.executable, "-c", str(self.config_path)], self.directory / OUT_NAME
        )
        if wait_logged(
            self._process,
            self.log_path,
            offset,
            _RUNNING,
            timeout=self.startup_timeout,
            ready=lambda: _port_accepts(self.host, self.port),
            interval=0.01,
        ):
            return True
        self.kill()
        return False

    def _close_accounts(self) -> None:
        if self._accounts is not None:
            self._accounts.close()
            self._accounts = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves persistence) and wait; SIGKILL if it hangs."""
        self._close_accounts()
        if self._process is None:
            return
        for hung in stop_all([self._process], timeout):
            log.warning("mosquitto pid %d ignored SIGTERM; killed", hung.pid)
            # Mosquitto removes its pid file only on a clean exit.
            (self.directory / PID_NAME).unlink(missing_ok=True)
        self._process = None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        self._close_accounts()
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None
            # Mosquitto removes its pid file only on a clean exit.
            (self.directory / PID_NAME).unlink(missing_ok=True)

    def wait(self, timeout: float | None = None) -> int:
        """Block until Mosquitto exits (e.g. `entitle broker run`); its exit status."""
        if self._process is None:
            raise BrokerError("mosquitto is not running; start() it first")
        return self._process.wait(timeout)

    def restart(self) -> MosquittoBroker:
        """Stop and start on the same port with the same files and persistence."""
        self.stop()
        return self.start()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<MosquittoBroker {self.host}:{self.port} pid={self.pid} dir={self.directory}>"
