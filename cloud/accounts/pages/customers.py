"""Customers: staff look up an account and see whom they may talk to, where, and what it bought.

Admins, customer-service admins and support agents (``accounts:read``) find an owner,
a partner user or a partner company by name, e-mail address, partner id or
installation; the account's page shows its installations with their authorised
contacts (the owner and the integrators' partner users, never vendor staff: the
Cloudvue support policy's list of who may ask for changes), and its latest orders.
Blacklisting (``blacklist``: admins and customer-service admins) takes a reason and
is audited; support sees all of it and is offered no control that changes anything
(and the server refuses the POST all the same).

The installations, contacts and orders come from the billing slice's order service
(:meth:`cloud.billing.service.OrderService.customer_activity`): accounts sits below
devices and billing in cloud's layers, so this module names the shape it needs
(:class:`CustomerActivity`) and the app hands it the service that has it.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from cloud.accounts.apikeys import Principal
from cloud.accounts.customers import CUSTOMER_ROLES, LookUpBy
from cloud.accounts.deps import AccountsDep, page_require
from cloud.accounts.rules import Permission, Role
from cloud.accounts.schemas import BlacklistRequest, CompanyOut, UserOut
from cloud.accounts.service import AccountService, AuditFilter
from cloud.errors import UnknownUser
from cloud.http.deps import provided
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import render, translator

__all__ = ["CustomerActivity", "router"]

router = APIRouter(include_in_schema=False)


@runtime_checkable
class CustomerActivity(Protocol):
    """What the customer pages read beyond accounts (the billing slice's order service)."""

    def customer_activity(
        self,
        principal: Principal,
        *,
        user_id: int | None = None,
        company_id: int | None = None,
        installation_id: str | None = None,
        installation_search: str | None = None,
        order_limit: int = 10,
    ) -> Any:
        """``installations`` (each with ``contacts``), ``orders`` and ``orders_total``."""
        ...


Reader = Annotated[Principal, Depends(page_require(Permission.ACCOUNTS_READ))]
Blacklister = Annotated[Principal, Depends(page_require(Permission.BLACKLIST))]
ActivityDep = Annotated[CustomerActivity, Depends(provided(CustomerActivity))]  # type: ignore[type-abstract]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
_BY: tuple[str, ...] = ("name", "email", "partner_id", "installation")
_ORDERS_SHOWN = 10


@router.get("/customers")
def customers_page(
    request: Request,
    who: Reader,
    accounts: AccountsDep,
    activity: ActivityDep,
    q: Annotated[str, Query(max_length=200)] = "",
    by: Annotated[str, Query(pattern=r"^(name|email|partner_id|installation)$")] = "name",
) -> HTMLResponse:
    """The look-up: accounts found by name, e-mail or partner id; installations by id or name."""
    text = q.strip()
    hits: list[Any] = []
    installations: list[Any] = []
    people: dict[str, Any] = {}
    if text and by == "installation":
        found = activity.customer_activity(who, installation_search=text, order_limit=0)
        installations = list(found.installations)
        people = _people(accounts, installations)
    elif text:
        chosen: LookUpBy = by  # type: ignore[assignment]  # the pattern allows only these
        hits = accounts.find_customers(text, by=chosen)
    context = {
        "q": q,
        "by": by,
        "choices": _BY,
        "hits": hits,
        "installations": installations,
        "people": people,
        "searched": bool(text),
    }
    return render(request, "accounts/customers.html", context)


def _people(accounts: AccountService, installations: list[Any]) -> dict[str, Any]:
    """The owners (users) and integrators (companies) of these installations, by "u<id>"/"c<id>"."""
    out: dict[str, Any] = {}
    for place in installations:
        if place.owner_user_id is not None and f"u{place.owner_user_id}" not in out:
            out[f"u{place.owner_user_id}"] = accounts.user(place.owner_user_id)
        for company_id in place.integrator_company_ids:
            if f"c{company_id}" not in out:
                out[f"c{company_id}"] = accounts.company(company_id)
    return out


def _blacklisting(accounts: AccountService, kind: str, object_id: int) -> Any:
    """The latest blacklist change of the account (who, when, why), or None."""
    entries = accounts.audit_entries(
        AuditFilter(object_type=kind, object_id=str(object_id), limit=200)
    )
    for entry in entries:
        if entry.action in (f"{kind}.blacklist", f"{kind}.unblacklist"):
            return entry
    return None


def _profile(
    request: Request,
    who: Principal,
    accounts: AccountService,
    activity: CustomerActivity,
    *,
    user: UserOut | None,
    company: CompanyOut | None,
    error: str | None = None,
    reason: str = "",
    code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    members: list[UserOut] = []
    if user is None and company is not None:  # a company's page: its partner users
        members = accounts.find_users(
            email=None, role=Role.PARTNER, company_id=company.id, limit=200, offset=0
        )
    found = activity.customer_activity(
        who,
        user_id=None if user is None else user.id,
        company_id=None if company is None else company.id,
        order_limit=_ORDERS_SHOWN,
    )
    if user is not None:
        kind, object_id, blacklisted = "user", user.id, user.blacklisted
    else:
        assert company is not None
        kind, object_id, blacklisted = "company", company.id, company.blacklisted
    context = {
        "account": user,
        "company": company,
        "members": members,
        "activity": found,
        "people": _people(accounts, list(found.installations)),
        "blacklisting": _blacklisting(accounts, kind, object_id),
        "kind": kind,
        "object_id": object_id,
        "error": error,
        "reason": reason,
        "blacklisted": blacklisted,
    }
    return render(request, "accounts/customer.html", context, status_code=code)


def _customer(accounts: AccountService, user_id: int) -> UserOut:
    """A customer user (owner or partner); vendor staff are not customers (404 here)."""
    user = accounts.user(user_id)
    if user.role not in CUSTOMER_ROLES:
        raise UnknownUser(f"no customer with id {user_id}")
    return user


@router.get("/customers/users/{user_id}")
def user_page(
    request: Request, who: Reader, accounts: AccountsDep, activity: ActivityDep, user_id: Id
) -> HTMLResponse:
    """An owner's or partner user's account: contacts, installations, orders, blacklist."""
    user = _customer(accounts, user_id)
    company = None if user.company_id is None else accounts.company(user.company_id)
    return _profile(request, who, accounts, activity, user=user, company=company)


@router.get("/customers/companies/{company_id}")
def company_page(
    request: Request, who: Reader, accounts: AccountsDep, activity: ActivityDep, company_id: Id
) -> HTMLResponse:
    """A partner company: its users, the installations it integrates, their orders, blacklist."""
    company = accounts.company(company_id)
    return _profile(request, who, accounts, activity, user=None, company=company)


def _blacklist_request(form: Any) -> BlacklistRequest:
    return BlacklistRequest(
        blacklisted=str(form.get("blacklisted", "")) == "on",
        reason=str(form.get("reason", "")).strip()[:501],
    )


@router.post("/customers/users/{user_id}/blacklist")
def blacklist_user(
    request: Request,
    who: Blacklister,
    form: CheckedForm,
    accounts: AccountsDep,
    activity: ActivityDep,
    user_id: Id,
) -> Response:
    """Put the customer on or off the blacklist, with the reason (audited)."""
    user = _customer(accounts, user_id)
    try:
        body = _blacklist_request(form)
    except ValidationError:
        company = None if user.company_id is None else accounts.company(user.company_id)
        return _refused(request, who, accounts, activity, user=user, company=company, form=form)
    accounts.blacklist_user(who, user_id, body)
    return _done(request, f"/customers/users/{user_id}", user.name, body.blacklisted)


@router.post("/customers/companies/{company_id}/blacklist")
def blacklist_company(
    request: Request,
    who: Blacklister,
    form: CheckedForm,
    accounts: AccountsDep,
    activity: ActivityDep,
    company_id: Id,
) -> Response:
    """Put the partner company (all its users) on or off the blacklist, with the reason."""
    company = accounts.company(company_id)
    try:
        body = _blacklist_request(form)
    except ValidationError:
        return _refused(request, who, accounts, activity, user=None, company=company, form=form)
    accounts.blacklist_company(who, company_id, body)
    return _done(request, f"/customers/companies/{company_id}", company.name, body.blacklisted)


def _refused(
    request: Request,
    who: Principal,
    accounts: AccountService,
    activity: CustomerActivity,
    *,
    user: UserOut | None,
    company: CompanyOut | None,
    form: Any,
) -> HTMLResponse:
    _ = translator(request).gettext
    error = _("Say why, in one line of at most 500 characters.")
    return _profile(
        request,
        who,
        accounts,
        activity,
        user=user,
        company=company,
        error=error,
        reason=str(form.get("reason", ""))[:500],
        code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def _done(request: Request, url: str, name: str, blacklisted: bool) -> Response:
    _ = translator(request).gettext
    if blacklisted:
        text = _("%(name)s is blacklisted: they can look, but not buy or change anything.")
    else:
        text = _("%(name)s is off the blacklist: they can buy and change things again.")
    return redirect(url, text % {"name": name})
