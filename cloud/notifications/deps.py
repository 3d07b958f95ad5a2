"""The notifications service a route depends on, as an ``Annotated`` alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.http.deps import provided
from cloud.notifications.service import NotificationService

__all__ = ["NotificationsDep"]

NotificationsDep = Annotated[NotificationService, Depends(provided(NotificationService))]
