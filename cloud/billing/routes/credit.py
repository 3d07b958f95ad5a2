"""A purchaser's credit: the balance renewal orders use before charging, and granting it.

A user reads their own credit; staff who may look up accounts read anyone's (another's is a
404 for everyone else); billing staff (``refunds``: cs_admin, admin) grant it, with a reason
that is audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.billing.deps import OrdersDep
from cloud.billing.schemas import CreditIn, CreditOut
from cloud.http.errors import documented

__all__ = ["router"]

router = APIRouter(prefix="/customers", tags=["orders"])

UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Reader = Annotated[Principal, Depends(require(Permission.ORDERS_READ))]
Granter = Annotated[Principal, Depends(require(Permission.REFUNDS))]


@router.get("/{user_id}/credit", responses=documented({404: "unknown user (or not you)"}))
def get_credit(principal: Reader, service: OrdersDep, user_id: UserId) -> CreditOut:
    """The purchaser's credit balance (cents) and ledger, newest first."""
    return service.credit_of(principal, user_id)


@router.post(
    "/{user_id}/credit",
    responses=documented(
        {404: "unknown user"},
        body=True,  # and 422: not a positive amount, or no reason
    ),
)
def grant_credit(
    body: CreditIn, principal: Granter, service: OrdersDep, user_id: UserId
) -> CreditOut:
    """Grant the purchaser credit; their next renewal orders use it before the card."""
    return service.grant_credit(
        principal, user_id, amount_cents=body.amount_cents, reason=body.reason
    )
