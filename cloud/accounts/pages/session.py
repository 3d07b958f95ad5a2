"""Signing in and out of the dashboard, and the start page each role lands on.

The session cookie is the API's (:mod:`cloud.accounts.routes.auth`): HttpOnly,
SameSite=Strict, Secure over HTTPS. Failed logins count towards the same per-account
lock as the API's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloud.accounts.deps import (
    SESSION_COOKIE,
    AccountsDep,
    PageUser,
    clear_session_cookie,
    set_session_cookie,
)
from cloud.accounts.rules import Permission, allowed
from cloud.errors import LoginFailed, LoginThrottled
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import render, translator

__all__ = ["router", "safe_next"]

router = APIRouter(include_in_schema=False)

NextUrl = Annotated[str, Query(max_length=2000)]


def safe_next(target: str | None) -> str:
    """Only a path of this site (``/x``), never ``//evil.example`` or ``https://…``."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


@router.get("/login")
def login_form(request: Request, next: NextUrl = "/") -> HTMLResponse:
    """The sign-in form (the browser's language until the user has chosen one)."""
    return render(request, "accounts/login.html", {"next": safe_next(next), "error": None})


@router.post("/login")
def login_submit(request: Request, form: CheckedForm, service: AccountsDep) -> Response:
    """Check the password, start a session, and go where the user was going."""
    _ = translator(request).gettext
    email = str(form.get("email", ""))[:254]
    target = safe_next(str(form.get("next", "/")))
    try:
        started = service.login(email=email, password=str(form.get("password", ""))[:1000])
    except LoginThrottled as exc:
        error = _("Too many failed attempts for this account. Wait %(minutes)s minutes.") % {
            "minutes": max(1, exc.retry_after // 60)
        }
        return render(
            request,
            "accounts/login.html",
            {"next": target, "error": error, "email": email},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except LoginFailed:
        return render(
            request,
            "accounts/login.html",
            {"next": target, "error": _("Wrong e-mail address or password."), "email": email},
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, request, started.token, max_age=started.max_age_s)
    return response


@router.post("/logout")
def logout_submit(request: Request, form: CheckedForm, service: AccountsDep) -> Response:
    """End this browser's session and show the sign-in form."""
    service.logout(request.cookies.get(SESSION_COOKIE))
    response = redirect("/login", translator(request).gettext("You are signed out."), level="info")
    clear_session_cookie(response, request)
    return response


@router.get("/")
def start(who: PageUser) -> Response:
    """Staff start at the fleet, partners and owners at their installations."""
    target = "/fleet" if allowed(who.role, Permission.FLEET_READ) else "/installations"
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
