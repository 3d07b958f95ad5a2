"""My profile: name, language, and a new password (the current one first); a partner's
company's invoicing details (``/profile/company``), checked as staff's changes are.

A new password signs the user out everywhere else; this browser stays signed in.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, Response

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import SESSION_COOKIE, AccountsDep, page_require
from cloud.accounts.passwords import MAX_PASSWORD, MIN_PASSWORD
from cloud.accounts.rules import InvoicingDetails, Permission
from cloud.accounts.schemas import posted_invoicing
from cloud.accounts.service import AccountService
from cloud.errors import InvalidRequest, LoginFailed, LoginThrottled
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.i18n import LANGUAGES
from cloud.web.templates import error_text, render, translator

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Me = Annotated[Principal, Depends(page_require(Permission.PROFILE))]


def _page(
    request: Request,
    who: Principal,
    service: AccountService,
    *,
    errors: dict[str, str] | None = None,
    code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "profile": service.profile(who),
        "errors": errors or {},
        "min_length": MIN_PASSWORD,
        "languages": LANGUAGES,
    }
    return render(request, "accounts/profile.html", context, status_code=code)


@router.get("/profile")
def profile_page(request: Request, who: Me, service: AccountsDep) -> HTMLResponse:
    """Who I am, what my role is, and the forms to change my name, language and password."""
    return _page(request, who, service)


@router.post("/profile")
def profile_submit(request: Request, who: Me, form: CheckedForm, service: AccountsDep) -> Response:
    """Save my name and language; the next page is in the new language."""
    locale = str(form.get("locale", ""))
    try:
        service.update_profile(who, name=str(form.get("name", ""))[:201], locale=locale)
    except InvalidRequest:
        _ = translator(request).gettext
        error = _("Give a name of 1 to 200 characters and one of the languages offered.")
        return _page(
            request,
            who,
            service,
            errors={"profile": error},
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    # the flash is in the language just chosen
    translations = request.app.state.pages.catalogues.get(locale)
    text = (
        "Your profile is saved."
        if translations is None
        else translations.gettext("Your profile is saved.")
    )
    response = redirect("/profile", text)
    response.set_cookie(
        "entitle_lang",
        locale,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/profile/password")
def password_submit(request: Request, who: Me, form: CheckedForm, service: AccountsDep) -> Response:
    """Change my password: the current one, then the new one twice."""
    _ = translator(request).gettext
    new = str(form.get("new", ""))[: MAX_PASSWORD + 1]
    if new != str(form.get("repeat", ""))[: MAX_PASSWORD + 1]:
        error = _("The two new passwords differ. Type the same new password twice.")
        return _page(
            request,
            who,
            service,
            errors={"password": error},
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    try:
        ended = service.change_password(
            who,
            current=str(form.get("current", ""))[: MAX_PASSWORD + 1],
            new=new,
            session_token=request.cookies.get(SESSION_COOKIE),
        )
    except LoginThrottled as exc:
        minutes = max(1, exc.retry_after // 60)
        error = _("Too many wrong passwords for this account. Wait %(minutes)s minutes.")
        error, code = error % {"minutes": minutes}, status.HTTP_429_TOO_MANY_REQUESTS
    except LoginFailed:
        error, code = _("The current password is wrong."), status.HTTP_422_UNPROCESSABLE_CONTENT
    except InvalidRequest:
        error = _("A password has %(min)d to %(max)d characters; a few words are easy to remember.")
        error = error % {"min": MIN_PASSWORD, "max": MAX_PASSWORD}
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    else:
        return _changed(request, ended)
    return _page(request, who, service, errors={"password": error}, code=code)


def _changed(request: Request, ended: int) -> Response:
    text = translator(request).ngettext(
        "Your password is changed. %(count)d other session was signed out.",
        "Your password is changed. %(count)d other sessions were signed out.",
        ended,
    ) % {"count": ended}
    return redirect("/profile", text)


# my company's invoicing details (partners) --------------------------------------------
def _company_page(
    request: Request,
    who: Principal,
    service: AccountService,
    *,
    values: dict[str, str | None] | None = None,
    error: str | None = None,
) -> HTMLResponse:
    company = service.own_company(who)  # 404 for anyone who is no company's partner
    context: dict[str, Any] = {
        "company": company,
        "invoicing": values if values is not None else company.invoicing,
        "invoicing_error": error,
    }
    code = status.HTTP_422_UNPROCESSABLE_CONTENT if error else status.HTTP_200_OK
    return render(request, "accounts/company.html", context, status_code=code)


@router.get("/profile/company")
def company_page(request: Request, who: Me, service: AccountsDep) -> HTMLResponse:
    """My partner company and the invoicing details printed on its invoices."""
    return _company_page(request, who, service)


@router.post("/profile/company")
def company_submit(request: Request, who: Me, form: CheckedForm, service: AccountsDep) -> Response:
    """Save my company's invoicing details (all at once; empty clears); a refusal says why
    and stores nothing."""
    values = posted_invoicing(form)
    try:
        service.update_own_invoicing(who, InvoicingDetails(**values))
    except InvalidRequest as exc:
        return _company_page(request, who, service, values=values, error=error_text(request, exc))
    return redirect(
        "/profile/company", translator(request).gettext("Your invoicing details are saved.")
    )
