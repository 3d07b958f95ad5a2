"""Diagnosis windows, fleet coverage and the history / hourly routes (SQLite and PostgreSQL).

Rules see their whole window at a 10-second report interval (a 7-day rule reads
7 days, not the newest N reports); the fleet summary covers every device, past
any page size; the history route filters by time; hourly aggregates are served
by time range and pruned after their retention.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import create_api_key
from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.rules import DeviceKind
from cloud.devices.tables import DeviceRow
from cloud.health import bulk
from cloud.health.queries import report_row
from cloud.health.retention import HealthRetentionJob
from cloud.health.rows import parse_row
from cloud.health.tables import HealthHourlyRow, HealthReportRow, StatusEventRow
from protocol.health import Disk, HealthReport, Net, Reboots, health_to_json
from tests.cloud.harness import Cloud, client

DAY = 86_400
INTERVAL = 10  # seconds between reports


def store_of(cloud: Cloud) -> Store:
    store: Store = cloud.app.state.cloud.store
    return store


def add_devices(store: Store, ids: list[str], *, now: int, kind: str = "gateway") -> None:
    with store.transaction() as tx:
        if tx.get(DeviceRow, ids[0]) is None:
            device_queries.add_installation(tx, installation_id="inst-w", name="Windows", now=now)
        tx.execute(
            insert(DeviceRow),
            [
                {
                    "id": d,
                    "installation_id": "inst-w",
                    "kind": DeviceKind(kind),
                    "mqtt_password_hash": "x",
                    "created_at": now,
                }
                for d in ids
            ],
        )


def store_reports(session: Session, reports: list[HealthReport], *, now: int) -> None:
    """Reports stored the way the ingest stores them (rows, and each device's state)."""
    rows = [parse_row(health_to_json(r), topic_device_id=r.device_id) for r in reports]
    bulk.store_rows(session, rows, now=now)


def add_reports(store: Store, reports: list[HealthReport], *, now: int) -> None:
    rows = [report_row(r, received_at=now) for r in reports]
    with store.transaction() as tx:
        for start in range(0, len(rows), 10_000):
            tx.execute(insert(HealthReportRow), rows[start : start + 10_000])


_PARTS: dict[str, Any] = {"disk": Disk, "net": Net, "reboots": Reboots}


def report(device_id: str, seq: int, ts: int, **fields: Any) -> HealthReport:
    """A gateway's report; nested figures as dicts (``disk={"reallocated": 3}``)."""
    given = {k: _PARTS[k](**v) if k in _PARTS else v for k, v in fields.items()}
    uptime_s = given.pop("uptime_s", 0)
    return HealthReport(
        device_id=device_id, seq=seq, ts=ts, kind="gateway", uptime_s=uptime_s, **given
    )


async def test_a_seven_day_pattern_at_ten_seconds_fires_its_rule(cloud: Cloud) -> None:
    """14 sectors reallocated over 7 days (one each 12 h) and 36 reboots in the last day.

    At 10 s that is 60 480 reports; the newest 2000 (5.5 h) hold at most one
    reallocation and eight reboots, so a capped history fires neither rule.
    """
    now = cloud.clock()
    store = store_of(cloud)
    add_devices(store, ["gw-long"], now=now)
    reports = []
    reallocated = reboots = 0
    boot = now - 7 * DAY
    for i in range(7 * DAY // INTERVAL):
        ts = now - 7 * DAY + INTERVAL + i * INTERVAL
        if ts % (12 * 3600) == 0:
            reallocated += 1
        if ts > now - DAY and ts % 2400 == 0:  # a reboot every 40 min in the last day
            reboots += 1
            boot = ts
        fields = {
            "uptime_s": ts - boot,
            "disk": {"reallocated": reallocated},
            "reboots": {"count": reboots},
        }
        reports.append(report("gw-long", i + 1, ts, **fields))
    add_reports(store, reports, now=now)
    health = (await cloud.http.get("/api/v1/devices/gw-long/health")).json()
    evidence = {e["rule"]: e for e in health["diagnosis"]["evidence"]}
    assert evidence["storage.reallocated"]["value"] == 14
    assert evidence["storage.reallocated"]["window_s"] == 7 * DAY
    assert evidence["reboot.persistent_loop"]["value"] == 36
    assert "reboot.loop" not in evidence  # 1.5 an hour: below the short rule
    assert health["diagnosis"]["verdict"] == "rma_recommended"


async def test_the_fleet_summary_covers_every_device(cloud: Cloud) -> None:
    """5003 devices: more than any page; the last one (by id) is the one needing attention."""
    now = cloud.clock()
    store = store_of(cloud)
    ids = [f"dev-{i:05d}" for i in range(5003)]
    add_devices(store, ids, now=now)
    hot = [
        report(ids[-1], seq, now - 600 * (3 - seq), uptime_s=10_000, cpu_temp_c=80.0)
        for seq in range(3)
    ]
    add_reports(store, hot, now=now)
    fleet = (await cloud.http.get("/api/v1/health/fleet")).json()
    assert fleet["devices"] == len(ids)
    assert fleet["by_verdict"] == {"healthy": len(ids) - 1, "fix_remotely": 1, "rma_recommended": 0}
    assert fleet["attention"] == [
        {"device_id": ids[-1], "verdict": "fix_remotely", "action": "check_cooling"}
    ]


async def test_history_filters_by_time(cloud: Cloud) -> None:
    now = cloud.clock()
    store = store_of(cloud)
    add_devices(store, ["gw-h"], now=now)
    add_reports(store, [report("gw-h", s, now - 100 * (6 - s)) for s in range(1, 6)], now=now)
    url = "/api/v1/devices/gw-h/health/history"

    async def seqs(**params: int) -> list[int]:
        got = await cloud.http.get(url, params=params)
        assert got.status_code == 200, got.text
        return [r["seq"] for r in got.json()["reports"]]

    assert await seqs() == [1, 2, 3, 4, 5]
    assert await seqs(since=now - 400, until=now - 200) == [2, 3, 4]  # both ends inclusive
    assert await seqs(since=now - 199) == [5]
    assert await seqs(until=now - 500) == [1]
    assert await seqs(since=now - 250, until=now - 210) == []
    assert await seqs(since=now - 400, until=now - 200, limit=2, offset=1) == [3, 4]


async def test_hourly_aggregates_by_time_range_then_pruned(cloud: Cloud) -> None:
    """Reports past the raw retention fold into hours; the API serves them; old hours go."""
    settings = cloud.app.state.cloud.settings
    store = store_of(cloud)
    start = cloud.clock()
    hour0 = start - start % 3600 - 40 * DAY
    add_devices(store, ["gw-a", "gw-b"], now=start)
    reports = [
        report(d, h * 10 + k, hour0 + h * 3600 + k * 600, cpu_temp_c=40.0 + h + k, uptime_s=1)
        for d in ("gw-a", "gw-b")
        for h in range(4)
        for k in range(3)
    ]
    add_reports(store, reports, now=start)
    with store.transaction() as tx:
        tx.add(StatusEventRow(device_id="gw-a", online=False, at=hour0))
    job = HealthRetentionJob(
        store,
        clock=cloud.clock,
        raw_retention_s=settings.health_retention_s,
        hourly_retention_s=365 * DAY,
    )
    assert (await job.run_once()).folded == 24
    url = "/api/v1/devices/gw-a/health/hourly"
    page = (await cloud.http.get(url, params={"since": hour0 + 3600, "until": hour0 + 7200})).json()
    assert [(a["hour"], a["metric"]) for a in page["aggregates"]] == [
        (hour0 + 3600, "cpu_temp_c"),
        (hour0 + 7200, "cpu_temp_c"),
    ]
    first = page["aggregates"][0]
    assert (first["n"], first["min"], first["max"], first["mean"]) == (3, 41.0, 43.0, 42.0)
    assert page["next_offset"] is None
    whole = (await cloud.http.get(url, params={"limit": 3})).json()
    assert [a["hour"] for a in whole["aggregates"]] == [hour0, hour0 + 3600, hour0 + 7200]
    assert whole["next_offset"] == 3
    owner_key = create_api_key(store, name="owner", now=cloud.clock(), role="owner").key
    async with client(cloud.app, owner_key) as owner:
        assert (await owner.get(url)).status_code == 404  # not the owner's device

    def hours() -> list[tuple[str, int]]:
        with store.transaction() as tx:
            rows = tx.execute(select(HealthHourlyRow.device_id, HealthHourlyRow.hour))
            return sorted((r.device_id, r.hour) for r in rows)

    def status_events() -> int:
        with store.transaction() as tx:
            return int(tx.scalar(select(func.count()).select_from(StatusEventRow)) or 0)

    # a year after hour 1 began: hours 0 and 1 are past the hourly retention, 2 and 3 not
    cloud.clock.now = hour0 + 3600 + 365 * DAY + 1
    assert (await job.run_once()).hourly_deleted == 4
    assert hours() == [(d, hour0 + h * 3600) for d in ("gw-a", "gw-b") for h in (2, 3)]
    assert status_events() == 0  # older than the raw retention
