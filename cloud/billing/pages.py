"""Orders and payments: the transaction history, an order, its invoice, void and refund.

Every page calls :class:`~cloud.billing.service.OrderService`, like the REST routes:
partners and owners see their installations' orders only (another's is the same 404
as one that does not exist); void and refund need ``refunds`` (cs_admin, admin) and
each has a confirm step saying what will happen: how much, to whom, and that what the
order bought ends (a void, a full refund). Whether the charge is voided or refunded is
the payment provider's answer (settled or not), asked when the page is shown and again
by the service when the confirmation arrives.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from babel.dates import format_datetime
from babel.numbers import format_currency
from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import HTMLResponse, Response

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import page_require
from cloud.accounts.rules import Permission, allowed
from cloud.billing.deps import OrdersDep
from cloud.billing.errors import (
    ChargeNotSettled,
    ChargeSettled,
    OrderStateConflict,
    PartialVoid,
    RefundTooLarge,
)
from cloud.billing.rules import MAX_ORDER_CENTS, OrderKind, OrderStatus
from cloud.billing.schemas import ReversalOptionOut
from cloud.billing.service import ORDER_SORTS, OrderFilter, OrderService
from cloud.errors import N_, InvalidRequest, UpstreamFailed
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import error_text, language, render, translator

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(page_require(Permission.ORDERS_READ))]
Refunder = Annotated[Principal, Depends(page_require(Permission.REFUNDS))]
Writer = Annotated[Principal, Depends(page_require(Permission.ORDERS_WRITE))]
Staff = Annotated[Principal, Depends(page_require(Permission.ACCOUNTS_READ))]
OrderId = Annotated[int, Path(ge=1, le=2**31 - 1)]
PAGE_SIZE = 25
_DATE = r"^(\d{4}-\d{2}-\d{2})?$"
_STATUSES = tuple(dict.fromkeys(OrderStatus))  # the six, once each (the enum has aliases)


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str | None:
    """An optional choice of a select: "" is none; anything not offered is a 422."""
    if not value:
        return None
    if value not in allowed:
        raise InvalidRequest(
            N_("%(name)s must be one of: %(choices)s"), name=name, choices=", ".join(allowed)
        )
    return value


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(N_("%(name)s must be a date, YYYY-MM-DD"), name=name) from None


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@router.get("/orders")
def orders_page(
    request: Request,
    who: Reader,
    service: OrdersDep,
    number: Annotated[str, Query(max_length=32, pattern=r"^[A-Za-z0-9 -]*$")] = "",
    status_: Annotated[str, Query(alias="status", max_length=20)] = "",
    service_code: Annotated[str, Query(alias="service", max_length=64)] = "",
    type_: Annotated[str, Query(alias="type", max_length=20)] = "",
    customer: Annotated[str, Query(max_length=200)] = "",
    installation: Annotated[str, Query(pattern=r"^[A-Za-z0-9_-]{0,64}$")] = "",
    user: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    company: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    hidden: Annotated[str, Query(pattern=r"^1?$")] = "",
    since: Annotated[str, Query(max_length=10, pattern=_DATE)] = "",
    until: Annotated[str, Query(max_length=10, pattern=_DATE)] = "",
    sort: Annotated[str, Query(max_length=10)] = "date",
    dir: Annotated[str, Query(pattern=r"^(asc|desc)$")] = "desc",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The transaction history: search, sort, page; failed charges are ``?status=Failed``."""
    first, last = _day(since, "since"), _day(until, "until")
    kind = _choice(type_, tuple(OrderKind), "type")
    which = OrderFilter(
        kind=None if kind is None else OrderKind(kind),
        status=_status(status_),
        number=number.strip() or None,
        service=service_code.strip() or None,
        customer=customer.strip() or None,
        installation_id=installation or None,
        since=None if first is None else _epoch(first),
        until=None if last is None else _epoch(last + timedelta(days=1)),  # the whole day
        sort=_choice(sort, ORDER_SORTS, "sort") or "date",
        descending=dir == "desc",
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
        customer_user_id=user,
        customer_company_id=company,
        hidden=True if hidden else None,
    )
    history = service.history(who, which, service_codes=True)
    context: dict[str, Any] = {
        "history": history,
        "page": page,
        "pages": max(1, math.ceil(history.total / PAGE_SIZE)),
        "statuses": _STATUSES,
        "kinds": tuple(OrderKind),
        "form": {
            "number": number,
            "status": status_,
            "service": service_code,
            "type": type_,
            "customer": customer,
            "installation": installation,
            "since": since,
            "until": until,
            "user": user,
            "company": company,
            "hidden": hidden,
        },
        "sort": which.sort,
        "dir": dir,
        "filtered": any(
            (number, status_, service_code, type_, customer, installation, since, until)
        )
        or any((user, company, hidden)),
    }
    return render(request, "billing/orders.html", context)


def _status(value: str) -> OrderStatus | None:
    chosen = _choice(value, tuple(s.value for s in _STATUSES), "status")
    return None if chosen is None else OrderStatus(chosen)


@router.get("/orders/{order_id}")
async def order_page(
    request: Request, who: Reader, service: OrdersDep, order_id: OrderId
) -> HTMLResponse:
    """One order: lines, transactions (charges, voids, refunds and their retries), invoice,
    and, for those who may, what giving the money back would do now."""
    detail = await asyncio.to_thread(service.detail, who, order_id)
    option = None
    if allowed(who.role, Permission.REFUNDS):
        option = await service.reversal_option(who, order_id)
    summary = await asyncio.to_thread(service.summary, who, order_id)
    # each line's installation by name (those the caller may see: the only lines shown)
    names = dict(zip(summary.installation_ids, summary.installation_names, strict=True))
    context = {"order": detail, "option": option, "summary": summary, "names": names}
    return render(request, "billing/order.html", context)


@router.get("/orders/{order_id}/invoice.pdf")
async def invoice_pdf(who: Reader, service: OrdersDep, order_id: OrderId) -> Response:
    """The invoice of a paid or invoiced order, as a PDF download (the API's same PDF)."""
    invoice = await service.invoice_pdf(who, order_id)
    return Response(
        content=invoice.pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{invoice.filename}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.post("/orders/{order_id}/hide")
def hide_submit(
    request: Request, who: Writer, form: CheckedForm, service: OrdersDep, order_id: OrderId
) -> Response:
    """Hide the order from the customer's own history; back to the order."""
    _ = translator(request).gettext
    row = service.set_hidden(who, order_id, hidden=True)
    text = _("Order %(number)s is hidden from your order history.") % {"number": row.number}
    return _go(request, order_id, text)


@router.post("/orders/{order_id}/unhide")
def unhide_submit(
    request: Request, who: Writer, form: CheckedForm, service: OrdersDep, order_id: OrderId
) -> Response:
    """Show the order in the customer's history again; back to the order."""
    _ = translator(request).gettext
    row = service.set_hidden(who, order_id, hidden=False)
    text = _("Order %(number)s shows in your order history again.") % {"number": row.number}
    return _go(request, order_id, text)


@router.post("/orders/{order_id}/resend")
def resend_submit(
    request: Request, who: Staff, form: CheckedForm, service: OrdersDep, order_id: OrderId
) -> Response:
    """Queue the invoice or refund mail again to the order's notify list; back to the order."""
    _ = translator(request).gettext
    mail = str(form.get("mail", ""))
    if mail not in ("invoice", "refund"):
        raise InvalidRequest(
            N_("%(name)s must be one of: %(choices)s"), name="mail", choices="invoice, refund"
        )
    done = service.resend(who, order_id, mail=mail)
    text = (
        _("The invoice is queued again to %(to)s.")
        if mail == "invoice"
        else _("The refund mail is queued again to %(to)s.")
    ) % {"to": ", ".join(done.to)}
    return _go(request, order_id, text)


async def _confirm(
    request: Request,
    who: Principal,
    service: OrderService,
    order_id: int,
    action: str,
    *,
    error: str | None = None,
    amount: str = "",
    code: int = status.HTTP_200_OK,
) -> Response:
    detail = await asyncio.to_thread(service.detail, who, order_id)
    option = await service.reversal_option(who, order_id)
    if option.action != action:  # settled meanwhile, refunded in full, ...: say why on the order
        return _go(request, order_id, _why_not(request, option), level="warning")
    context = {
        "order": detail,
        "option": option,
        "action": action,
        "summary": await asyncio.to_thread(service.summary, who, order_id),
        "error": error,
        "amount": amount,
    }
    return render(request, "billing/reverse.html", context, status_code=code)


@router.get("/orders/{order_id}/void")
async def void_confirm(
    request: Request, who: Refunder, service: OrdersDep, order_id: OrderId
) -> Response:
    """The confirm step of a void: the whole unsettled charge, and what the order bought ends."""
    return await _confirm(request, who, service, order_id, "void")


@router.post("/orders/{order_id}/void")
async def void_submit(
    request: Request, who: Refunder, form: CheckedForm, service: OrdersDep, order_id: OrderId
) -> Response:
    """Void the order's charge (the whole of it), then back to the order with what happened."""
    _ = translator(request).gettext
    try:
        done = await service.void(who, order_id, amount_cents=None)
    except ChargeSettled:
        problem = _("The charge settled in the meantime: refund it instead.")
    except (OrderStateConflict, PartialVoid, ChargeNotSettled):
        problem = _("This order has no card charge to void now.")
    except UpstreamFailed:
        problem = _("The payment provider did not void the charge; nothing changed. Try again.")
    else:
        problem = None
    if problem is not None:
        return _go(request, order_id, problem, level="error")
    detail = await asyncio.to_thread(service.detail, who, order_id)
    text = _("Order %(number)s is voided: the charge of %(amount)s is cancelled.") % {
        "number": detail.number,
        "amount": _money(request, done.amount_cents, detail.currency),
    }
    return _go(request, order_id, text)


@router.get("/orders/{order_id}/refund")
async def refund_confirm(
    request: Request, who: Refunder, service: OrdersDep, order_id: OrderId
) -> Response:
    """The confirm step of a refund: how much (all that is left unless told), to whom."""
    return await _confirm(request, who, service, order_id, "refund")


@router.post("/orders/{order_id}/refund")
async def refund_submit(
    request: Request, who: Refunder, form: CheckedForm, service: OrdersDep, order_id: OrderId
) -> Response:
    """Refund the amount confirmed; a provider failure is queued for the daily retries."""
    _ = translator(request).gettext
    raw = str(form.get("amount", "")).strip()[:20]

    async def again(error: str) -> Response:
        return await _confirm(
            request,
            who,
            service,
            order_id,
            "refund",
            error=error,
            amount=raw,
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    try:
        cents = _cents(raw)
    except ValueError:
        return await again(
            _(
                "Give the amount as a number with at most two decimals, e.g. 12.50, "
                "or leave it empty to refund all that is left."
            )
        )
    try:
        done = await service.refund(who, order_id, amount_cents=cents)
    except RefundTooLarge:
        return await again(_("That is more than is left to refund."))
    except ChargeNotSettled:
        problem = _("The charge has not settled: void it instead.")
        return _go(request, order_id, problem, level="error")
    except (OrderStateConflict, InvalidRequest):
        problem = _("This order has no card charge to refund now.")
        return _go(request, order_id, problem, level="error")
    detail = await asyncio.to_thread(service.detail, who, order_id)
    values = {
        "number": detail.number,
        "amount": _money(request, done.amount_cents, detail.currency),
    }
    if done.status is OrderStatus.SUCCEED:
        return _go(request, order_id, _("%(amount)s of order %(number)s is refunded.") % values)
    values["date"] = _when(request, done.retry_at)
    text = (
        _(
            "The payment provider did not refund %(amount)s of order %(number)s now. It is tried "
            "again once a day from %(date)s, three times; then the order's notify list is e-mailed."
        )
        % values
    )
    return _go(request, order_id, text, level="warning")


@router.post("/orders/{order_id}/lines/{line_id}/refund")
async def line_refund_submit(
    request: Request,
    who: Refunder,
    form: CheckedForm,
    service: OrdersDep,
    order_id: OrderId,
    line_id: OrderId,
) -> Response:
    """Give back one line of the order (what it bought ends; the other lines stay)."""
    _ = translator(request).gettext
    try:
        done = await service.reverse_line(who, order_id, line_id)
    except ChargeNotSettled:
        problem = _(
            "The charge has not settled yet: a line can be refunded once it has "
            "(or void the whole order now)."
        )
    except OrderStateConflict:
        problem = _("This line cannot be given back now: the order is not paid, or it was.")
    except UpstreamFailed:
        problem = _("The payment provider did not refund the line; nothing changed. Try again.")
    else:
        problem = None
    if problem is not None:
        return _go(request, order_id, problem, level="error")
    detail = await asyncio.to_thread(service.detail, who, order_id)
    text = _("A line of order %(number)s is given back: %(amount)s.") % {
        "number": detail.number,
        "amount": _money(request, done.amount_cents, detail.currency),
    }
    return _go(request, order_id, text)


# credit ------------------------------------------------------------------------------
UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/customers/{user_id}/credit")
def credit_page(request: Request, who: Reader, service: OrdersDep, user_id: UserId) -> HTMLResponse:
    """A purchaser's credit: balance, history and, for billing staff, a grant form."""
    return _credit(request, who, service, user_id, error=None)


def _credit(
    request: Request,
    who: Principal,
    service: OrderService,
    user_id: int,
    *,
    error: str | None,
    status_code: int = 200,
) -> HTMLResponse:
    credit = service.credit_of(who, user_id)
    name = f"#{user_id}" if who.user_id != user_id else translator(request).gettext("you")
    context = {
        "credit": credit,
        "who": name,
        "may_grant": allowed(who.role, Permission.REFUNDS),
        "error": error,
    }
    return render(request, "billing/credit.html", context, status_code=status_code)


@router.post("/customers/{user_id}/credit")
def credit_grant(
    request: Request, who: Refunder, form: CheckedForm, service: OrdersDep, user_id: UserId
) -> Response:
    """Grant credit (billing staff), then back to the credit page with what happened."""
    _ = translator(request).gettext
    try:
        cents = _cents(str(form.get("amount", "")).strip())
    except ValueError:
        cents = None
    if cents is None:
        error = _("Enter an amount like 25.00.")
        return _credit(request, who, service, user_id, error=error, status_code=422)
    try:
        done = service.grant_credit(
            who, user_id, amount_cents=cents, reason=str(form.get("reason", ""))
        )
    except InvalidRequest as exc:
        return _credit(
            request, who, service, user_id, error=error_text(request, exc), status_code=422
        )
    text = _("Credit granted: the balance is %(amount)s.") % {
        "amount": _money(request, done.balance_cents, done.currency),
    }
    return redirect(f"/customers/{user_id}/credit", text)


def _cents(raw: str) -> int | None:
    """ "12.50" or "12,50" as cents; "" is None (all that is left)."""
    if not raw:
        return None
    try:
        value = Decimal(raw.replace(",", "."))
    except InvalidOperation:
        raise ValueError(raw) from None
    cents = value * 100
    if not value.is_finite() or cents != cents.to_integral_value():
        raise ValueError(raw)
    if not 0 < cents <= MAX_ORDER_CENTS:
        raise ValueError(raw)
    return int(cents)


def _go(request: Request, order_id: int, text: str, *, level: str = "success") -> Response:
    return redirect(f"/orders/{order_id}", text, level=level)


def _money(request: Request, cents: int, currency: str) -> str:
    """As the pages' ``money`` filter writes it, for a flash made in Python."""
    return str(format_currency(Decimal(cents) / 100, currency, locale=language(request)))


def _when(request: Request, epoch: int | None) -> str:
    """As the pages' ``datetime`` filter writes it."""
    if epoch is None:
        return "—"
    moment = datetime.fromtimestamp(epoch, UTC)
    return format_datetime(moment, "medium", tzinfo=UTC, locale=language(request)) + " UTC"


def _why_not(request: Request, option: ReversalOptionOut) -> str:
    _ = translator(request).gettext
    if option.action == "refund":
        return _("The charge has settled: it can no longer be voided, only refunded.")
    if option.action == "void":
        return _("The charge has not settled yet: it can only be voided, not refunded.")
    return {
        "not_paid": _("Only a paid order has money to give back."),
        "invoiced": _(
            "This order was invoiced: no card was charged, so there is nothing to void or refund."
        ),
        "provider_down": _("The payment provider did not answer: try again in a moment."),
        "refunded": _("The charge has been refunded in full already."),
        "refund_running": _("A refund of this charge is under way: it cannot be voided."),
    }.get(option.why_not or "", _("This order has nothing to give back now."))
