"""Must-show: every route × every role, through real logins and real API keys.

The walk is generic: it finds every route of the app under /api/v1 (those
other modules add too), reads the one ``require(Permission.X)`` each declares
(``dependency.permission``), and calls it as each role, once with a login
session cookie and once with an API key of a user of that role. A role the
table (``cloud.accounts.rules``) refuses gets 403; a role it allows never
does (placeholder ids make 404 and 422 the usual answers, which is fine),
and no call, allowed or not, may answer 401 or any 5xx.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from cloud.accounts.rules import ROLE_PERMISSIONS, Permission, Role, allowed, markdown_table
from tests.cloud.harness import PASSWORD, Cloud, client, new_user, user_api_key

PUBLIC = {
    ("GET", "/api/v1/keys"),
    ("GET", "/api/v1/keyset"),
    ("GET", "/api/v1/healthz"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/logout"),
}
README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the walk is about HTTP and roles; scoping tests cover PostgreSQL."""
    return f"sqlite:///{tmp_path / 'cloud.db'}"


def _permissions(dependant: Any) -> Iterator[Permission]:
    for sub in dependant.dependencies:
        permission = getattr(sub.call, "permission", None)
        if permission is not None:
            yield permission
        yield from _permissions(sub)


def api_routes(app: Any) -> dict[tuple[str, str], list[Permission]]:
    """(method, path) of every /api/v1 route → the permissions its dependencies require."""
    out: dict[tuple[str, str], list[Permission]] = {}
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if not path.startswith("/api/v1/"):
            continue
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                out[(method, path)] = list(_permissions(route.dependant))
    return out


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def _login(cloud: Cloud, email: str) -> httpx.AsyncClient:
    http = client(cloud.app)
    response = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return http


async def test_every_protected_route_declares_exactly_one_permission(cloud: Cloud) -> None:
    routes = api_routes(cloud.app)
    unprotected = {route for route, permissions in routes.items() if not permissions}
    assert unprotected == PUBLIC, "a route without require(...), or PUBLIC is out of date"
    several = {route: p for route, p in routes.items() if len(p) > 1}
    assert not several, f"routes with more than one require(...): {several}"
    assert len(routes) - len(PUBLIC) >= 29  # the account, installation, device and key routes


async def test_every_route_as_every_role(cloud: Cloud) -> None:
    routes = {r: p[0] for r, p in api_routes(cloud.app).items() if r not in PUBLIC}
    callers: list[tuple[str, str, httpx.AsyncClient]] = []
    for role in Role:
        email = f"{role.value}@customer.example"
        user_id = new_user(cloud.app, role=role.value, email=email)
        callers.append((role.value, "session", await _login(cloud, email)))
        callers.append((role.value, "api key", client(cloud.app, user_api_key(cloud.app, user_id))))
    callers.append((Role.ADMIN.value, "bare admin key", cloud.http))
    checked, wrong = 0, []
    try:
        for (method, path), permission in sorted(routes.items()):
            for role, how, http in callers:
                body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH") else None
                response = await http.request(method, _fill(path), json=body)
                checked += 1
                refused = response.status_code == 403
                if response.status_code >= 500:  # a server error is never an answer
                    wrong.append((method, path, role, how, response.status_code, response.text))
                elif response.status_code == 401 or refused == allowed(role, permission):
                    wrong.append((method, path, role, how, response.status_code, response.text))
                elif refused and permission.value not in response.json()["detail"]:
                    wrong.append((method, path, role, how, "403 without the permission named"))
    finally:
        for _, _, http in callers:
            if http is not cloud.http:
                await http.aclose()
    assert checked == len(routes) * (2 * len(Role) + 1)
    assert not wrong, "\n".join(map(str, wrong))


def test_the_readme_shows_the_role_table() -> None:
    assert markdown_table() in README.read_text()


def test_the_role_rules_of_the_design() -> None:
    support = ROLE_PERMISSIONS[Role.SUPPORT]
    assert Permission.ACCOUNTS_READ in support
    assert not {Permission.SUBSCRIPTIONS_WRITE, Permission.ORDERS_WRITE} & support
    assert {r for r in Role if allowed(r, Permission.BLACKLIST)} == {Role.ADMIN, Role.CS_ADMIN}
    assert not allowed("nobody", Permission.PROFILE)
    assert all(allowed(r, Permission.PROFILE) for r in Role)
