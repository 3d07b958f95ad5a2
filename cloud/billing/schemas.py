"""What the order routes take and show (HTTP bodies)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from cloud.billing.rules import MAX_ORDER_CENTS, OrderKind, OrderStatus, PayWith, TxnType
from cloud.http.inputs import StrictBody

__all__ = [
    "LineOut",
    "OrderDetail",
    "OrderOut",
    "OrderResultOut",
    "PayIn",
    "RefundIn",
    "RetryOut",
    "ReversalOut",
    "TransactionOut",
    "VoidIn",
]


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
