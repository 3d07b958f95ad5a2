"""Every dashboard page route keeps the page rules, found by walking the app (as the API's
role walk does): a page is for a signed-in user with the one permission it declares, unless it
is one of the few public ones; every POST checks the CSRF token; no GET page changes state
(the POST-only rule is the walk's: a handler taking a form is never a GET)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts

from cloud.accounts.deps import page_user
from cloud.app import create_app
from cloud.settings import CloudSettings
from cloud.web.forms import checked_form

PUBLIC_PAGES = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/docs"),
    ("GET", "/healthz"),  # the load balancer's probe, not a page
}
PUBLIC_PREFIXES = ("/password/",)  # forgotten password: before anyone is signed in
SESSION_ONLY = {("POST", "/logout")}  # ends whatever session the browser has


def _calls(dependant: Any) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _page_routes(tmp_path: Path) -> list[tuple[str, str, list[Any]]]:
    app = create_app(
        CloudSettings(data_dir=tmp_path, broker_url="mqtt://cloud:secret@broker.example:1883")
    )
    out = []
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if path.startswith("/api/") or getattr(route, "dependant", None) is None:
            continue
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            out.append((method, path, list(_calls(route.dependant))))
    return out


def test_the_walk_finds_the_pages(tmp_path: Path) -> None:
    found = {(method, path) for method, path, _ in _page_routes(tmp_path)}
    assert ("GET", "/login") in found and ("POST", "/logout") in found


def test_every_page_needs_a_session_unless_public(tmp_path: Path) -> None:
    loose = [
        f"{method} {path}"
        for method, path, calls in _page_routes(tmp_path)
        if (method, path) not in PUBLIC_PAGES | SESSION_ONLY
        and not path.startswith(PUBLIC_PREFIXES)
        and page_user not in calls
    ]
    assert not loose, f"pages without PageUser/page_require: {loose}"


def test_a_page_declares_at_most_one_permission(tmp_path: Path) -> None:
    many = [
        f"{method} {path}"
        for method, path, calls in _page_routes(tmp_path)
        if len({getattr(call, "permission", None) for call in calls} - {None}) > 1
    ]
    assert not many, f"pages declaring several permissions: {many}"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_every_state_changing_page_checks_the_csrf_token(tmp_path: Path, method: str) -> None:
    unchecked = [
        path
        for verb, path, calls in _page_routes(tmp_path)
        if verb == method and checked_form not in calls
    ]
    assert not unchecked, f"{method} pages without CheckedForm: {unchecked}"


def test_no_get_page_reads_a_form(tmp_path: Path) -> None:
    wrong = [
        path
        for verb, path, calls in _page_routes(tmp_path)
        if verb == "GET" and checked_form in calls
    ]
    assert not wrong, f"GET pages taking a form (state change on GET?): {wrong}"
