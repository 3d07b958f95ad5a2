"""The ingest's hot path in plain DBAPI: store a batch of report rows in a few statements.

SQLAlchemy's per-statement work (compiling, type processing of each row) cost
~111 µs a report where the same rows and state upserts through the driver cost
~32 µs; so, on the transaction's own connection (``session.connection()``), a
batch is (``exec_driver_sql``: the driver's own SQL and parameters, SQLAlchemy's
error mapping and nothing else): one SELECT of the devices it names, one INSERT of every new report
(``ON CONFLICT (device_id, seq) DO NOTHING RETURNING`` the keys inserted: a
redelivery stores nothing), one upsert of the newest state per device, in
device order (one lock order for every worker). PostgreSQL gets each statement
as arrays (``unnest``), SQLite as one multi-row ``VALUES``. Tests seed reports
through :func:`store_rows` too: one way to store a report.

A batch's online/offline messages are :func:`record_statuses`: one insert of the
missing state rows, one read (``FOR UPDATE`` on PostgreSQL) of the devices'
current status, the messages applied in order in Python, then one update of
the states and one insert of the changes. Recorded one by one through the ORM
(four statements a status), 10,000 devices coming back after a broker restart
held the health batches behind them (bench/bench_storm.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from cloud.database import executemany
from cloud.health.rows import ReportRow, encode_report

__all__ = ["Status", "known_devices", "record_statuses", "store_rows"]

Status = tuple[str, bool, int | None]
"""An online/offline message: ``(device_id, online, token_ver)`` (the version of the
token the device says it holds, or None)."""

_COLUMNS = (
    "device_id, seq, ts, received_at, kind, report, cpu_temp_c, mem_used_pct, "
    "disk_used_pct, loss_pct"
)
# PostgreSQL gets a batch as one JSON document (encoded in C, one parameter): psycopg's
# text arrays escaped every quote of every report through a regex callback (~45 µs a row)
_PG_INSERT = (
    f"INSERT INTO health_reports ({_COLUMNS}) SELECT {_COLUMNS} FROM json_to_recordset(%s::json) "
    "AS r(device_id varchar, seq bigint, ts bigint, received_at bigint, kind varchar, "
    "report json, cpu_temp_c float8, mem_used_pct float8, disk_used_pct float8, loss_pct float8) "
    "ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq"
)
_STATE_SET = (
    "ON CONFLICT (device_id) DO UPDATE SET latest_seq = excluded.latest_seq, "
    "latest_ts = excluded.latest_ts, latest_report = excluded.latest_report, "
    "last_seen = excluded.last_seen "
    "WHERE device_health_state.latest_ts IS NULL "
    "OR device_health_state.latest_ts <= excluded.latest_ts"
)
_PG_STATE = (
    "INSERT INTO device_health_state (device_id, latest_seq, latest_ts, latest_report, last_seen) "
    "SELECT device_id, latest_seq, latest_ts, latest_report, last_seen "
    "FROM json_to_recordset(%s::json) AS r(device_id varchar, latest_seq bigint, "
    f"latest_ts bigint, latest_report json, last_seen bigint) {_STATE_SET}"
)
_SQLITE_STATE = (
    "INSERT INTO device_health_state (device_id, latest_seq, latest_ts, latest_report, last_seen) "
    f"VALUES (?, ?, ?, ?, ?) {_STATE_SET}"
)
_SQLITE_MAX_ROWS = 3000  # 10 parameters a row, under SQLite's 32,766


def _driver(session: Session) -> tuple[Connection, bool]:
    """The session's transaction connection, and whether it is PostgreSQL."""
    connection = session.connection()
    return connection, connection.dialect.name == "postgresql"


def known_devices(session: Session, device_ids: Iterable[str]) -> set[str]:
    """Which of ``device_ids`` are registered devices."""
    ids = sorted(set(device_ids))
    if not ids:
        return set()
    db, postgres = _driver(session)
    if postgres:
        found = db.exec_driver_sql("SELECT id FROM devices WHERE id = ANY(%s)", (ids,))
    else:
        marks = ",".join("?" * len(ids))
        found = db.exec_driver_sql(f"SELECT id FROM devices WHERE id IN ({marks})", tuple(ids))
    return {row[0] for row in found}


def store_rows(session: Session, rows: Sequence[ReportRow], *, now: int) -> list[ReportRow]:
    """Insert the reports not stored yet (by ``(device_id, seq)``); the ones inserted now.

    The per-device state then follows the newest (by ``ts``) of those inserted.
    """
    unique: dict[tuple[str, int], ReportRow] = {}
    for row in rows:  # a batch may hold one report twice (a redelivery)
        unique.setdefault((row.device_id, row.seq), row)
    if not unique:
        return []
    db, postgres = _driver(session)
    inserted: set[tuple[str, int]] = set()
    items = list(unique.items())
    texts: dict[tuple[str, int], str] = {}  # SQLite: each report encoded once, for both tables
    if postgres:
        document = encode_report(
            [
                {
                    "device_id": r.device_id,
                    "seq": r.seq,
                    "ts": r.ts,
                    "received_at": now,
                    "kind": r.kind,
                    "report": r.report,
                    "cpu_temp_c": r.cpu_temp_c,
                    "mem_used_pct": r.mem_used_pct,
                    "disk_used_pct": r.disk_used_pct,
                    "loss_pct": r.loss_pct,
                }
                for _, r in items
            ]
        )
        inserted.update((d, s) for d, s in db.exec_driver_sql(_PG_INSERT, (document,)))
    else:
        texts = {key: encode_report(row.report) for key, row in items}
        for first in range(0, len(items), _SQLITE_MAX_ROWS):
            chunk = items[first : first + _SQLITE_MAX_ROWS]
            values: list[Any] = []
            for key, r in chunk:
                values += (
                    r.device_id,
                    r.seq,
                    r.ts,
                    now,
                    r.kind,
                    texts[key],
                    r.cpu_temp_c,
                    r.mem_used_pct,
                    r.disk_used_pct,
                    r.loss_pct,
                )
            marks = ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
            result = db.exec_driver_sql(
                f"INSERT INTO health_reports ({_COLUMNS}) VALUES {marks} "
                "ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq",
                tuple(values),
            )
            inserted.update((d, s) for d, s in result)
    fresh = [row for key, row in items if key in inserted]
    newest: dict[str, ReportRow] = {}
    for row in fresh:
        if row.device_id not in newest or row.ts >= newest[row.device_id].ts:
            newest[row.device_id] = row
    latest = sorted(newest.items())  # sorted: one lock order for every worker
    if latest and postgres:
        states = [
            {
                "device_id": d,
                "latest_seq": r.seq,
                "latest_ts": r.ts,
                "latest_report": r.report,
                "last_seen": now,
            }
            for d, r in latest
        ]
        db.exec_driver_sql(_PG_STATE, (encode_report(states),))
    elif latest:
        rows_ = [(d, r.seq, r.ts, texts[(d, r.seq)], now) for d, r in latest]
        db.exec_driver_sql(_SQLITE_STATE, rows_)
    return fresh


_ENSURE_STATE = (
    "INSERT INTO device_health_state (device_id, last_seen) VALUES (:device_id, :now) "
    "ON CONFLICT (device_id) DO NOTHING"
)
_UPDATE_STATUS = (
    "UPDATE device_health_state SET online = :online, status_at = COALESCE(:status_at, "
    "status_at), last_seen = CASE WHEN last_seen > :now THEN last_seen ELSE :now END, "
    "reported_token_ver = COALESCE(:token_ver, reported_token_ver) WHERE device_id = :device_id"
)
_STATUS_EVENT = (
    "INSERT INTO device_status_events (device_id, online, at) VALUES (:device_id, :online, :at)"
)


def record_statuses(session: Session, statuses: Sequence[Status], *, now: int) -> list[bool]:
    """Record online/offline messages, in their order; for each, whether it changed its
    device's status (a change is kept as a status event, for the connectivity rules).

    Every device named must exist (the caller checks, :func:`known_devices`). The
    state's ``last_seen`` never moves back; ``reported_token_ver`` is kept when given.
    """
    if not statuses:
        return []
    devices = sorted({device for device, _, _ in statuses})  # one lock order for every worker
    executemany(session, _ENSURE_STATE, [{"device_id": d, "now": now} for d in devices])
    db, postgres = _driver(session)
    if postgres:
        found = db.exec_driver_sql(
            "SELECT device_id, online FROM device_health_state WHERE device_id = ANY(%s) "
            "ORDER BY device_id FOR UPDATE",
            (devices,),
        )
    else:  # the transaction began IMMEDIATE: it already holds SQLite's write lock
        marks = ",".join("?" * len(devices))
        found = db.exec_driver_sql(
            f"SELECT device_id, online FROM device_health_state WHERE device_id IN ({marks})",
            tuple(devices),
        )
    online_now: dict[str, bool | None] = {d: None if o is None else bool(o) for d, o in found}
    changed: list[bool] = []
    moved: set[str] = set()
    held: dict[str, int] = {}
    events = []
    for device, online, version in statuses:
        change = online_now[device] is not online
        changed.append(change)
        if change:
            online_now[device] = online
            moved.add(device)
            events.append({"device_id": device, "online": online, "at": now})
        if version is not None:
            held[device] = version
    executemany(
        session,
        _UPDATE_STATUS,
        [
            {
                "device_id": d,
                "online": online_now[d],
                "status_at": now if d in moved else None,
                "now": now,
                "token_ver": held.get(d),
            }
            for d in devices
        ],
    )
    executemany(session, _STATUS_EVENT, events)
    return changed
