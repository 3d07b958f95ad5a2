"""Subscriptions' dashboard pages: the installation page's services section, auto-renew
off/on, renewals, buying (Checkout or Save subscriptions) and partners' follow-up.

Buying follows the vendors' manual (Cloudvue: "Prompted to Checkout when saving
subscriptions"): a user whose company pays by invoice gets **Save subscriptions**, which
saves them at once (invoiced); everyone else (card partners, owners) gets **Checkout**
and pays with a card. Either way a confirm step shows what is bought, for how long, the
price and who pays before the final POST; renewals and turning auto-renew on or off too.
Every change is one call of :class:`~cloud.subscriptions.service.SubscriptionService`,
the same as the REST routes; a role without ``subscriptions:write`` gets no control and a
403 from the server all the same.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import page_require
from cloud.accounts.rules import Permission, Role, allowed
from cloud.billing.deps import OrdersDep
from cloud.billing.rules import OrderStatus
from cloud.billing.service import OrderFilter, OrderService
from cloud.devices.deps import InstallationsDep
from cloud.devices.pages.installation import Section, installation_section
from cloud.devices.rules import DeviceKind
from cloud.devices.schemas import InstallationDetail
from cloud.devices.service import InstallationService
from cloud.errors import (
    N_,
    Conflict,
    InvalidRequest,
    NotFound,
    PaymentDeclined,
    UpstreamFailed,
)
from cloud.http.deps import ClockDep, state_of
from cloud.http.schemas import ID_PATTERN
from cloud.subscriptions.deps import ChargerDep, CheckoutDep, SubscriptionsDep
from cloud.subscriptions.rules.catalogue import CATALOGUE, Product, term_price
from cloud.subscriptions.rules.lifecycle import MAX_RENEWAL_MONTHS
from cloud.subscriptions.service import SubscriptionService
from cloud.subscriptions.views import PurchaseResult, SubscriptionLine
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import error_text, render, translator

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Reader = Annotated[Principal, Depends(page_require(Permission.SUBSCRIPTIONS_READ))]
Writer = Annotated[Principal, Depends(page_require(Permission.SUBSCRIPTIONS_WRITE))]
Operator = Annotated[Principal, Depends(page_require(Permission.REFUNDS))]  # billing staff
SubId = Annotated[str, Path(pattern=r"^sub_[0-9a-f]{16}$")]
InstId = Annotated[str, Path(pattern=ID_PATTERN)]

VIDEO = "video_retention"
# the installation-wide services, in order
SERVICES = ("TSF16100", "TSF12125", "TSF16101", "TSF16110")
OFFICE_USER = "AKV-OFFICE-USER"  # bought per user or department, by the month
_CARD = re.compile(r"^[0-9]{12,19}$")
_STATUS_TONE = {
    "renews": "ok",
    "expires": "warn",
    "expired": "bad",
    "pending": "info",
    "cancelled": "muted",
}
FOLLOW_UP_DAYS = 60
PER_PAGE = 25


# the installation page's section -------------------------------------------------
def _video_tiers() -> list[Product]:
    return [p for p in CATALOGUE.values() if p.feature == VIDEO]


@installation_section
async def subscriptions_section(
    request: Request, user: Principal, installation: InstallationDetail
) -> Section | None:
    """The installation's subscriptions, and what the user may change or buy."""
    if not allowed(user.role, Permission.SUBSCRIPTIONS_READ):
        return None
    service = state_of(request).provided(SubscriptionService)
    # office users have a page of their own (up to 60 of them): here, only how many
    lines, office_users = service.installation_lines(user, installation.id, OFFICE_USER)
    may_write = allowed(user.role, Permission.SUBSCRIPTIONS_WRITE)
    blacklisted = may_write and not service.may_change(user)
    may_write = may_write and not blacklisted
    held = {
        line.view["service"]
        for line in lines
        if line.state not in ("expired", "cancelled") and not line.view["scope"]
    }
    cameras = _unplanned_cameras(installation, lines)
    return Section(
        "subscriptions/_installation.html",
        {
            "installation": installation,
            "lines": lines,
            "may_write": may_write,
            "may_bill": may_write and allowed(user.role, Permission.REFUNDS),  # billing staff
            "blacklisted": blacklisted,
            "pays_with": service.pays_with(user) if may_write else None,
            # nothing is sold to an installation that is not connected: say so up front
            "not_connected": may_write and not service.connected(installation.id),
            "window_days": service.connected_window_s // 86400,
            "services": [CATALOGUE[code] for code in SERVICES],
            "office": CATALOGUE[OFFICE_USER],
            "office_users": office_users,
            "products": CATALOGUE,
            "video_tiers": _video_tiers(),
            "held": held,
            "cameras": cameras,
            "max_months": MAX_RENEWAL_MONTHS,
            "tone": _STATUS_TONE,
        },
    )


def _unplanned_cameras(installation: InstallationDetail, lines: list[Any]) -> list[str]:
    """The installation's cameras without a live plan of their own, nor one for all."""
    planned = {
        line.view["device_id"]
        for line in lines
        if line.view["service"] == VIDEO and line.state not in ("expired", "cancelled")
    }
    if None in planned:  # an installation-wide tier (bought before plans were per camera)
        return []
    return [
        d.device_id
        for d in installation.devices
        if d.kind == DeviceKind.CAMERA and d.device_id not in planned
    ]


@router.get("/installations/{installation_id}/office-users", response_class=HTMLResponse)
def office_users(
    request: Request,
    user: Reader,
    service: SubscriptionsDep,
    installations: InstallationsDep,
    installation_id: InstId,
) -> HTMLResponse:
    """The installation's office users and departments (AKV-OFFICE-USER, by the month):
    each one's status, end and next renewal, "N of 60", ending one at the end of its
    month (auto-renew off) or keeping it after all, and adding several at once."""
    installation = installations.detail(user, installation_id)
    roster = service.office_users(user, installation_id, OFFICE_USER)
    may_write = allowed(user.role, Permission.SUBSCRIPTIONS_WRITE)
    blacklisted = may_write and not service.may_change(user)
    may_write = may_write and not blacklisted
    return _page(
        request,
        "subscriptions/office_users.html",
        {
            "installation": installation,
            "roster": roster,
            "may_write": may_write,
            "blacklisted": blacklisted,
            "pays_with": service.pays_with(user) if may_write else None,
            "not_connected": may_write and not service.connected(installation_id),
            "window_days": service.connected_window_s // 86400,
            "tone": _STATUS_TONE,
        },
    )


RECENT_ORDERS = 10


@installation_section
async def purchases_section(
    request: Request, user: Principal, installation: InstallationDetail
) -> Section | None:
    """The installation's latest orders (purchases, renewals), linking to the orders pages."""
    if not allowed(user.role, Permission.ORDERS_READ):
        return None
    orders = state_of(request).provided(OrderService)
    history = orders.history(
        user, OrderFilter(installation_id=installation.id, limit=RECENT_ORDERS)
    )
    return Section(
        "subscriptions/_purchases.html",
        {"installation": installation, "history": history},
    )


def _page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """``render`` with what every subscriptions page uses: the catalogue, the renewal limit,
    and whether payments go to the sandbox test double (its test cards are shown)."""
    settings = state_of(request).settings
    values = {
        "products": CATALOGUE,
        "max_months": MAX_RENEWAL_MONTHS,
        "sandbox": settings.payment_provider == "sandbox",
        **context,
    }
    line = context.get("line")
    if line is not None:  # a subscription's page names its installation
        installations = state_of(request).provided(InstallationService)
        principal = request.state.principal
        values["installation_name"] = installations.detail(
            principal, line.view["installation_id"]
        ).name
    return render(request, template, values, status_code=status_code)


OFFICE_PAGE = "office-users"  # a form's ``back``: return to the office users' page
Back = Literal["office-users"]


def _back(installation_id: str, to: object = None) -> str:
    """Where a form returns: the installation's subscriptions, or its office users' page."""
    if to == OFFICE_PAGE:
        return f"/installations/{installation_id}/office-users"
    return f"/installations/{installation_id}#subscriptions"


def _card(form: Any) -> str | None:
    """The sandbox card number typed in the form (spaces and dashes dropped), if valid."""
    raw = form.get("card_number")
    if not isinstance(raw, str):
        return None
    number = re.sub(r"[\s-]", "", raw)
    return number if _CARD.fullmatch(number) else None


def _refused(exc: Exception) -> int:
    """The HTTP status a refused form page answers with (the API's, for the same error)."""
    if isinstance(exc, PaymentDeclined):
        return 402
    if isinstance(exc, UpstreamFailed):
        return 502
    if isinstance(exc, Conflict):
        return 409
    return 422


# auto-renew off / on ---------------------------------------------------------------
@router.get("/subscriptions/{sub_id}/auto-renew", response_class=HTMLResponse)
def confirm_auto_renew(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    sub_id: SubId,
    turn: Literal["on", "off"],
    back: Back | None = None,
) -> HTMLResponse:
    """The confirm step: off = runs to its end date; on = you become the purchaser, nothing
    due now, the next renewal's price and date. ``back``: the page it returns to."""
    quote, error = None, None
    if turn == "on":
        try:
            quote = service.reactivation_quote(user, sub_id)
        except (InvalidRequest, Conflict) as exc:
            error = exc
    line = service.line(user, sub_id) if quote is None else quote.line  # the quote's: one read
    values: dict[str, Any] = {
        "turn": turn,
        "line": line,
        "quote": quote,
        "error": None if error is None else error_text(request, error),
        "back_to": back,
        "back": _back(line.view["installation_id"], back),
    }
    if error is not None:
        return _page(request, "subscriptions/auto_renew.html", values, status_code=_refused(error))
    return _page(request, "subscriptions/auto_renew.html", values)


@router.post("/subscriptions/{sub_id}/auto-renew")
async def set_auto_renew(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    sub_id: SubId,
    form: CheckedForm,
) -> Response:
    t = translator(request)
    turn = form.get("turn")
    line = service.line(user, sub_id)
    back_to = OFFICE_PAGE if form.get("back") == OFFICE_PAGE else None
    back = _back(line.view["installation_id"], back_to)
    name = _named(line)
    if turn == "off":
        await service.deactivate(user, sub_id)
        text = t.gettext("Auto-renew is off: %(name)s runs until its end date and stops then.")
        return redirect(back, text % {"name": name})
    if turn != "on":
        return redirect(back, t.gettext("Nothing was changed."), level="info")
    card = _card(form)
    try:
        quote = service.reactivation_quote(user, sub_id)
        if quote.pay_with == "card" and card is None:
            raise InvalidRequest(N_("Enter the card that pays the renewals."))
        await service.reactivate(user, sub_id, pay_with=quote.pay_with, card_token=card)
    except (InvalidRequest, Conflict) as exc:
        values = {
            "turn": "on",
            "line": line,
            "quote": None,
            "error": error_text(request, exc),
            "back_to": back_to,
            "back": back,
        }
        return _page(request, "subscriptions/auto_renew.html", values, status_code=_refused(exc))
    text = t.gettext(
        "Auto-renew is on: you are now the purchaser of %(name)s; nothing was charged."
    )
    return redirect(back, text % {"name": name})


def _named(line: SubscriptionLine) -> str:
    return _with_user(line.name, line.view["user_ref"])


def _with_user(name: str, user_ref: str | None) -> str:
    """A subscription's name in a message: the product's, and the user it is for."""
    return name if user_ref is None else f"{name} ({user_ref})"


@router.post("/subscriptions/{sub_id}/bill-now")
async def bill_now(
    request: Request,
    user: Operator,
    service: SubscriptionsDep,
    charger: ChargerDep,
    clock: ClockDep,
    sub_id: SubId,
    form: CheckedForm,
) -> Response:
    """Force-bill (billing staff): charge the current cycle now; back with what happened."""
    t = translator(request)
    line = service.line(user, sub_id)
    back = _back(line.view["installation_id"])
    try:
        done = await charger.force_bill(user, sub_id, now=clock())
    except Conflict as exc:
        return redirect(back, error_text(request, exc), level="error")
    if done.order_status is OrderStatus.SUCCEED:
        text = t.gettext("%(name)s: this cycle is billed now and paid.")
        return redirect(back, text % {"name": line.name})
    text = t.gettext("%(name)s: this cycle is billed now; the payment did not go through.")
    return redirect(back, text % {"name": line.name}, level="error")


@router.post("/subscriptions/{sub_id}/billing-date")
async def move_billing_date(
    request: Request,
    user: Operator,
    service: SubscriptionsDep,
    charger: ChargerDep,
    clock: ClockDep,
    sub_id: SubId,
    form: CheckedForm,
) -> Response:
    """Change the billing date (billing staff); back with what it cost or credited."""
    t = translator(request)
    line = service.line(user, sub_id)
    back = _back(line.view["installation_id"])
    raw = str(form.get("renews_on", ""))
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise InvalidRequest(N_("Enter the new renewal date as YYYY-MM-DD."))
        try:
            day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise InvalidRequest(N_("Enter the new renewal date as YYYY-MM-DD.")) from None
        done = await charger.move_billing_date(
            user, sub_id, new_end=int(day.timestamp()), now=clock()
        )
    except (InvalidRequest, Conflict, PaymentDeclined) as exc:
        return redirect(back, error_text(request, exc), level="error")
    if done.months > 0:
        text = t.gettext("%(name)s renews %(months)s months later; %(amount)s was charged.")
        amount = done.charged_cents
    else:
        text = t.gettext("%(name)s renews %(months)s months earlier; %(amount)s was credited.")
        amount = done.credited_cents
    values = {"name": line.name, "months": abs(done.months), "amount": f"{amount / 100:.2f}"}
    return redirect(back, text % values)


# checkout for several installations -------------------------------------------------------
_ITEM = re.compile(r"^(inst_[0-9a-z_-]{1,60})\|([A-Z0-9]{1,32})$")


def _checkout_page(
    request: Request,
    user: Principal,
    service: SubscriptionService,
    installations: InstallationService,
    *,
    chosen: list[str],
    error: str | None,
    status_code: int = 200,
) -> HTMLResponse:
    visible = installations.visible(user, limit=200, offset=0)
    context = {
        "installations": visible,
        # nothing is sold to these: their boxes are off, and the page says why
        "unconnected": service.unconnected([i.id for i in visible]),
        "window_days": service.connected_window_s // 86400,
        "services": SERVICES[:2],  # the yearly installation-wide services
        "products": CATALOGUE,
        "pays_with": service.pays_with(user),
        "chosen": chosen,
        "error": error,
    }
    return _page(request, "subscriptions/checkout.html", context, status_code=status_code)


@router.get("/checkout", response_class=HTMLResponse)
def checkout_page(
    request: Request, user: Writer, service: SubscriptionsDep, installations: InstallationsDep
) -> HTMLResponse:
    """Tick services for several installations; one order and one payment for them all."""
    return _checkout_page(request, user, service, installations, chosen=[], error=None)


@router.post("/checkout")
async def checkout_submit(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    installations: InstallationsDep,
    checkout: CheckoutDep,
    form: CheckedForm,
) -> Response:
    """Buy every ticked service in one checkout (all or nothing), then to its order."""
    t = translator(request)
    chosen = [str(v) for v in form.getlist("item")]
    pays_with = service.pays_with(user)
    try:
        items: list[tuple[str, str, int | None]] = []
        for value in chosen:
            found = _ITEM.fullmatch(value)
            if found is None:
                raise InvalidRequest(N_("Tick the services to buy."))
            items.append((found.group(1), found.group(2), None))
        card = _card(form)
        if pays_with == "card" and card is None:
            raise InvalidRequest(N_("Enter a card number (12 to 19 digits)."))
        done = await checkout.checkout(user, items, pay_with=pays_with, card_token=card)
    except (InvalidRequest, Conflict, PaymentDeclined, UpstreamFailed, NotFound) as exc:
        return _checkout_page(
            request,
            user,
            service,
            installations,
            chosen=chosen,
            error=error_text(request, exc),
            status_code=404 if isinstance(exc, NotFound) else _refused(exc),
        )
    text = t.gettext("Bought %(count)s services in one order.")
    return redirect(f"/orders/{done.order_id}", text % {"count": len(done.subscriptions)})


# renew -------------------------------------------------------------------------------
@router.get("/subscriptions/{sub_id}/renew", response_class=HTMLResponse)
def confirm_renew(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    sub_id: SubId,
    months: Annotated[int, Query(ge=1, le=MAX_RENEWAL_MONTHS)],
) -> HTMLResponse:
    """The confirm step of a renewal: price, the new end date and how it is paid."""
    try:
        quote = service.renewal_quote(user, sub_id, months)
    except (InvalidRequest, Conflict) as exc:
        return _page(
            request,
            "subscriptions/renew.html",
            {
                "line": service.line(user, sub_id),
                "quote": None,
                "error": error_text(request, exc),
                "months": months,
            },
            status_code=_refused(exc),
        )
    return _page(
        request,
        "subscriptions/renew.html",
        {
            "line": quote.line,
            "quote": quote,
            "error": None,
            "months": months,
        },
    )


@router.post("/subscriptions/{sub_id}/renew")
async def renew(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    sub_id: SubId,
    form: CheckedForm,
) -> Response:
    t = translator(request)
    try:
        months = int(str(form.get("months", "")))
    except ValueError:
        months = 0
    line = service.line(user, sub_id)
    try:
        quote = service.renewal_quote(user, sub_id, months)
        card = _card(form)
        if quote.pay_with == "card" and card is None:
            raise InvalidRequest(N_("Enter a card number (12 to 19 digits)."))
        result = await service.renew(
            user, sub_id, months=months, pay_with=quote.pay_with, card_token=card
        )
    except (InvalidRequest, Conflict, PaymentDeclined, UpstreamFailed) as exc:
        return _page(
            request,
            "subscriptions/renew.html",
            {"line": line, "quote": None, "error": error_text(request, exc), "months": months},
            status_code=_refused(exc),
        )
    back = _back(line.view["installation_id"])
    if result.order_status == OrderStatus.SUCCEED:
        text = t.gettext("%(name)s is renewed by %(months)s months.")
        return redirect(back, text % {"name": line.name, "months": months})
    text = t.gettext(
        "The payment for %(name)s is being confirmed (order status: %(status)s); "
        "the renewal applies as soon as it is."
    )
    return redirect(back, text % {"name": line.name, "status": result.order_status}, level="info")


# plan change ---------------------------------------------------------------------------
def _plans(service: SubscriptionService, user: Principal, sub_id: str) -> list[Product]:
    """The plans a subscription may change to: the other products of its service."""
    current = CATALOGUE[service.line(user, sub_id).view["product"]]
    return [p for p in CATALOGUE.values() if p.feature == current.feature and p != current]


@router.get("/subscriptions/{sub_id}/plan-change", response_class=HTMLResponse)
def confirm_plan_change(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    sub_id: SubId,
    product: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    """The confirm step of a plan change: days left, each plan's daily value, the prorated
    difference charged or refunded, before anything is changed."""
    line = service.line(user, sub_id)
    values: dict[str, Any] = {
        "line": line,
        "plans": _plans(service, user, sub_id),
        "quote": None,
        "error": None,
        "pay_with": service.pays_with(user) or line.view["pay_with"],
    }
    if product is None:
        return _page(request, "subscriptions/plan_change.html", values)
    try:
        values["quote"] = service.plans.quote(user, sub_id, product)
    except (InvalidRequest, Conflict) as exc:
        values["error"] = error_text(request, exc)
        return _page(request, "subscriptions/plan_change.html", values, status_code=_refused(exc))
    return _page(request, "subscriptions/plan_change.html", values)


@router.post("/subscriptions/{sub_id}/plan-change")
async def change_plan(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    sub_id: SubId,
    form: CheckedForm,
) -> Response:
    t = translator(request)
    line = service.line(user, sub_id)
    code = str(form.get("product", ""))
    try:
        quote = service.plans.quote(user, sub_id, code)
        pay_with = service.pays_with(user) or line.view["pay_with"]
        card = _card(form)
        if quote.difference_cents > 0 and pay_with == "card" and card is None:
            raise InvalidRequest(N_("Enter a card number (12 to 19 digits)."))
        result = await service.plans.change(user, sub_id, code, pay_with=pay_with, card_token=card)
    except (InvalidRequest, Conflict, PaymentDeclined, UpstreamFailed) as exc:
        values = {
            "line": line,
            "plans": _plans(service, user, sub_id),
            "quote": None,
            "error": error_text(request, exc),
            "pay_with": line.view["pay_with"],
        }
        return _page(request, "subscriptions/plan_change.html", values, status_code=_refused(exc))
    back = _back(line.view["installation_id"])
    name = CATALOGUE[code].name
    if result.quote.difference_cents > 0 and result.order_status != OrderStatus.SUCCEED:
        text = t.gettext(
            "The payment for the change to %(name)s is being confirmed (order status: "
            "%(status)s); the new plan applies as soon as it is."
        )
        return redirect(back, text % {"name": name, "status": result.order_status}, level="info")
    text = t.gettext("The plan is now %(name)s.")
    return redirect(back, text % {"name": name})


# buy: Checkout or Save subscriptions -------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Item:
    product: Product
    months: int
    device_id: str | None = None  # a camera's own plan
    user_ref: str | None = None  # an office user's or department's own subscription

    @property
    def cents(self) -> int:
        return term_price(self.product, self.months)

    @property
    def name(self) -> str:
        return _with_user(self.product.name, self.user_ref)


def _names(values: list[Any]) -> list[str]:
    """The office users a form names: one a line (a text area), or one a field."""
    return [n.strip() for v in values for n in str(v).splitlines() if n.strip()]


def _basket(
    products: list[str],
    app_term: int | None,
    video: str | None,
    apply_all: bool,
    cameras: list[str],
    office_users: list[str] = [],  # noqa: B006 (read only)
) -> list[_Item]:
    """The items a buy form asks for; InvalidRequest (marked N_) for what it cannot.

    A video retention tier is a plan per camera: one item for each of ``cameras`` (the
    installation's cameras without a live plan)."""
    items: list[_Item] = []
    for code in dict.fromkeys(products):
        if code not in SERVICES:
            raise InvalidRequest(N_("Choose services from the list."))
        item = CATALOGUE[code]
        months = item.default_term_months
        if code == "TSF16101" and app_term is not None:
            if app_term not in item.term_cents:
                raise InvalidRequest(N_("Choose one of the app access terms offered."))
            months = app_term
        items.append(_Item(item, months))
    if video:
        tier = CATALOGUE.get(video)
        if tier is None or tier.feature != VIDEO:
            raise InvalidRequest(N_("Choose a video retention tier from the list."))
        if not apply_all:
            raise InvalidRequest(
                N_(
                    "A video retention tier is bought for the cameras: "
                    "tick “Apply to all cameras” to buy it."
                )
            )
        if not cameras:
            raise InvalidRequest(
                N_("No camera without a plan: add a camera first, or change a camera's plan.")
            )
        items.extend(_Item(tier, tier.default_term_months, cam) for cam in cameras)
    office = CATALOGUE[OFFICE_USER]
    items.extend(_Item(office, office.default_term_months, user_ref=n) for n in office_users)
    if not items:
        raise InvalidRequest(N_("Choose at least one service to buy."))
    return items


def _check_users(
    service: SubscriptionService, user: Principal, installation_id: str, items: list[_Item]
) -> None:
    """Refuse the office users of a basket together, before any order (InvalidRequest,
    Conflict): a name twice, one who has it already, or more than the maximum."""
    refs = [i.user_ref for i in items if i.user_ref is not None]
    if refs:
        service.check_new_users(user, installation_id, OFFICE_USER, refs)


def _buy_page(
    request: Request,
    *,
    installation: InstallationDetail,
    items: list[_Item],
    pays_with: str | None,
    form: dict[str, Any],
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    cameras = sum(1 for i in items if i.device_id is not None)
    return _page(
        request,
        "subscriptions/buy.html",
        {
            "installation": installation,
            "items": items,
            "total": sum(i.cents for i in items),
            "pays_with": pays_with,
            "form": form,
            "cameras": cameras,
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/installations/{installation_id}/buy", response_class=HTMLResponse)
def review_purchase(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    installations: InstallationsDep,
    installation_id: InstId,
    product: Annotated[list[str], Query(max_length=len(SERVICES))] = [],  # noqa: B006
    app_term: Annotated[int | None, Query(ge=1, le=1200)] = None,
    video: Annotated[str | None, Query(max_length=32)] = None,
    apply_all: Annotated[Literal["1"] | None, Query()] = None,
    office_user: Annotated[list[str], Query(max_length=60)] = [],  # noqa: B006
    back: Back | None = None,
) -> HTMLResponse:
    """Checkout (card: the sandbox card form) or Save subscriptions (invoice): the confirm
    step with every item, its term and price, the total and who pays. ``office_user``:
    users or departments (one a line, or one a field), refused together before any order
    when one of them cannot be added."""
    installation = installations.detail(user, installation_id)
    pays_with = service.pays_with(user)
    form = {
        "product": product,
        "app_term": app_term,
        "video": video,
        "apply_all": apply_all,
        "back": back,
    }
    cameras = _unplanned_cameras(installation, service.lines(user, installation_id))
    try:
        items = _basket(
            product, app_term, video or None, apply_all == "1", cameras, _names(office_user)
        )
        _check_users(service, user, installation_id, items)
    except (InvalidRequest, Conflict) as exc:
        return _buy_page(
            request,
            installation=installation,
            items=[],
            pays_with=pays_with,
            form=form,
            error=error_text(request, exc),
            status_code=_refused(exc),
        )
    return _buy_page(
        request,
        installation=installation,
        items=items,
        pays_with=pays_with,
        form=form,
    )


@router.post("/installations/{installation_id}/buy")
async def buy(
    request: Request,
    user: Writer,
    service: SubscriptionsDep,
    installations: InstallationsDep,
    installation_id: InstId,
    form: CheckedForm,
) -> Response:
    """Buy every item: saved at once (invoice) or paid with the card typed at checkout."""
    t = translator(request)
    installation = installations.detail(user, installation_id)
    pays_with = service.pays_with(user)
    products = [str(p) for p in form.getlist("product")]
    raw_term = form.get("app_term")
    video = form.get("video")
    back_to = OFFICE_PAGE if form.get("back") == OFFICE_PAGE else None
    fields = {
        "product": products,
        "app_term": raw_term,
        "video": video,
        "apply_all": form.get("apply_all"),
        "back": back_to,
    }
    items: list[_Item] = []
    try:
        app_term = int(str(raw_term)) if raw_term else None
        items = _basket(
            products,
            app_term,
            str(video) if video else None,
            form.get("apply_all") == "1",
            _unplanned_cameras(installation, service.lines(user, installation_id)),
            _names(form.getlist("office_user")),
        )
        _check_users(service, user, installation_id, items)
        card = _card(form)
        if pays_with == "card" and card is None:
            raise InvalidRequest(N_("Enter a card number (12 to 19 digits)."))
    except (InvalidRequest, Conflict, ValueError) as exc:
        return _buy_page(
            request,
            installation=installation,
            items=items,
            pays_with=pays_with,
            form=fields,
            error=error_text(request, exc),
            status_code=422 if isinstance(exc, ValueError) else _refused(exc),
        )
    back = _back(installation_id, back_to)
    bought: list[tuple[_Item, PurchaseResult]] = []
    for item in items:
        try:
            result = await service.purchase(
                user,
                installation_id=installation_id,
                product_code=item.product.code,
                term_months=item.months,
                pay_with=pays_with,
                card_token=card,
                start=None,
                device_id=item.device_id,
                user_ref=item.user_ref,
            )
        except (InvalidRequest, Conflict, PaymentDeclined, UpstreamFailed) as exc:
            if not bought:
                return _buy_page(
                    request,
                    installation=installation,
                    items=items,
                    pays_with=pays_with,
                    form=fields,
                    error=error_text(request, exc),
                    status_code=_refused(exc),
                )
            text = t.gettext("Bought: %(bought)s. Not bought: %(name)s (%(why)s).")
            names = ", ".join(i.name for i, _ in bought)
            return redirect(
                back,
                text % {"bought": names, "name": item.name, "why": error_text(request, exc)},
                level="warning",
            )
        bought.append((item, result))
    waiting = [i.name for i, r in bought if r.order_status != OrderStatus.SUCCEED]
    names = ", ".join(i.name for i, _ in bought)
    if waiting:
        text = t.gettext(
            "Ordered: %(names)s. The payment of %(waiting)s is being confirmed; "
            "the service starts as soon as it is."
        )
        return redirect(
            back,
            text % {"names": names, "waiting": ", ".join(waiting)},
            level="info",
        )
    if pays_with == "invoice":
        text = t.gettext("Subscriptions saved: %(names)s. The invoice is on its way by e-mail.")
    else:
        text = t.gettext("Paid: %(names)s. The devices are being told now.")
    return redirect(back, text % {"names": names})


# partners' follow-up -----------------------------------------------------------------
@router.get("/follow-up", response_class=HTMLResponse)
def follow_up(
    request: Request,
    user: Reader,
    service: SubscriptionsDep,
    orders: OrdersDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Subscriptions ending in the next 60 days and failed charges, across the user's
    installations (staff: all of them), to follow up."""
    expiring, total = service.expiring(
        user, days=FOLLOW_UP_DAYS, limit=PER_PAGE, offset=(page - 1) * PER_PAGE
    )
    failed = orders.history(
        user,
        OrderFilter(status=OrderStatus.FAILED, limit=PER_PAGE),
    )
    return _page(
        request,
        "subscriptions/follow_up.html",
        {
            "expiring": expiring,
            "expiring_total": total,
            "page": page,
            "pages": max(1, math.ceil(total / PER_PAGE)),
            "failed": failed,
            "days": FOLLOW_UP_DAYS,
            "tone": _STATUS_TONE,
            "staff": user.role in (Role.ADMIN, Role.CS_ADMIN, Role.SUPPORT),
        },
    )
