"""Cloud errors as HTTP errors: the one place the mapping lives, and its OpenAPI side."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud.errors import (
    BrokerUnavailable,
    Conflict,
    ContentTooLarge,
    Forbidden,
    InvalidGrant,
    InvalidRequest,
    LoginThrottled,
    MissingApiKey,
    NotAuthenticated,
    NotFound,
    PaymentDeclined,
    UpstreamFailed,
)
from cloud.http.schemas import ErrorOut
from cloud.web.templates import error_text, is_page_request, render, translator
from protocol.commands import BadCommand
from protocol.errors import EntitleError, TransportError

__all__ = [
    "body_too_large",
    "documented",
    "entitle_error",
    "http_error",
    "not_found_or_http_error",
    "validation_error",
]


def http_error(exc: EntitleError) -> HTTPException:
    """401 no usable key, 403 not allowed, 404 unknown, 409 conflict, 422 bad grant or
    command, 502 the payment provider failed, 503 the broker did not take it, else 500."""
    if isinstance(exc, BadCommand):  # e.g. max_bytes given to reboot: FastAPI's 422 shape
        detail = [{"type": "invalid_command", "loc": ["body", "args"], "msg": str(exc)}]
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)
    if isinstance(exc, TransportError):
        return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc))
    if isinstance(exc, UpstreamFailed):
        return HTTPException(status.HTTP_502_BAD_GATEWAY, detail=str(exc))
    if isinstance(exc, NotAuthenticated):
        # RFC 6750: no error code when no credentials were sent at all
        challenge = "Bearer" if isinstance(exc, MissingApiKey) else 'Bearer error="invalid_token"'
        return HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=str(exc), headers={"WWW-Authenticate": challenge}
        )
    if isinstance(exc, Forbidden):
        return HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc))
    if isinstance(exc, LoginThrottled):
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=str(exc),
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, NotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    if isinstance(exc, Conflict):
        return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))
    if isinstance(exc, InvalidGrant):
        # the shape of FastAPI's own 422s, so that clients parse one kind of 422
        detail = [{"type": "invalid_grant", "loc": ["body"], "msg": str(exc)}]
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)
    if isinstance(exc, BrokerUnavailable):
        return HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc), headers={"Retry-After": "5"}
        )
    if isinstance(exc, PaymentDeclined):
        return HTTPException(status.HTTP_402_PAYMENT_REQUIRED, detail=str(exc))
    if isinstance(exc, ContentTooLarge):
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc))
    if isinstance(exc, InvalidRequest):
        detail = [{"type": "invalid_request", "loc": ["body"], "msg": str(exc)}]
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)
    return HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, detail=str(exc))


async def entitle_error(request: Request, exc: Exception) -> Response:
    """The one handler that turns the error tree into HTTP: routes raise, never map.

    An error with a ``why`` (a machine-readable reason, e.g. an RMA refusal)
    carries it in the body beside ``detail``.
    """
    assert isinstance(exc, EntitleError)
    http = http_error(exc)
    if is_page_request(request):
        detail = error_text(request, exc)
        return page_error(request, http.status_code, detail, headers=http.headers)
    why = getattr(exc, "why", None)
    if isinstance(why, str):
        return JSONResponse(
            {"detail": http.detail, "why": why}, status_code=http.status_code, headers=http.headers
        )
    return await http_exception_handler(request, http)


def body_too_large(limit: int) -> HTTPException:
    """413: a request body over ``http_max_body_bytes`` (:mod:`cloud.http.body_limit`)."""
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"the request body is over {limit} bytes: send a smaller one "
        "(the server's limit is ENTITLE_HTTP_MAX_BODY_BYTES)",
    )


def documented(
    descriptions: dict[int, str] | None = None, *, body: bool = False
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's error statuses, e.g. ``{404: "unknown device"}``.

    Each gets the ``{"detail": "..."}`` body these errors carry; ``body=True``
    adds the 400 FastAPI answers to a request body it cannot decode and the
    413 of one over the size limit (FastAPI documents its own 422s).
    """
    out: dict[int | str, dict[str, Any]] = {}
    if body:
        out[400] = {"model": ErrorOut, "description": "the body cannot be decoded (not UTF-8)"}
        out[413] = {"model": ErrorOut, "description": "the body is over the server's size limit"}
    for code, description in (descriptions or {}).items():
        out[code] = {"model": ErrorOut, "description": description}
    return out


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, but as ASCII JSON.

    The default handler echoes the input back as UTF-8, and a lone surrogate
    (``"\\ud800"`` is valid JSON) cannot be encoded: the 422 became a 500.
    """
    assert isinstance(exc, RequestValidationError)
    if is_page_request(request):
        _ = translator(request).gettext
        return page_error(
            request,
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            _("This address or form has a value we cannot read. Go back and try again."),
        )
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json")


def page_error(
    request: Request, status_code: int, detail: str, *, headers: dict[str, str] | None = None
) -> Response:
    """An error as a dashboard page; no session (401) sends the browser to log in.

    A 404 page never says what was asked for: an installation the user may not see
    and one that does not exist answer the very same page.
    """
    if status_code == status.HTTP_401_UNAUTHORIZED:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status.HTTP_303_SEE_OTHER)
    _ = translator(request).gettext
    titles = {
        403: _("Not allowed"),
        404: _("Not found"),
        409: _("That cannot be done now"),
        422: _("Please check what you entered"),
        429: _("Too many attempts"),
    }
    if status_code == status.HTTP_404_NOT_FOUND:
        detail = _("This page does not exist, or it is not yours to see.")
    elif status_code >= 500:
        detail = _("Something went wrong on our side. Try again in a moment.")
    keep = {k: v for k, v in (headers or {}).items() if k.lower() == "retry-after"}
    return render(
        request,
        "error.html",
        {
            "status_code": status_code,
            "title": titles.get(status_code, _("Something went wrong")),
            "detail": detail,
        },
        status_code=status_code,
        headers=keep,
    )


async def not_found_or_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (an unknown URL, a wrong method): a page for pages."""
    assert isinstance(exc, StarletteHTTPException)
    if is_page_request(request) and exc.status_code in (404, 405):
        return page_error(request, exc.status_code, str(exc.detail))
    return await http_exception_handler(request, exc)
