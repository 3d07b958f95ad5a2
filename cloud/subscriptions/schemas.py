"""HTTP bodies of subscriptions and the test clock (pydantic: the edge)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from cloud.http.inputs import IsoDay, StrictBody
from cloud.http.schemas import DEVICE_ID_PATTERN, ID_PATTERN, NAME_PATTERN

__all__ = [
    "AdvanceIn",
    "BilledNowOut",
    "BillingDateIn",
    "BillingDateOut",
    "CamerasIn",
    "CamerasPlanIn",
    "CardIn",
    "CheckoutIn",
    "CheckoutItemIn",
    "CheckoutOut",
    "PlanChangeIn",
    "PlanQuoteOut",
    "PurchaseIn",
    "ReactivateIn",
    "RenewIn",
    "UsersIn",
]


class PurchaseIn(StrictBody):
    installation_id: str = Field(pattern=ID_PATTERN)
    product: str = Field(min_length=1, max_length=32, description="a catalogue code")
    term_months: int | None = Field(default=None, ge=1, le=1200)
    pay_with: Literal["card", "invoice"] | None = None
    card_token: str | None = Field(default=None, min_length=1, max_length=256)
    start: IsoDay | None = Field(default=None, description="UTC day it takes effect (today+)")
    purchaser_id: int | None = Field(default=None, ge=1, description="admin keys only")
    device_id: str | None = Field(
        default=None,
        pattern=DEVICE_ID_PATTERN,
        description="per-device products (a camera's plan): only this device carries it",
    )
    user_ref: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        description="per-user products: the office user or department it is for",
    )


class RenewIn(StrictBody):
    months: int = Field(ge=-1000, le=1000, description="1-60")
    pay_with: Literal["card", "invoice"] | None = None
    card_token: str | None = Field(default=None, min_length=1, max_length=256)


class ReactivateIn(StrictBody):
    pay_with: Literal["card", "invoice"] | None = None
    card_token: str | None = Field(default=None, min_length=1, max_length=256)


class CardIn(StrictBody):
    card_token: str = Field(min_length=1, max_length=256, description="sandbox: a test card number")


class AdvanceIn(StrictBody):
    days: int = Field(ge=1, le=3660)


class CamerasIn(StrictBody):
    """One plan for all (or the listed) cameras of an installation."""

    installation_id: str = Field(pattern=ID_PATTERN)
    product: str = Field(min_length=1, max_length=32, description="a per-device catalogue code")
    device_ids: list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] | None = Field(
        default=None, max_length=500, description="the cameras; default: every camera"
    )
    pay_with: Literal["card", "invoice"] | None = None
    card_token: str | None = Field(default=None, min_length=1, max_length=256)


class UsersIn(StrictBody):
    """Several office users or departments of a per-user product, added at once."""

    installation_id: str = Field(pattern=ID_PATTERN)
    product: str = Field(
        default="AKV-OFFICE-USER", min_length=1, max_length=32, description="a per-user code"
    )
    user_refs: list[Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]] = (
        Field(min_length=1, max_length=60, description="the users or departments, each once")
    )
    pay_with: Literal["card", "invoice"] | None = None
    card_token: str | None = Field(default=None, min_length=1, max_length=256)


class CamerasPlanIn(CamerasIn):
    """One new plan for all (or the listed) cameras of an installation."""

    product: str = Field(min_length=1, max_length=32, description="the new plan's code")


class PlanChangeIn(StrictBody):
    product: str = Field(min_length=1, max_length=32, description="the new plan's code")
    pay_with: Literal["card", "invoice"] | None = None
    card_token: str | None = Field(default=None, min_length=1, max_length=256)


class PlanQuoteOut(BaseModel):
    """A plan change priced before it is confirmed (see the rounding rule in ``rule``)."""

    subscription_id: str
    from_product: str
    to_product: str
    days_left: int
    ends_at: int
    old_daily_cents: float
    new_daily_cents: float
    difference_cents: int = Field(description="> 0 charged now, < 0 refunded, 0 nothing moves")
    direction: Literal["upgrade", "downgrade", "same-price"]
    currency: str
    rule: str


class BilledNowOut(BaseModel):
    """The current cycle charged now: its renewal order and the subscription after it."""

    order_id: int
    order_status: str = Field(description="Succeed, Failed, Processing (no card), Time out")
    amount_cents: int
    subscription: dict[str, Any]


class BillingDateIn(StrictBody):
    renews_on: IsoDay = Field(description="the new renewal date: the first day of a month (UTC)")


class BillingDateOut(BaseModel):
    """A renewal date moved: the months added (+, paid now) or given up (-, credited)."""

    months: int
    charged_cents: int
    credited_cents: int = Field(description="added to the purchaser's credit")
    order_id: int | None
    order_status: str | None
    subscription: dict[str, Any]


class CheckoutItemIn(StrictBody):
    installation_id: str = Field(pattern=ID_PATTERN)
    product: str = Field(min_length=1, max_length=32, description="a catalogue code")
    term_months: int | None = Field(default=None, ge=1, le=1200)


class CheckoutIn(StrictBody):
    """Several installations (and products for each) bought in one order and one payment."""

    items: list[CheckoutItemIn] = Field(min_length=1, max_length=50)
    pay_with: Literal["card", "invoice"] | None = None
    card_token: str | None = Field(default=None, min_length=1, max_length=256)
    purchaser_id: int | None = Field(default=None, ge=1, description="admin keys only")


class CheckoutOut(BaseModel):
    order_id: int
    order_status: str
    due_now_cents: int
    subscriptions: list[dict[str, Any]]
