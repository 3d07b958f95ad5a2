"""The renewal sweep, set-based: one batch of due subscriptions, one statement per effect.

The pure rule decides once per *group*: rows equal in every column the rule
reads (:data:`~cloud.subscriptions.queries.STATE_COLUMNS`: product, purchaser,
status, dates, charge state, scope) differ only in their identities (id,
installation), which the rule copies into what it emits and never reads. So
:func:`~cloud.subscriptions.rules.lifecycle.apply` of a
:class:`~cloud.subscriptions.rules.lifecycle.Tick` runs on the group's first
row with placeholders for the identities, and its new state, audit
snapshots, e-mails (composed once) and charge keys serve every row of the
group, each row's identities filled in. A batch of subscriptions expiring at
one end is one group per purchaser and product. What is decided is written
for the whole batch at once, in the caller's transaction:

- one ``SELECT ... FOR UPDATE SKIP LOCKED`` claims the batch (PostgreSQL: N
  sweepers take disjoint rows, a row another holds is skipped, not waited for;
  SQLite ignores the clause, but every write transaction starts ``BEGIN
  IMMEDIATE``, so sweepers take turns and the next one sees the new ``due_at``);
- one version-checked ``UPDATE`` per group and version writes the new states;
- the audit entries, grants and e-mails through :func:`cloud.subscriptions.effects.write`,
  the one writer of a transition's effects (``SubscriptionService.commit`` writes
  one transition through it): one statement per effect;
- one read of the affected devices and one ``INSERT`` into the token re-sign
  queue: signing (~120 µs a token) is not on the sweep's path; the
  re-sign job drains the queue (:class:`cloud.devices.jobs.ResignJob`).

The result is exactly what the rule and :meth:`SubscriptionService.commit
<cloud.subscriptions.service.SubscriptionService.commit>` write row by row
(a test compares both on generated subscriptions, many of them one state),
except that the devices are queued for a token rather than signed at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cloud.database import in_values, param_mark
from cloud.devices import queries as device_queries
from cloud.subscriptions import effects
from cloud.subscriptions import queries as rows
from cloud.subscriptions.effects import INSTALLATION, SUB_ID, Decision
from cloud.subscriptions.rules.lifecycle import Charge, Tick, apply
from cloud.subscriptions.rules.renewals import Due
from cloud.subscriptions.tables import SubscriptionRow

__all__ = ["Due", "SweptBatch", "sweep_batch"]

_TABLE = SubscriptionRow.__table__
_STATE_OF = itemgetter(*(_TABLE.c.keys().index(c) for c in rows.STATE_COLUMNS))


@dataclass(frozen=True, slots=True)
class SweptBatch:
    """What one batch did: rows claimed, rows changed, charges to place, devices queued."""

    selected: int
    ticked: int
    charges: tuple[Due, ...]
    devices_queued: int


@dataclass(frozen=True, slots=True, eq=False)
class _Group:
    """The rule's decision for a group of rows (identities as placeholders) and the new
    state's columns every row of it takes (its installation stays)."""

    decision: Decision
    columns: tuple[tuple[str, Any], ...]


_Changed = Sequence[tuple[Row[Any], _Group]]


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
    groups: dict[tuple[Any, ...], _Group | None] = {}
    changed: list[tuple[Row[Any], _Group]] = []
    for row in claimed:
        state = _STATE_OF(row)
        try:
            group = groups[state]
        except KeyError:
            group = groups[state] = _decide(row, now=now)
        if group is not None:
            changed.append((row, group))
    if not changed:
        return SweptBatch(len(claimed), 0, (), 0)
    _save_states(tx, changed)
    installations = effects.write(
        tx,
        [(row, group.decision) for row, group in changed],
        actor=actor,
        action="subscription.tick",
        now=now,
    )
    devices = device_queries.device_ids_of(tx, sorted(installations))
    device_queries.enqueue_resign(tx, devices, now=now)
    charges = tuple(
        _due(row, group.decision, charge)
        for row, group in changed
        for charge in group.decision.charges
    )
    return SweptBatch(len(claimed), len(changed), charges, len(devices))


def _due(row: Row[Any], decision: Decision, charge: Charge) -> Due:
    """A renewal charge of ``row``'s subscription, its key filled in with the row's ids."""
    assert decision.before is not None  # a tick decides on a stored subscription
    filled = replace(charge, idempotency_key=effects.filled(charge.idempotency_key, row))
    return rows.due_of(row, decision.before, filled)


def _decide(row: Row[Any], *, now: int) -> _Group | None:
    """The rule on ``row``'s state with placeholder identities; None: the tick changes
    nothing."""
    before = replace(rows.load(row), id=SUB_ID, installation_id=INSTALLATION)
    t = apply(before, Tick(), now=now)
    if t.state == before:
        return None
    if (t.state.id, t.state.installation_id) != (SUB_ID, INSTALLATION):
        raise RuntimeError("the lifecycle rule changed a subscription's identity")
    values = rows.row_values(t.state, now=now)
    del values["installation_id"]
    values["status"] = values["status"].value  # a StrEnum: the driver takes its value
    return _Group(effects.decision(before, t), tuple(values.items()))


def _save_states(tx: Session, changed: _Changed) -> None:
    """The new states, version-checked (the version moves on, as the ORM's does), in one
    ``UPDATE`` per group and version, ``WHERE version = ? AND id IN (...)`` (the primary
    key's index); a row changed under the batch is not matched and the count tells."""
    by_version: dict[tuple[_Group, int], list[str]] = defaultdict(list)
    for row, group in changed:
        by_version[group, row.version].append(row.id)
    connection = tx.connection()
    mark = param_mark(connection)
    updated = 0
    for (group, version), ids in by_version.items():
        sets = "".join(f"{column} = {mark}, " for column, _ in group.columns)
        for first in range(0, len(ids), rows.IN_CHUNK):
            among, chunk = in_values(connection, ids[first : first + rows.IN_CHUNK])
            result = connection.exec_driver_sql(
                f"UPDATE subscriptions SET {sets}version = version + 1 WHERE version = {mark} "
                f"AND id {among}",
                (*(value for _, value in group.columns), version, *chunk),
            )
            updated += result.rowcount
    if updated != len(changed):
        raise StaleDataError(f"{len(changed) - updated} of {len(changed)} subscriptions changed")
