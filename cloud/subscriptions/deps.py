"""The subscriptions service a route depends on, as an ``Annotated`` alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.http.deps import provided
from cloud.subscriptions.service import SubscriptionService

__all__ = ["SubscriptionsDep"]

SubscriptionsDep = Annotated[SubscriptionService, Depends(provided(SubscriptionService))]
