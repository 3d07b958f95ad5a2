"""What the outbox routes show (HTTP bodies); bodies and attachments are never shown."""

from __future__ import annotations

from pydantic import BaseModel

from cloud.notifications.tables import NotificationStatus

__all__ = ["NotificationOut", "NotificationStatus"]


class NotificationOut(BaseModel):
    id: int
    kind: str
    to: list[str]
    subject: str
    status: NotificationStatus
    attempts: int
    created_at: int
    next_attempt_at: int
    sent_at: int | None
    last_error: str | None
