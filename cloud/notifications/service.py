"""The e-mail outbox as operators see it: list notifications, retry a failed one.

One :class:`NotificationService` per app (built in :func:`cloud.app.create_app`);
each method is one transaction. Errors are the error tree's; the app's one
handler answers them.
"""

from __future__ import annotations

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.database import Store
from cloud.errors import N_, Conflict, NotFound
from cloud.notifications.queries import notifications, requeue_failed
from cloud.notifications.schemas import NotificationOut
from cloud.notifications.tables import NotificationRow, NotificationStatus
from common.clock import Clock

__all__ = ["NotificationService"]


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


class NotificationService:
    """Notifications newest first, and an operator's retry of a failed one (audited)."""

    def __init__(self, store: Store, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def find(
        self, *, status: NotificationStatus | None, kind: str | None, limit: int, offset: int
    ) -> list[NotificationOut]:
        with self._store.transaction() as tx:
            rows = notifications(tx, status=status, kind=kind, limit=limit, offset=offset)
            return [_out(row) for row in rows]

    def retry(self, principal: Principal, notification_id: int) -> NotificationOut:
        """Queue a failed notification again, with fresh attempts.

        Raises:
            NotFound: no such notification.
            Conflict: it has not failed.
        """
        now = self._clock()
        with self._store.transaction() as tx:
            row = requeue_failed(tx, notification_id, now=now)
            if row is None:
                if tx.get(NotificationRow, notification_id) is None:
                    raise NotFound(f"no notification {notification_id}")
                raise Conflict(
                    N_("notification %(id)s has not failed: nothing to retry"), id=notification_id
                )
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
