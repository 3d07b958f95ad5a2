"""The bridge as health consumer over MQTT 3.1.1: Mosquitto, and the embedded amqtt broker.

MQTT 3.1.1 has no session-expiry property (clean session off instead) and
the embedded broker has no shared subscriptions (the bridge subscribes
plainly): reports must still flow into the database.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
from sqlalchemy import func, select

from broker.embedded import EmbeddedBroker
from cloud.bridge import MqttBridge
from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.rules import DeviceKind
from cloud.health.ingest import HealthIngest
from cloud.health.tables import HealthReportRow
from common.settings import parse_broker_url
from protocol.health import HealthReport, health_to_json
from protocol.topics import device_topic
from tests.broker_fixtures import FixtureBroker
from tests.waiting import eventually


def _store(path: Path) -> Store:
    store = Store.open(f"sqlite:///{path / 'cloud.db'}")
    with store.transaction() as tx:
        device_queries.add_installation(tx, installation_id="inst-1", name="Site", now=0)
        device_queries.add_device(
            tx,
            device_id="gw-1",
            installation_id="inst-1",
            kind=DeviceKind.GATEWAY,
            password_hash="x",
            now=0,
        )
    return store


def _count(store: Store) -> int:
    with store.transaction() as tx:
        return int(tx.scalar(select(func.count()).select_from(HealthReportRow)) or 0)


@asynccontextmanager
async def consuming(url: str, store: Store) -> AsyncIterator[MqttBridge]:
    ingest = HealthIngest(store, clock=lambda: int(time.time()), flush_delay_s=0.01)
    bridge = MqttBridge(
        parse_broker_url(url), keyset_message=lambda: b"keys", protocol=4, consumer=ingest
    )
    tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(ingest.run())]
    try:
        await bridge.wait_connected(10)
        yield bridge
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _publish_and_wait(host: str, port: int, password: str, store: Store) -> None:
    async with aiomqtt.Client(
        host, port, username="gw-1", password=password, identifier="gw-1"
    ) as device:
        for seq in (1, 2, 2):
            report = HealthReport(device_id="gw-1", seq=seq, ts=seq, kind="gateway", uptime_s=1)
            await device.publish(device_topic("gw-1", "health"), health_to_json(report), qos=1)
    await eventually(lambda: _count(store) >= 2, what="2 reports stored")


async def test_mqtt311_on_mosquitto(broker: FixtureBroker, tmp_path: Path) -> None:
    password = broker.add_device("gw-1")
    store = _store(tmp_path)
    async with consuming(broker.url(broker.cloud_username), store):
        await _publish_and_wait(broker.host, broker.port, password, store)
    assert _count(store) == 2
    store.close()


async def test_embedded_broker_without_shared_subscriptions(tmp_path: Path) -> None:
    cloud, device = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    store = _store(tmp_path)
    async with EmbeddedBroker(
        tmp_path / "embedded", accounts={"cloud": cloud, "gw-1": device}
    ) as embedded:
        async with consuming(embedded.url_for("cloud", cloud), store):
            await _publish_and_wait(embedded.host, embedded.port, device, store)
    assert _count(store) == 2
    store.close()
