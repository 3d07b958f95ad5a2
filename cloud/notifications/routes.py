"""The e-mail outbox for operators: what is queued, sent or failed, and retrying a failed mail.

Listing needs ``audit:read`` (it shows who was mailed what: cs_admin, admin);
retrying needs ``jobs:run`` (admin). Bodies and attachments are not shown.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.http.errors import documented
from cloud.notifications.deps import NotificationsDep
from cloud.notifications.schemas import NotificationOut, NotificationStatus

__all__ = ["router"]

router = APIRouter(prefix="/notifications", tags=["notifications"])


@router.get("")
def list_notifications(
    principal: Annotated[Principal, Depends(require(Permission.AUDIT_READ))],
    service: NotificationsDep,
    status: NotificationStatus | None = Query(default=None, description="queued, sent, failed"),
    kind: str | None = Query(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
) -> list[NotificationOut]:
    """Notifications newest first, optionally of one status or kind."""
    return service.find(status=status, kind=kind, limit=limit, offset=offset)


@router.post(
    "/{notification_id}/retry",
    responses=documented({404: "unknown notification", 409: "the notification has not failed"}),
)
def retry_notification(
    principal: Annotated[Principal, Depends(require(Permission.JOBS_RUN))],
    service: NotificationsDep,
    notification_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
) -> NotificationOut:
    """Queue a failed notification again (e.g. after fixing the mail server settings)."""
    return service.retry(principal, notification_id)
