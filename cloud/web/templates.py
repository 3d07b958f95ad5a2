"""One Jinja2 environment for every page, and :func:`render`.

Templates are found in ``cloud/web/templates`` (the layout, ``_ui.html`` macros, error
pages) and in every feature's ``templates/`` folder, by name: ``"devices/device.html"``.
Autoescaping is on for everything; an undefined variable is an error, not an empty string.
Text goes through gettext in the request's language (:mod:`cloud.web.i18n`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from babel.dates import format_date, format_datetime, format_timedelta
from babel.numbers import format_currency, format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context

from cloud.errors import CloudError
from cloud.web.assets import CLOUD_DIR
from cloud.web.flash import FLASH_COOKIE, take_flashes
from cloud.web.forms import csrf_token, set_anonymous_cookie
from cloud.web.i18n import LANGUAGES, Catalogues, load_catalogues, negotiate

__all__ = [
    "Pages",
    "error_text",
    "is_page_request",
    "language",
    "render",
    "translator",
    "url_with",
]

_NOT_PAGES = ("/api/", "/static/", "/healthz", "/metrics", "/openapi.json")


def is_page_request(request: Request) -> bool:
    """A request for a dashboard page (HTML errors), not the API, a probe or a file."""
    return not request.url.path.startswith(_NOT_PAGES)


@pass_context
def _gettext(context: Context, message: str) -> str:
    return str(context["translations"].gettext(message))


@pass_context
def _ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    return str(context["translations"].ngettext(singular, plural, n))


def _when(epoch: int | float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@pass_context
def _datetime(context: Context, epoch: int | float | None) -> str:
    if epoch is None:
        return "—"
    return format_datetime(_when(epoch), "medium", tzinfo=UTC, locale=context["lang"]) + " UTC"


@pass_context
def _date(context: Context, epoch: int | float | None) -> str:
    if epoch is None:
        return "—"
    return format_date(_when(epoch), "medium", locale=context["lang"])


@pass_context
def _ago(context: Context, epoch: int | float | None) -> str:
    """ "3 minutes ago" / "in 2 days", against the app's clock (``now``)."""
    if epoch is None:
        return "—"
    delta = epoch - context["now"]
    if abs(delta) < 1:  # "in 0 seconds" for a report stamped a moment after the clock read
        return str(context["translations"].gettext("just now"))
    return format_timedelta(delta, add_direction=True, threshold=1.0, locale=context["lang"])


@pass_context
def _money(context: Context, cents: int | None, currency: str = "EUR") -> str:
    if cents is None:
        return "—"
    return format_currency(Decimal(cents) / 100, currency, locale=context["lang"])


@pass_context
def _number(context: Context, value: int | float | None) -> str:
    if value is None:
        return "—"
    return format_decimal(value, locale=context["lang"])


def url_with(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (``None`` removes one)."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    kept += [(k, str(v)) for k, v in changes.items() if v is not None]
    query = urlencode(kept)
    return request.url.path + (f"?{query}" if query else "")


class Pages:
    """The template environment and the language catalogues, built once per app."""

    def __init__(self, cloud_dir: Path = CLOUD_DIR) -> None:
        folders = [cloud_dir / "web" / "templates"] + sorted(
            folder for folder in cloud_dir.glob("*/templates") if folder.parent.name != "web"
        )
        self.env = Environment(
            loader=FileSystemLoader(folders),
            autoescape=True,
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
        self.env.filters.update(
            datetime=_datetime, date=_date, ago=_ago, money=_money, number=_number
        )
        self.env.globals["url_with"] = url_with
        self.catalogues: Catalogues = load_catalogues(cloud_dir)


def language(request: Request) -> str:
    """The language of this request's page: the user's choice, else the browser's."""
    principal = getattr(request.state, "principal", None)
    return negotiate(
        getattr(principal, "locale", None) or request.cookies.get("entitle_lang"),
        request.headers.get("accept-language"),
    )


def translator(request: Request) -> Any:
    """The gettext object of this request's language, for text made in Python (flashes)."""
    pages: Pages = request.app.state.pages
    return pages.catalogues[language(request)]


def error_text(request: Request, exc: Exception) -> str:
    """What a refusal says, in this request's language: a cloud error's message as the
    service wrote it (``N_``), translated; another error's text as it is."""
    if isinstance(exc, CloudError):
        return exc.text(translator(request).gettext)
    return str(exc)


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The page ``template`` for this request, with the layout's context added.

    The context always holds ``request``, ``user`` (a Principal or None), ``csrf_token``,
    ``lang``, ``languages``, ``now`` (the app's clock), ``can(permission)`` (the role
    table, as the page's dependency found it) and ``flashes``.
    """
    pages: Pages = request.app.state.pages
    lang = language(request)
    token, fresh_secret = csrf_token(request)
    permissions: frozenset[str] = getattr(request.state, "permissions", frozenset())
    cloud = getattr(request.app.state, "cloud", None)
    values: dict[str, Any] = {
        "request": request,
        "user": getattr(request.state, "principal", None),
        "csrf_token": token,
        "lang": lang,
        "languages": LANGUAGES,
        "translations": pages.catalogues[lang],
        "now": cloud.clock() if cloud is not None else 0,
        "can": lambda permission: str(permission) in permissions,
        "flashes": take_flashes(request),
    }
    values.update(context or {})
    html = pages.env.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))
    if fresh_secret is not None:
        set_anonymous_cookie(response, request, fresh_secret)
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="strict")
    return response
