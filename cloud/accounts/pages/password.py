"""Forgotten password: ask for a link by e-mail, then set a new password through it.

Asking answers the same whether the address is an account or not. The link is
single-use and expires (:mod:`cloud.accounts.resets`); its page is never cached
and sends no ``Referer``, so the token in its URL goes nowhere else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from fastapi.responses import HTMLResponse, Response

from cloud.accounts.deps import AccountsDep
from cloud.accounts.passwords import MAX_PASSWORD, MIN_PASSWORD
from cloud.accounts.resets import ResetLinkInvalid
from cloud.errors import InvalidRequest
from cloud.http.deps import SettingsDep
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import render, translator

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Token = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@router.get("/password/forgot")
def forgot_form(request: Request) -> HTMLResponse:
    """Ask for a link to set a new password."""
    return render(request, "accounts/password_forgot.html", {"email": ""})


@router.post("/password/forgot")
def forgot_submit(
    request: Request, form: CheckedForm, service: AccountsDep, settings: SettingsDep
) -> Response:
    """Mail a link if the address is an account; say the same either way."""
    _ = translator(request).gettext
    service.request_password_reset(str(form.get("email", ""))[:254])
    minutes = max(1, settings.password_reset_ttl_s // 60)
    text = _(
        "If an account has this address, a link to set a new password is on its way. "
        "It works once, for %(minutes)d minutes."
    ) % {"minutes": minutes}
    return redirect("/login", text, level="info")


def _link_gone(request: Request) -> HTMLResponse:
    return render(
        request,
        "accounts/password_link_gone.html",
        status_code=status.HTTP_410_GONE,
        headers=_PRIVATE,
    )


def _reset_form(request: Request, token: str, *, error: str | None, code: int) -> HTMLResponse:
    context = {"token": token, "error": error, "min_length": MIN_PASSWORD}
    return render(
        request, "accounts/password_reset.html", context, status_code=code, headers=_PRIVATE
    )


@router.get("/password/reset/{token}")
def reset_form(request: Request, token: Token, service: AccountsDep) -> HTMLResponse:
    """The new-password form, or why the link no longer works (nothing changes here)."""
    if not service.password_reset_works(token):
        return _link_gone(request)
    return _reset_form(request, token, error=None, code=status.HTTP_200_OK)


@router.post("/password/reset/{token}")
def reset_submit(
    request: Request, token: Token, form: CheckedForm, service: AccountsDep
) -> Response:
    """Set the new password, spend the link, end every session, and go to sign in."""
    _ = translator(request).gettext
    password = str(form.get("password", ""))[: MAX_PASSWORD + 1]
    if password != str(form.get("repeat", ""))[: MAX_PASSWORD + 1]:
        return _reset_form(
            request,
            token,
            error=_("The two passwords differ. Type the same new password twice."),
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    try:
        service.reset_password(token, password=password)
    except ResetLinkInvalid:
        return _link_gone(request)
    except InvalidRequest:
        error = _("A password has %(min)d to %(max)d characters; a few words are easy to remember.")
        return _reset_form(
            request,
            token,
            error=error % {"min": MIN_PASSWORD, "max": MAX_PASSWORD},
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return redirect("/login", _("Your new password is set. Sign in with it."))
