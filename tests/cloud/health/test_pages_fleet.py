"""The fleet overview's data: verdicts kept per device, counts, filters, sort, pages (SQLite
and PostgreSQL).

The verdict job diagnoses devices heard from since their last verdict and
keeps one row per device; the overview and ``GET /health/fleet`` read those
rows, so a report that arrives after a verdict shows only after the next
pass (or the device's own page, which re-diagnoses it).
"""

from __future__ import annotations

from sqlalchemy import insert

from cloud.accounts.apikeys import Principal
from cloud.accounts.tables import UserRow
from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.rules import DeviceKind
from cloud.devices.tables import DeviceRow, InstallationRow, IntegratorRow
from cloud.health import queries as repo
from cloud.health.rules.fleet import FleetQuery, Freshness, Online
from cloud.health.service import HealthService
from cloud.health.tables import CommandRow, CommandStatus, DeviceVerdictRow
from cloud.health.verdicts import VerdictJob
from tests.cloud.harness import Cloud, new_user
from tests.cloud.health.test_health_windows import add_devices as _add_devices
from tests.cloud.health.test_health_windows import report, store_of, store_reports

ADMIN = Principal(key_id=1, name="admin key", role="admin")
OWNER = Principal(key_id=2, name="owner key", role="owner")


def add_devices(store: Store, ids: list[str], *, now: int, kind: str = "gateway") -> None:
    """Devices of installation ``inst-w`` (made with the first of them)."""
    with store.transaction() as tx:
        if tx.get(InstallationRow, "inst-w") is not None:
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
            return
    _add_devices(store, ids, now=now, kind=kind)


def service_of(cloud: Cloud) -> HealthService:
    health: HealthService = cloud.app.state.cloud.health
    return health


def ingest(cloud: Cloud, reports: list) -> None:  # type: ignore[type-arg]
    """Reports stored the way the ingest stores them (rows and the device's state)."""
    with store_of(cloud).transaction() as tx:
        store_reports(tx, reports, now=cloud.clock())


def hot(device_id: str, now: int) -> list:  # type: ignore[type-arg]
    """Three reports at 82 °C over the last 20 minutes, the newest at ``now``."""
    return [
        report(device_id, 10 + i, now - 600 * (2 - i), uptime_s=10_000, cpu_temp_c=82.0, fw="1.2.0")
        for i in range(3)
    ]


async def test_the_job_keeps_a_verdict_per_device_and_renews_it_after_news(cloud: Cloud) -> None:
    now = cloud.clock()
    ids = [f"gw-{i:02d}" for i in range(12)]
    add_devices(store_of(cloud), ids, now=now)
    ingest(cloud, [report(d, 1, now - 60, uptime_s=100, fw="1.2.0") for d in ids])
    job = VerdictJob(store_of(cloud), clock=cloud.clock, min_gap_s=60, max_age_s=600, batch=5)
    assert (await job.run_once()).diagnosed == 12  # three batches of at most five
    assert (await job.run_once()).diagnosed == 0  # nothing new
    cloud.clock.advance(30)
    ingest(cloud, hot("gw-03", now + 30))
    assert (await job.run_once()).diagnosed == 0  # news, but diagnosed less than 60 s ago
    cloud.clock.advance(30)
    assert (await job.run_once()).diagnosed == 1  # gw-03 only: the others said nothing since
    with store_of(cloud).transaction() as tx:
        row = tx.get(DeviceVerdictRow, "gw-03")
        assert row is not None
        assert (row.verdict, row.action, row.rule) == (
            "fix_remotely",
            "check_cooling",
            "thermal.hot",
        )
        assert row.fw == "1.2.0" and row.diagnosed_at == now + 60
    with store_of(cloud).transaction() as tx:  # a self-test answered: evidence to weigh
        tx.add(
            CommandRow(
                id="c-1",
                device_id="gw-05",
                cmd="self_test",
                args={},
                status=CommandStatus.ANSWERED,
                ok=True,
                result={"passed": False, "hardware_fault": True, "faults": []},
                requested_by="user:1",
                created_at=now + 59,
                timeout_at=now + 360,
                answered_at=now + 60,
            )
        )
    assert (await job.run_once()).diagnosed == 1
    with store_of(cloud).transaction() as tx:
        gw05 = tx.get(DeviceVerdictRow, "gw-05")
        assert gw05 is not None and gw05.verdict == "rma_recommended"
        assert gw05.action == "replace_device" and len(gw05.evidence_json) == 1
    cloud.clock.advance(600)
    assert (await job.run_once()).diagnosed == 12  # every verdict older than max_age


async def test_a_verdict_pass_diagnoses_at_most_its_batches(cloud: Cloud) -> None:
    now = cloud.clock()
    ids = [f"gw-{i:02d}" for i in range(12)]
    add_devices(store_of(cloud), ids, now=now)
    ingest(cloud, [report(d, 1, now - 60, uptime_s=100) for d in ids])
    job = VerdictJob(store_of(cloud), clock=cloud.clock, batch=5, max_batches=2)
    assert (await job.run_once()).diagnosed == 10  # two batches of five; the rest next pass
    assert (await job.run_once()).diagnosed == 2
    assert (await job.run_once()).diagnosed == 0


async def test_counts_filters_search_sort_and_pages(cloud: Cloud) -> None:
    now = cloud.clock()
    store = store_of(cloud)
    gateways = [f"gw-{i:02d}" for i in range(6)]
    cameras = [f"cam-{i:02d}" for i in range(4)]
    add_devices(store, gateways, now=now)
    add_devices(store, cameras, now=now, kind="camera")
    ingest(cloud, [report(d, 1, now - 60, uptime_s=100, fw="2.0.1") for d in gateways])
    ingest(cloud, hot("gw-04", now) + hot("gw-01", now))
    with store.transaction() as tx:
        repo.record_status(tx, device_id="gw-00", online=True, now=now)
        repo.record_status(tx, device_id="gw-01", online=False, now=now)
    service = service_of(cloud)

    view = service.fleet_view(ADMIN, FleetQuery(limit=3))
    counts = view.counts
    assert counts.devices == counts.matching == 10
    assert counts.by_verdict == {"healthy": 8, "fix_remotely": 2}
    assert counts.by_kind == {"gateway": 6, "camera": 4}
    assert counts.by_online == {"online": 1, "offline": 1, "unknown": 8}
    assert counts.by_freshness == {"none": 10}  # no token issued to these devices
    assert counts.oldest_verdict_at == now
    # the worst first, then by device id
    assert [r.device_id for r in view.rows] == ["gw-01", "gw-04", "cam-00"]
    assert view.rows[0].verdict == "fix_remotely" and view.rows[0].fw == "1.2.0"

    def ids(**query: object) -> list[str]:
        return [r.device_id for r in service.fleet_view(ADMIN, FleetQuery(**query)).rows]  # type: ignore[arg-type]

    assert ids(kind="camera", sort="device", descending=False) == cameras
    assert ids(verdict="fix_remotely", sort="device", descending=False) == ["gw-01", "gw-04"]
    assert ids(online=Online.OFFLINE) == ["gw-01"]
    assert ids(online=Online.UNKNOWN, kind="gateway", sort="device", descending=True) == [
        "gw-05",
        "gw-04",
        "gw-03",
        "gw-02",
    ]
    assert ids(search="CAM-0", sort="device", descending=False) == cameras  # any case
    assert ids(search="2.0.1", kind="camera") == []  # cameras never reported a firmware
    assert ids(search="%") == []  # a wildcard is a character like any other
    assert ids(freshness=Freshness.NONE, sort="device", limit=2, offset=8) == ["cam-01", "cam-00"]
    filtered = service.fleet_view(ADMIN, FleetQuery(kind="camera"))
    assert filtered.counts.matching == 4 and filtered.counts.devices == 10

    # tokens in each state of freshness: one SQL rule labels the rows, counts and filters
    tokens = {  # device: (exp, published)
        "cam-00": (now, True),  # expires now: expired, delivered or not
        "cam-01": (now + 10, False),  # issued, never confirmed published
        "cam-02": (now + 3600, True),  # within a day of its exp
        "cam-03": (now + 5 * 86_400, True),
        "gw-05": (now + 86_400, True),  # exactly a day left: fresh
    }
    with store.transaction() as tx:
        for device, (exp, published) in tokens.items():
            row = tx.get(DeviceVerdictRow, device)
            assert row is not None
            row.token_ver, row.token_exp, row.token_published = 1, exp, published
    view = service.fleet_view(ADMIN, FleetQuery(kind="camera", sort="device", descending=False))
    assert [r.freshness for r in view.rows] == ["expired", "undelivered", "expiring", "fresh"]
    assert view.counts.by_freshness == {
        "none": 5,
        "expired": 1,
        "undelivered": 1,
        "expiring": 1,
        "fresh": 2,
    }
    assert ids(freshness=Freshness.FRESH, sort="device") == ["gw-05", "cam-03"]
    assert ids(freshness=Freshness.EXPIRED) == ["cam-00"]
    assert ids(freshness=Freshness.UNDELIVERED) == ["cam-01"]
    assert ids(freshness=Freshness.EXPIRING) == ["cam-02"]
    assert {r.freshness for r in service.fleet_view(ADMIN, FleetQuery(kind="gateway")).rows} == {
        "none",
        "fresh",
    }
    # an owner key owns no installation: nothing counted, nothing listed
    empty = service.fleet_view(OWNER, FleetQuery())
    assert empty.counts.devices == 0 and empty.rows == []


async def test_a_partner_counts_only_the_devices_of_its_installations(cloud: Cloud) -> None:
    now = cloud.clock()
    store = store_of(cloud)
    add_devices(store, ["gw-a", "gw-b", "gw-c"], now=now)  # inst-w, the partner's
    partner = new_user(cloud.app, role="partner")
    with store.transaction() as tx:
        device_queries.add_installation(tx, installation_id="inst-x", name="Other", now=now)
        tx.execute(
            insert(DeviceRow),
            [
                {
                    "id": d,
                    "installation_id": "inst-x",
                    "kind": DeviceKind("camera"),
                    "mqtt_password_hash": "x",
                    "created_at": now,
                }
                for d in ("cam-x", "cam-y")
            ],
        )
        user = tx.get(UserRow, partner)
        assert user is not None and user.company_id is not None
        tx.add(IntegratorRow(installation_id="inst-w", company_id=user.company_id, created_at=now))
        repo.record_status(tx, device_id="gw-a", online=True, now=now)
        repo.record_status(tx, device_id="gw-b", online=False, now=now)
        repo.record_status(tx, device_id="cam-x", online=True, now=now)
        repo.record_status(tx, device_id="cam-y", online=True, now=now)
    service = service_of(cloud)
    principal = Principal(key_id=None, name="partner", role="partner", user_id=partner)

    view = service.fleet_view(principal, FleetQuery(sort="device", descending=False))
    assert view.counts.devices == view.counts.matching == 3
    assert view.counts.by_kind == {"gateway": 3}
    assert view.counts.by_online == {"online": 1, "offline": 1, "unknown": 1}
    assert view.counts.by_freshness == {"none": 3}
    assert [r.device_id for r in view.rows] == ["gw-a", "gw-b", "gw-c"]
    online = service.fleet_view(principal, FleetQuery(online=Online.ONLINE))
    assert online.counts.matching == 1 and [r.device_id for r in online.rows] == ["gw-a"]
    # everyone's: the cameras' statuses counted too; no "unknown" when none is
    assert service.fleet_view(ADMIN, FleetQuery()).counts.by_online == {
        "online": 3,
        "offline": 1,
        "unknown": 1,
    }
    with store.transaction() as tx:
        repo.record_status(tx, device_id="gw-c", online=False, now=now)
    assert service.fleet_view(principal, FleetQuery()).counts.by_online == {
        "online": 1,
        "offline": 2,
    }


async def test_the_fleet_api_pages_its_attention_list(cloud: Cloud) -> None:
    now = cloud.clock()
    ids = [f"gw-{i:02d}" for i in range(5)]
    add_devices(store_of(cloud), ids, now=now)
    ingest(cloud, hot("gw-01", now) + hot("gw-02", now) + hot("gw-04", now))
    first = (await cloud.http.get("/api/v1/health/fleet", params={"limit": 2})).json()
    assert first["by_verdict"] == {"healthy": 2, "fix_remotely": 3, "rma_recommended": 0}
    assert [a["device_id"] for a in first["attention"]] == ["gw-01", "gw-02"]
    assert first["attention_total"] == 3 and first["next_offset"] == 2
    assert first["verdicts_as_of"] == now
    rest = (await cloud.http.get("/api/v1/health/fleet", params={"offset": 2})).json()
    assert [a["device_id"] for a in rest["attention"]] == ["gw-04"]
    assert rest["next_offset"] is None


async def test_the_device_health_route_renews_the_kept_verdict(cloud: Cloud) -> None:
    now = cloud.clock()
    add_devices(store_of(cloud), ["gw-a"], now=now)
    fleet = (await cloud.http.get("/api/v1/health/fleet")).json()
    assert fleet["by_verdict"]["healthy"] == 1  # diagnosed on the spot: it had none
    ingest(cloud, hot("gw-a", now))
    fleet = (await cloud.http.get("/api/v1/health/fleet")).json()
    assert fleet["by_verdict"]["healthy"] == 1  # the kept verdict, until renewed
    health = (await cloud.http.get("/api/v1/devices/gw-a/health")).json()
    assert health["diagnosis"]["verdict"] == "fix_remotely"
    fleet = (await cloud.http.get("/api/v1/health/fleet")).json()
    assert fleet["by_verdict"]["fix_remotely"] == 1
