"""A device with its own login attacks the cloud's shared group; the cloud loses nothing.

Issue 13, must-shows 1 and 2, against the real cloud (its MQTT bridge, health
ingest and command service) on a real Mosquitto with the dynamic-security plugin:

- device A tries every filter it may not have — every channel of device B, the
  wildcards that reach B, ``#``, ``$SYS/#``, and the cloud's ``$share/cloud/…``
  group (and any other group) for ``health`` and ``cmd/res`` — while B publishes
  200 reports and answers 20 self-tests. Every forbidden SUBSCRIBE is refused
  (reason 0x87), A receives nothing of B's, and the cloud stores 200 of 200
  reports and 20 of 20 answers. Before the plugin, Mosquitto granted A's
  ``$share/cloud/…`` subscription, dealt A every other report, dropped them at
  delivery, and the cloud stored 100 (``docs/threat-model.md``).
- a device created through the API logs in at once (no broker reload, no
  restart), and one deleted through the API is disconnected at once, its
  login refused afterwards.

Both run on Mosquitto and on a 3-node NATS cluster (``[nats]``: the cloud chooses
the NATS accounts adapter by ``broker_engine``; there is no ``$share`` and a
refused SUBSCRIBE is 0x80; the responders disconnect a deleted device).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import func, select

from cloud import create_app
from cloud.health.tables import HealthReportRow
from cloud.settings import CloudSettings
from protocol.commands import ok_result, parse_command, result_to_json
from protocol.topics import CHANNELS, CLOUD_GROUP, PREFIX, device_topic
from tests.broker_fixtures import FixtureBroker, FixtureCluster
from tests.cloud.harness import FakeClock, client, new_api_key, running
from tests.integration.test_broker_acl import subscribe
from tests.integration.test_health_ingest import report

pytestmark = [pytest.mark.usefixtures("require_mosquitto"), pytest.mark.timeout(120)]

NOT_AUTHORIZED = 0x87
REFUSED = {"mosquitto": NOT_AUTHORIZED, "nats": 0x80}  # SUBACK: MQTT 5, MQTT 3.1.1
REPORTS, COMMANDS = 200, 20


def forbidden_filters(attacker: str, victim: str) -> list[str]:
    """Generated from the topic table: what ``attacker`` must never be granted."""
    own_reads = {device_topic(attacker, "entitlement"), device_topic(attacker, "cmd")}
    filters = [device_topic(victim, channel) for channel in CHANNELS]
    filters += [device_topic(attacker, c) for c in CHANNELS if device_topic(attacker, c)]
    filters = [f for f in filters if f not in own_reads]  # own writes: still not readable
    for channel in CHANNELS:
        filters.append(f"{PREFIX}/dev/+/{channel}")
        for group in (CLOUD_GROUP, "anything"):
            filters.append(f"$share/{group}/{PREFIX}/dev/+/{channel}")
            filters.append(f"$share/{group}/{device_topic(victim, channel)}")
    filters += ["#", "+/#", f"{PREFIX}/#", f"{PREFIX}/dev/#", f"{PREFIX}/dev/{victim}/#"]
    filters += ["$SYS/#", "$CONTROL/#", "$CONTROL/dynamic-security/v1/response"]
    filters += [f"$share/{CLOUD_GROUP}/#", f"$share/{CLOUD_GROUP}/{PREFIX}/#"]
    return filters


def test_the_probe_covers_the_shared_groups_of_every_channel() -> None:
    filters = forbidden_filters("A", "B")
    for channel in ("health", "cmd/res"):
        assert f"$share/cloud/{PREFIX}/dev/+/{channel}" in filters
        assert f"$share/anything/{PREFIX}/dev/+/{channel}" in filters
    assert device_topic("A", "health") in filters  # its own writes are not readable
    assert device_topic("A", "cmd") not in filters


@pytest.fixture(params=["mosquitto", "nats"])
async def cloud(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Any, FixtureBroker, Any]]:
    """The real cloud app on a real broker; the device logins made through its API."""
    kind = FixtureBroker if request.param == "mosquitto" else FixtureCluster
    with kind(tmp_path / "broker", clouds=("cloud-a",)) as broker:
        settings = CloudSettings(
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{tmp_path / 'app.db'}",
            command_timeout_s=120,
            **broker.cloud_settings("cloud-a"),
        )
        # no accounts= : the app administers device logins with its own broker login
        app = create_app(settings, clock=FakeClock(int(time.time())))
        async with running(app):
            async with client(app, new_api_key(app)) as http:
                await app.state.cloud.bridge.wait_connected(10)
                yield http, broker, app


async def add_device(http: Any, installation: str, device_id: str) -> str:
    created = await http.post(
        "/api/v1/devices",
        json={"installation_id": installation, "kind": "gateway", "device_id": device_id},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["mqtt_password"])


async def wait_until(predicate: Any) -> None:
    """Await a condition the system moves towards; the ceiling only guards a hang, and
    the caller then asserts what it got (e.g. 100 reports stored of 200)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            # the database has no event to await: poll it
            while not await predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_a_device_in_the_clouds_shared_group_takes_nothing(cloud: Any) -> None:
    http, broker, app = cloud
    inst = (await http.post("/api/v1/installations", json={"name": "Site"})).json()["id"]
    passwords = {d: await add_device(http, inst, d) for d in ("A", "B")}

    async with (
        broker.client("A", passwords["A"]) as attacker,
        broker.client("B", passwords["B"]) as victim,
    ):
        # checked after the traffic, so that a broken broker shows what it costs
        refused = {f: await subscribe(attacker, f) for f in forbidden_filters("A", "B")}
        assert await subscribe(attacker, device_topic("A", "cmd")) == 1  # the control

        await subscribe(victim, device_topic("B", "cmd"))

        async def answer_commands() -> None:
            answered = 0
            async for message in victim.messages:
                command = parse_command(bytes(message.payload))  # type: ignore[arg-type]
                result = {"passed": True, "hardware_fault": False, "faults": []}
                reply = ok_result(command.id, device_id="B", result=result)
                await victim.publish(device_topic("B", "cmd/res"), result_to_json(reply), qos=1)
                answered += 1
                if answered == COMMANDS:
                    return

        answering = asyncio.create_task(answer_commands(), name="victim-answers")
        command_ids = []
        for _ in range(COMMANDS):
            sent = await http.post("/api/v1/devices/B/commands", json={"cmd": "self_test"})
            assert sent.status_code == 202, sent.text
            command_ids.append(sent.json()["id"])
        for seq in range(1, REPORTS + 1):
            await victim.publish(device_topic("B", "health"), report("B", seq), qos=1)
        await asyncio.wait_for(answering, 60)

        store = app.state.cloud.store

        def stored_reports() -> int:
            with store.transaction() as tx:
                count = select(func.count()).select_from(HealthReportRow)
                return int(tx.scalar(count.where(HealthReportRow.device_id == "B")) or 0)

        async def all_answers() -> bool:
            statuses = [
                (await http.get(f"/api/v1/devices/B/commands/{cid}")).json()["status"]
                for cid in command_ids
            ]
            return statuses.count("answered") == COMMANDS

        async def all_reports() -> bool:
            return await asyncio.to_thread(stored_reports) >= REPORTS

        await wait_until(all_reports)
        assert await asyncio.to_thread(stored_reports) == REPORTS
        await wait_until(all_answers)
        assert await all_answers()
        assert {f for f, code in refused.items() if code != REFUSED[broker.engine]} == set()

        # The control arrives; nothing of B's ever reached A.
        await http.post("/api/v1/devices/A/commands", json={"cmd": "self_test"})
        async with asyncio.timeout(30):
            first = await anext(aiter(attacker.messages))
    assert first.topic.value == device_topic("A", "cmd")
    assert (await http.get("/api/v1/health/rejects")).json() == {}


async def test_a_device_made_through_the_api_logs_in_at_once_and_a_deleted_one_is_cut(
    cloud: Any,
) -> None:
    http, broker, _ = cloud
    inst = (await http.post("/api/v1/installations", json={"name": "Site"})).json()["id"]
    password = await add_device(http, inst, "gw-new")
    started = time.monotonic()
    async with broker.client("gw-new", password) as device:  # first try, no retry
        connected_after = time.monotonic() - started
        await subscribe(device, device_topic("gw-new", "cmd"))
        deleted = await http.delete("/api/v1/devices/gw-new")
        assert deleted.status_code == 204, deleted.text
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(30):  # a hang guard: the broker kicks it at once
                await anext(aiter(device.messages))
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with broker.client("gw-new", password):
            pass
    assert refused.value.rc is not None and refused.value.rc.value == NOT_AUTHORIZED
    if broker.engine == "nats":  # kicked by the responders, the same way on every node
        return
    log = broker.log_path.read_text()
    assert "Reloading config" not in log
    assert "gw-new been disconnected by administrative action" in log
    print(f"device created through the API connected after {connected_after * 1000:.1f} ms")
