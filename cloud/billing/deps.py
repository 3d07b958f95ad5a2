"""The billing service a route depends on, as an ``Annotated`` alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.billing.orders import Billing
from cloud.http.deps import provided

__all__ = ["BillingDep"]

BillingDep = Annotated[Billing, Depends(provided(Billing))]
