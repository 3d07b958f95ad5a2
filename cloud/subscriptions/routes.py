"""Subscriptions: catalogue, purchase, renewal, deactivate/reactivate; the test clock.

Every input is checked before anything is stored: an unknown product, a term
not offered, a renewal over 60 months, a start in the past, a blacklisted
buyer or a declined card answer 4xx and leave the store as it was.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, status

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.errors import NotFound
from cloud.http.deps import ClockDep, SettingsDep, provided
from cloud.http.errors import documented
from cloud.http.schemas import ID_PATTERN
from cloud.jobs import JobRunner
from cloud.subscriptions.changes import RULE, PlanChangeResult
from cloud.subscriptions.deps import ChargerDep, CheckoutDep, SubscriptionsDep
from cloud.subscriptions.rules.catalogue import CATALOGUE, CURRENCY
from cloud.subscriptions.rules.plans import PlanChangeQuote
from cloud.subscriptions.schemas import (
    AdvanceIn,
    BilledNowOut,
    BillingDateIn,
    BillingDateOut,
    CamerasIn,
    CamerasPlanIn,
    CardIn,
    CheckoutIn,
    CheckoutOut,
    PlanChangeIn,
    PlanQuoteOut,
    PurchaseIn,
    ReactivateIn,
    RenewIn,
    UsersIn,
)
from cloud.subscriptions.views import PurchaseResult

__all__ = ["router"]

router = APIRouter(tags=["subscriptions"])

_SUB_ID = r"^sub_[0-9a-f]{16}$"
SubId = Path(pattern=_SUB_ID)
Reader = Annotated[Principal, Depends(require(Permission.SUBSCRIPTIONS_READ))]
Writer = Annotated[Principal, Depends(require(Permission.SUBSCRIPTIONS_WRITE))]
Operator = Annotated[Principal, Depends(require(Permission.REFUNDS))]  # billing staff
_ERRORS = documented(
    {
        402: "the card was declined: nothing was bought",
        403: "the role may not, the buyer is blacklisted, or not the purchaser's card to set",
        404: "unknown installation or subscription",
        409: "the installation has this service already, or the state forbids it",
    },
    body=True,
)


Service = SubscriptionsDep


def _out(result: PurchaseResult) -> dict[str, Any]:
    return {
        "subscription": result.subscription,
        "order_id": result.order_id,
        "order_status": result.order_status,
        "due_now_cents": result.due_now_cents,
    }


def _epoch(day: date | None) -> int | None:
    if day is None:
        return None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@router.get("/subscriptions/catalogue")
def catalogue(principal: Reader) -> list[dict[str, Any]]:
    """Every product: code, feature devices enforce, parameters, terms and prices (cents)."""
    return [p.to_json() for p in CATALOGUE.values()]


@router.post("/subscriptions", status_code=status.HTTP_201_CREATED, responses=_ERRORS)
async def purchase(body: PurchaseIn, principal: Writer, service: Service) -> dict[str, Any]:
    """Buy a service for an installation (card: now or at checkout; invoice: on save)."""
    result = await service.purchase(
        principal,
        installation_id=body.installation_id,
        product_code=body.product,
        term_months=body.term_months,
        pay_with=body.pay_with,
        card_token=body.card_token,
        start=_epoch(body.start),
        purchaser_id=body.purchaser_id,
        device_id=body.device_id,
        user_ref=body.user_ref,
    )
    return _out(result)


@router.post("/subscriptions/cameras", status_code=status.HTTP_201_CREATED, responses=_ERRORS)
async def buy_for_cameras(body: CamerasIn, principal: Writer, service: Service) -> dict[str, Any]:
    """Apply one per-device plan to all (or the listed) cameras: a subscription and an
    order per camera; each camera's token carries its own plan."""
    results = await service.buy_for_cameras(
        principal,
        installation_id=body.installation_id,
        product_code=body.product,
        device_ids=body.device_ids,
        pay_with=body.pay_with,
        card_token=body.card_token,
    )
    return {"bought": [_out(r) for r in results]}


@router.post("/subscriptions/users", status_code=status.HTTP_201_CREATED, responses=_ERRORS)
async def buy_for_users(body: UsersIn, principal: Writer, service: Service) -> dict[str, Any]:
    """Add several office users or departments at once: a per-user subscription and an
    order each. All are checked first (a name twice, one who has it, over the maximum):
    one refused name refuses them all before any order."""
    results = await service.buy_for_users(
        principal,
        installation_id=body.installation_id,
        product_code=body.product,
        user_refs=body.user_refs,
        pay_with=body.pay_with,
        card_token=body.card_token,
    )
    return {"bought": [_out(r) for r in results]}


@router.post("/subscriptions/cameras/plan-change", responses=_ERRORS)
async def change_camera_plans(
    body: CamerasPlanIn, principal: Writer, service: Service
) -> dict[str, Any]:
    """Change the plan of all (or the listed) cameras at once; each change is quoted before
    any is made, and then charged or refunded on its own."""
    results = await service.plans.change_cameras(
        principal,
        body.installation_id,
        body.product,
        device_ids=body.device_ids,
        pay_with=body.pay_with,
        card_token=body.card_token,
    )
    return {"changed": [_change_out(r) for r in results]}


def _change_out(result: PlanChangeResult) -> dict[str, Any]:
    return {
        "quote": _quote_out(result.quote).model_dump(),
        "subscription": result.subscription,
        "order_id": result.order_id,
        "order_status": result.order_status,
        "refunded_cents": result.refunded_cents,
    }


def _quote_out(quote: PlanChangeQuote) -> PlanQuoteOut:
    return PlanQuoteOut(
        subscription_id=quote.subscription_id,
        from_product=quote.from_product.code,
        to_product=quote.to_product.code,
        days_left=quote.days_left,
        ends_at=quote.ends_at,
        old_daily_cents=round(quote.old_daily_cents, 4),
        new_daily_cents=round(quote.new_daily_cents, 4),
        difference_cents=quote.difference_cents,
        direction=quote.direction,  # type: ignore[arg-type]
        currency=CURRENCY,
        rule=RULE,
    )


@router.get("/subscriptions/{sub_id}/plan-change/quote", responses=_ERRORS)
def plan_change_quote(
    principal: Writer,
    service: Service,
    sub_id: str = SubId,
    product: str = Query(min_length=1, max_length=32, description="the new plan's code"),
) -> PlanQuoteOut:
    """What changing to ``product`` costs today, prorated to the day (nothing is stored)."""
    return _quote_out(service.plans.quote(principal, sub_id, product))


@router.post("/subscriptions/{sub_id}/plan-change", responses=_ERRORS)
async def change_plan(
    body: PlanChangeIn, principal: Writer, service: Service, sub_id: str = SubId
) -> dict[str, Any]:
    """Change the plan now: an upgrade charges the prorated difference (the new plan takes
    effect when paid), a downgrade refunds it; devices follow in their next token."""
    result = await service.plans.change(
        principal, sub_id, body.product, pay_with=body.pay_with, card_token=body.card_token
    )
    return _change_out(result)


@router.post("/subscriptions/checkout", status_code=status.HTTP_201_CREATED, responses=_ERRORS)
async def checkout(body: CheckoutIn, principal: Writer, checkout: CheckoutDep) -> CheckoutOut:
    """Buy for several installations in one checkout: one order (a line per item, naming its
    installation), one payment. All or nothing: a refusal for any installation refuses the
    whole checkout before any money moves, and names that installation."""
    done = await checkout.checkout(
        principal,
        [(i.installation_id, i.product, i.term_months) for i in body.items],
        pay_with=body.pay_with,
        card_token=body.card_token,
        purchaser_id=body.purchaser_id,
    )
    return CheckoutOut(
        order_id=done.order_id,
        order_status=done.order_status,
        due_now_cents=done.due_now_cents,
        subscriptions=done.subscriptions,
    )


@router.get("/subscriptions", responses=_ERRORS)
def list_subscriptions(
    principal: Reader,
    service: Service,
    installation_id: str = Query(pattern=ID_PATTERN),
    scope: Literal["installation", "device", "user"] | None = Query(
        default=None, description="only those for the installation, one device, or one user"
    ),
) -> list[dict[str, Any]]:
    """The subscriptions of one installation (within the caller's scope); ``scope=user``
    lists its office users (``user_ref``), each with its status, end and renewal."""
    return service.list_for(principal, installation_id, scope=scope)


@router.get("/subscriptions/{sub_id}", responses=_ERRORS)
def get_subscription(principal: Reader, service: Service, sub_id: str = SubId) -> dict[str, Any]:
    return service.get(principal, sub_id)


@router.post("/subscriptions/{sub_id}/renew", responses=_ERRORS)
async def renew(
    body: RenewIn, principal: Writer, service: Service, sub_id: str = SubId
) -> dict[str, Any]:
    """Pay 1-60 more months now; after expiry, the late payment that switches it on again."""
    result = await service.renew(
        principal,
        sub_id,
        months=body.months,
        pay_with=body.pay_with,
        card_token=body.card_token,
    )
    return _out(result)


@router.post("/subscriptions/{sub_id}/deactivate", responses=_ERRORS)
async def deactivate(principal: Writer, service: Service, sub_id: str = SubId) -> dict[str, Any]:
    """No next renewal: the service runs to its end date."""
    return await service.deactivate(principal, sub_id)


@router.post("/subscriptions/{sub_id}/reactivate", responses=_ERRORS)
async def reactivate(
    principal: Writer, service: Service, sub_id: str = SubId, body: ReactivateIn | None = None
) -> dict[str, Any]:
    """Renew again; whoever reactivates becomes the purchaser (0 due now)."""
    body = body or ReactivateIn()
    result = await service.reactivate(
        principal, sub_id, pay_with=body.pay_with, card_token=body.card_token
    )
    return _out(result)


@router.put("/subscriptions/{sub_id}/card", responses=_ERRORS)
async def set_card(
    body: CardIn, principal: Writer, service: Service, sub_id: str = SubId
) -> dict[str, Any]:
    """Set the card that pays the renewals (the purchaser, or an admin); audited."""
    return await service.set_card(principal, sub_id, body.card_token)


@router.post(
    "/subscriptions/{sub_id}/bill-now",
    responses=documented(
        {
            403: "billing staff only (cs_admin, admin)",
            404: "unknown subscription",
            409: "not due: not active or renewing, a charge in flight, or paid a term ahead",
        }
    ),
)
async def bill_now(
    principal: Operator, charger: ChargerDep, clock: ClockDep, sub_id: str = SubId
) -> BilledNowOut:
    """Force-bill: charge the current cycle now rather than on its charge day (never twice
    for one cycle); the order and its answer are as the renewal job's would be."""
    done = await charger.force_bill(principal, sub_id, now=clock())
    return BilledNowOut(
        order_id=done.order_id,
        order_status=str(done.order_status),
        amount_cents=done.amount_cents,
        subscription=done.subscription,
    )


@router.post(
    "/subscriptions/{sub_id}/billing-date",
    responses=documented(
        {
            402: "the card on file was declined: the date did not move",
            403: "billing staff only (cs_admin, admin)",
            404: "unknown subscription",
            409: "not active, or a renewal charge is in flight",
            # 422: not the first of a month, the same date, in the current month, or too far
        },
        body=True,
    ),
)
async def move_billing_date(
    body: BillingDateIn,
    principal: Operator,
    charger: ChargerDep,
    clock: ClockDep,
    sub_id: str = SubId,
) -> BillingDateOut:
    """Change the billing date: move the renewal date to the first of another month. Months
    added are paid now at the one-month price; months given up are credited."""
    new_end = _epoch(body.renews_on)
    assert new_end is not None
    done = await charger.move_billing_date(principal, sub_id, new_end=new_end, now=clock())
    return BillingDateOut(
        months=done.months,
        charged_cents=done.charged_cents,
        credited_cents=done.credited_cents,
        order_id=done.order_id,
        order_status=done.order_status,
        subscription=done.subscription,
    )


_CLOCK_ERRORS = documented({404: "the test clock is off"}, body=True)


@router.post("/test-clock/advance", responses=_CLOCK_ERRORS)
async def advance_test_clock(
    body: AdvanceIn,
    clock: ClockDep,
    settings: SettingsDep,
    jobs: Annotated[JobRunner, Depends(provided(JobRunner))],
    principal: Annotated[Principal, Depends(require(Permission.JOBS_RUN))],
) -> dict[str, Any]:
    """Move the test clock ``days`` days, one day at a time, running every job each day."""
    if not settings.test_clock or not hasattr(clock, "advance"):
        raise NotFound("the test clock is off (settings.test_clock)")
    for _ in range(body.days):
        clock.advance(86_400)
        await jobs.run_once()
    return {"now": clock(), "days": body.days}
