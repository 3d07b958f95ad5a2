"""Orders: history and detail, checkout by card, cancel, void and refund.

Orders are placed by the subscription routes (:meth:`cloud.billing.orders.Billing.place_order`);
here they are searched, paid, cancelled and reversed. Partners and owners see
only the orders of their installations (an order out of scope is a 404, like
one that does not exist); void and refund need ``refunds`` (cs_admin, admin).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.billing import repository as repo
from cloud.billing.deps import BillingDep
from cloud.billing.errors import PaymentProviderError, UnknownOrder
from cloud.billing.orders import OrderResult
from cloud.billing.refunds import Reversal
from cloud.billing.rules import MAX_ORDER_CENTS, OrderKind, OrderStatus, PayWith, TxnType
from cloud.billing.tables import OrderRow, RefundRetryRow, TransactionRow
from cloud.database import Store
from cloud.devices.access import ensure_installation_access, visible_installation_ids
from cloud.errors import CloudError, UnknownInstallation
from cloud.http.deps import ClockDep, StoreDep
from cloud.http.errors import documented, http_error
from cloud.http.inputs import StrictBody
from cloud.http.schemas import ID_PATTERN

__all__ = ["router"]

router = APIRouter(prefix="/orders", tags=["orders"])

OrderId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Reader = Annotated[Principal, Depends(require(Permission.ORDERS_READ))]
Writer = Annotated[Principal, Depends(require(Permission.ORDERS_WRITE))]
Refunder = Annotated[Principal, Depends(require(Permission.REFUNDS))]
_MAX_OFFSET = 2**31 - 1
_NOT_FOUND = {404: "unknown order (or not one of yours)"}


class PayIn(StrictBody):
    card_token: str = Field(min_length=1, max_length=256, description="sandbox: a test card number")


class VoidIn(StrictBody):
    amount_cents: int | None = Field(
        default=None, ge=1, le=MAX_ORDER_CENTS, description="if given, must be the whole charge"
    )


class RefundIn(StrictBody):
    amount_cents: int | None = Field(
        default=None, ge=1, le=MAX_ORDER_CENTS, description="default: all that is left"
    )


class OrderResultOut(BaseModel):
    order_id: int
    number: str
    status: OrderStatus
    amount_cents: int


class LineOut(BaseModel):
    product_code: str
    description: str
    months: int
    amount_cents: int


class RetryOut(BaseModel):
    attempts: int
    next_attempt_at: int | None
    last_error: str | None
    exhausted_at: int | None
    resolved_at: int | None


class TransactionOut(BaseModel):
    id: int
    type: TxnType
    status: OrderStatus
    amount_cents: int
    parent_id: int | None
    provider: str
    provider_charge_id: str | None
    settled: bool
    error: str | None
    created_at: int
    updated_at: int
    retry: RetryOut | None = None


class OrderOut(BaseModel):
    id: int
    number: str
    type: OrderKind
    installation_id: str
    buyer_user_id: int | None
    status: OrderStatus
    pay_with: PayWith
    amount_cents: int
    currency: str
    created_at: int
    updated_at: int


class OrderDetail(OrderOut):
    notify: list[str]
    lines: list[LineOut]
    transactions: list[TransactionOut]


class ReversalOut(BaseModel):
    order_id: int
    transaction_id: int
    type: TxnType
    status: OrderStatus
    amount_cents: int
    retry_at: int | None = Field(description="a failed refund is retried daily from then")


def _error(exc: Exception) -> HTTPException:
    if isinstance(exc, PaymentProviderError):
        return HTTPException(status.HTTP_502_BAD_GATEWAY, detail=f"payment provider: {exc}")
    assert isinstance(exc, CloudError)
    return http_error(exc)


def _order_out(row: OrderRow) -> OrderOut:
    return OrderOut(
        id=row.id,
        number=row.number,
        type=row.kind,
        installation_id=row.installation_id,
        buyer_user_id=row.buyer_user_id,
        status=row.status,
        pay_with=row.pay_with,
        amount_cents=row.amount_cents,
        currency=row.currency,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _txn_out(row: TransactionRow, retry: RefundRetryRow | None) -> TransactionOut:
    return TransactionOut(
        id=row.id,
        type=row.type,
        status=row.status,
        amount_cents=row.amount_cents,
        parent_id=row.parent_id,
        provider=row.provider,
        provider_charge_id=row.provider_charge_id,
        settled=row.settled,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        retry=None
        if retry is None
        else RetryOut(
            attempts=retry.attempts,
            next_attempt_at=retry.next_attempt_at,
            last_error=retry.last_error,
            exhausted_at=retry.exhausted_at,
            resolved_at=retry.resolved_at,
        ),
    )


def _in_scope(store: Store, principal: Principal, order_id: int, *, write: bool) -> OrderDetail:
    """The order if ``principal`` may see it (``write``: change it); else UnknownOrder."""
    with store.transaction() as tx:
        row = repo.get_order(tx, order_id)
        if row is None:
            raise UnknownOrder(f"no order {order_id}")
        try:
            ensure_installation_access(tx, principal, row.installation_id, write=write)
        except UnknownInstallation:
            raise UnknownOrder(f"no order {order_id}") from None
        txns = repo.transactions_of(tx, order_id)
        retries = repo.retries_of(tx, [t.id for t in txns])
        lines = [
            LineOut(
                product_code=line.product_code,
                description=line.description,
                months=line.months,
                amount_cents=line.amount_cents,
            )
            for line in repo.lines_of(tx, order_id)
        ]
        return OrderDetail(
            **_order_out(row).model_dump(),
            notify=list(row.notify),
            lines=lines,
            transactions=[_txn_out(t, retries.get(t.id)) for t in txns],
        )


def _result_out(result: OrderResult) -> OrderResultOut:
    return OrderResultOut(
        order_id=result.order_id,
        number=result.number,
        status=result.status,
        amount_cents=result.amount_cents,
    )


def _reversal_out(result: Reversal) -> ReversalOut:
    return ReversalOut(
        order_id=result.order_id,
        transaction_id=result.transaction_id,
        type=result.type,
        status=result.status,
        amount_cents=result.amount_cents,
        retry_at=result.retry_at,
    )


@router.get("", responses=documented({404: "unknown installation (or not one of yours)"}))
def list_orders(
    principal: Reader,
    store: StoreDep,
    type: OrderKind | None = Query(default=None, description="purchase, renewal, reactivation"),
    status: OrderStatus | None = Query(default=None, description="e.g. 'Time out'"),
    number: str | None = Query(default=None, max_length=32, pattern=r"^[A-Za-z0-9-]+$"),
    installation_id: str | None = Query(default=None, pattern=ID_PATTERN),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=_MAX_OFFSET),
) -> list[OrderOut]:
    """The order history, newest first; partners and owners see their installations' only."""
    query = repo.OrderQuery(
        kind=type,
        status=status,
        number=number,
        installation_id=installation_id,
        limit=limit,
        offset=offset,
    )
    try:
        with store.transaction() as tx:
            if installation_id is not None:
                ensure_installation_access(tx, principal, installation_id, write=False)
            visible = visible_installation_ids(tx, principal)
            return [_order_out(r) for r in repo.search_orders(tx, query, visible=visible)]
    except CloudError as exc:
        raise _error(exc) from exc


@router.get("/{order_id}", responses=documented(_NOT_FOUND))
def get_order(principal: Reader, store: StoreDep, order_id: OrderId) -> OrderDetail:
    """One order with its lines and transactions (charges, voids, refunds and their retries)."""
    try:
        return _in_scope(store, principal, order_id, write=False)
    except CloudError as exc:
        raise _error(exc) from exc


_PAY_ERRORS = {
    **_NOT_FOUND,
    409: "not payable now: paid, cancelled, invoiced, or a payment is running",
    502: "the payment provider failed",
}


@router.post("/{order_id}/pay", responses=documented(_PAY_ERRORS, body=True))
async def pay_order(
    body: PayIn,
    principal: Writer,
    store: StoreDep,
    billing: BillingDep,
    clock: ClockDep,
    order_id: OrderId,
) -> OrderResultOut:
    """Checkout: charge a card for an order in ``Processing`` (or ``Failed``, to pay again)."""
    try:
        await asyncio.to_thread(_in_scope, store, principal, order_id, write=True)
        result = await billing.pay(
            order_id, card_token=body.card_token, actor=principal, now=clock()
        )
    except (CloudError, PaymentProviderError) as exc:
        raise _error(exc) from exc
    return _result_out(result)


@router.post(
    "/{order_id}/cancel",
    responses=documented({**_NOT_FOUND, 409: "paid or being paid: void or refund instead"}),
)
async def cancel_order(
    principal: Writer, store: StoreDep, billing: BillingDep, clock: ClockDep, order_id: OrderId
) -> OrderResultOut:
    """Cancel an order nobody paid; it becomes ``Cancel``."""
    try:
        await asyncio.to_thread(_in_scope, store, principal, order_id, write=True)
        result = await billing.cancel(order_id, actor=principal, now=clock())
    except CloudError as exc:
        raise _error(exc) from exc
    return _result_out(result)


_REVERSAL_ERRORS = {
    **_NOT_FOUND,
    409: "no charge to reverse, or settled (refund instead) / not settled (void instead)",
    502: "the payment provider failed (a void changed nothing; try again)",
}


@router.post("/{order_id}/void", responses=documented(_REVERSAL_ERRORS, body=True))
async def void_order(
    principal: Refunder,
    store: StoreDep,
    billing: BillingDep,
    clock: ClockDep,
    order_id: OrderId,
    body: VoidIn | None = None,
) -> ReversalOut:
    """Void the order's whole unsettled charge (no partial void); the order becomes ``Cancel``."""
    amount = None if body is None else body.amount_cents
    try:
        await asyncio.to_thread(_in_scope, store, principal, order_id, write=True)
        result = await billing.refunds.void(
            order_id, amount_cents=amount, actor=principal, now=clock()
        )
    except (CloudError, PaymentProviderError) as exc:
        raise _error(exc) from exc
    return _reversal_out(result)


@router.post("/{order_id}/refund", responses=documented(_REVERSAL_ERRORS, body=True))
async def refund_order(
    principal: Refunder,
    store: StoreDep,
    billing: BillingDep,
    clock: ClockDep,
    order_id: OrderId,
    body: RefundIn | None = None,
) -> ReversalOut:
    """Refund part or all (default) of a settled charge; a provider failure is retried daily."""
    amount = None if body is None else body.amount_cents
    try:
        await asyncio.to_thread(_in_scope, store, principal, order_id, write=True)
        result = await billing.refunds.refund(
            order_id, amount_cents=amount, actor=principal, now=clock()
        )
    except (CloudError, PaymentProviderError) as exc:
        raise _error(exc) from exc
    return _reversal_out(result)
