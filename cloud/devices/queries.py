"""Queries and writes, grouped so that one change is one transaction.

``with store.transaction() as tx:`` commits on success and rolls back on any
exception. Rows returned stay readable after the transaction (no lazy
loading: the models have no relationships).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from cloud.database import in_values, insert_rows
from cloud.devices.rules import DeviceKind, Grant, GrantStatus, TokenState
from cloud.devices.tables import (
    DeviceRow,
    GrantRow,
    InstallationRow,
    OutboxRow,
    ResignRow,
    TokenRow,
)

__all__ = [
    "active_grants",
    "active_grants_of",
    "add_outbox",
    "claim_outbox",
    "claim_resign",
    "device_ids_of",
    "drop_outbox",
    "drop_resign",
    "enqueue_resign",
    "outbox_length",
    "resign_length",
    "add_device",
    "add_installation",
    "add_tokens",
    "count_devices",
    "current_token",
    "current_tokens",
    "delete_device",
    "device",
    "device_ids",
    "devices",
    "devices_of",
    "end_grant",
    "grants_of",
    "installation",
    "installation_listing",
    "installations",
    "mark_published",
    "refresh_candidates",
    "upsert_grant",
]


# installations ----------------------------------------------------------
def add_installation(
    session: Session, *, installation_id: str, name: str, now: int
) -> InstallationRow:
    row = InstallationRow(id=installation_id, name=name, created_at=now)
    session.add(row)
    session.flush()
    return row


def installation(
    session: Session, installation_id: str, *, lock: bool = False
) -> InstallationRow | None:
    query = select(InstallationRow).where(InstallationRow.id == installation_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def installations(
    session: Session, *, limit: int, offset: int = 0, within: Select[Any] | None = None
) -> Sequence[InstallationRow]:
    """Installations oldest first; ``within``: a query of the ids to keep (None: all)."""
    query = select(InstallationRow).order_by(InstallationRow.created_at, InstallationRow.id)
    if within is not None:
        query = query.where(InstallationRow.id.in_(within))
    return session.scalars(query.limit(limit).offset(offset)).all()


INSTALLATION_SORTS = ("name", "created", "devices")


def installation_listing(
    session: Session,
    *,
    within: Select[Any] | None,
    search: str | None,
    sort: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[list[tuple[InstallationRow, int]], int]:
    """One page of installations with their device counts, and how many match in all.

    ``search`` matches the name or the id (case-insensitive, anywhere); ``sort``
    is one of :data:`INSTALLATION_SORTS`; ``within`` as in :func:`installations`.
    """
    counts = (
        select(DeviceRow.installation_id, func.count().label("n"))
        .group_by(DeviceRow.installation_id)
        .subquery()
    )
    n = func.coalesce(counts.c.n, 0)
    query = select(InstallationRow, n).outerjoin(
        counts, counts.c.installation_id == InstallationRow.id
    )
    total = select(func.count()).select_from(InstallationRow)
    conditions = []
    if within is not None:
        conditions.append(InstallationRow.id.in_(within))
    if search:
        needle = search.lower()
        conditions.append(
            func.lower(InstallationRow.name).contains(needle, autoescape=True)
            | func.lower(InstallationRow.id).contains(needle, autoescape=True)
        )
    if conditions:
        query, total = query.where(*conditions), total.where(*conditions)
    key = {"name": func.lower(InstallationRow.name), "created": InstallationRow.created_at}.get(
        sort, n
    )
    order = [key.desc() if descending else key.asc(), InstallationRow.id]
    rows = session.execute(query.order_by(*order).limit(limit).offset(offset)).all()
    return [(row, int(count)) for row, count in rows], int(session.scalar(total) or 0)


# devices ----------------------------------------------------------------
def add_device(
    session: Session,
    *,
    device_id: str,
    installation_id: str,
    kind: DeviceKind,
    password_hash: str,
    now: int,
) -> DeviceRow:
    row = DeviceRow(
        id=device_id,
        installation_id=installation_id,
        kind=kind,
        mqtt_password_hash=password_hash,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def device(session: Session, device_id: str, *, lock: bool = False) -> DeviceRow | None:
    query = select(DeviceRow).where(DeviceRow.id == device_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def devices(
    session: Session, device_ids: Sequence[str], *, lock: bool = False
) -> Sequence[DeviceRow]:
    """The devices with these ids that exist, locked in id order (no deadlock cycles)."""
    if not device_ids:
        return []
    query = select(DeviceRow).where(DeviceRow.id.in_(device_ids)).order_by(DeviceRow.id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).all()


def devices_of(
    session: Session, installation_id: str, *, lock: bool = False
) -> Sequence[DeviceRow]:
    query = (
        select(DeviceRow).where(DeviceRow.installation_id == installation_id).order_by(DeviceRow.id)
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).all()


def count_devices(
    session: Session, installation_id: str, *, controllers: bool | None = None
) -> int:
    """How many devices the installation has (``controllers``: True only gateways,
    False only cameras and counters, None all)."""
    query = (
        select(func.count())
        .select_from(DeviceRow)
        .where(DeviceRow.installation_id == installation_id)
    )
    if controllers is True:
        query = query.where(DeviceRow.kind == DeviceKind.GATEWAY)
    elif controllers is False:
        query = query.where(DeviceRow.kind != DeviceKind.GATEWAY)
    return int(session.scalar(query) or 0)


def device_ids(session: Session) -> Sequence[str]:
    return session.scalars(select(DeviceRow.id).order_by(DeviceRow.id)).all()


def delete_device(session: Session, device_id: str) -> None:
    session.execute(delete(TokenRow).where(TokenRow.device_id == device_id))
    session.execute(delete(DeviceRow).where(DeviceRow.id == device_id))


# grants -----------------------------------------------------------------
def grants_of(session: Session, installation_id: str) -> Sequence[GrantRow]:
    query = (
        select(GrantRow)
        .where(GrantRow.installation_id == installation_id)
        .order_by(GrantRow.feature)
    )
    return session.scalars(query).all()


def active_grants(session: Session, installation_id: str) -> list[Grant]:
    query = select(GrantRow).where(
        GrantRow.installation_id == installation_id,
        GrantRow.status == GrantStatus.ACTIVE,
    )
    return [
        Grant(
            feature=g.feature, until=g.valid_until, params=g.params, status=g.status, scope=g.scope
        )
        for g in session.scalars(query)
    ]


def active_grants_of(session: Session, installation_ids: Sequence[str]) -> dict[str, list[Grant]]:
    """The active grants of each of these installations (one query; [] for none)."""
    out: dict[str, list[Grant]] = {i: [] for i in installation_ids}
    if not installation_ids:
        return out
    query = select(GrantRow).where(
        GrantRow.installation_id.in_(installation_ids), GrantRow.status == GrantStatus.ACTIVE
    )
    for g in session.scalars(query):
        out[g.installation_id].append(
            Grant(
                feature=g.feature,
                until=g.valid_until,
                params=g.params,
                status=g.status,
                scope=g.scope,
            )
        )
    return out


def upsert_grant(
    session: Session,
    *,
    installation_id: str,
    feature: str,
    until: int,
    params: dict[str, Any],
    source: str,
    now: int,
    scope: str = "",
) -> GrantRow:
    """Create the grant or make the existing one active with these terms (``scope``: ""
    for the whole installation, ``device:<id>`` or ``user:<ref>``)."""
    query = select(GrantRow).where(
        GrantRow.installation_id == installation_id,
        GrantRow.feature == feature,
        GrantRow.scope == scope,
    )
    row = session.scalars(query.with_for_update()).one_or_none()
    if row is None:
        row = GrantRow(
            installation_id=installation_id,
            feature=feature,
            scope=scope,
            created_at=now,
        )
        session.add(row)
    row.params = dict(params)
    row.valid_until = until
    row.source = source
    row.status = GrantStatus.ACTIVE
    row.updated_at = now
    row.ended_at = None
    session.flush()
    return row


def end_grant(
    session: Session,
    *,
    installation_id: str,
    feature: str,
    status: GrantStatus,
    now: int,
    scope: str = "",
) -> GrantRow | None:
    """Mark an active grant revoked or ended; None if there is no active grant."""
    query = select(GrantRow).where(
        GrantRow.installation_id == installation_id,
        GrantRow.feature == feature,
        GrantRow.scope == scope,
        GrantRow.status == GrantStatus.ACTIVE,
    )
    row = session.scalars(query.with_for_update()).one_or_none()
    if row is None:
        return None
    row.status = status
    row.updated_at = now
    row.ended_at = now
    session.flush()
    return row


# tokens -----------------------------------------------------------------
def current_token(session: Session, device_id: str) -> TokenRow | None:
    query = (
        select(TokenRow)
        .where(TokenRow.device_id == device_id)
        .order_by(TokenRow.id.desc())
        .limit(1)
    )
    return session.scalars(query).one_or_none()


# each device's newest token: a correlated max per device reads one index entry each
# ((device_id, id) index; SQLite's and PostgreSQL's min/max optimisation), where a
# GROUP BY over the devices read every token they were ever issued (4.4 ms for 3 devices
# with 3,000 tokens each, SQLite). Built once: an aliased subquery built per call
# missed SQLAlchemy's statement cache (~5 ms of compiling a call).
_older = aliased(TokenRow)
_CURRENT_TOKENS = select(TokenRow).where(
    TokenRow.id.in_(
        select(
            select(func.max(_older.id)).where(_older.device_id == DeviceRow.id).scalar_subquery()
        ).where(DeviceRow.id.in_(bindparam("device_ids", expanding=True)))
    )
)


def current_tokens(session: Session, device_ids: Sequence[str]) -> dict[str, TokenRow]:
    """The current token of each of these devices that has one."""
    if not device_ids:
        return {}
    rows = session.scalars(_CURRENT_TOKENS, {"device_ids": list(device_ids)})
    return {row.device_id: row for row in rows}


def add_tokens(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert issued tokens (column values); their ids, in order (one statement: Core,
    not ORM objects, which cost more than the insert when a batch signs hundreds)."""
    if not rows:
        return []
    table = TokenRow.__table__
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.execute(statement, list(rows)).scalars())


def mark_published(session: Session, token_ids: Sequence[int], *, now: int) -> None:
    """Published: the tokens are marked and leave the outbox."""
    if token_ids:
        session.execute(
            update(TokenRow)
            .where(TokenRow.id.in_(token_ids), TokenRow.published_at.is_(None))
            .values(published_at=now)
        )
        drop_outbox(session, token_ids)


def refresh_candidates(
    session: Session, *, now: int, refresh_before_s: int, epoch: int
) -> list[TokenState]:
    """Current tokens near expiry or of another key-set epoch (columns only, not the blob)."""
    current = select(func.max(TokenRow.id)).group_by(TokenRow.device_id).scalar_subquery()
    query = select(TokenRow.device_id, TokenRow.epoch, TokenRow.exp).where(
        TokenRow.id.in_(current),
        (TokenRow.exp < now + refresh_before_s) | (TokenRow.epoch != epoch),
    )
    return [TokenState(device_id=d, epoch=e, exp=x) for d, e, x in session.execute(query)]


def device_ids_of(session: Session, installation_ids: Sequence[str]) -> list[str]:
    """The ids of every device of these installations (one query)."""
    if not installation_ids:
        return []
    connection = session.connection()  # the driver's SQL: a sweep batch names 1,000
    among, ids = in_values(connection, installation_ids)
    query = f"SELECT id FROM devices WHERE installation_id {among} ORDER BY id"
    return [device_id for (device_id,) in connection.exec_driver_sql(query, ids)]


# the re-sign queue --------------------------------------------------------
def enqueue_resign(session: Session, device_ids: Sequence[str], *, now: int) -> None:
    """Queue these devices for a new token: one statement; a device queued already stays once.

    A device queued again keeps one row (``ON CONFLICT DO NOTHING``): the drain
    reads the grants as they are when it signs, so one signature carries the
    newest state however many changes queued it.
    """
    insert_rows(  # through the driver: a sweep queues 100,000 devices in batches
        session,
        ResignRow.__table__,
        [{"device_id": d, "queued_at": now} for d in sorted(set(device_ids))],
        tail="ON CONFLICT (device_id) DO NOTHING",
    )


def claim_resign(session: Session, *, limit: int) -> list[str]:
    """Up to ``limit`` queued device ids, oldest first, locked for this transaction.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so N workers claim disjoint batches.
    SQLite ignores it: every write transaction starts ``BEGIN IMMEDIATE``, so one
    drainer at a time holds the queue, and the next one finds the rows gone.
    """
    query = (
        select(ResignRow.device_id)
        .order_by(ResignRow.queued_at, ResignRow.device_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def drop_resign(session: Session, device_ids: Sequence[str]) -> None:
    if device_ids:
        session.execute(delete(ResignRow).where(ResignRow.device_id.in_(device_ids)))


def resign_length(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ResignRow)) or 0)


# the entitlement outbox ---------------------------------------------------
def add_outbox(session: Session, tokens: Sequence[tuple[int, str]], *, now: int) -> None:
    """An outbox row per token ``(token id, device id)`` (one statement): in the token's
    transaction, or again for a republish the broker did not take (a token still in the
    outbox keeps its row)."""
    insert_rows(
        session,
        OutboxRow.__table__,
        [{"token_id": t, "device_id": d, "created_at": now} for t, d in tokens],
        tail="ON CONFLICT (token_id) DO NOTHING",
    )


def claim_outbox(session: Session, *, before: int, limit: int) -> list[TokenRow]:
    """Tokens waiting in the outbox since before ``before``, locked (SKIP LOCKED), oldest first.

    Only each device's current token is returned; the outbox rows of older
    tokens are dropped here (a newer token supersedes them).
    """
    query = (
        select(OutboxRow.token_id, OutboxRow.device_id)
        .where(OutboxRow.created_at <= before)
        .order_by(OutboxRow.created_at, OutboxRow.token_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = session.execute(query).all()
    if not claimed:
        return []
    current = current_tokens(session, sorted({d for _, d in claimed}))
    stale = [t for t, d in claimed if current.get(d) is None or current[d].id != t]
    drop_outbox(session, stale)
    wanted = {t for t, _ in claimed} - set(stale)
    return [row for row in current.values() if row.id in wanted]


def drop_outbox(session: Session, token_ids: Sequence[int]) -> None:
    if token_ids:
        session.execute(delete(OutboxRow).where(OutboxRow.token_id.in_(token_ids)))


def outbox_length(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(OutboxRow)) or 0)


# API keys ---------------------------------------------------------------
