"""The subscriptions service a route depends on, as an ``Annotated`` alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.http.deps import provided
from cloud.subscriptions.charging import RenewalCharger
from cloud.subscriptions.checkout import Checkout
from cloud.subscriptions.service import SubscriptionService

__all__ = ["ChargerDep", "CheckoutDep", "SubscriptionsDep"]

SubscriptionsDep = Annotated[SubscriptionService, Depends(provided(SubscriptionService))]


def _charger(service: SubscriptionsDep) -> RenewalCharger:
    return RenewalCharger(service)


ChargerDep = Annotated[RenewalCharger, Depends(_charger)]
"""Renewal orders: an operator's "bill now" (the renewal job holds its own)."""


def _checkout(service: SubscriptionsDep) -> Checkout:
    return Checkout(service)


CheckoutDep = Annotated[Checkout, Depends(_checkout)]
"""One checkout for several installations."""
