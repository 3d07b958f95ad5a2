"""CSRF tokens on every form, and :data:`CheckedForm`, the form a POST handler takes.

The token is an HMAC of the secret cookie the browser holds (its login session, or
before login a random ``entitle_csrf`` cookie) — both HttpOnly, so a page of another
origin can neither read the cookie nor compute the token. Nothing is stored on the
server, so any worker checks any form. ``SameSite=Strict`` cookies are the first wall;
this is the second.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from cloud.errors import N_, Forbidden

__all__ = [
    "ANON_COOKIE",
    "SESSION_COOKIE",
    "CheckedForm",
    "checked_form",
    "csrf_token",
    "new_anonymous_secret",
    "set_anonymous_cookie",
]

SESSION_COOKIE = "entitle_session"
ANON_COOKIE = "entitle_csrf"
_CONTEXT = b"entitle-csrf-v1"
_FORM_FIELD = "csrf_token"


def _token(secret: str) -> str:
    return hmac.new(secret.encode(), _CONTEXT, hashlib.sha256).hexdigest()


def _secret(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or request.cookies.get(ANON_COOKIE)


def new_anonymous_secret() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(request: Request) -> tuple[str, str | None]:
    """The token for this browser's forms, and a new anonymous secret to set if it has none."""
    secret = _secret(request) or getattr(request.state, "anon_secret", None)
    if secret:
        return _token(secret), None
    fresh = new_anonymous_secret()
    request.state.anon_secret = fresh
    return _token(fresh), fresh


def set_anonymous_cookie(response: Response, request: Request, secret: str) -> None:
    response.set_cookie(
        ANON_COOKIE,
        secret,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


async def checked_form(request: Request) -> FormData:
    """The POSTed form, once its ``csrf_token`` matches this browser's cookie (else 403)."""
    form = await request.form()
    sent = form.get(_FORM_FIELD)
    secret = _secret(request)
    if not isinstance(sent, str) or secret is None or not hmac.compare_digest(sent, _token(secret)):
        raise Forbidden(
            N_(
                "this form's security token is missing or out of date: "
                "reload the page and try again"
            )
        )
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]
"""A POST handler's parsed form, CSRF-checked: ``def post_x(form: CheckedForm, ...)``."""
