"""Administration: users and companies, API keys, the audit log.

The issuer keys' page (``/admin/keys``) is the devices slice's
(:mod:`cloud.devices.pages.keys`), beside the signer; accounts may not import devices.

Each page needs the permission of the REST route that does the same
(``accounts:write``, ``keys:rotate``, ``audit:read``) and calls the same service; a
cs_admin never touches an admin account or its keys (the service refuses). A new API
key is shown once, on the answer to the POST that made it, and never again.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import AccountsDep, PageUser, page_require
from cloud.accounts.rules import Permission, Role, allowed
from cloud.accounts.schemas import (
    AuditOut,
    CompanyCreate,
    CompanyUpdate,
    InvoicingIn,
    UserCreate,
    UserUpdate,
    posted_invoicing,
)
from cloud.accounts.service import AccountService, AuditFilter
from cloud.errors import N_, AccountExists, Forbidden, InvalidRequest
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import error_text, render, translator

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Writer = Annotated[Principal, Depends(page_require(Permission.ACCOUNTS_WRITE))]
Auditor = Annotated[Principal, Depends(page_require(Permission.AUDIT_READ))]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
PageNo = Annotated[int, Query(ge=1, le=100_000)]
Search = Annotated[str, Query(max_length=200)]
PAGE_SIZE = 25
_SECTIONS = (Permission.ACCOUNTS_WRITE, Permission.KEYS_ROTATE, Permission.AUDIT_READ)


def _pages(total: int) -> int:
    return max(1, math.ceil(total / PAGE_SIZE))


def _problem(
    request: Request, exc: ValidationError | InvalidRequest | AccountExists | Forbidden
) -> str:
    """What was wrong with a form, in a sentence (field names are the form's labels' ids);
    a service's refusal in the reader's language."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
    return error_text(request, exc)


# the index ------------------------------------------------------------------------
@router.get("/admin")
def admin_index(request: Request, who: PageUser) -> HTMLResponse:
    """Links to the parts of administration this role may use."""
    if not any(allowed(who.role, permission) for permission in _SECTIONS):
        raise Forbidden(
            N_("the role '%(role)s' has no administration pages; ask an administrator"),
            role=f"{who.role}",
        )
    return render(request, "accounts/admin_index.html")


# users ----------------------------------------------------------------------------
@router.get("/admin/users")
def users_page(
    request: Request,
    who: Writer,
    service: AccountsDep,
    q: Search = "",
    role: Annotated[Role | None, Query()] = None,
    page: PageNo = 1,
) -> HTMLResponse:
    """Users, searched by any part of the e-mail address and filtered by role."""
    email = q.strip() or None
    total = service.count_users(email=email, role=role, company_id=None)
    rows = service.find_users(
        email=email,
        role=role,
        company_id=None,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    context = {
        "rows": rows,
        "q": q,
        "role": None if role is None else role.value,
        "roles": [r.value for r in Role],
        "page": page,
        "pages": _pages(total),
        "total": total,
    }
    return render(request, "accounts/admin_users.html", context)


def _companies(service: AccountService) -> list[Any]:
    return service.find_companies(partner_id=None, name=None, limit=500, offset=0)


def _roles_for(who: Principal) -> list[str]:
    """The roles this admin may give: only an admin gives the admin role."""
    return [r.value for r in Role if r is not Role.ADMIN or who.role == Role.ADMIN]


@router.get("/admin/users/new")
def new_user_page(request: Request, who: Writer, service: AccountsDep) -> HTMLResponse:
    context = {
        "values": {},
        "error": None,
        "roles": _roles_for(who),
        "companies": _companies(service),
    }
    return render(request, "accounts/admin_user_new.html", context)


def _company_id(raw: object) -> int | None:
    text = str(raw or "").strip()
    return int(text) if text.isdigit() and len(text) < 11 else None


@router.post("/admin/users/new")
def new_user_submit(
    request: Request, who: Writer, form: CheckedForm, service: AccountsDep
) -> Response:
    """Create the user; a partner needs a company."""
    values = {key: str(form.get(key, "")).strip() for key in ("email", "name", "role", "company")}
    try:
        body = UserCreate(
            email=values["email"],
            name=values["name"],
            password=str(form.get("password", "")),
            role=values["role"],  # type: ignore[arg-type]
            company_id=_company_id(values["company"]),
        )
        created = service.create_user(who, body)
    except (ValidationError, InvalidRequest, AccountExists, Forbidden) as exc:
        context = {
            "values": values,
            "error": _problem(request, exc),
            "roles": _roles_for(who),
            "companies": _companies(service),
        }
        return render(
            request,
            "accounts/admin_user_new.html",
            context,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    text = translator(request).gettext("The user %(email)s is created.") % {"email": created.email}
    return redirect(f"/admin/users/{created.id}", text)


def _user_page(
    request: Request,
    who: Principal,
    service: AccountService,
    user_id: int,
    *,
    error: str | None = None,
    new_key: dict[str, Any] | None = None,
    code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    user = service.user(user_id)
    context = {
        "shown": user,
        "error": error,
        "roles": _roles_for(who),
        "companies": _companies(service),
        "keys": service.api_keys(user_id=user_id),
        "new_key": new_key,
        # only an admin changes an admin account; the service refuses it all the same
        "may_change": user.role is not Role.ADMIN or who.role == Role.ADMIN,
    }
    headers = {"Cache-Control": "no-store"} if new_key else None
    return render(request, "accounts/admin_user.html", context, status_code=code, headers=headers)


@router.get("/admin/users/{user_id}")
def user_page(request: Request, user_id: Id, who: Writer, service: AccountsDep) -> HTMLResponse:
    """A user: name, role, company, API keys; disable."""
    return _user_page(request, who, service, user_id)


@router.post("/admin/users/{user_id}")
def user_submit(
    request: Request, user_id: Id, who: Writer, form: CheckedForm, service: AccountsDep
) -> Response:
    """Change name, role or company; a new role ends the user's logins."""
    try:
        body = UserUpdate(
            name=str(form.get("name", "")).strip(),
            role=str(form.get("role", "")),  # type: ignore[arg-type]
            company_id=_company_id(form.get("company")),
            phone=str(form.get("phone", "")).strip()[:32] or None,
        )
        service.update_user(who, user_id, body)
    except (ValidationError, InvalidRequest, Forbidden) as exc:
        return _user_page(
            request,
            who,
            service,
            user_id,
            error=_problem(request, exc),
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return redirect(f"/admin/users/{user_id}", translator(request).gettext("Saved."))


@router.post("/admin/users/{user_id}/api-keys")
def user_key_submit(
    request: Request, user_id: Id, who: Writer, form: CheckedForm, service: AccountsDep
) -> Response:
    """Make an API key acting as the user, and show it this once."""
    name = str(form.get("name", "")).strip()[:101]
    try:
        made = service.create_api_key(who, user_id, name=name)
    except (InvalidRequest, Forbidden) as exc:
        return _user_page(
            request,
            who,
            service,
            user_id,
            error=_problem(request, exc),
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return _user_page(request, who, service, user_id, new_key=made)


@router.get("/admin/users/{user_id}/disable")
def disable_confirm(
    request: Request, user_id: Id, who: Writer, service: AccountsDep
) -> HTMLResponse:
    """The confirm step: what disabling stops."""
    return render(request, "accounts/admin_user_disable.html", {"shown": service.user(user_id)})


@router.post("/admin/users/{user_id}/disable")
def disable_submit(
    request: Request, user_id: Id, who: Writer, form: CheckedForm, service: AccountsDep
) -> Response:
    """Disable the user: sign-ins, sessions and API keys stop (the rows stay for the audit log)."""
    shown = service.disable_user(who, user_id)
    text = translator(request).gettext("%(email)s is disabled.") % {"email": shown.email}
    return redirect(f"/admin/users/{user_id}", text)


# companies ------------------------------------------------------------------------
@router.get("/admin/companies")
def companies_page(
    request: Request, who: Writer, service: AccountsDep, q: Search = "", page: PageNo = 1
) -> HTMLResponse:
    """Partner companies, searched by any part of the name."""
    name = q.strip() or None
    total = service.count_companies(partner_id=None, name=name)
    rows = service.find_companies(
        partner_id=None, name=name, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    context = {"rows": rows, "q": q, "page": page, "pages": _pages(total), "total": total}
    return render(request, "accounts/admin_companies.html", context)


@router.get("/admin/companies/new")
def new_company_page(request: Request, who: Writer) -> HTMLResponse:
    context = {"company": None, "values": {"payment_type": "invoice"}, "error": None}
    return render(request, "accounts/admin_company.html", context)


@router.post("/admin/companies/new")
def new_company_submit(
    request: Request, who: Writer, form: CheckedForm, service: AccountsDep
) -> Response:
    """Create a partner company (its partner id is made when left empty)."""
    values = {k: str(form.get(k, "")).strip() for k in ("name", "partner_id", "payment_type")}
    try:
        body = CompanyCreate(
            name=values["name"],
            partner_id=values["partner_id"] or None,
            payment_type=values["payment_type"],  # type: ignore[arg-type]
        )
        created = service.create_company(who, body)
    except (ValidationError, AccountExists) as exc:
        context = {"company": None, "values": values, "error": _problem(request, exc)}
        return render(
            request,
            "accounts/admin_company.html",
            context,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    text = translator(request).gettext("The company %(name)s is created.") % {"name": created.name}
    return redirect(f"/admin/companies/{created.id}", text)


@router.get("/admin/companies/{company_id}")
def company_page(
    request: Request, company_id: Id, who: Writer, service: AccountsDep
) -> HTMLResponse:
    """A company: name, how it pays, its users."""
    company = service.company(company_id)
    members = service.find_users(email=None, role=None, company_id=company_id, limit=200, offset=0)
    context = {
        "company": company,
        "values": {"name": company.name, "payment_type": company.payment_type.value},
        "members": members,
        "error": None,
        "invoicing": company.invoicing or InvoicingIn(),
        "invoicing_error": None,
    }
    return render(request, "accounts/admin_company.html", context)


@router.post("/admin/companies/{company_id}/invoicing")
def invoicing_submit(
    request: Request, company_id: Id, who: Writer, form: CheckedForm, service: AccountsDep
) -> Response:
    """Save the company's address and VAT number or GSTIN (all at once; empty clears)."""
    values = posted_invoicing(form)
    try:
        body = CompanyUpdate(invoicing=InvoicingIn(**values))
        service.update_company(who, company_id, body)
    except (ValidationError, InvalidRequest) as exc:
        company = service.company(company_id)
        members = service.find_users(
            email=None, role=None, company_id=company_id, limit=200, offset=0
        )
        context = {
            "company": company,
            "values": {"name": company.name, "payment_type": company.payment_type.value},
            "members": members,
            "error": None,
            "invoicing": values,
            "invoicing_error": _problem(request, exc),
        }
        return render(
            request,
            "accounts/admin_company.html",
            context,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return redirect(
        f"/admin/companies/{company_id}#invoicing", translator(request).gettext("Saved.")
    )


@router.post("/admin/companies/{company_id}")
def company_submit(
    request: Request, company_id: Id, who: Writer, form: CheckedForm, service: AccountsDep
) -> Response:
    """Rename the company or change how it pays."""
    try:
        body = CompanyUpdate(
            name=str(form.get("name", "")).strip(),
            payment_type=str(form.get("payment_type", "")),  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        company = service.company(company_id)
        context = {
            "company": company,
            "values": {k: str(form.get(k, "")) for k in ("name", "payment_type")},
            "members": [],
            "error": _problem(request, exc),
            "invoicing": company.invoicing or InvoicingIn(),
            "invoicing_error": None,
        }
        return render(
            request,
            "accounts/admin_company.html",
            context,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    service.update_company(who, company_id, body)
    return redirect(f"/admin/companies/{company_id}", translator(request).gettext("Saved."))


# API keys -------------------------------------------------------------------------
@router.get("/admin/api-keys")
def keys_page(request: Request, who: Writer, service: AccountsDep) -> HTMLResponse:
    """Every API key: whose, since when, revoked or not (never the key itself)."""
    keys = service.api_keys(newest_first=True)
    return render(request, "accounts/admin_api_keys.html", {"keys": keys})


@router.get("/admin/api-keys/{key_id}/revoke")
def revoke_confirm(request: Request, key_id: Id, who: Writer, service: AccountsDep) -> HTMLResponse:
    """The confirm step: a revoked key stops at once, for good."""
    key = service.api_key(key_id)  # an unknown key: 404, as the revoke itself answers
    return render(request, "accounts/admin_api_key_revoke.html", {"key": key})


@router.post("/admin/api-keys/{key_id}/revoke")
def revoke_submit(
    request: Request, key_id: Id, who: Writer, form: CheckedForm, service: AccountsDep
) -> Response:
    service.revoke_api_key(who, key_id)
    return redirect("/admin/api-keys", translator(request).gettext("The API key is revoked."))


# the audit log --------------------------------------------------------------------
def _day(text: str, *, end: bool = False) -> int | None:
    """Epoch seconds of a ``YYYY-MM-DD`` day's start (or the next day's, for ``end``), UTC."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            N_("%(text)s is not a date (YYYY-MM-DD)"), text=repr(text[:20])
        ) from None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return int(start) + (86_400 if end else 0)


def _with_changes(entry: AuditOut) -> dict[str, Any]:
    """The entry, and ``changes``: each field that differs, with its value before and after."""
    before, after = entry.before or {}, entry.after or {}
    keys = list(dict.fromkeys([*after, *before]))
    changes = [(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]
    return {**entry.model_dump(), "changes": changes}


_Text = Annotated[str, Query(max_length=100, pattern=r"^[A-Za-z0-9_.:@ -]*$")]
_Day = Annotated[str, Query(max_length=10, pattern=r"^(\d{4}-\d{2}-\d{2})?$")]


@router.get("/admin/audit")
def audit_page(
    request: Request,
    who: Auditor,
    service: AccountsDep,
    actor: _Text = "",
    object_type: _Text = "",
    object_id: _Text = "",
    action: _Text = "",
    since: _Day = "",
    until: _Day = "",
    page: PageNo = 1,
) -> HTMLResponse:
    """Who changed what, newest first, filtered by actor, object, action and days (UTC)."""
    which = AuditFilter(
        actor=actor.strip() or None,
        object_type=object_type.strip() or None,
        object_id=object_id.strip() or None,
        action=action.strip() or None,
        since=_day(since),
        until=_day(until, end=True),
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    total = service.count_audit(which)
    context = {
        "entries": [_with_changes(entry) for entry in service.audit_entries(which)],
        "filters": {
            "actor": actor,
            "object_type": object_type,
            "object_id": object_id,
            "action": action,
            "since": since,
            "until": until,
        },
        "page": page,
        "pages": _pages(total),
        "total": total,
    }
    return render(request, "accounts/admin_audit.html", context)
