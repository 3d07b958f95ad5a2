"""Queries and writes of health data, each taking the SQLAlchemy ``Session`` of a transaction.

Inserts that may meet a row another worker (or an MQTT redelivery) already
wrote use the dialect's ``INSERT ... ON CONFLICT`` so they are idempotent on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, Select, Table, and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud.devices.tables import DeviceRow
from cloud.health import bulk
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
from cloud.health.rules.fleet import EXPIRING_SOON_S, FleetQuery, Freshness, Online
from cloud.health.tables import (
    CommandRow,
    CommandStatus,
    DeviceVerdictRow,
    HealthHourlyRow,
    HealthRejectRow,
    HealthReportRow,
    HealthStateRow,
    StatusEventRow,
)
from protocol.health import HealthReport, health_to_dict

__all__ = [
    "FleetCounts",
    "FleetRow",
    "devices_without_verdict",
    "due_verdicts",
    "fleet_counts",
    "fleet_page",
    "put_verdicts",
    "verdict_of",
    "series",
    "status_events",
    "reports",
    "HOURLY_METRICS",
    "AnswerOutcome",
    "answer_command",
    "bump_rejects",
    "diagnosis_histories",
    "downsample_before",
    "hourly",
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


def record_status(
    session: Session, *, device_id: str, online: bool, now: int, token_ver: int | None = None
) -> bool:
    """Record an online/offline message; True if it changed the device's status.

    ``token_ver``: the token version the device says it holds, kept when given.
    One message of :func:`cloud.health.bulk.record_statuses`.
    """
    return bulk.record_statuses(session, [(device_id, online, token_ver)], now=now)[0]


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
    stmt = upsert(session, HealthHourlyRow)
    table = HealthHourlyRow.__table__.c
    least = func.least if session.get_bind().dialect.name == "postgresql" else func.min
    greatest = func.greatest if session.get_bind().dialect.name == "postgresql" else func.max
    if folded:  # one statement for the batch's aggregates (executemany)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["device_id", "hour", "metric"],
                set_={
                    "n": table.n + stmt.excluded.n,
                    "total": table.total + stmt.excluded.total,
                    "min": least(table.min, stmt.excluded.min),
                    "max": greatest(table.max, stmt.excluded.max),
                },
            ),
            [
                {
                    "device_id": device_id,
                    "hour": hour,
                    "metric": metric,
                    "n": len(values),
                    "total": sum(values),
                    "min": min(values),
                    "max": max(values),
                }
                for (device_id, hour, metric), values in sorted(folded.items())
            ],
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


# the fleet: verdicts kept per device ----------------------------------------------------------


def due_verdicts(
    session: Session, *, now: int, min_gap_s: int, max_age_s: int, limit: int
) -> Sequence[str]:
    """Devices whose verdict is missing or out of date, the longest-waiting first.

    Due: heard from (a state row) and never diagnosed; heard from again since
    the last diagnosis, at least ``min_gap_s`` ago; or diagnosed more than
    ``max_age_s`` ago (windows slide even when a device says nothing); or a
    command of it was answered since (a self-test result counts as evidence).
    """
    v, st = DeviceVerdictRow, HealthStateRow
    query = (
        select(DeviceRow.id)
        .outerjoin(v, v.device_id == DeviceRow.id)
        .outerjoin(st, st.device_id == DeviceRow.id)
        .where(
            or_(
                and_(v.device_id.is_(None), st.device_id.is_not(None)),
                and_(
                    v.diagnosed_at <= now - min_gap_s,
                    or_(v.seen_at.is_(None), st.last_seen > v.seen_at),
                ),
                v.diagnosed_at <= now - max_age_s,
                # a command (a self-test) answered since: its result is evidence
                select(CommandRow.id)
                .where(
                    CommandRow.device_id == DeviceRow.id,
                    CommandRow.answered_at > v.diagnosed_at,
                )
                .exists(),
            )
        )
        .order_by(v.diagnosed_at.is_not(None), v.diagnosed_at, DeviceRow.id)
        .limit(limit)
    )
    return session.scalars(query).all()


def devices_without_verdict(session: Session, *, within: Select[Any] | None) -> Sequence[str]:
    """Devices (of these installations) never diagnosed."""
    query = (
        select(DeviceRow.id)
        .outerjoin(DeviceVerdictRow, DeviceVerdictRow.device_id == DeviceRow.id)
        .where(DeviceVerdictRow.device_id.is_(None))
    )
    if within is not None:
        query = query.where(DeviceRow.installation_id.in_(within))
    return session.scalars(query.order_by(DeviceRow.id)).all()


def put_verdicts(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace verdict rows (``DeviceVerdictRow`` columns), one lock order."""
    if not rows:
        return
    stmt = upsert(session, DeviceVerdictRow)
    columns = [c.name for c in DeviceVerdictRow.__table__.columns if c.name != "device_id"]
    stmt = stmt.on_conflict_do_update(
        index_elements=["device_id"], set_={c: stmt.excluded[c] for c in columns}
    )
    session.execute(stmt, sorted(rows, key=lambda r: str(r["device_id"])))


def verdict_of(session: Session, device_id: str) -> DeviceVerdictRow | None:
    return session.get(DeviceVerdictRow, device_id)


def state_of(session: Session, device_ids: Sequence[str]) -> dict[str, HealthStateRow]:
    if not device_ids:
        return {}
    rows = session.scalars(select(HealthStateRow).where(HealthStateRow.device_id.in_(device_ids)))
    return {row.device_id: row for row in rows}


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One device of the overview: what it is, its verdict as kept, its state now."""

    device_id: str
    installation_id: str
    kind: str
    verdict: str | None  # None: not diagnosed yet
    action: str | None
    rule: str | None
    fw: str | None
    online: bool | None
    last_seen: int | None
    token_ver: int | None
    token_exp: int | None
    token_published: bool | None
    diagnosed_at: int | None
    freshness: str  # a Freshness value at the page's ``now``


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """Counts at a glance over every device in scope, and how many match the filters."""

    devices: int
    matching: int
    by_verdict: dict[str, int]
    by_kind: dict[str, int]
    by_online: dict[str, int]
    by_freshness: dict[str, int]
    oldest_verdict_at: int | None


_SEVERITY = {"rma_recommended": 3, "fix_remotely": 2, "healthy": 1}


def _fleet_columns(now: int) -> dict[str, Any]:
    v, st = DeviceVerdictRow, HealthStateRow
    return {
        "online": case(
            (st.online.is_(True), Online.ONLINE.value),
            (st.online.is_(False), Online.OFFLINE.value),
            else_=Online.UNKNOWN.value,
        ),
        "freshness": case(
            (v.token_exp.is_(None), Freshness.NONE.value),
            (v.token_exp <= now, Freshness.EXPIRED.value),
            (v.token_published.is_not(True), Freshness.UNDELIVERED.value),
            (v.token_exp - now < EXPIRING_SOON_S, Freshness.EXPIRING.value),
            else_=Freshness.FRESH.value,
        ),
        "verdict": func.coalesce(v.verdict, "pending"),
        "severity": case(*((v.verdict == name, rank) for name, rank in _SEVERITY.items()), else_=0),
    }


def _fleet_from(within: Select[Any] | None, *, state: bool = True) -> Select[Any]:
    """Devices with their kept verdict and (when ``state``) their state row.

    The state row carries the latest report's JSON, so it is joined only when a
    filter, a sort or the page's own rows need it: scanning 10,000 of them is
    most of what a count or a sort would cost.
    """
    v, st = DeviceVerdictRow, HealthStateRow
    query = select().select_from(DeviceRow).outerjoin(v, v.device_id == DeviceRow.id)
    if state:
        query = query.outerjoin(st, st.device_id == DeviceRow.id)
    if within is not None:
        query = query.where(DeviceRow.installation_id.in_(within))
    return query


def _fleet_filters(query: Select[Any], q: FleetQuery, cols: Mapping[str, Any]) -> Select[Any]:
    if q.kind is not None:
        query = query.where(DeviceRow.kind == q.kind)
    if q.verdict is not None:
        query = query.where(cols["verdict"] == q.verdict)
    if q.attention:
        query = query.where(DeviceVerdictRow.verdict.in_(("fix_remotely", "rma_recommended")))
    if q.online is not None:
        query = query.where(cols["online"] == q.online.value)
    if q.freshness is not None:
        query = query.where(cols["freshness"] == q.freshness.value)
    if q.search:
        like = "%" + q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                DeviceRow.id.ilike(like, escape="\\"),
                DeviceRow.installation_id.ilike(like, escape="\\"),
                DeviceVerdictRow.fw.ilike(like, escape="\\"),
            )
        )
    return query


def _filtered(q: FleetQuery) -> bool:
    filters = (q.kind, q.verdict, q.online, q.freshness)
    return any(x is not None for x in filters) or q.attention or bool(q.search)


def _needs_state(q: FleetQuery) -> bool:
    return q.online is not None or q.sort in ("online", "last_seen")


def fleet_counts(
    session: Session, q: FleetQuery, *, within: Select[Any] | None, now: int
) -> FleetCounts:
    """Counts by verdict, kind, online and entitlement freshness over the scope.

    Two narrow scans: devices with their verdict rows (verdict, kind,
    freshness), and the state rows' ``online`` (its own index); then the
    filtered count only when there are filters.
    """
    cols = _fleet_columns(now)
    if within is None:  # everyone's devices: each table scanned alone, no join
        return _fleet_counts_all(session, q, cols, now=now)
    groups = session.execute(
        _fleet_from(within, state=False)
        .add_columns(
            cols["verdict"],
            DeviceRow.kind,
            cols["freshness"],
            func.count(),
            func.min(DeviceVerdictRow.diagnosed_at),
        )
        .group_by(cols["verdict"], DeviceRow.kind, cols["freshness"])
    ).all()
    by: dict[str, Counter[str]] = {k: Counter() for k in ("verdict", "kind", "fresh")}
    devices = 0
    oldest: int | None = None
    for verdict, kind, fresh, n, first in groups:
        devices += n
        by["verdict"][verdict] += n
        by["kind"][str(getattr(kind, "value", kind))] += n
        by["fresh"][fresh] += n
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    matching = devices
    if _filtered(q):
        query = _fleet_from(within, state=_needs_state(q)).add_columns(func.count())
        matching = session.scalar(_fleet_filters(query, q, cols)) or 0
    return FleetCounts(
        devices=devices,
        matching=matching,
        by_verdict=dict(by["verdict"]),
        by_kind=dict(by["kind"]),
        by_online=_online_counts(session, devices, within),
        by_freshness=dict(by["fresh"]),
        oldest_verdict_at=oldest,
    )


def _online_counts(session: Session, devices: int, within: Select[Any] | None) -> dict[str, int]:
    """Online, offline and (no status yet) unknown among ``devices`` devices in scope."""
    found: Counter[str] = Counter()
    known = 0
    query = select(HealthStateRow.online, func.count()).group_by(HealthStateRow.online)
    if within is not None:
        query = query.join(DeviceRow, DeviceRow.id == HealthStateRow.device_id).where(
            DeviceRow.installation_id.in_(within)
        )
    for value, n in session.execute(query):
        if value is not None:
            found[Online.ONLINE.value if value else Online.OFFLINE.value] += n
            known += n
    if devices > known:
        found[Online.UNKNOWN.value] = devices - known
    return dict(found)


def _fleet_counts_all(
    session: Session, q: FleetQuery, cols: Mapping[str, Any], *, now: int
) -> FleetCounts:
    """:func:`fleet_counts` over every device: the verdict rows, the devices' kinds and the
    state index each counted alone (a device without a verdict row is pending, no token)."""
    v = DeviceVerdictRow
    kinds = {
        str(getattr(kind, "value", kind)): n
        for kind, n in session.execute(
            select(DeviceRow.kind, func.count()).group_by(DeviceRow.kind)
        )
    }
    devices = sum(kinds.values())
    verdicts: Counter[str] = Counter()
    fresh: Counter[str] = Counter()
    oldest: int | None = None
    for verdict, freshness_, n, first in session.execute(
        select(v.verdict, cols["freshness"], func.count(), func.min(v.diagnosed_at))
        .select_from(v)
        .group_by(v.verdict, cols["freshness"])
    ):
        verdicts[verdict] += n
        fresh[freshness_] += n
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    pending = devices - sum(verdicts.values())
    if pending > 0:
        verdicts["pending"] += pending
        fresh[Freshness.NONE.value] += pending
    matching = devices
    if _filtered(q):
        query = _fleet_from(None, state=_needs_state(q)).add_columns(func.count())
        matching = session.scalar(_fleet_filters(query, q, cols)) or 0
    return FleetCounts(
        devices=devices,
        matching=matching,
        by_verdict=dict(verdicts),
        by_kind=kinds,
        by_online=_online_counts(session, devices, None),
        by_freshness=dict(fresh),
        oldest_verdict_at=oldest,
    )


def _verdicts_alone(q: FleetQuery, within: Select[Any] | None) -> bool:
    """Whether the page's ids can be chosen from the verdict rows alone (no join)."""
    return (
        within is None
        and q.kind is None
        and not q.search
        and not _needs_state(q)
        and q.sort in ("verdict", "fw", "token")
    )


def fleet_page(
    session: Session, q: FleetQuery, *, within: Select[Any] | None, now: int
) -> list[FleetRow]:
    """One page of the fleet, filtered and sorted (ties broken by device id).

    The page's ids are chosen first, joining the state rows only when the
    filter or the sort needs them; then those rows are read in full.
    """
    v, st = DeviceVerdictRow, HealthStateRow
    cols = _fleet_columns(now)
    keys: dict[str, list[Any]] = {
        "device": [],
        "installation": [DeviceRow.installation_id],
        "kind": [DeviceRow.kind],
        "verdict": [cols["severity"]],
        "online": [cols["online"]],
        "fw": [func.coalesce(v.fw, "")],
        "last_seen": [func.coalesce(st.last_seen, -1)],
        "token": [func.coalesce(v.token_exp, -1)],
    }
    order = [k.desc() if q.descending else k.asc() for k in keys[q.sort]]
    order.append(DeviceRow.id.desc() if q.descending and q.sort == "device" else DeviceRow.id)
    if _verdicts_alone(q, within):
        # every device has a verdict row by now (the service diagnoses the missing first)
        tie = v.device_id.desc() if q.descending and q.sort == "device" else v.device_id
        chosen = _fleet_filters(select(v.device_id).select_from(v), q, cols)
        chosen = chosen.order_by(*order[:-1], tie)
    else:
        chosen = _fleet_filters(
            _fleet_from(within, state=_needs_state(q)).add_columns(DeviceRow.id), q, cols
        ).order_by(*order)
    ids = list(session.scalars(chosen.limit(q.limit).offset(q.offset)))
    if not ids:
        return []
    rows = session.execute(
        _fleet_from(None)
        .add_columns(
            DeviceRow.id,
            DeviceRow.installation_id,
            DeviceRow.kind,
            v.verdict,
            v.action,
            v.rule,
            v.fw,
            st.online,
            st.last_seen,
            v.token_ver,
            v.token_exp,
            v.token_published,
            v.diagnosed_at,
            cols["freshness"],
        )
        .where(DeviceRow.id.in_(ids))
    )
    found = {
        r[0]: FleetRow(
            device_id=r[0],
            installation_id=r[1],
            kind=str(getattr(r[2], "value", r[2])),
            verdict=r[3],
            action=r[4],
            rule=r[5],
            fw=r[6],
            online=r[7],
            last_seen=r[8],
            token_ver=r[9],
            token_exp=r[10],
            token_published=r[11],
            diagnosed_at=r[12],
            freshness=r[13],
        )
        for r in rows
    }
    return [found[i] for i in ids]


# a device's charts --------------------------------------------------------------------------

# figures read from the newest report of each bucket (counters, and what has no column)
SERIES_LAST: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rssi_dbm", ("net", "rssi_dbm")),
    ("reboots", ("reboots", "count")),
    ("uptime_s", ("uptime_s",)),
    ("serial_crc_errors", ("serial", "crc_errors")),
    ("serial_timeouts", ("serial", "timeouts")),
    ("disk_write_errors", ("disk", "write_errors")),
    ("frame_drops", ("kind_specific", "frame_drops")),
    ("lens_contrast_pct", ("kind_specific", "lens_contrast_pct")),
    ("open_s_since_last_count", ("kind_specific", "open_s_since_last_count")),
    ("firmware_rx_errors", ("kind_specific", "serial", "rx_errors")),
)


def series(
    session: Session, device_id: str, *, since: int, until: int, bucket_s: int
) -> dict[str, list[Any]]:
    """A device's history in buckets of ``bucket_s`` over ``since <= ts < until``, for charts.

    Gauges with their own column (temperature, memory, storage, loss) are
    averaged per bucket in SQL (the ``(device_id, ts)`` index, no JSON read);
    counters and the other figures are read from the newest report of each
    bucket only, so a 7-day chart parses at most one report per bucket.
    """
    r = HealthReportRow
    bucket = (r.ts - since) // bucket_s
    rows = session.execute(
        select(
            bucket,
            func.count(),
            func.avg(r.cpu_temp_c),
            func.max(r.cpu_temp_c),
            func.avg(r.mem_used_pct),
            func.avg(r.disk_used_pct),
            func.avg(r.loss_pct),
            func.max(r.id),
        )
        .where(r.device_id == device_id, r.ts >= since, r.ts < until)
        .group_by(bucket)
        .order_by(bucket)
    ).all()
    out: dict[str, list[Any]] = {
        "t": [],
        "reports": [],
        "cpu_temp_c": [],
        "cpu_temp_c_max": [],
        "mem_used_pct": [],
        "disk_used_pct": [],
        "loss_pct": [],
    }
    out.update({name: [] for name, _ in SERIES_LAST})
    last_ids = [row[7] for row in rows]
    reports = (
        {
            row.id: row.report
            for row in session.execute(select(r.id, r.report).where(r.id.in_(last_ids)))
        }
        if last_ids
        else {}
    )
    for b, n, cpu, cpu_max, mem, disk, loss, last in rows:
        out["t"].append(since + int(b) * bucket_s)
        out["reports"].append(n)
        for name, value in (
            ("cpu_temp_c", cpu),
            ("cpu_temp_c_max", cpu_max),
            ("mem_used_pct", mem),
            ("disk_used_pct", disk),
            ("loss_pct", loss),
        ):
            out[name].append(None if value is None else round(float(value), 2))
        report = reports.get(last) or {}
        for name, path in SERIES_LAST:
            value: Any = report
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            out[name].append(_number(value))
    return out


def status_events(session: Session, device_id: str, *, since: int, until: int) -> list[StatusEvent]:
    """The device's online/offline changes in ``since <= at < until``, oldest first."""
    rows = session.execute(
        select(StatusEventRow.at, StatusEventRow.online)
        .where(
            StatusEventRow.device_id == device_id,
            StatusEventRow.at >= since,
            StatusEventRow.at < until,
        )
        .order_by(StatusEventRow.at, StatusEventRow.id)
    )
    return [StatusEvent(at=row.at, online=row.online) for row in rows]
