"""Queries and writes of health data, each taking the SQLAlchemy ``Session`` of a transaction.

Inserts that may meet a row another worker (or an MQTT redelivery) already
wrote use the dialect's ``INSERT ... ON CONFLICT`` so they are idempotent on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, Select, Table, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud.devices.tables import DeviceRow
from cloud.health.rules.diagnostics import (
    RAW_WINDOW_S,
    RULES,
    SELF_TEST_MAX_AGE_S,
    History,
    Metric,
    Sample,
    StatusEvent,
    long_window_metrics,
)
from cloud.health.tables import (
    CommandRow,
    CommandStatus,
    HealthHourlyRow,
    HealthRejectRow,
    HealthReportRow,
    HealthStateRow,
    StatusEventRow,
)
from protocol.health import HealthReport, health_to_dict

__all__ = [
    "device_ids_after",
    "reports",
    "HOURLY_METRICS",
    "AnswerOutcome",
    "answer_command",
    "bump_rejects",
    "diagnosis_histories",
    "diagnosis_history",
    "downsample_before",
    "existing_devices",
    "hourly",
    "insert_reports",
    "record_status",
    "report_row",
    "rejects",
    "time_out_commands",
    "upsert",
]

# What the hourly aggregates keep: (the aggregate's name, the report's figure)
HOURLY_METRICS: tuple[tuple[str, Metric], ...] = (
    ("cpu_temp_c", Metric.CPU_TEMP_C),
    ("mem_used_pct", Metric.MEM_USED_PCT),
    ("disk_used_pct", Metric.DISK_USED_PCT),
    ("loss_pct", Metric.NET_LOSS_PCT),
    ("rssi_dbm", Metric.NET_RSSI_DBM),
)
_HISTORY_WINDOW_S = max(rule.window_s for rule in RULES)
_LONG_METRICS = tuple(sorted(long_window_metrics()))


def upsert(session: Session, table: Table | type[Any]) -> Insert:
    """``INSERT`` that supports ``on_conflict_do_*`` in the session's dialect."""
    target = getattr(table, "__table__", table)
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(target)
    return sqlite.insert(target)


def _figure(report: Mapping[str, Any], metric: Metric) -> float | None:
    """A stored report's figure as the aggregates count it (a bool is not a number)."""
    value: Any = report
    for key in metric.path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def report_row(report: HealthReport, *, received_at: int) -> dict[str, Any]:
    """The ``health_reports`` row of a validated report: its JSON and its indexed figures."""
    return {
        "device_id": report.device_id,
        "seq": report.seq,
        "ts": report.ts,
        "received_at": received_at,
        "kind": report.kind,
        "report": health_to_dict(report),
        "cpu_temp_c": report.cpu_temp_c,
        "mem_used_pct": report.mem_used_pct,
        "disk_used_pct": report.disk.used_pct,
        "loss_pct": report.net.loss_pct,
    }


def existing_devices(session: Session, device_ids: Iterable[str]) -> set[str]:
    ids = sorted(set(device_ids))
    if not ids:
        return set()
    return set(session.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(ids))))


def insert_reports(
    session: Session, reports: Sequence[HealthReport], *, now: int
) -> list[HealthReport]:
    """Store reports not stored yet (by ``(device_id, seq)``); the ones inserted now.

    The per-device state then follows the newest report (by ``ts``) of those inserted.
    """
    unique: dict[tuple[str, int], HealthReport] = {}
    for r in reports:  # a batch may hold one report twice (a redelivery)
        unique.setdefault((r.device_id, r.seq), r)
    reports = list(unique.values())
    if not reports:
        return []
    rows = [report_row(r, received_at=now) for r in reports]
    rows_by_key = {(row["device_id"], row["seq"]): row for row in rows}
    # executemany with one compiled statement (SQLAlchemy's insertmanyvalues batches it
    # into multi-row VALUES): a literal multi-row ``.values(rows)`` is compiled anew for
    # every batch size, which cost more than the database's own work
    statement = (
        upsert(session, HealthReportRow)
        .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        .returning(HealthReportRow.device_id, HealthReportRow.seq)
    )
    inserted = {(row.device_id, row.seq) for row in session.execute(statement, rows)}
    fresh = [r for r in reports if (r.device_id, r.seq) in inserted]
    newest: dict[str, HealthReport] = {}
    for r in fresh:
        if r.device_id not in newest or r.ts >= newest[r.device_id].ts:
            newest[r.device_id] = r
    if newest:
        table = HealthStateRow.__table__
        stmt = upsert(session, HealthStateRow)
        stmt = stmt.on_conflict_do_update(
            index_elements=["device_id"],
            set_={
                k: stmt.excluded[k]
                for k in ("latest_seq", "latest_ts", "latest_report", "last_seen")
            },
            where=or_(table.c.latest_ts.is_(None), table.c.latest_ts <= stmt.excluded.latest_ts),
        )
        states = [
            {
                "device_id": device_id,
                "latest_seq": report.seq,
                "latest_ts": report.ts,
                "latest_report": rows_by_key[(device_id, report.seq)]["report"],
                "last_seen": now,
            }
            for device_id, report in sorted(newest.items())  # one lock order for every worker
        ]
        session.execute(stmt, states)
    return fresh


def record_status(session: Session, *, device_id: str, online: bool, now: int) -> bool:
    """Record an online/offline message; True if it changed the device's status."""
    stmt = upsert(session, HealthStateRow).values(device_id=device_id, last_seen=now)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["device_id"]))
    state = session.scalars(
        select(HealthStateRow).where(HealthStateRow.device_id == device_id).with_for_update()
    ).one()
    changed = state.online is not online
    state.last_seen = max(state.last_seen, now)
    if changed:
        state.online = online
        state.status_at = now
        session.add(StatusEventRow(device_id=device_id, online=online, at=now))
    session.flush()
    return changed


def bump_rejects(session: Session, reasons: Counter[str], *, now: int) -> None:
    for reason in sorted(reasons):
        stmt = upsert(session, HealthRejectRow).values(
            reason=reason, count=reasons[reason], last_at=now
        )
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["reason"],
                set_={
                    "count": HealthRejectRow.__table__.c.count + stmt.excluded["count"],
                    "last_at": stmt.excluded.last_at,
                },
            )
        )


def rejects(session: Session) -> dict[str, int]:
    rows = session.execute(select(HealthRejectRow.reason, HealthRejectRow.count))
    return {row.reason: row.count for row in rows}


@dataclass(frozen=True, slots=True)
class AnswerOutcome:
    """What a ``cmd/res`` did: ``answered``, or why it was dropped."""

    status: str  # answered | unknown_command | already_answered


def answer_command(
    session: Session,
    *,
    command_id: str,
    device_id: str,
    ok: bool,
    result: Mapping[str, Any] | None,
    now: int,
) -> AnswerOutcome:
    """Settle a pending command from its result; the answering device must be its device."""
    done = session.execute(
        update(CommandRow)
        .where(
            CommandRow.id == command_id,
            CommandRow.device_id == device_id,
            CommandRow.status == CommandStatus.PENDING,
        )
        .values(status=CommandStatus.ANSWERED, ok=ok, result=dict(result or {}), answered_at=now)
    )
    if done.rowcount:  # type: ignore[attr-defined]
        return AnswerOutcome("answered")
    known = session.scalar(
        select(func.count())
        .select_from(CommandRow)
        .where(CommandRow.id == command_id, CommandRow.device_id == device_id)
    )
    return AnswerOutcome("already_answered" if known else "unknown_command")


def time_out_commands(session: Session, *, now: int) -> int:
    """Mark pending commands past their deadline timed out (a conditional UPDATE)."""
    done = session.execute(
        update(CommandRow)
        .where(CommandRow.status == CommandStatus.PENDING, CommandRow.timeout_at <= now)
        .values(status=CommandStatus.TIMED_OUT)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def diagnosis_histories(
    session: Session, device_ids: Sequence[str], *, now: int
) -> dict[str, History]:
    """What the rules need of each device, in a few queries for all of them.

    Full reports of the last :data:`RAW_WINDOW_S` (the short rules and the
    device kind); for the long rules, every report's value of just their
    metrics over the longest window (no row cap: a 7-day rule sees 7 days at
    any interval); status changes; the latest self-test young enough to count.
    """
    ids = sorted(set(device_ids))
    found: dict[str, History] = {}
    if not ids:
        return found
    since = now - _HISTORY_WINDOW_S
    raw: dict[str, list[Mapping[str, Any]]] = {d: [] for d in ids}
    for row in session.execute(
        select(HealthReportRow.device_id, HealthReportRow.report)
        .where(
            HealthReportRow.device_id.in_(ids),
            HealthReportRow.ts >= now - RAW_WINDOW_S,
            HealthReportRow.ts <= now,
        )
        .order_by(HealthReportRow.device_id, HealthReportRow.ts)
    ):
        raw[row.device_id].append(row.report)
    series: dict[str, dict[Metric, list[Sample]]] = {d: {m: [] for m in _LONG_METRICS} for d in ids}
    paths = [HealthReportRow.report[m.path] for m in _LONG_METRICS]
    for row in session.execute(
        select(
            HealthReportRow.device_id,
            HealthReportRow.ts,
            HealthReportRow.report[Metric.UPTIME_S.path],
            *paths,
        )
        .where(
            HealthReportRow.device_id.in_(ids),
            HealthReportRow.ts >= since,
            HealthReportRow.ts <= now,
        )
        .order_by(HealthReportRow.device_id, HealthReportRow.ts)
    ):
        device_id, ts, uptime, *values = row
        for metric, value in zip(_LONG_METRICS, values, strict=True):
            number = _number(value)
            if number is not None:
                series[device_id][metric].append(Sample(ts, number, _number(uptime)))
    events: dict[str, list[StatusEvent]] = {d: [] for d in ids}
    for event in session.execute(
        select(StatusEventRow.device_id, StatusEventRow.at, StatusEventRow.online)
        .where(StatusEventRow.device_id.in_(ids), StatusEventRow.at >= since)
        .order_by(StatusEventRow.at, StatusEventRow.id)
    ):
        events[event.device_id].append(StatusEvent(at=event.at, online=event.online))
    tests: dict[str, tuple[Mapping[str, Any] | None, int]] = {}
    for test in session.execute(  # ascending, so the latest of each device is kept
        select(CommandRow.device_id, CommandRow.result, CommandRow.answered_at)
        .where(
            CommandRow.device_id.in_(ids),
            CommandRow.cmd == "self_test",
            CommandRow.status == CommandStatus.ANSWERED,
            CommandRow.ok.is_(True),
            CommandRow.answered_at >= now - SELF_TEST_MAX_AGE_S,
        )
        .order_by(CommandRow.answered_at, CommandRow.created_at)
    ):
        tests[test.device_id] = (test.result, test.answered_at)
    for device_id in ids:
        result, at = tests.get(device_id, (None, None))
        found[device_id] = History(
            reports=raw[device_id],
            status=events[device_id],
            self_test=result,
            self_test_at=at,
            series=series[device_id],
        )
    return found


def diagnosis_history(session: Session, device_id: str, *, now: int) -> History:
    """The reports, status changes and latest self-test result of one device."""
    return diagnosis_histories(session, [device_id], now=now)[device_id]


def hourly(
    session: Session, device_id: str, *, since: int, until: int, limit: int, offset: int
) -> list[HealthHourlyRow]:
    """Hourly aggregates of one device with ``since <= hour <= until``, oldest first."""
    return list(
        session.scalars(
            select(HealthHourlyRow)
            .where(
                HealthHourlyRow.device_id == device_id,
                HealthHourlyRow.hour >= since,
                HealthHourlyRow.hour <= until,
            )
            .order_by(HealthHourlyRow.hour, HealthHourlyRow.metric)
            .limit(limit)
            .offset(offset)
        )
    )


def downsample_before(session: Session, *, cutoff: int, limit: int) -> int:
    """Fold up to ``limit`` raw reports with ``ts < cutoff`` into hourly aggregates, delete them.

    The rows are claimed with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so two
    workers fold disjoint rows; aggregates merge (count, sum, min, max).
    """
    query = (
        select(HealthReportRow.id, HealthReportRow.device_id, HealthReportRow.ts)
        .add_columns(HealthReportRow.report)
        .where(HealthReportRow.ts < cutoff)
        .order_by(HealthReportRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(query).all()
    if not rows:
        return 0
    folded: dict[tuple[str, int, str], list[float]] = {}
    for row in rows:
        hour = row.ts - row.ts % 3600
        for name, metric in HOURLY_METRICS:
            value = _figure(row.report, metric)
            if value is not None:
                folded.setdefault((row.device_id, hour, name), []).append(value)
    for device_id, hour, metric in sorted(folded):
        values = folded[(device_id, hour, metric)]
        stmt = upsert(session, HealthHourlyRow).values(
            device_id=device_id,
            hour=hour,
            metric=metric,
            n=len(values),
            total=sum(values),
            min=min(values),
            max=max(values),
        )
        table = HealthHourlyRow.__table__.c
        least = func.least if session.get_bind().dialect.name == "postgresql" else func.min
        greatest = func.greatest if session.get_bind().dialect.name == "postgresql" else func.max
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["device_id", "hour", "metric"],
                set_={
                    "n": table.n + stmt.excluded.n,
                    "total": table.total + stmt.excluded.total,
                    "min": least(table.min, stmt.excluded.min),
                    "max": greatest(table.max, stmt.excluded.max),
                },
            )
        )
    session.execute(delete(HealthReportRow).where(HealthReportRow.id.in_([r.id for r in rows])))
    return len(rows)


def reports(
    session: Session, device_id: str, *, since: int, until: int, limit: int, offset: int
) -> Sequence[dict[str, Any]]:
    return session.scalars(
        select(HealthReportRow.report)
        .where(
            HealthReportRow.device_id == device_id,
            HealthReportRow.ts >= since,
            HealthReportRow.ts <= until,
        )
        .order_by(HealthReportRow.ts, HealthReportRow.seq)
        .limit(limit)
        .offset(offset)
    ).all()


def device_ids_after(
    session: Session, after: str, *, within: Select[Any] | None, limit: int
) -> Sequence[str]:
    query = select(DeviceRow.id).where(DeviceRow.id > after)
    if within is not None:
        query = query.where(DeviceRow.installation_id.in_(within))
    return session.scalars(query.order_by(DeviceRow.id).limit(limit)).all()
