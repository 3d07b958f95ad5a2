"""The embedded amqtt broker: a fallback for `entitle demo` when Mosquitto is not installed.

The same topic table as Mosquitto's roles (:mod:`protocol.topics`), checked at
SUBSCRIBE and PUBLISH; logins from a ``$7$`` password file
(:class:`broker.passwd.PasswdFileAccounts`); no anonymous logins. What it does not
enforce is :data:`EMBEDDED_GAPS`, said in a warning when it starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from amqtt.broker import Broker as AmqttBroker
from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.errors import BrokerError
from broker.mosquitto import find_free_port
from broker.passwd import PASSWD_NAME, PasswdFileAccounts, read_passwd, write_passwd
from common.credentials import mosquitto_hash, verify_password
from common.settings import broker_url
from protocol.errors import TopicError
from protocol.topics import (
    PREFIX,
    check_device_id,
    cloud_subscriptions,
    device_reads,
    device_writes,
)

__all__ = ["EMBEDDED_GAPS", "EmbeddedBroker", "run_embedded_forever"]

log = logging.getLogger(__name__)


def _may(
    user: str, *, clouds: Collection[str], access: Literal["read", "write"]
) -> tuple[str, ...]:
    """The filters ``user`` may read (subscribe to) or write, from the one topic table."""
    if user in clouds:
        return cloud_subscriptions() if access == "read" else (f"{PREFIX}/#",)
    try:
        return device_reads(user) if access == "read" else device_writes(user)
    except TopicError:
        return ()


def _filter_covers(allowed: str, requested: str) -> bool:
    """True if every topic ``requested`` (a topic or filter) matches is in ``allowed``."""
    want = requested.split("/")
    for i, level in enumerate(allowed.split("/")):
        if level == "#":
            return True
        if i >= len(want) or want[i] == "#" or (level != "+" and want[i] != level):
            return False
    return len(want) == len(allowed.split("/"))


class _PasswdAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt login against the same ``$7$`` passwd file; re-read when it changes."""

    @dataclass
    class Config:
        password_file: str = ""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._path = Path(self.config.password_file)
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, str] = {}

    async def authenticate(self, *, session: Session) -> bool:
        if not session.username or session.password is None:
            return False
        st = self._path.stat()
        if (st.st_ino, st.st_mtime_ns, st.st_size) != self._stamp:
            self._users = read_passwd(self._path)
            self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        hashed = self._users.get(session.username)
        return hashed is not None and verify_password(session.password, hashed)


class _AclTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic checks from the topic table (:mod:`protocol.topics`).

    amqtt sends retained messages to a new subscription without a RECEIVE check, so a
    SUBSCRIBE is allowed only if every topic its filter matches is readable.
    """

    @dataclass
    class Config:
        cloud_usernames: list[str] = field(default_factory=list)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool:
        user = session.username if session else None
        if not user or not topic:
            return False
        want: Literal["read", "write"] = "write" if action == Action.PUBLISH else "read"
        allowed = _may(user, clouds=self.config.cloud_usernames, access=want)
        return any(_filter_covers(filter_, topic) for filter_ in allowed)


EMBEDDED_GAPS = (
    "a client that connects with another's client id (even one that then fails to log "
    "in) discards that client's session",
    "MQTT 3.1.1 only: no message expiry on retained tokens, no shared subscriptions",
    "no persistence across restarts, no max_queued_messages or max_packet_size limits",
    "no TLS client-certificate identities",
)


class EmbeddedBroker:
    """amqtt broker for `entitle demo` when Mosquitto is not installed.

    The same topic table as Mosquitto's roles, checked at SUBSCRIBE and PUBLISH, logins
    from a ``$7$`` password file, no anonymous logins. It lacks (and says so in a
    warning when it starts, see :data:`EMBEDDED_GAPS`):
    MQTT 5 (clients must use 3.1.1, so no message expiry, no shared subscriptions:
    subscribe to ``entitle/v1/dev/+/health`` directly), client-id pinning (a client
    connecting with another's client id, even one that then fails to log in,
    discards that client's session), persistence across restarts, ``max_queued_messages``
    and ``max_packet_size`` limits, and TLS client-certificate identities.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        accounts: Mapping[str, str],
        cloud_username: str | Collection[str] = "cloud",
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port or 0
        self._clouds = [cloud_username] if isinstance(cloud_username, str) else list(cloud_username)
        for user in [*accounts, *self._clouds]:
            check_device_id(user)
        self._accounts = dict(accounts)
        self.accounts = PasswdFileAccounts(self.directory, protected_usernames=self._clouds)
        self._broker: AmqttBroker | None = None

    def url_for(self, username: str, password: str) -> str:
        return broker_url(self.host, self.port, username, password)

    async def start(self) -> EmbeddedBroker:
        self.directory.mkdir(parents=True, exist_ok=True)
        passwd = self.directory / PASSWD_NAME
        entries = read_passwd(passwd)
        entries.update({user: mosquitto_hash(pw) for user, pw in self._accounts.items()})
        write_passwd(passwd, entries)
        self.port = self.port or find_free_port(self.host)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                f"{__name__}._PasswdAuthPlugin": {"password_file": str(passwd)},
                f"{__name__}._AclTopicPlugin": {"cloud_usernames": self._clouds},
            },
        }
        self._broker = AmqttBroker(config)
        try:
            await self._broker.start()
        except Exception as exc:  # amqtt raises its own BrokerError or an OSError
            self._broker = None
            raise BrokerError(
                f"embedded broker did not start on {self.host}:{self.port}: {exc}"
            ) from exc
        log.warning(
            "embedded amqtt broker on %s:%d, a fallback for trying entitle out; it does not "
            "enforce everything Mosquitto does: %s. Install mosquitto for real devices.",
            self.host,
            self.port,
            "; ".join(EMBEDDED_GAPS),
        )
        return self

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def run_embedded_forever(
    directory: Path | str, *, port: int, cloud_password: str, host: str = "127.0.0.1"
) -> None:
    """`entitle broker run --embedded-broker`: serve until cancelled (Ctrl-C)."""
    async with EmbeddedBroker(
        directory, accounts={"cloud": cloud_password}, host=host, port=port
    ) as broker:
        log.info("embedded broker serving on %s:%d", broker.host, broker.port)
        await asyncio.Event().wait()
