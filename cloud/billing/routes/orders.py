"""Orders: history and detail, checkout by card, cancel, void and refund.

Orders are placed by the subscription routes (:meth:`cloud.billing.orders.Billing.place_order`);
here they are searched, paid, cancelled and reversed. Partners and owners see
only the orders of their installations (an order out of scope is a 404, like
one that does not exist); void and refund need ``refunds`` (cs_admin, admin).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.billing.deps import OrdersDep
from cloud.billing.rules import OrderKind, OrderStatus
from cloud.billing.schemas import (
    CustomerActivityOut,
    LineReversalOut,
    OrderDetail,
    OrderOut,
    OrderResultOut,
    PayIn,
    RefundIn,
    ResendIn,
    ResendOut,
    ReversalOut,
    VoidIn,
)
from cloud.http.errors import documented
from cloud.http.schemas import ID_PATTERN

__all__ = ["router"]

router = APIRouter(prefix="/orders", tags=["orders"])

OrderId = Annotated[int, Path(ge=1, le=2**31 - 1)]
LineId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Reader = Annotated[Principal, Depends(require(Permission.ORDERS_READ))]
Writer = Annotated[Principal, Depends(require(Permission.ORDERS_WRITE))]
Refunder = Annotated[Principal, Depends(require(Permission.REFUNDS))]
# staff who look up accounts and their contacts (support, cs_admin, admin) resend mails
Staff = Annotated[Principal, Depends(require(Permission.ACCOUNTS_READ))]
_MAX_OFFSET = 2**31 - 1
_NOT_FOUND = {404: "unknown order (or not one of yours)"}


@router.get("", responses=documented({404: "unknown installation (or not one of yours)"}))
def list_orders(
    principal: Reader,
    service: OrdersDep,
    type: OrderKind | None = Query(
        default=None, description="purchase, renewal, reactivation, repair"
    ),
    status: OrderStatus | None = Query(default=None, description="e.g. 'Time out'"),
    number: str | None = Query(default=None, max_length=32, pattern=r"^[A-Za-z0-9-]+$"),
    installation_id: str | None = Query(default=None, pattern=ID_PATTERN),
    customer: str | None = Query(
        default=None,
        min_length=1,
        max_length=200,
        description="part of the buyer's name or e-mail, company name, installation id or name",
    ),
    customer_user_id: int | None = Query(
        default=None, ge=1, le=2**31 - 1, description="placed by the user or for their installation"
    ),
    customer_company_id: int | None = Query(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="placed by the company's users or for an installation it integrates",
    ),
    hidden: bool = Query(
        default=False, description="only the orders hidden from the customer's history"
    ),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=_MAX_OFFSET),
) -> list[OrderOut]:
    """The order history, newest first; partners and owners see their installations' only,
    without the orders they hid (staff see every order; ``hidden_at`` marks the hidden)."""
    return service.search(
        principal,
        kind=type,
        status=status,
        number=number,
        installation_id=installation_id,
        limit=limit,
        offset=offset,
        customer=customer,
        customer_user_id=customer_user_id,
        customer_company_id=customer_company_id,
        show_hidden=hidden,
    )


@router.get(
    "/customer-activity",
    responses=documented({404: "unknown installation"}),
)
def customer_activity(
    principal: Staff,
    service: OrdersDep,
    user_id: int | None = Query(default=None, ge=1, le=2**31 - 1, description="an owner"),
    company_id: int | None = Query(default=None, ge=1, le=2**31 - 1, description="a partner"),
    installation_id: str | None = Query(default=None, pattern=ID_PATTERN),
    order_limit: int = Query(default=10, ge=0, le=100),
) -> CustomerActivityOut:
    """A customer's installations with their authorised contacts (and phone numbers), who
    is billed for an installation nobody is authorised for, and the latest orders (staff)."""
    return service.customer_activity(
        principal,
        user_id=user_id,
        company_id=company_id,
        installation_id=installation_id,
        order_limit=order_limit,
    )


@router.get("/{order_id}", responses=documented(_NOT_FOUND))
def get_order(principal: Reader, service: OrdersDep, order_id: OrderId) -> OrderDetail:
    """One order with its lines and transactions (charges, voids, refunds and their retries)."""
    return service.detail(principal, order_id)


# an order for several installations is changed only by who may change every one of them
_PART = "the order is also for installations you do not manage"
_HIDE_ERRORS = {**_NOT_FOUND, 403: f"staff: they always see every order; or {_PART}"}


@router.post("/{order_id}/hide", responses=documented(_HIDE_ERRORS))
def hide_order(principal: Writer, service: OrdersDep, order_id: OrderId) -> OrderOut:
    """Hide the order from the customer's own history (the books and staff still see it)."""
    return service.set_hidden(principal, order_id, hidden=True)


@router.post("/{order_id}/unhide", responses=documented(_HIDE_ERRORS))
def unhide_order(principal: Writer, service: OrdersDep, order_id: OrderId) -> OrderOut:
    """Show a hidden order in the customer's history again."""
    return service.set_hidden(principal, order_id, hidden=False)


@router.post(
    "/{order_id}/resend",
    responses=documented(
        {
            **_NOT_FOUND,
            403: "not staff",
            409: "no invoice yet, no void or refund done, or nobody to send it to",
        },
        body=True,
    ),
)
def resend_mail(
    body: ResendIn, principal: Staff, service: OrdersDep, order_id: OrderId
) -> ResendOut:
    """Queue the order's invoice or refund mail again to its notify list (staff; audited)."""
    return service.resend(principal, order_id, mail=body.mail)


_PAY_ERRORS = {
    **_NOT_FOUND,
    403: _PART,
    409: "not payable now: paid, cancelled, invoiced, or a payment is running",
    502: "the payment provider failed",
}


@router.post("/{order_id}/pay", responses=documented(_PAY_ERRORS, body=True))
async def pay_order(
    body: PayIn, principal: Writer, service: OrdersDep, order_id: OrderId
) -> OrderResultOut:
    """Checkout: charge a card for an order in ``Processing`` (or ``Failed``, to pay again)."""
    return await service.pay(principal, order_id, card_token=body.card_token)


@router.post(
    "/{order_id}/cancel",
    responses=documented(
        {**_NOT_FOUND, 403: _PART, 409: "paid or being paid: void or refund instead"}
    ),
)
async def cancel_order(principal: Writer, service: OrdersDep, order_id: OrderId) -> OrderResultOut:
    """Cancel an order nobody paid; it becomes ``Cancel``."""
    return await service.cancel(principal, order_id)


_REVERSAL_ERRORS = {
    **_NOT_FOUND,
    409: "no charge to reverse, or settled (refund instead) / not settled (void instead)",
    502: "the payment provider failed (a void changed nothing; try again)",
}


@router.post("/{order_id}/void", responses=documented(_REVERSAL_ERRORS, body=True))
async def void_order(
    principal: Refunder, service: OrdersDep, order_id: OrderId, body: VoidIn | None = None
) -> ReversalOut:
    """Void the order's whole unsettled charge (no partial void); the order becomes ``Cancel``."""
    amount = None if body is None else body.amount_cents
    return await service.void(principal, order_id, amount_cents=amount)


@router.post("/{order_id}/refund", responses=documented(_REVERSAL_ERRORS, body=True))
async def refund_order(
    principal: Refunder, service: OrdersDep, order_id: OrderId, body: RefundIn | None = None
) -> ReversalOut:
    """Refund part or all (default) of a settled charge; a provider failure is retried daily."""
    amount = None if body is None else body.amount_cents
    return await service.refund(principal, order_id, amount_cents=amount)


_LINE_ERRORS = {
    404: "unknown order or line (or not one of yours)",
    409: "not paid, the line was given back already, or the charge has not settled (void the "
    "whole order, or refund the line once settled)",
    502: "the payment provider failed (nothing changed; try again)",
}


@router.post("/{order_id}/lines/{line_id}/refund", responses=documented(_LINE_ERRORS))
async def refund_order_line(
    principal: Refunder, service: OrdersDep, order_id: OrderId, line_id: LineId
) -> LineReversalOut:
    """Give back one line of a paid order (a consolidated renewal's one subscription): its
    amount is refunded from the settled charge, or credited on the invoice, and what it bought
    is taken back; the other lines stay paid."""
    return await service.reverse_line(principal, order_id, line_id)
