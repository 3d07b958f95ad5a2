"""The outbox's reads and writes, inside the caller's session: add, claim what is due, settle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud.notifications.tables import (
    NotificationAttachmentRow,
    NotificationRow,
    NotificationStatus,
)

__all__ = [
    "Attachment",
    "OutboxMessage",
    "add_notification",
    "claim_due",
    "mark_failed",
    "mark_retry",
    "mark_sent",
    "notifications",
    "requeue_failed",
]


@dataclass(frozen=True, slots=True)
class Attachment:
    """``(filename, content_type, data)`` of one attached file."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A claimed notification, detached from the session, ready to be sent."""

    id: int
    kind: str
    recipients: tuple[str, ...]
    subject: str
    body: str
    attachments: tuple[Attachment, ...]
    attempts: int
    dedupe_key: str | None


def add_notification(
    session: Session,
    *,
    kind: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    attachments: Sequence[Attachment],
    dedupe_key: str | None,
    now: int,
) -> int | None:
    """Insert a queued notification; ``None`` when one with ``dedupe_key`` already exists.

    ``INSERT ... ON CONFLICT DO NOTHING``: a concurrent insert of the same key
    waits for the other transaction and then does nothing, so two workers
    enqueue one row.
    """
    values = {
        "kind": kind,
        "recipients": list(recipients),
        "subject": subject,
        "body": body,
        "dedupe_key": dedupe_key,
        "status": NotificationStatus.QUEUED,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(NotificationRow)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[NotificationRow.dedupe_key])
        .returning(NotificationRow.id)
    )
    notification_id = session.execute(statement).scalar_one_or_none()
    if notification_id is None:
        return None
    session.add_all(
        NotificationAttachmentRow(
            notification_id=notification_id,
            filename=item.filename,
            content_type=item.content_type,
            data=item.data,
        )
        for item in attachments
    )
    session.flush()
    return notification_id


def claim_due(session: Session, *, now: int, lease_s: int, limit: int) -> list[OutboxMessage]:
    """Lease up to ``limit`` due notifications for ``lease_s`` seconds and count the attempt.

    Rows locked by another worker's claim are skipped, and once that claim
    commits they are no longer due, so no other worker picks them up.
    """
    query = (
        select(NotificationRow)
        .where(
            NotificationRow.status == NotificationStatus.QUEUED,
            NotificationRow.next_attempt_at <= now,
        )
        .order_by(NotificationRow.next_attempt_at, NotificationRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.scalars(query).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    files: dict[int, list[Attachment]] = {}
    for item in session.scalars(
        select(NotificationAttachmentRow)
        .where(NotificationAttachmentRow.notification_id.in_(ids))
        .order_by(NotificationAttachmentRow.id)
    ):
        files.setdefault(item.notification_id, []).append(
            Attachment(item.filename, item.content_type, item.data)
        )
    claimed = []
    for row in rows:
        row.attempts += 1
        row.next_attempt_at = now + lease_s
        claimed.append(
            OutboxMessage(
                id=row.id,
                kind=row.kind,
                recipients=tuple(row.recipients),
                subject=row.subject,
                body=row.body,
                attachments=tuple(files.get(row.id, ())),
                attempts=row.attempts,
                dedupe_key=row.dedupe_key,
            )
        )
    session.flush()
    return claimed


def _settle(session: Session, message: OutboxMessage, **values: object) -> bool:
    # Conditional on the attempt we claimed: a sender whose lease ran out and
    # was overtaken by another claim does not overwrite the newer outcome.
    result = session.execute(
        update(NotificationRow)
        .where(
            NotificationRow.id == message.id,
            NotificationRow.status == NotificationStatus.QUEUED,
            NotificationRow.attempts == message.attempts,
        )
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_sent(session: Session, message: OutboxMessage, *, now: int, note: str | None) -> bool:
    """Record a delivery (``note``: recipients the server refused, if some were)."""
    return _settle(
        session,
        message,
        status=NotificationStatus.SENT,
        sent_at=now,
        last_error=None if note is None else note[:500],
    )


def mark_retry(session: Session, message: OutboxMessage, *, at: int, error: str) -> bool:
    """Record a failed attempt; the notification is due again at ``at``."""
    return _settle(session, message, next_attempt_at=at, last_error=error[:500])


def mark_failed(session: Session, message: OutboxMessage, *, error: str) -> bool:
    """Give up on a notification (permanent rejection, or out of attempts)."""
    return _settle(session, message, status=NotificationStatus.FAILED, last_error=error[:500])


def notifications(
    session: Session,
    *,
    status: NotificationStatus | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[NotificationRow]:
    """Notifications newest first, optionally of one status or kind (admin view, tests)."""
    query = select(NotificationRow).order_by(NotificationRow.id.desc())
    if status is not None:
        query = query.where(NotificationRow.status == status)
    if kind is not None:
        query = query.where(NotificationRow.kind == kind)
    return session.scalars(query.limit(limit).offset(offset)).all()


def requeue_failed(session: Session, notification_id: int, *, now: int) -> NotificationRow | None:
    """Put a failed notification back in the queue with fresh attempts (an operator's retry).

    Returns the row, or ``None`` when there is no such notification or it has not failed.
    """
    row = session.get(NotificationRow, notification_id, with_for_update=True)
    if row is None or row.status is not NotificationStatus.FAILED:
        return None
    row.status = NotificationStatus.QUEUED
    row.attempts = 0
    row.next_attempt_at = now
    session.flush()
    return row
