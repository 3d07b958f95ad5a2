"""What subscriptions' transitions write beside their states, for one or a batch at once.

The one implementation of a transition's effects: :meth:`SubscriptionService.commit
<cloud.subscriptions.service.SubscriptionService.commit>` writes one transition
through it, the renewal sweep (:mod:`cloud.subscriptions.sweep`) a batch, in
the caller's transaction, one statement per effect however many rows:

- the audit entries (:func:`cloud.accounts.audit.record_many`);
- the grants the rules (re)started, upserted, then those they ended, one
  ``UPDATE`` per feature;
- the e-mails, after one read of their recipients, each composed once and
  filled in per row (:func:`cloud.notifications.outbox.fill`), inserted with
  ``ON CONFLICT DO NOTHING`` on their dedupe key.

A :class:`Decision` may serve many rows: the sweep decides once for rows that
differ only in their identities, with the placeholders :data:`SUB_ID` and
:data:`INSTALLATION` where the rule copied them; each row's own are filled in
(for one transition decided on its own row, there is nothing to fill).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.tables import UserRow
from cloud.database import in_values, insert_rows, param_mark
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
    Transition,
)

__all__ = [
    "GRANT_SOURCE",
    "INSTALLATION",
    "SUB_ID",
    "Decision",
    "Target",
    "decision",
    "filled",
    "notify",
    "write",
]

GRANT_SOURCE = "subscription"
# stand-ins for a group's identities while the rule decides: printable, and in no id
# (ids are [A-Za-z0-9_-]) or product text, so filling them in replaces only them
SUB_ID = "⟦subscription⟧"
INSTALLATION = "⟦installation⟧"
_GRANT_UPSERT = (
    "ON CONFLICT (installation_id, feature, scope) "
    "DO UPDATE SET params = excluded.params, valid_until = excluded.valid_until, "
    "source = excluded.source, status = excluded.status, updated_at = excluded.updated_at, "
    "ended_at = NULL"
)


class Target(Protocol):
    """The row a decision is written for: its identities."""

    @property
    def id(self) -> str: ...
    @property
    def installation_id(self) -> str: ...


@dataclass(frozen=True, slots=True, eq=False)
class Decision:
    """A transition and what it writes, the audit snapshots dumped once."""

    before: Subscription | None  # None: a new subscription
    after: Transition
    audit_before: str
    audit_after: str
    notices: tuple[Notify, ...]
    charges: tuple[Charge, ...]


def decision(before: Subscription | None, t: Transition) -> Decision:
    return Decision(
        before=before,
        after=t,
        audit_before=json.dumps(None if before is None else rows.snapshot(before)),
        audit_after=json.dumps(rows.snapshot(t.state)),
        notices=tuple(e for e in t.effects if isinstance(e, Notify)),
        charges=tuple(e for e in t.effects if isinstance(e, Charge)),
    )


def filled(text: str, target: Target) -> str:
    """``text`` with ``target``'s identities for the placeholders."""
    return text.replace(SUB_ID, target.id).replace(INSTALLATION, target.installation_id)


def write(
    tx: Session,
    changed: Sequence[tuple[Target, Decision]],
    *,
    actor: Principal | str,
    action: str,
    now: int,
) -> set[str]:
    """Each row's audit entry, grants and e-mails; returns the installations whose grants
    changed (their devices need a new token)."""
    audit.record_many(
        tx,
        actor=actor,
        action=action,
        object_type="subscription",
        changes=[(target.id, d.audit_before, d.audit_after) for target, d in changed],
        now=now,
    )
    touched = _grants(tx, changed, now=now)
    _mails(
        tx,
        (
            (notice, {SUB_ID: target.id, INSTALLATION: target.installation_id})
            for target, d in changed
            for notice in d.notices
        ),
        now=now,
    )
    return touched


def notify(tx: Session, notices: Sequence[Notify], *, now: int) -> None:
    """Queue lifecycle messages that are no transition's (deduplicated)."""
    _mails(tx, ((notice, {}) for notice in notices), now=now)


def _grants(tx: Session, changed: Sequence[tuple[Target, Decision]], *, now: int) -> set[str]:
    """Grants (re)started, then grants ended (a pending subscription whose term already
    passed does both, in that order, as the rule lists them); returns the installations."""
    started: list[dict[str, Any]] = []
    ended: dict[tuple[str, str], list[str]] = defaultdict(list)
    touched: set[str] = set()
    params: dict[int, str] = {}  # the JSON of a GrantService's params, by the effect's id
    for target, d in changed:
        scope = d.after.state.scope
        for effect in d.after.effects:
            if isinstance(effect, GrantService):
                if id(effect) not in params:
                    params[id(effect)] = json.dumps(dict(effect.params))
                started.append(
                    {
                        "installation_id": target.installation_id,
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
                touched.add(target.installation_id)
            elif isinstance(effect, EndService):
                ended[effect.feature, scope].append(target.installation_id)
                touched.add(target.installation_id)
    insert_rows(tx, GrantRow.__table__, started, tail=_GRANT_UPSERT)
    connection = tx.connection()
    mark = param_mark(connection)
    for (feature, scope), installations in sorted(ended.items()):
        among, ids = in_values(connection, installations)
        connection.exec_driver_sql(
            f"UPDATE service_grants SET status = {mark}, updated_at = {mark}, ended_at = {mark} "
            f"WHERE feature = {mark} AND scope = {mark} AND status = {mark} "
            f"AND installation_id {among}",
            (GrantStatus.ENDED.value, now, now, feature, scope, GrantStatus.ACTIVE.value, *ids),
        )
    return touched


def _mails(tx: Session, notices: Iterable[tuple[Notify, Mapping[str, str]]], *, now: int) -> None:
    """The e-mails, each composed once per :class:`Notify` and filled in per row with its
    identities; a dedupe key already queued (by anyone) is skipped, as ``enqueue`` does."""
    items = list(notices)
    if not items:
        return
    users = {
        u.id: u
        for u in tx.execute(
            select(UserRow.id, UserRow.email, UserRow.name).where(
                UserRow.id.in_({notice.to_user for notice, _ in items})
            )
        )
    }
    composed: dict[int, tuple[OutboxMessage, str] | None] = {}  # by the Notify's id
    values = []
    for notice, identities in items:
        if id(notice) not in composed:
            composed[id(notice)] = _compose(notice, users)
        template = composed[id(notice)]
        if template is None:  # the template itself did not fit: compose this one whole
            whole = _compose(notice, users, identities)
            assert whole is not None  # with its identities, it is composed or raises
            message, recipients = whole
        else:
            message = fill(template[0], identities)
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


def _compose(
    notice: Notify, users: Mapping[int, Any], identities: Mapping[str, str] | None = None
) -> tuple[OutboxMessage, str] | None:
    """The mail with its recipients as JSON: a template with the placeholders when
    ``identities`` is None (None when the placeholders make it too long, or the name holds
    one: each row is then composed whole), else the mail with ``identities`` filled in.

    Raises:
        UnknownUser: no such recipient.
        ValueError: a mail that cannot be sent (see :func:`~cloud.notifications.outbox.compose`).
    """
    contact = users.get(notice.to_user)
    if contact is None:
        raise UnknownUser(f"no user with id {notice.to_user}")
    texts = [notice.subject, notice.body, notice.dedupe_key]
    if identities is None:
        if SUB_ID in contact.name or INSTALLATION in contact.name:
            return None  # a name that reads like a placeholder: filled in, it would change
    else:
        for placeholder, value in identities.items():
            texts = [text.replace(placeholder, value) for text in texts]
    subject, body, key = texts
    try:
        message = compose(
            kind=notice.kind,
            to=[contact.email],
            subject=subject,
            body=f"Hello {contact.name},\n\n{body}\n",
            dedupe_key=key,
        )
    except ValueError:
        if identities is None:
            return None
        raise
    return message, json.dumps(list(message.recipients))
