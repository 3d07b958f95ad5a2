"""The renewal sweep, set-based: one batch of due subscriptions, one statement per effect.

The pure rule decides once per *group*: rows equal in every column the rule
reads (:data:`~cloud.subscriptions.queries.STATE_COLUMNS`: product, purchaser,
status, dates, charge state, scope) differ only in their identities (id,
installation), which the rule copies into what it emits and never reads. So
:func:`~cloud.subscriptions.rules.lifecycle.apply` of a
:class:`~cloud.subscriptions.rules.lifecycle.Tick` runs on the group's first
row with placeholders for the identities, and its new state, audit
snapshots, e-mails (composed once: :func:`~cloud.notifications.outbox.fill`)
and charge keys serve every row of the group, each row's identities filled
in. A batch of subscriptions expiring at one end is one group per purchaser
and product. What is decided is written for the whole batch at once, in the
caller's transaction:

- one ``SELECT ... FOR UPDATE SKIP LOCKED`` claims the batch (PostgreSQL: N
  sweepers take disjoint rows, a row another holds is skipped, not waited for;
  SQLite ignores the clause, but every write transaction starts ``BEGIN
  IMMEDIATE``, so sweepers take turns and the next one sees the new ``due_at``);
- one version-checked ``UPDATE`` per group and version writes the new states;
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
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cloud.accounts.tables import AuditRow, UserRow
from cloud.database import in_values, insert_rows
from cloud.devices import queries as device_queries
from cloud.devices.rules import GrantStatus
from cloud.devices.tables import GrantRow
from cloud.errors import UnknownUser
from cloud.notifications.outbox import compose, fill
from cloud.notifications.queries import OutboxMessage
from cloud.notifications.tables import NotificationRow, NotificationStatus
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

_TABLE = SubscriptionRow.__table__
# stand-ins for a group's identities while the rule decides: printable, and in no id
# (ids are [A-Za-z0-9_-]) or product text, so filling them in replaces only them
_SUB_ID = "⟦subscription⟧"
_INSTALLATION = "⟦installation⟧"
_STATE_OF = itemgetter(*(_TABLE.c.keys().index(c) for c in rows.STATE_COLUMNS))
# the batch's writes go through the driver (cloud.database.insert_rows, exec_driver_sql):
# SQLAlchemy's per-row parameter processing was most of a batch's time (measured); the
# column names in the UPDATE are row_values()'s keys, never input
_GRANT_UPSERT = (
    "ON CONFLICT (installation_id, feature, scope) "
    "DO UPDATE SET params = excluded.params, valid_until = excluded.valid_until, "
    "source = excluded.source, status = excluded.status, updated_at = excluded.updated_at, "
    "ended_at = NULL"
)
_IN_CHUNK = 900  # ids a statement, with the changed columns' values under SQLite's 32,766


@dataclass(frozen=True, slots=True)
class SweptBatch:
    """What one batch did: rows claimed, rows changed, charges to place, devices queued."""

    selected: int
    ticked: int
    charges: tuple[Due, ...]
    devices_queued: int


@dataclass(frozen=True, slots=True, eq=False)
class _Decision:
    """The rule's transition for one group, its identities left as placeholders, and what
    every row of the group writes because of it."""

    before: Subscription
    after: Transition
    columns: tuple[tuple[str, Any], ...]  # the new state's columns (installation: unchanged)
    audit_before: str
    audit_after: str
    notices: tuple[Notify, ...]
    charges: tuple[Charge, ...]


_Changed = Sequence[tuple[Row[Any], _Decision]]


def sweep_batch(tx: Session, *, now: int, limit: int, actor: str) -> SweptBatch:
    """Tick up to ``limit`` due subscriptions at ``now`` and write every effect in bulk.

    Raises:
        StaleDataError: a row changed under the batch (a version mismatch): the
            caller's transaction rolls back and the next pass sees the row again.
    """
    claimed = (
        tx.connection()  # Core rows: the ORM's loading adds nothing to plain columns
        .execute(rows.due_query(now=now, limit=limit).with_only_columns(*_TABLE.c))
        .all()
    )
    decisions: dict[tuple[Any, ...], _Decision | None] = {}
    changed: list[tuple[Row[Any], _Decision]] = []
    for row in claimed:
        state = _STATE_OF(row)
        try:
            decision = decisions[state]
        except KeyError:
            decision = decisions[state] = _decide(row, now=now)
        if decision is not None:
            changed.append((row, decision))
    if not changed:
        return SweptBatch(len(claimed), 0, (), 0)
    _save_states(tx, changed)
    _audit(tx, changed, actor=actor, now=now)
    installations = _grants(tx, changed, now=now)
    _notify(tx, changed, now=now)
    devices = device_queries.device_ids_of(tx, sorted(installations))
    device_queries.enqueue_resign(tx, devices, now=now)
    charges = tuple(
        Due(
            sub_id=row.id,
            installation_id=row.installation_id,
            product_code=row.product_code,
            description=f"{decision.before.product.name}, renewal",
            pay_with=row.pay_with,
            card_token=row.card_token,
            charge=Charge(
                idempotency_key=_filled(charge.idempotency_key, row),
                buyer=charge.buyer,
                months=charge.months,
                amount_cents=charge.amount_cents,
                end=charge.end,
                attempt=charge.attempt,
            ),
        )
        for row, decision in changed
        for charge in decision.charges
    )
    return SweptBatch(len(claimed), len(changed), charges, len(devices))


def _decide(row: Row[Any], *, now: int) -> _Decision | None:
    """The rule on ``row``'s state with placeholder identities; None: the tick changes
    nothing."""
    before = replace(rows.load(row), id=_SUB_ID, installation_id=_INSTALLATION)
    t = apply(before, Tick(), now=now)
    if t.state == before:
        return None
    if (t.state.id, t.state.installation_id) != (_SUB_ID, _INSTALLATION):
        raise RuntimeError("the lifecycle rule changed a subscription's identity")
    values = rows.row_values(t.state, now=now)
    del values["installation_id"]
    values["status"] = values["status"].value  # a StrEnum: the driver takes its value
    return _Decision(
        before=before,
        after=t,
        columns=tuple(values.items()),
        audit_before=json.dumps(rows.snapshot(before)),
        audit_after=json.dumps(rows.snapshot(t.state)),
        notices=tuple(e for e in t.effects if isinstance(e, Notify)),
        charges=tuple(e for e in t.effects if isinstance(e, Charge)),
    )


def _filled(text: str, row: Row[Any]) -> str:
    return text.replace(_SUB_ID, row.id).replace(_INSTALLATION, row.installation_id)


def _save_states(tx: Session, changed: _Changed) -> None:
    """The new states, version-checked (the version moves on, as the ORM's does), in one
    ``UPDATE`` per group and version, ``WHERE version = ? AND id IN (...)`` (the primary
    key's index); a row changed under the batch is not matched and the count tells."""
    groups: dict[tuple[_Decision, int], list[str]] = defaultdict(list)
    for row, decision in changed:
        groups[decision, row.version].append(row.id)
    connection = tx.connection()
    mark = "%s" if connection.dialect.name == "postgresql" else "?"
    updated = 0
    for (decision, version), ids in groups.items():
        sets = "".join(f"{column} = {mark}, " for column, _ in decision.columns)
        for first in range(0, len(ids), _IN_CHUNK):
            among, chunk = in_values(connection, ids[first : first + _IN_CHUNK])
            result = connection.exec_driver_sql(
                f"UPDATE subscriptions SET {sets}version = version + 1 WHERE version = {mark} "
                f"AND id {among}",
                (*(value for _, value in decision.columns), version, *chunk),
            )
            updated += result.rowcount
    if updated != len(changed):
        raise StaleDataError(f"{len(changed) - updated} of {len(changed)} subscriptions changed")


def _audit(tx: Session, changed: _Changed, *, actor: str, now: int) -> None:
    """The audit entries, as :func:`cloud.accounts.audit.record` writes them, in one INSERT."""
    insert_rows(
        tx,
        AuditRow.__table__,
        [
            {
                "at": now,
                "actor": actor,
                "actor_user_id": None,
                "action": "subscription.tick",
                "object_type": "subscription",
                "object_id": row.id,
                "before": decision.audit_before,
                "after": decision.audit_after,
            }
            for row, decision in changed
        ],
    )


def _grants(tx: Session, changed: _Changed, *, now: int) -> set[str]:
    """Grants (re)started, then grants ended (a pending subscription whose term already
    passed does both, in that order, as the rule lists them); returns the installations."""
    started: list[dict[str, Any]] = []
    ended: dict[tuple[str, str], list[str]] = defaultdict(list)
    touched: set[str] = set()
    params: dict[int, str] = {}  # the JSON of a GrantService's params, by the effect's id
    for row, decision in changed:
        scope = decision.after.state.scope
        for effect in decision.after.effects:
            if isinstance(effect, GrantService):
                if id(effect) not in params:
                    params[id(effect)] = json.dumps(dict(effect.params))
                started.append(
                    {
                        "installation_id": row.installation_id,
                        "feature": effect.feature,
                        "scope": scope,
                        "params": params[id(effect)],
                        "valid_until": effect.until,
                        "source": GRANT_SOURCE,
                        "status": GrantStatus.ACTIVE.value,
                        "created_at": now,
                        "updated_at": now,
                        "ended_at": None,
                    }
                )
                touched.add(row.installation_id)
            elif isinstance(effect, EndService):
                ended[effect.feature, scope].append(row.installation_id)
                touched.add(row.installation_id)
    insert_rows(tx, GrantRow.__table__, started, tail=_GRANT_UPSERT)
    connection = tx.connection()
    mark = "%s" if connection.dialect.name == "postgresql" else "?"
    for (feature, scope), installations in sorted(ended.items()):
        among, ids = in_values(connection, installations)
        connection.exec_driver_sql(
            f"UPDATE service_grants SET status = {mark}, updated_at = {mark}, ended_at = {mark} "
            f"WHERE feature = {mark} AND scope = {mark} AND status = {mark} "
            f"AND installation_id {among}",
            (GrantStatus.ENDED.value, now, now, feature, scope, GrantStatus.ACTIVE.value, *ids),
        )
    return touched


def _notify(tx: Session, changed: _Changed, *, now: int) -> None:
    """The e-mails, each composed once per group (:func:`~cloud.notifications.outbox.compose`)
    and filled in per row (:func:`~cloud.notifications.outbox.fill`), inserted in one
    statement; a dedupe key already queued (by anyone) is skipped, as ``enqueue`` does."""
    purchasers = {n.to_user for _, decision in changed for n in decision.notices}
    if not purchasers:
        return
    users = {
        u.id: u
        for u in tx.execute(
            select(UserRow.id, UserRow.email, UserRow.name).where(UserRow.id.in_(purchasers))
        )
    }
    composed: dict[int, tuple[OutboxMessage, str] | None] = {}  # by the Notify's id
    values = []
    for row, decision in changed:
        for notice in decision.notices:
            if id(notice) not in composed:
                composed[id(notice)] = _compose(notice, users)
            template = composed[id(notice)]
            if template is None:  # the template itself did not fit: compose this one whole
                message = _compose_filled(notice, users, row)
                recipients = json.dumps(list(message.recipients))
            else:
                message = fill(template[0], {_SUB_ID: row.id, _INSTALLATION: row.installation_id})
                recipients = template[1]
            values.append(
                {
                    "kind": message.kind,
                    "recipients": recipients,
                    "subject": message.subject,
                    "body": message.body,
                    "dedupe_key": message.dedupe_key,
                    "status": NotificationStatus.QUEUED.value,
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                }
            )
    insert_rows(tx, NotificationRow.__table__, values, tail="ON CONFLICT (dedupe_key) DO NOTHING")


def _contact(users: dict[int, Any], user_id: int) -> Any:
    contact = users.get(user_id)
    if contact is None:
        raise UnknownUser(f"no user with id {user_id}")
    return contact


def _compose(notice: Notify, users: dict[int, Any]) -> tuple[OutboxMessage, str] | None:
    """The group's mail with its placeholders, and its recipients as JSON; None when the
    placeholders make it too long (each row is then composed whole)."""
    contact = _contact(users, notice.to_user)
    if _SUB_ID in contact.name or _INSTALLATION in contact.name:
        return None  # a name that reads like a placeholder: filled in, it would change
    try:
        message = compose(
            kind=notice.kind,
            to=[contact.email],
            subject=notice.subject,
            body=f"Hello {contact.name},\n\n{notice.body}\n",
            dedupe_key=notice.dedupe_key,
        )
    except ValueError:
        return None
    return message, json.dumps(list(message.recipients))


def _compose_filled(notice: Notify, users: dict[int, Any], row: Row[Any]) -> OutboxMessage:
    contact = _contact(users, notice.to_user)
    return compose(
        kind=notice.kind,
        to=[contact.email],
        subject=_filled(notice.subject, row),
        body=f"Hello {contact.name},\n\n{_filled(notice.body, row)}\n",
        dedupe_key=_filled(notice.dedupe_key, row),
    )
