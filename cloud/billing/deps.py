"""The billing service a route depends on, as an ``Annotated`` alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.billing.orders import Billing
from cloud.billing.service import OrderService
from cloud.http.deps import provided

__all__ = ["BillingDep", "OrdersDep"]

BillingDep = Annotated[Billing, Depends(provided(Billing))]
OrdersDep = Annotated[OrderService, Depends(provided(OrderService))]
