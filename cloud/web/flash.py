"""One-shot messages shown on the page a POST redirects to ("Saved", "Refund started")."""

from __future__ import annotations

import base64
import json

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

__all__ = ["FLASH_COOKIE", "flash", "redirect", "take_flashes"]

FLASH_COOKIE = "entitle_flash"
_LEVELS = {"success", "info", "warning", "error"}
_MAX_TEXT = 500


def flash(response: Response, text: str, *, level: str = "success") -> Response:
    """Show ``text`` (already translated) once, on the next page this browser renders."""
    if level not in _LEVELS:
        raise ValueError(f"flash level {level!r} is not one of {sorted(_LEVELS)}")
    value = base64.urlsafe_b64encode(json.dumps([level, text[:_MAX_TEXT]]).encode()).decode()
    response.set_cookie(FLASH_COOKIE, value, path="/", httponly=True, samesite="strict")
    return response


def redirect(url: str, text: str | None = None, *, level: str = "success") -> Response:
    """See ``url`` next (303, the answer to a form's POST), showing ``text`` there once if given."""
    response = RedirectResponse(url, status_code=303)
    return response if text is None else flash(response, text, level=level)


def take_flashes(request: Request) -> list[tuple[str, str]]:
    """The message waiting for this request (at most one); a forged cookie shows nothing."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return []
    try:
        level, text = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, TypeError):
        return []
    if level not in _LEVELS or not isinstance(text, str):
        return []
    return [(level, text[:_MAX_TEXT])]
