"""Who a request acts as, and ``require(Permission.X)``, as ``Annotated`` dependencies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from cloud.accounts.apikeys import CREATE_HINT, Principal, authenticate
from cloud.accounts.rules import Permission, allowed, refusal
from cloud.accounts.service import AccountService
from cloud.accounts.sessions import resolve_session
from cloud.errors import Forbidden, NotAuthenticated, SessionExpired
from cloud.http.deps import AppState, get_state, provided
from cloud.http.inputs import refuse_loose_parameters

__all__ = [
    "SESSION_COOKIE",
    "AccountsDep",
    "CurrentPrincipal",
    "PageUser",
    "clear_session_cookie",
    "get_principal",
    "page_require",
    "page_user",
    "require",
    "set_session_cookie",
]

_log = logging.getLogger(__name__)

# auto_error=False: a missing header gets our 401 with the how-to, not FastAPI's
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description=f"An API key from '{CREATE_HINT}', sent as 'Authorization: Bearer KEY'.",
)


SESSION_COOKIE = "entitle_session"
_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="Session",
    description="The dashboard's login session, set by POST /api/v1/auth/login.",
)


def get_principal(
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session_token: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """Who a request acts as: its bearer API key, else its login session cookie.

    401 (``WWW-Authenticate: Bearer``) with neither, or with one that is no longer valid.
    """
    try:
        if credentials is not None or not session_token:
            return authenticate(
                state.store, None if credentials is None else credentials.credentials
            )
        with state.store.transaction() as tx:
            principal = resolve_session(
                tx,
                session_token,
                now=state.clock(),
                idle_s=state.settings.session_idle_s,
            )
        if principal is None:
            raise SessionExpired(
                "your login session has ended (expired, idle, or logged out): log in again"
            )
        return principal
    except NotAuthenticated as exc:
        _log.info("request refused: %s", type(exc).__name__)
        raise  # the app's one handler answers it (cloud.http.errors)


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets the request through only if its role holds ``permission``.

    403 says which permission is missing and what the role may do instead.
    A request let through then has its URL parameters checked (422,
    :func:`cloud.http.inputs.refuse_loose_parameters`): a role that may not
    call a route learns that, not how to spell its parameters. Routes
    declare it as ``principal: Annotated[Principal, Depends(require(P.X))]``
    (or in ``dependencies=[...]``); the route-by-role test finds it by
    ``dependency.permission``.
    """

    return _requiring(permission, get_principal)


def _requiring(
    permission: Permission, who: Callable[..., Principal]
) -> Callable[..., Awaitable[Principal]]:
    """The dependency of :func:`require` and :func:`page_require`: ``who`` says how the
    request is authenticated (API key or session; the session only, for pages)."""

    async def dependency(principal: Principal, request: Request) -> Principal:
        # pure (no I/O): on the event loop, not a thread-pool hop (cloud.http.deps)
        if not allowed(principal.role, permission):
            template, params = refusal(principal.role, permission)
            raise Forbidden(template, **params)
        refuse_loose_parameters(request)
        return principal

    # an object, not a string: postponed annotations cannot name the local ``who``
    dependency.__annotations__["principal"] = Annotated[Principal, Depends(who)]
    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


def page_user(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    session_token: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """Who a dashboard page is for: its login session only (pages take no API key).

    Without a live session the one error mapper sends the browser to ``/login?next=…``.
    The principal and its permissions are kept on ``request.state`` for the layout
    (:func:`cloud.web.templates.render`: ``user``, ``can(...)``).
    """
    principal = get_principal(state, None, session_token or "")
    if principal.key_id is not None:  # a bare API key has no dashboard
        raise SessionExpired("log in to use the dashboard")
    request.state.principal = principal
    request.state.permissions = frozenset(
        str(permission) for permission in Permission if allowed(principal.role, permission)
    )
    return principal


def page_require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """:func:`require` for pages: the 403 page for a role without ``permission``."""
    return _requiring(permission, page_user)


def set_session_cookie(response: Response, request: Request, token: str, *, max_age: int) -> None:
    """The login session cookie: HttpOnly (no script reads it), SameSite=Strict (no other
    site's page sends it) and Secure when the request came over HTTPS."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
PageUser = Annotated[Principal, Depends(page_user)]
AccountsDep = Annotated[AccountService, Depends(provided(AccountService))]
