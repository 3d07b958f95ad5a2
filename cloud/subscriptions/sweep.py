"""The renewal sweep, set-based: one batch of due subscriptions, one statement per effect.

The pure rule decides, row by row (:func:`~cloud.subscriptions.rules.lifecycle.apply`
of a :class:`~cloud.subscriptions.rules.lifecycle.Tick`: microseconds); what it
decided is written for the whole batch at once, in the caller's transaction:

- one ``SELECT ... FOR UPDATE SKIP LOCKED`` claims the batch (PostgreSQL: N
  sweepers take disjoint rows, a row another holds is skipped, not waited for;
  SQLite ignores the clause, but every write transaction starts ``BEGIN
  IMMEDIATE``, so sweepers take turns and the next one sees the new ``due_at``);
- one version-checked ``UPDATE`` per distinct change writes the new states;
- one ``INSERT`` of the audit entries, one of the e-mails (``ON CONFLICT
  DO NOTHING`` on their dedupe key), after one read of their recipients;
- one upsert of the grants the rule (re)started, one ``UPDATE`` per feature of
  those it ended;
- one read of the affected devices and one ``INSERT`` into the token re-sign
  queue: signing (~120 µs a token) is not on the sweep's path; the
  re-sign job drains the queue (:class:`cloud.devices.jobs.ResignJob`).

The result is exactly what :meth:`SubscriptionService.commit
<cloud.subscriptions.service.SubscriptionService.commit>` writes row by row
(a test compares both on generated subscriptions), except that the devices
are queued for a token rather than signed at once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cloud.accounts.tables import UserRow
from cloud.database import executemany
from cloud.devices import queries as device_queries
from cloud.devices.rules import GrantStatus
from cloud.devices.tables import GrantRow
from cloud.errors import UnknownUser
from cloud.notifications.outbox import compose
from cloud.notifications.tables import NotificationStatus
from cloud.subscriptions import queries as rows
from cloud.subscriptions.rules.lifecycle import (
    Charge,
    EndService,
    GrantService,
    Notify,
    Subscription,
    Tick,
    Transition,
    apply,
)
from cloud.subscriptions.rules.renewals import Due
from cloud.subscriptions.service import GRANT_SOURCE
from cloud.subscriptions.tables import SubscriptionRow

__all__ = ["Due", "SweptBatch", "sweep_batch"]

_Changed = Sequence[tuple[Any, Subscription, Transition]]
_TABLE = SubscriptionRow.__table__
# the batch's writes go through plain DBAPI (cloud.database.executemany, exec_driver_sql):
# SQLAlchemy's per-row parameter processing was most of a batch's time (measured); the
# column names in the UPDATE are row_values()'s keys, never input
_UPSERT_GRANT = (
    "INSERT INTO service_grants (installation_id, feature, scope, params, valid_until, source, "
    "status, created_at, updated_at, ended_at) VALUES (:installation_id, :feature, :scope, "
    ":params, :valid_until, :source, :status, :now, :now, NULL) "
    "ON CONFLICT (installation_id, feature, scope) "
    "DO UPDATE SET params = excluded.params, valid_until = excluded.valid_until, "
    "source = excluded.source, status = excluded.status, updated_at = excluded.updated_at, "
    "ended_at = NULL"
)
_MAIL = (
    "INSERT INTO notifications (kind, recipients, subject, body, dedupe_key, status, attempts, "
    "created_at, next_attempt_at) VALUES (:kind, :recipients, :subject, :body, :dedupe_key, "
    ":status, 0, :now, :now) ON CONFLICT (dedupe_key) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class SweptBatch:
    """What one batch did: rows claimed, rows changed, charges to place, devices queued."""

    selected: int
    ticked: int
    charges: tuple[Due, ...]
    devices_queued: int


def sweep_batch(tx: Session, *, now: int, limit: int, actor: str) -> SweptBatch:
    """Tick up to ``limit`` due subscriptions at ``now`` and write every effect in bulk.

    Raises:
        StaleDataError: a row changed under the batch (a version mismatch): the
            caller's transaction rolls back and the next pass sees the row again.
    """
    claimed = tx.execute(rows.due_query(now=now, limit=limit).with_only_columns(*_TABLE.c)).all()
    changed: list[tuple[Any, Subscription, Transition]] = []
    for row in claimed:
        before = rows.load(row)
        t = apply(before, Tick(), now=now)
        if t.state != before:
            changed.append((row, before, t))
    if not changed:
        return SweptBatch(len(claimed), 0, (), 0)
    _save_states(tx, changed, now=now)
    _audit(tx, changed, actor=actor, now=now)
    installations = _grants(tx, [t for _, _, t in changed], now=now)
    _notify(tx, [e for _, _, t in changed for e in t.effects if isinstance(e, Notify)], now=now)
    devices = device_queries.device_ids_of(tx, sorted(installations))
    device_queries.enqueue_resign(tx, devices, now=now)
    charges = tuple(
        rows.due_of(row, before, e)
        for row, before, t in changed
        for e in t.effects
        if isinstance(e, Charge)
    )
    return SweptBatch(len(claimed), len(changed), charges, len(devices))


_AUDIT = (
    'INSERT INTO audit_log (at, actor, actor_user_id, action, object_type, object_id, "before", '
    "\"after\") VALUES (:at, :actor, NULL, :action, 'subscription', :object_id, :before, :after)"
)


def _save_states(tx: Session, changed: _Changed, *, now: int) -> None:
    """The new states, version-checked (the version moves on, as the ORM's does), in one
    ``UPDATE`` per distinct change and version: rows at one version whose changed columns
    take the same values (a batch expiring at one sweep: status, due date, the time of
    the change) are one statement, ``WHERE version = ? AND id IN (...)`` (the primary
    key's index); a row changed under the batch is not matched and the count tells."""
    groups: dict[tuple[int, tuple[tuple[str, Any], ...]], list[str]] = defaultdict(list)
    for row, _, t in changed:
        values = rows.row_values(t.state, now=now)
        values["status"] = values["status"].value  # a StrEnum: equal to the stored member
        stored = row._mapping
        change = tuple((c, v) for c, v in values.items() if stored[c] != v)
        groups[(row.version, change)].append(row.id)
    connection = tx.connection()
    mark = "%s" if connection.dialect.name == "postgresql" else "?"
    updated = 0
    for (version, change), ids in groups.items():
        sets = "".join(f"{column} = {mark}, " for column, _ in change)
        for first in range(0, len(ids), rows.IN_CHUNK):
            chunk = ids[first : first + rows.IN_CHUNK]
            result = connection.exec_driver_sql(
                f"UPDATE subscriptions SET {sets}version = version + 1 WHERE version = {mark} "
                f"AND id IN ({', '.join([mark] * len(chunk))})",
                (*(value for _, value in change), version, *chunk),
            )
            updated += result.rowcount
    if updated != len(changed):
        raise StaleDataError(f"{len(changed) - updated} of {len(changed)} subscriptions changed")


def _audit(tx: Session, changed: _Changed, *, actor: str, now: int) -> None:
    """The audit entries, as :func:`cloud.accounts.audit.record` writes them, in one INSERT."""
    executemany(
        tx,
        _AUDIT,
        [
            {
                "at": now,
                "actor": actor,
                "action": "subscription.tick",
                "object_id": t.state.id,
                "before": json.dumps(rows.snapshot(before)),
                "after": json.dumps(rows.snapshot(t.state)),
            }
            for _, before, t in changed
        ],
    )


def _grants(tx: Session, transitions: Sequence[Transition], *, now: int) -> set[str]:
    """Grants (re)started, then grants ended (a pending subscription whose term already
    passed does both, in that order, as the rule lists them); returns the installations."""
    started: list[dict[str, Any]] = []
    ended: dict[tuple[str, str], list[str]] = defaultdict(list)
    touched: set[str] = set()
    for t in transitions:
        for effect in t.effects:
            if isinstance(effect, GrantService):
                started.append(
                    {
                        "installation_id": t.state.installation_id,
                        "feature": effect.feature,
                        "scope": t.state.scope,
                        "params": json.dumps(dict(effect.params)),
                        "valid_until": effect.until,
                        "source": GRANT_SOURCE,
                        "status": GrantStatus.ACTIVE.value,
                        "now": now,
                    }
                )
                touched.add(t.state.installation_id)
            elif isinstance(effect, EndService):
                ended[effect.feature, t.state.scope].append(t.state.installation_id)
                touched.add(t.state.installation_id)
    executemany(tx, _UPSERT_GRANT, started)
    for (feature, scope), installations in sorted(ended.items()):
        tx.execute(
            update(GrantRow)
            .where(
                GrantRow.feature == feature,
                GrantRow.scope == scope,
                GrantRow.installation_id.in_(installations),
                GrantRow.status == GrantStatus.ACTIVE,
            )
            .values(status=GrantStatus.ENDED, updated_at=now, ended_at=now)
        )
    return touched


def _notify(tx: Session, notices: Sequence[Notify], *, now: int) -> None:
    """The e-mails, checked by :func:`~cloud.notifications.outbox.compose` and inserted in one
    statement; a dedupe key already queued (by anyone) is skipped, as ``enqueue`` does."""
    if not notices:
        return
    users = {
        u.id: u
        for u in tx.execute(
            select(UserRow.id, UserRow.email, UserRow.name).where(
                UserRow.id.in_({n.to_user for n in notices})
            )
        )
    }
    values = []
    for notice in notices:
        contact = users.get(notice.to_user)
        if contact is None:
            raise UnknownUser(f"no user with id {notice.to_user}")
        message = compose(
            kind=notice.kind,
            to=[contact.email],
            subject=notice.subject,
            body=f"Hello {contact.name},\n\n{notice.body}\n",
            dedupe_key=notice.dedupe_key,
        )
        values.append(
            {
                "kind": message.kind,
                "recipients": json.dumps(list(message.recipients)),
                "subject": message.subject,
                "body": message.body,
                "dedupe_key": message.dedupe_key,
                "status": NotificationStatus.QUEUED.value,
                "now": now,
            }
        )
    executemany(tx, _MAIL, values)
