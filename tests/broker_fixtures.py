"""Pytest plugin: a real Mosquitto (own config, own free port) with a cloud account.

Fixtures:
    broker         function scope; a fresh :class:`FixtureBroker` in ``tmp_path``.
    shared_broker  session scope; one broker for tests that only need unique device ids
                   (use ``shared_broker.new_device()``).
    embedded_broker  function scope, async; the amqtt fallback with a cloud account.
    require_mosquitto  session scope; the executable's path (skips when missing).
    nats_cluster   session scope; a 3-node NATS cluster (:class:`FixtureCluster`, the
                   project's own config from broker.nats) for tests that only need unique
                   device ids: do not kill its nodes (start your own FixtureCluster).
    engine_broker  a broker per engine, parametrized ("mosquitto", "nats"): the shared
                   Mosquitto or the shared NATS cluster; ``.mqtt_protocol`` is 5 or 4.

Every fixture skips, with the reason shown under ``-ra``, when mosquitto is missing.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker.embedded import EmbeddedBroker
from broker.mosquitto import MosquittoBroker, mosquitto_path
from broker.nats import NatsCluster

__all__ = [
    "FixtureBroker",
    "FixtureCluster",
    "broker",
    "embedded_broker",
    "engine_broker",
    "nats_cluster",
    "require_mosquitto",
    "shared_broker",
]

CLOUD = "cloud"


def _remember_clouds(broker: Any, clouds: Sequence[str]) -> dict[str, str]:
    """New passwords for the cloud logins, remembered on ``broker``; the logins."""
    broker.passwords = {user: secrets.token_urlsafe(16) for user in clouds}
    broker.cloud_username = clouds[0]
    broker.cloud_password = broker.passwords[clouds[0]]
    return dict(broker.passwords)


class FixtureBroker(MosquittoBroker):
    """A :class:`MosquittoBroker` that remembers passwords and makes clients."""

    engine = "mosquitto"
    mqtt_protocol = 5

    def __init__(self, directory: Path, *, clouds: Sequence[str] = (CLOUD,), **kwargs: Any) -> None:
        """``clouds``: logins with the cloud's role; :meth:`client` uses the username
        as client id, and two clients with one id kick each other, so a test that needs
        a cloud-side subscriber next to a cloud publisher names two."""
        logins = _remember_clouds(self, clouds)
        super().__init__(directory, accounts=logins, cloud_username=list(clouds), **kwargs)

    def add_device(self, device_id: str, password: str | None = None) -> str:
        """Create a device login (Mosquitto: over $CONTROL; NATS: in the responders'
        bucket; at once); its password."""
        password = password or secrets.token_urlsafe(16)
        self.accounts.set_password(device_id, password)
        self.passwords[device_id] = password
        return password

    def new_device(self, prefix: str = "dev") -> tuple[str, str]:
        """A device with a unique id, for brokers shared between tests: (id, password)."""
        device_id = f"{prefix}-{secrets.token_hex(4)}"
        return device_id, self.add_device(device_id)

    def url(self, username: str) -> str:
        """``mqtt://user:pass@host:port`` for a known user."""
        return self.url_for(username, self.passwords[username])

    def cloud_settings(self, username: str) -> dict[str, Any]:
        """CloudSettings fields for a cloud logged in as ``username`` on this broker."""
        return {"broker_url": self.url(username)}

    def client(self, username: str | None, password: str | None = None, **kwargs: Any) -> Any:
        """An MQTT 5 ``aiomqtt.Client`` (client id = username) with short timeouts."""
        if username is not None and password is None:
            password = self.passwords[username]
        kwargs.setdefault("identifier", username)
        kwargs.setdefault("protocol", aiomqtt.ProtocolVersion.V5)
        kwargs.setdefault("timeout", 5)
        return aiomqtt.Client(self.host, self.port, username=username, password=password, **kwargs)


def _require_mosquitto() -> str:
    found = mosquitto_path()
    if found is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto): needs a real broker")
    return found


@pytest.fixture(scope="session")
def require_mosquitto() -> str:
    """The mosquitto executable; skips the test when it is not installed."""
    return _require_mosquitto()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[FixtureBroker]:
    """A fresh Mosquitto for one test (persistence on, so restart() keeps retained)."""
    _require_mosquitto()
    with FixtureBroker(tmp_path / "broker", persistence=True) as running:
        yield running


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixtureBroker]:
    """One Mosquitto for the whole session: do not restart or kill it."""
    _require_mosquitto()
    with FixtureBroker(tmp_path_factory.mktemp("shared-broker")) as running:
        yield running


@pytest.fixture
async def embedded_broker(tmp_path: Path) -> AsyncIterator[EmbeddedBroker]:
    """The amqtt fallback with a ``cloud`` account; its password is ``.cloud_password``."""
    password = secrets.token_urlsafe(16)
    async with EmbeddedBroker(tmp_path / "embedded", accounts={CLOUD: password}) as running:
        running.cloud_password = password  # type: ignore[attr-defined]
        yield running


class FixtureCluster(NatsCluster):
    """A :class:`NatsCluster` with :class:`FixtureBroker`'s helpers (MQTT 3.1.1 clients).

    ``port`` is the first node's MQTT port; :meth:`url` names every node.
    """

    engine = "nats"
    mqtt_protocol = 4

    def __init__(self, directory: Path, *, clouds: Sequence[str] = (CLOUD,), **kwargs: Any) -> None:
        super().__init__(directory, accounts=_remember_clouds(self, clouds), **kwargs)

    @property
    def port(self) -> int:
        return self.nodes[0].mqtt

    @property
    def accounts(self) -> Any:
        return self.accounts_adapter

    add_device = FixtureBroker.add_device
    new_device = FixtureBroker.new_device
    url = FixtureBroker.url  # through url_for: every node, for failover

    def url_for(self, username: str, password: str) -> str:
        """``mqtt://user:pass@node1,mqtt://node2,...``."""
        return self.mqtt_urls(username, password)

    def cloud_settings(self, username: str) -> dict[str, Any]:
        """CloudSettings fields for a cloud logged in as ``username`` on this cluster."""
        env = self.cloud_env(username, self.passwords[username])
        return {key.removeprefix("ENTITLE_").lower(): value for key, value in env.items()}

    def client(
        self, username: str | None, password: str | None = None, *, node: int = 0, **kwargs: Any
    ) -> Any:
        """An MQTT 3.1.1 ``aiomqtt.Client`` to ``node`` (client id = username)."""
        if username is not None and password is None:
            password = self.passwords[username]
        kwargs.setdefault("identifier", username)
        kwargs.setdefault("protocol", aiomqtt.ProtocolVersion.V311)
        kwargs.setdefault("timeout", 5)
        return aiomqtt.Client(
            self.host, self.nodes[node].mqtt, username=username, password=password, **kwargs
        )


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixtureCluster]:
    """One 3-node NATS cluster for the session: do not kill or restart its nodes."""
    with FixtureCluster(tmp_path_factory.mktemp("nats-cluster"), nodes=3) as running:
        yield running


@pytest.fixture(params=["mosquitto", "nats"])
def engine_broker(request: pytest.FixtureRequest) -> Any:
    """The shared broker of each engine in turn (unique device ids: ``new_device()``)."""
    if request.param == "mosquitto":
        return request.getfixturevalue("shared_broker")
    return request.getfixturevalue("nats_cluster")
