"""GET /metrics on a real app and Mosquitto: it scrapes as Prometheus text and the numbers move."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cloud import create_app
from cloud.settings import CloudSettings
from protocol.health import HealthReport, health_to_json
from protocol.topics import device_topic
from tests.broker_fixtures import FixtureBroker
from tests.cloud.harness import FakeClock, client, new_api_key, running
from tests.waiting import HANG_S, eventually


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_scrape_and_move(broker: FixtureBroker, tmp_path: Path) -> None:
    clock = FakeClock()
    settings = CloudSettings(
        data_dir=tmp_path / "cloud", broker_url=broker.url("cloud"), health_flush_delay_s=0.01
    )
    app = create_app(settings, accounts=broker.accounts, clock=clock)
    async with running(app), client(app, new_api_key(app)) as http:
        await app.state.cloud.bridge.wait_connected(HANG_S)
        inst = (await http.post("/api/v1/installations", json={"name": "Home"})).json()["id"]
        creds = (
            await http.post("/api/v1/devices", json={"installation_id": inst, "kind": "gateway"})
        ).json()
        device = creds["device_id"]

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            got = await http.get("/metrics")
            assert got.status_code == 200
            assert got.headers["content-type"].startswith("text/plain")
            return _samples(got.text)

        before = await scrape()
        assert before[("entitle_health_ingest_stored_total", ())] == 0
        assert before[("entitle_mqtt_connected", ())] == 1
        assert before[("entitle_token_resign_queue", ())] >= 0
        assert before[("entitle_devices_connected", ())] == 0
        assert ("entitle_job_backlog", (("queue", "entitlement_outbox"),)) in before
        assert any(name == "entitle_job_runs_total" for name, _ in before)  # first passes ran

        async with broker.client(creds["mqtt_username"], creds["mqtt_password"]) as mqtt:
            for seq in (1, 2, 2):  # the second 2 is a duplicate
                body = HealthReport(
                    device_id=device, seq=seq, ts=clock.now, kind="gateway", uptime_s=1
                )
                await mqtt.publish(device_topic(device, "health"), health_to_json(body), qos=1)
            await mqtt.publish(device_topic(device, "health"), b"{not json", qos=1)
            await mqtt.publish(
                device_topic(device, "status"),
                json.dumps({"status": "online"}).encode(),
                qos=1,
                retain=True,
            )

        ingest = app.state.cloud.health_ingest
        await eventually(
            lambda: ingest.received >= 5 and ingest.pending == 0 and ingest.totals.statuses,
            what="every message received and committed",
        )
        after = await scrape()
    assert after[("entitle_health_ingest_stored_total", ())] == 2
    assert after[("entitle_health_ingest_duplicates_total", ())] == 1
    assert after[("entitle_health_ingest_rejected_total", (("reason", "bad_json"),))] == 1
    assert after[("entitle_health_ingest_pending", ())] == 0
    assert after[("entitle_health_ingest_batch_seconds_count", ())] >= 1
    for stage in ("receive", "parse", "store"):
        key = ("entitle_health_ingest_cpu_seconds_total", (("stage", stage),))
        assert after[key] > before[key]
