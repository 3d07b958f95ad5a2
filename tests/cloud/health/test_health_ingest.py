"""Health ingest against SQLite and PostgreSQL: dedupe, rejects, status, cmd/res, retention.

The consumer's batch handler (``HealthIngest.process``) is called directly
here; tests/integration/test_health_ingest.py drives it through Mosquitto.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text

from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.rules import DeviceKind
from cloud.health import queries as repo
from cloud.health.commands import CommandTimeoutJob
from cloud.health.ingest import HealthIngest, Incoming
from cloud.health.retention import HealthRetentionJob
from cloud.health.tables import (
    CommandRow,
    CommandStatus,
    HealthHourlyRow,
    HealthReportRow,
    HealthStateRow,
    StatusEventRow,
)
from protocol.commands import ok_result, result_to_json
from protocol.health import Disk, HealthReport, health_to_json
from protocol.topics import device_topic
from tests.waiting import eventually

T0 = 1_767_225_600


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url)
    with opened.transaction() as tx:
        device_queries.add_installation(tx, installation_id="inst-1", name="Shop", now=T0)
        for device in ("gw-1", "gw-2"):
            device_queries.add_device(
                tx,
                device_id=device,
                installation_id="inst-1",
                kind=DeviceKind.GATEWAY,
                password_hash="x",
                now=T0,
            )
    yield opened
    opened.close()


def payload(device_id: str, seq: int, *, ts: int | None = None, temp: float = 40.0) -> bytes:
    return health_to_json(
        HealthReport(
            device_id=device_id,
            seq=seq,
            ts=T0 + seq * 60 if ts is None else ts,
            kind="gateway",
            uptime_s=seq * 60,
            cpu_temp_c=temp,
            disk=Disk(used_pct=50.0, write_errors=0, reallocated=0),
        )
    )


def health(device_id: str, data: bytes, acks: list[str] | None = None) -> Incoming:
    tag = f"{device_id}:{len(data)}"
    return Incoming(
        device_topic(device_id, "health"),
        data,
        (lambda: acks.append(tag)) if acks is not None else (lambda: None),
    )


def count(store: Store, row: type, **where: object) -> int:
    with store.transaction() as tx:
        query = select(func.count()).select_from(row)
        for key, value in where.items():
            query = query.where(getattr(row, key) == value)
        return int(tx.scalar(query) or 0)


def test_duplicates_are_stored_once(store: Store) -> None:
    ingest = HealthIngest(store, clock=Clock())
    first = ingest.process([health("gw-1", payload("gw-1", s)) for s in (1, 2, 3, 2, 1)])
    again = ingest.process([health("gw-1", payload("gw-1", s)) for s in (3, 4)])
    assert (first.stored, first.duplicates) == (3, 2)
    assert (again.stored, again.duplicates) == (1, 1)
    assert count(store, HealthReportRow) == 4
    with store.transaction() as tx:
        state = tx.get(HealthStateRow, "gw-1")
        assert state is not None and state.latest_seq == 4
        stored = tx.scalars(select(HealthReportRow).order_by(HealthReportRow.seq)).all()
        assert [r.seq for r in stored] == [1, 2, 3, 4]
        assert stored[0].cpu_temp_c == 40.0 and stored[0].report["device_id"] == "gw-1"


def test_latest_state_follows_report_time_not_arrival(store: Store) -> None:
    ingest = HealthIngest(store, clock=Clock())
    ingest.process([health("gw-1", payload("gw-1", 5, temp=50.0))])
    ingest.process([health("gw-1", payload("gw-1", 4, temp=60.0))])  # late, older
    with store.transaction() as tx:
        state = tx.get(HealthStateRow, "gw-1")
        assert state is not None and state.latest_seq == 5
        assert state.latest_report is not None and state.latest_report["cpu_temp_c"] == 50.0


def test_rejections_are_counted_never_stored_and_the_batch_goes_on(store: Store) -> None:
    """Must-show 5 at the handler: every refusal counted by reason, the good report stored."""
    good = payload("gw-1", 1)
    wrong_version = json.dumps({**json.loads(good), "v": 2}).encode()
    oversized = b'{"v":1,"pad":"' + b"x" * 17_000 + b'"}'
    other_device = payload("gw-2", 7)  # gw-2's report published on gw-1's topic
    unregistered = payload("ghost-1", 1)
    batch = [
        health("gw-1", b"{not json"),
        health("gw-1", wrong_version),
        health("gw-1", oversized),
        health("gw-1", other_device),
        health("ghost-1", unregistered),
        health("gw-1", good),
    ]
    done = HealthIngest(store, clock=Clock()).process(batch)
    assert done.stored == 1
    assert dict(done.rejected) == {
        "bad_json": 1,
        "wrong_version": 1,
        "too_large": 1,
        "wrong_device": 1,
        "unknown_device": 1,
    }
    assert count(store, HealthReportRow) == 1
    assert count(store, HealthReportRow, device_id="gw-2") == 0
    HealthIngest(store, clock=Clock()).process([health("gw-1", b"[]")])
    with store.transaction() as tx:
        counters = repo.rejects(tx)
    assert counters == {
        "bad_json": 1,
        "wrong_version": 1,
        "too_large": 1,
        "wrong_device": 1,
        "unknown_device": 1,
        "bad_schema": 1,
    }


def test_status_changes_are_recorded_once(store: Store) -> None:
    clock = Clock()
    ingest = HealthIngest(store, clock=clock)
    topic = device_topic("gw-1", "status")
    for status in ("online", "online", "offline", "online"):
        clock.now += 10
        ingest.process([Incoming(topic, json.dumps({"status": status}).encode())])
    ingest.process([Incoming(topic, b"")])  # a cleared retained message: ignored
    bad = ingest.process([Incoming(topic, b'{"status": "sleepy"}')])
    assert bad.rejected == {"status_bad_schema": 1}
    assert count(store, StatusEventRow, device_id="gw-1") == 3
    with store.transaction() as tx:
        state = tx.get(HealthStateRow, "gw-1")
        assert state is not None and state.online is True


def test_statuses_in_one_batch_apply_in_their_order(store: Store) -> None:
    """A batch holding several statuses of one device (recorded in one set of statements)
    ends as the last says, with one status event per change, and keeps the token version
    last given; an unknown device's status is counted and stores nothing."""
    clock = Clock()
    ingest = HealthIngest(store, clock=clock)

    def status(device: str, value: str, ver: int | None = None) -> Incoming:
        body: dict[str, object] = {"status": value}
        if ver is not None:
            body["token_ver"] = ver
        return Incoming(device_topic(device, "status"), json.dumps(body).encode())

    clock.now += 10
    first = ingest.process(
        [
            status("gw-1", "online", 3),
            status("gw-2", "offline"),
            status("gw-1", "offline"),
            status("ghost", "online"),
            status("gw-1", "online"),
            status("gw-2", "offline"),
        ]
    )
    assert (first.statuses, first.rejected) == (5, {"status_unknown_device": 1})
    assert count(store, StatusEventRow, device_id="gw-1") == 3  # on, off, on
    assert count(store, StatusEventRow, device_id="gw-2") == 1  # the second is no change
    with store.transaction() as tx:
        one, two = tx.get(HealthStateRow, "gw-1"), tx.get(HealthStateRow, "gw-2")
        assert one is not None and two is not None
        assert (one.online, one.status_at, one.last_seen, one.reported_token_ver) == (
            True,
            clock.now,
            clock.now,
            3,
        )
        assert (two.online, two.status_at, two.reported_token_ver) == (False, clock.now, None)
    changed_at = clock.now
    clock.now += 10
    ingest.process([status("gw-1", "online")])  # no change, no version: both kept
    with store.transaction() as tx:
        one = tx.get(HealthStateRow, "gw-1")
        assert one is not None
        assert (one.status_at, one.last_seen, one.reported_token_ver) == (changed_at, clock.now, 3)
        # a status stamped earlier than the last one seen does not move last_seen back
        assert repo.record_status(tx, device_id="gw-1", online=False, now=changed_at - 5)
        assert tx.get(HealthStateRow, "gw-1", populate_existing=True).last_seen == clock.now  # type: ignore[union-attr]
    assert count(store, StatusEventRow, device_id="gw-1") == 4


def _pending_command(store: Store, command_id: str, device_id: str) -> None:
    with store.transaction() as tx:
        tx.add(
            CommandRow(
                id=command_id,
                device_id=device_id,
                cmd="self_test",
                args={},
                status=CommandStatus.PENDING,
                requested_by="test",
                created_at=T0,
                timeout_at=T0 + 300,
            )
        )


def test_command_result_settles_only_its_own_device(store: Store) -> None:
    _pending_command(store, "c-1", "gw-1")
    ingest = HealthIngest(store, clock=Clock())
    result = {"passed": False, "hardware_fault": True, "faults": []}
    # gw-2 answers gw-1's command on its own topic: not gw-1's answer
    stolen = result_to_json(ok_result("c-1", device_id="gw-2", result=result))
    done = ingest.process([Incoming(device_topic("gw-2", "cmd/res"), stolen)])
    assert done.answers == 0 and done.rejected == {"cmd_res_unknown_command": 1}
    forged = result_to_json(ok_result("c-1", device_id="gw-1", result=result))
    done = ingest.process([Incoming(device_topic("gw-2", "cmd/res"), forged)])
    assert done.rejected == {"cmd_res_wrong_device": 1}
    real = Incoming(device_topic("gw-1", "cmd/res"), forged)
    assert ingest.process([real]).answers == 1
    assert ingest.process([real]).answers == 0  # a redelivery changes nothing
    with store.transaction() as tx:
        row = tx.get(CommandRow, "c-1")
        assert row is not None and row.status == CommandStatus.ANSWERED
        assert row.result == result and row.ok is True


async def test_commands_time_out(store: Store) -> None:
    _pending_command(store, "c-2", "gw-1")
    clock = Clock()
    job = CommandTimeoutJob(store, clock=clock)
    assert await job.run_once() == 0
    clock.now = T0 + 300
    assert await job.run_once() == 1
    assert await job.run_once() == 0
    assert count(store, CommandRow, status=CommandStatus.TIMED_OUT) == 1


async def test_acks_follow_the_commit(store: Store) -> None:
    """Each ack runs only once its report is committed (visible to another transaction)."""
    seen: list[int] = []
    ingest = HealthIngest(store, clock=Clock(), batch_size=3, flush_delay_s=0.01)

    def acker(seq: int) -> Incoming:
        def ack() -> None:
            seen.append(count(store, HealthReportRow, seq=seq))

        return Incoming(device_topic("gw-1", "health"), payload("gw-1", seq), ack)

    task = asyncio.create_task(ingest.run())
    try:
        for seq in range(1, 8):
            ingest.offer(acker(seq))
        await eventually(lambda: len(seen) == 7, what=lambda: f"7 acks, got {seen}")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen == [1] * 7
    assert ingest.totals.stored == 7


async def test_retention_downsamples_then_deletes(store: Store) -> None:
    ingest = HealthIngest(store, clock=Clock())
    hour = T0 - T0 % 3600
    temps = [30.0, 50.0, 40.0]
    batch = [
        health("gw-1", payload("gw-1", i + 1, ts=hour + i * 600, temp=t))
        for i, t in enumerate(temps)
    ]
    batch.append(health("gw-1", payload("gw-1", 10, ts=hour + 40 * 86_400)))
    ingest.process(batch)
    clock = Clock()
    clock.now = hour + 40 * 86_400
    job = HealthRetentionJob(
        store, clock=clock, raw_retention_s=30 * 86_400, hourly_retention_s=365 * 86_400
    )
    first = await job.run_once()
    second = await job.run_once()
    assert (first.folded, second.folded) == (3, 0)
    assert count(store, HealthReportRow) == 1  # the recent one stays raw
    with store.transaction() as tx:
        temp = tx.get(HealthHourlyRow, ("gw-1", hour, "cpu_temp_c"))
        assert temp is not None
        assert (temp.n, temp.min, temp.max) == (3, 30.0, 50.0)
        assert temp.total / temp.n == pytest.approx(40.0)
    # a late old report folds into the same hour
    ingest.process([health("gw-1", payload("gw-1", 4, ts=hour + 1800, temp=60.0))])
    await job.run_once()
    with store.transaction() as tx:
        temp = tx.get(HealthHourlyRow, ("gw-1", hour, "cpu_temp_c"))
        assert temp is not None and (temp.n, temp.max) == (4, 60.0)


def test_a_message_the_database_refuses_is_isolated(store: Store) -> None:
    """A constraint failure costs that one message (counted), not the batch on every retry."""
    with store.transaction() as tx:  # the database itself refuses seq 666
        if tx.get_bind().dialect.name == "postgresql":
            tx.execute(text("ALTER TABLE health_reports ADD CONSTRAINT no_666 CHECK (seq <> 666)"))
        else:
            tx.execute(
                text(
                    "CREATE TRIGGER no_666 BEFORE INSERT ON health_reports WHEN NEW.seq = 666 "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
    try:
        ingest = HealthIngest(store, clock=Clock())
        done = ingest.commit([health("gw-1", payload("gw-1", s)) for s in (1, 666, 2)])
        assert (done.stored, dict(done.rejected)) == (2, {"store_error": 1})
        assert count(store, HealthReportRow) == 2
        with store.transaction() as tx:
            assert repo.rejects(tx) == {"store_error": 1}
    finally:  # the PostgreSQL database is shared by this session's tests
        with store.transaction() as tx:
            if tx.get_bind().dialect.name == "postgresql":
                tx.execute(text("ALTER TABLE health_reports DROP CONSTRAINT no_666"))
            else:
                tx.execute(text("DROP TRIGGER no_666"))
