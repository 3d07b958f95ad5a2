"""Dashboard login: POST login (public) sets an HttpOnly session cookie; logout; who am I.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
other site's page sends it, which is the CSRF defence) and ``Secure`` when
the request came over HTTPS. Machines use API keys instead.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import ROLE_PERMISSIONS, Permission, Role
from cloud.accounts.schemas import LoginRequest, MeOut, SessionOut, UserOut
from cloud.accounts.sessions import attempt_login, end_session
from cloud.accounts.users import user, user_view
from cloud.http.deps import SESSION_COOKIE, StateDep, require
from cloud.http.errors import documented, http_error

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
def login(body: LoginRequest, request: Request, response: Response, state: StateDep) -> SessionOut:
    """Check the password and start a session (cookie ``entitle_session``)."""
    settings = state.settings
    with state.store.transaction() as tx:
        outcome = attempt_login(
            tx,
            email=body.email,
            password=body.password,
            now=state.clock(),
            ttl_s=settings.session_ttl_s,
        )
        shown = None if outcome.user is None else UserOut(**user_view(outcome.user))
    if outcome.error is not None:
        raise http_error(outcome.error)  # after the commit: the failure counts
    assert outcome.token is not None and outcome.expires_at is not None and shown is not None
    response.set_cookie(
        SESSION_COOKIE,
        outcome.token,
        max_age=settings.session_ttl_s,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return SessionOut(
        user=shown, expires_at=outcome.expires_at, idle_timeout_s=settings.session_idle_s
    )


@public_router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, state: StateDep) -> Response:
    """End the session of the cookie sent, if any, and clear the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with state.store.transaction() as tx:
            end_session(tx, token)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/me")
def me(
    principal: Annotated[Principal, Depends(require(Permission.PROFILE))], state: StateDep
) -> MeOut:
    """Who this request acts as, and what its role may do."""
    shown = None
    if principal.user_id is not None:
        with state.store.transaction() as tx:
            shown = UserOut(**user_view(user(tx, principal.user_id)))
    try:
        permissions = sorted(p.value for p in ROLE_PERMISSIONS[Role(principal.role)])
    except ValueError:
        permissions = []
    return MeOut(
        role=principal.role, user=shown, api_key_id=principal.key_id, permissions=permissions
    )
