"""Tables of the notification outbox: e-mails waiting to be sent.

A notification is written in the transaction of the change that caused it
(:func:`add_notification`), so it exists iff that change committed. Senders
claim due rows with a lease (:func:`claim_due`): the claim moves
``next_attempt_at`` past the lease under a row lock (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers), so
two workers never hold the same row, and a worker that dies mid-send leaves
the row due again once the lease ends.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.database import Base
from cloud.database import enum_column as _enum

__all__ = ["NotificationAttachmentRow", "NotificationRow", "NotificationStatus"]


class NotificationStatus(StrEnum):
    """Where a notification is: waiting (or leased by a sender), delivered, given up."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


class NotificationRow(Base):
    """One e-mail to send; ``dedupe_key`` makes enqueueing it idempotent across workers."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    subject: Mapped[str] = mapped_column(String(998))
    body: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    status: Mapped[NotificationStatus] = mapped_column(
        _enum(NotificationStatus, "notification_status")
    )
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    sent_at: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(String(500))


class NotificationAttachmentRow(Base):
    """A file attached to a notification (an invoice PDF), in order of ``id``."""

    __tablename__ = "notification_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    data: Mapped[bytes] = mapped_column(LargeBinary)
