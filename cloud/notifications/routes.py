"""The e-mail outbox for operators: what is queued, sent or failed, and retrying a failed mail.

Listing needs ``audit:read`` (it shows who was mailed what: cs_admin, admin);
retrying needs ``jobs:run`` (admin). Bodies and attachments are not shown.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.errors import Conflict, NotFound
from cloud.http.deps import ClockDep, StoreDep
from cloud.http.errors import documented, http_error
from cloud.notifications.tables import (
    NotificationRow,
    NotificationStatus,
    notifications,
    requeue_failed,
)

__all__ = ["router"]

router = APIRouter(prefix="/notifications", tags=["notifications"])


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


def _out(row: NotificationRow) -> NotificationOut:
    return NotificationOut(
        id=row.id,
        kind=row.kind,
        to=list(row.recipients),
        subject=row.subject,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        sent_at=row.sent_at,
        last_error=row.last_error,
    )


@router.get("")
async def list_notifications(
    principal: Annotated[Principal, Depends(require(Permission.AUDIT_READ))],
    store: StoreDep,
    status: NotificationStatus | None = Query(default=None, description="queued, sent, failed"),
    kind: str | None = Query(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
) -> list[NotificationOut]:
    """Notifications newest first, optionally of one status or kind."""

    def load() -> list[NotificationOut]:
        with store.transaction() as tx:
            rows = notifications(tx, status=status, kind=kind, limit=limit, offset=offset)
            return [_out(row) for row in rows]

    return await asyncio.to_thread(load)


@router.post(
    "/{notification_id}/retry",
    responses=documented({404: "unknown notification", 409: "the notification has not failed"}),
)
async def retry_notification(
    principal: Annotated[Principal, Depends(require(Permission.JOBS_RUN))],
    store: StoreDep,
    clock: ClockDep,
    notification_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
) -> NotificationOut:
    """Queue a failed notification again (e.g. after fixing the mail server settings)."""
    now = clock()

    def requeue() -> NotificationOut:
        with store.transaction() as tx:
            row = requeue_failed(tx, notification_id, now=now)
            if row is None:
                if tx.get(NotificationRow, notification_id) is None:
                    raise NotFound(f"no notification {notification_id}")
                raise Conflict(f"notification {notification_id} has not failed: nothing to retry")
            audit.record(
                tx,
                actor=principal,
                action="notification.retry",
                object_type="notification",
                object_id=str(row.id),
                before={"status": "failed", "last_error": row.last_error},
                after={"status": "queued"},
                now=now,
            )
            return _out(row)

    try:
        return await asyncio.to_thread(requeue)
    except (NotFound, Conflict) as exc:
        raise http_error(exc) from exc
