"""What the order routes take and show (HTTP bodies)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cloud.accounts.schemas import ContactOut
from cloud.billing.rules import MAX_ORDER_CENTS, OrderKind, OrderStatus, PayWith, TxnType
from cloud.http.inputs import StrictBody

__all__ = [
    "BilledToOut",
    "CreditEntryOut",
    "CreditIn",
    "CreditOut",
    "CustomerActivityOut",
    "CustomerInstallationOut",
    "LineOut",
    "LineReversalOut",
    "OrderDetail",
    "OrderHistoryOut",
    "OrderOut",
    "OrderSummaryOut",
    "OrderResultOut",
    "PayIn",
    "RefundIn",
    "ResendIn",
    "ResendOut",
    "RetryOut",
    "ReversalOptionOut",
    "ReversalOut",
    "TransactionOut",
    "VoidIn",
    "WhyNot",
]

# why an order's money cannot be given back now (the dashboard words each one)
WhyNot = Literal["not_paid", "invoiced", "provider_down", "refunded", "refund_running"]


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


class ResendIn(StrictBody):
    mail: Literal["invoice", "refund"] = Field(
        description="the invoice (a paid or invoiced order) or the mail of its latest refund/void"
    )


class ResendOut(BaseModel):
    order_id: int
    mail: Literal["invoice", "refund"]
    to: list[str]
    resend: int = Field(description="how many times this mail was resent, this one included")


class OrderResultOut(BaseModel):
    order_id: int
    number: str
    status: OrderStatus
    amount_cents: int


class LineOut(BaseModel):
    product_code: str
    description: str
    months: int
    quantity: int
    unit_cents: int
    amount_cents: int = Field(description="quantity × unit_cents")
    id: int | None = None
    installation_id: str | None = Field(default=None, description="the installation it is for")
    reversed_at: int | None = Field(default=None, description="when this line was given back")


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
    card_last4: str | None = Field(default=None, description="a charge's card, last 4 digits")
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
    hidden_at: int | None = Field(
        default=None, description="when the customer hid it from their history (staff see it)"
    )
    installation_ids: list[str] = Field(
        default_factory=list,
        description="every installation it is for that the caller may see, in line order "
        "(installation_id is the one it is filed under)",
    )
    other_installations: int = Field(
        default=0, description="how many more installations it is for, out of the caller's scope"
    )


class OrderDetail(OrderOut):
    notify: list[str]
    lines: list[LineOut] = Field(description="the lines of installations the caller may see")
    hidden_lines: int = Field(
        default=0,
        description="lines for installations out of the caller's scope: not listed, "
        "but counted in amount_cents",
    )
    hidden_cents: int = Field(default=0, description="what the hidden lines amount to")
    transactions: list[TransactionOut]


class ReversalOut(BaseModel):
    order_id: int
    transaction_id: int
    type: TxnType
    status: OrderStatus
    amount_cents: int
    retry_at: int | None = Field(description="a failed refund is retried daily from then")


class LineReversalOut(BaseModel):
    """One order line given back: refunded from the card charge, or credited on the invoice."""

    order_id: int
    line_id: int
    amount_cents: int
    refund: ReversalOut | None = Field(description="the refund; null when invoiced")
    credited_cents: int = Field(
        default=0, description="given back as the purchaser's credit (what credit had paid)"
    )


class CreditIn(StrictBody):
    amount_cents: int = Field(ge=1, le=MAX_ORDER_CENTS, description="credit to grant, in cents")
    reason: str = Field(min_length=1, max_length=200, description="why (audited)")


class CreditEntryOut(BaseModel):
    amount_cents: int = Field(description="+ granted or given back, - used by an order")
    entry: Literal["grant", "use", "restore"]
    reason: str
    order_id: int | None
    actor: str
    created_at: int


class CreditOut(BaseModel):
    """A purchaser's credit: the balance renewal orders use before the card, and its ledger."""

    user_id: int
    balance_cents: int
    currency: str
    entries: list[CreditEntryOut] = Field(description="newest first, at most 100")


class OrderSummaryOut(OrderOut):
    """A row of the order history as the dashboard lists it."""

    customer_name: str | None
    customer_email: str | None
    installation_name: str | None
    installation_names: list[str] = Field(
        default_factory=list,
        description="names (or ids) of installation_ids, the installations the caller may see",
    )
    services: list[str]
    last_error: str | None = Field(description="why the latest failed charge failed")


class OrderHistoryOut(BaseModel):
    """One page of the order history, how many orders match in all, and the service codes
    (only when asked for: empty otherwise)."""

    items: list[OrderSummaryOut]
    total: int
    services: list[str]


class ReversalOptionOut(BaseModel):
    """What giving an order's money back would do now: void, refund, or nothing (and why)."""

    action: Literal["void", "refund"] | None
    settled: bool | None
    charge_cents: int
    refunded_cents: int
    left_cents: int
    why_not: WhyNot | None = None


class BilledToOut(BaseModel):
    """Who pays for an installation: the purchaser of its latest order, and their company."""

    contact: ContactOut
    company_name: str | None
    order_number: str


class CustomerInstallationOut(BaseModel):
    """An installation of a customer's, with who works on it and whom support may talk to."""

    id: str
    name: str
    owner_user_id: int | None
    integrator_company_ids: list[int]
    contacts: list[ContactOut] = Field(description="authorised contacts: never vendor staff")
    billed_to: BilledToOut | None = Field(
        default=None,
        description="without authorised contacts: who is billed for it (its latest purchaser)",
    )


class CustomerActivityOut(BaseModel):
    """A customer's installations and their latest orders (the customer profile's)."""

    installations: list[CustomerInstallationOut]
    orders: list[OrderSummaryOut]
    orders_total: int
