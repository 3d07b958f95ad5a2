"""Dashboard login: POST login (public) sets an HttpOnly session cookie; logout; who am I.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
other site's page sends it, which is the CSRF defence) and ``Secure`` when
the request came over HTTPS. Machines use API keys instead.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import (
    SESSION_COOKIE,
    AccountsDep,
    clear_session_cookie,
    require,
    set_session_cookie,
)
from cloud.accounts.rules import Permission
from cloud.accounts.schemas import LoginRequest, MeOut, SessionOut
from cloud.http.errors import documented

__all__ = ["public_router", "router"]

public_router = APIRouter(prefix="/auth", tags=["auth"])
router = APIRouter(prefix="/auth", tags=["auth"])


@public_router.post(
    "/login",
    responses=documented(
        {401: "wrong e-mail or password", 429: "too many failed logins: wait (Retry-After)"},
        body=True,
    ),
)
def login(
    body: LoginRequest, request: Request, response: Response, service: AccountsDep
) -> SessionOut:
    """Check the password and start a session (cookie ``entitle_session``)."""
    started = service.login(email=body.email, password=body.password)
    set_session_cookie(response, request, started.token, max_age=started.max_age_s)
    return started.session


@public_router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, service: AccountsDep) -> Response:
    """End the session of the cookie sent, if any, and clear the cookie."""
    service.logout(request.cookies.get(SESSION_COOKIE))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_session_cookie(response, request)
    return response


@router.get("/me")
def me(
    principal: Annotated[Principal, Depends(require(Permission.PROFILE))], service: AccountsDep
) -> MeOut:
    """Who this request acts as, and what its role may do."""
    return service.me(principal)
