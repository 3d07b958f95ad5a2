"""The audit log: who changed what, when, with the object before and after. Append-only.

Nothing here (or anywhere) updates or deletes a row; the database refuses
both with a trigger (migration 0003). Callers pass the session of the
transaction that makes the change, so the entry commits or rolls back with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.tables import AuditRow
from cloud.database import insert_rows

__all__ = ["count", "entries", "record", "record_many"]

MAX_FIELD = 64


def _bounded(text: str, what: str) -> str:
    if not text or len(text) > MAX_FIELD:
        raise ValueError(f"an audit {what} must have 1-{MAX_FIELD} characters: {text[:80]!r}")
    return text


def _entry(actor: Principal | str, action: str, object_type: str) -> dict[str, Any]:
    """The columns an entry takes from who did what to which kind of object, bounded."""
    if isinstance(actor, Principal):
        name, user_id = actor.actor, actor.user_id
    else:
        name, user_id = _bounded(actor, "actor"), None
    return {
        "actor": name,
        "actor_user_id": user_id,
        "action": _bounded(action, "action"),
        "object_type": _bounded(object_type, "object type"),
    }


def record(
    session: Session,
    *,
    actor: Principal | str,
    action: str,
    object_type: str,
    object_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    now: int,
) -> None:
    """Append one entry.

    Args:
        actor: the principal of the request, or ``"system:<job>"`` for a job.
        action: dotted verb, e.g. ``user.role``, ``subscription.renew``, ``company.blacklist``.
        object_type, object_id: what changed (``user``/``5``, ``installation``/``inst_...``).
        before, after: JSON-able snapshots of the object (None when it did not/no longer exist).
        now: epoch seconds.
    """
    session.add(
        AuditRow(
            at=now,
            **_entry(actor, action, object_type),
            object_id=_bounded(str(object_id), "object id"),
            before=None if before is None else dict(before),
            after=None if after is None else dict(after),
        )
    )
    session.flush()


def record_many(
    session: Session,
    *,
    actor: Principal | str,
    action: str,
    object_type: str,
    changes: Sequence[tuple[str, str, str]],
    now: int,
) -> None:
    """Append one entry per ``(object_id, before, after)`` in one statement, the snapshots
    as JSON text (``"null"``: none, as :func:`record` stores a missing one): a job's batch
    dumps one snapshot once for the many objects it fits."""
    entry = _entry(actor, action, object_type)
    insert_rows(
        session,
        AuditRow.__table__,
        [
            {
                "at": now,
                **entry,
                "object_id": _bounded(object_id, "object id"),
                "before": before,
                "after": after,
            }
            for object_id, before, after in changes
        ],
    )


def entries(
    session: Session,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[AuditRow]:
    """Entries matching every filter given, newest first (``since <= at < until``)."""
    query = select(AuditRow).where(*_filter(object_type, object_id, actor, action, since, until))
    query = query.order_by(AuditRow.at.desc(), AuditRow.id.desc())
    return session.scalars(query.limit(limit).offset(offset)).all()


def count(
    session: Session,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: int | None = None,
    until: int | None = None,
) -> int:
    """How many entries :func:`entries` would find without a limit."""
    query = select(func.count()).select_from(AuditRow)
    query = query.where(*_filter(object_type, object_id, actor, action, since, until))
    return int(session.scalar(query) or 0)


def _filter(
    object_type: str | None,
    object_id: str | None,
    actor: str | None,
    action: str | None,
    since: int | None,
    until: int | None,
) -> list[Any]:
    where: list[Any] = []
    if object_type is not None:
        where.append(AuditRow.object_type == object_type)
    if object_id is not None:
        where.append(AuditRow.object_id == object_id)
    if actor is not None:
        where.append(AuditRow.actor == actor)
    if action is not None:
        where.append(AuditRow.action == action)
    if since is not None:
        where.append(AuditRow.at >= since)
    if until is not None:
        where.append(AuditRow.at < until)
    return where
