"""API keys: every route but the public ones needs one; keys are stored hashed; the CLI."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cloud.accounts import queries as account_queries
from cloud.accounts.apikeys import authenticate, key_prefix, new_key, revoke_api_key
from cloud.accounts.tables import ApiKeyRow
from cloud.errors import (
    InvalidApiKey,
    MissingApiKey,
    NotAuthenticated,
    RevokedApiKey,
    UnknownApiKey,
)
from cloud.settings import CloudSettings
from entitle.cli import app as cli
from tests.cloud.harness import Cloud, cli_env, client, new_api_key

# (method, path) needing no key: devices are provisioned from the keys, load
# balancers probe readiness without credentials, and one logs in without a session
PUBLIC = {
    ("GET", "/api/v1/keys"),
    ("GET", "/api/v1/keyset"),
    ("GET", "/api/v1/healthz"),
    ("GET", "/healthz"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/logout"),
}
HINT = "entitle cloud apikey create --name NAME"


def _routes(cloud: Cloud) -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /api/v1, plus the bare /healthz."""
    try:  # FastAPI >= 0.16x keeps included routers nested in app.routes
        from fastapi.routing import iter_route_contexts

        routes: Iterable[Any] = iter_route_contexts(cloud.app.routes)
    except ImportError:
        routes = cloud.app.routes
    out = []
    for route in routes:
        path, methods = route.path or "", route.methods or ()
        if path.startswith("/api/v1/") or path == "/healthz":
            out += [(method, path) for method in sorted(methods) if method != "HEAD"]
    return out


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_route_but_the_public_ones_needs_a_key(cloud: Cloud) -> None:
    routes = _routes(cloud)
    assert PUBLIC <= set(routes), "a public route moved: update PUBLIC"
    assert len(set(routes) - PUBLIC) >= 9
    async with client(cloud.app) as anonymous:
        for method, path in routes:
            body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH") else None
            response = await anonymous.request(method, _fill(path), json=body)
            if (method, path) in PUBLIC:  # login with {} is a 422; logout without a session 204
                assert response.status_code in (200, 204, 422), (method, path, response.text)
                continue
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert HINT in response.json()["detail"]
            assert "Authorization: Bearer KEY" in response.json()["detail"]


async def test_openapi_declares_the_bearer_scheme_on_protected_routes(cloud: Cloud) -> None:
    spec = (await cloud.http.get("/openapi.json")).json()
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    session = spec["components"]["securitySchemes"]["Session"]
    assert (session["type"], session["in"], session["name"]) == (
        "apiKey",
        "cookie",
        "entitle_session",
    )
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if (method.upper(), path) in PUBLIC:
                assert "security" not in operation, path
                # a login answers 401 to a wrong password; no other public route does
                has_401 = "401" in operation["responses"]
                assert has_401 == (path == "/api/v1/auth/login"), path
            else:
                assert operation["security"] == [{"ApiKey": []}, {"Session": []}], (method, path)
                assert "401" in operation["responses"], (method, path)


async def test_wrong_and_malformed_keys_are_refused(cloud: Cloud) -> None:
    real = cloud.api_key
    last = "A" if real[-1] != "A" else "B"
    wrong = [
        new_key(),  # well formed, never issued
        real[:-1] + last,  # the right prefix, one character off
        real + "x",
        real[:-1],
        "ek_",
        "not-a-key",
        real.upper(),
    ]
    for key in wrong:
        async with client(cloud.app, key) as http:
            response = await http.get("/api/v1/installations")
        assert response.status_code == 401, key
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert "invalid API key" in response.json()["detail"]
    for header in (f"Basic {real}", real, f"Token {real}", "Bearer"):
        response = await cloud.http.get("/api/v1/installations", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert "missing API key" in response.json()["detail"]
    assert (await cloud.http.get("/api/v1/installations")).status_code == 200


async def test_revoked_key_is_refused_and_others_still_work(cloud: Cloud) -> None:
    other = new_api_key(cloud.app, "ops")
    with cloud.state.store.transaction() as tx:
        [row] = [r for r in account_queries.api_keys(tx) if r.name == "ops"]
    cloud.clock.advance(10)
    revoked = revoke_api_key(cloud.state.store, row.id, now=cloud.clock.now)
    assert revoked.revoked_at == cloud.clock.now
    cloud.clock.advance(10)
    assert revoke_api_key(cloud.state.store, row.id, now=cloud.clock.now).revoked_at == (
        revoked.revoked_at
    )
    async with client(cloud.app, other) as http:
        response = await http.post("/api/v1/installations", json={"name": "x"})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"] and HINT in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await cloud.http.get("/api/v1/installations")).status_code == 200
    with pytest.raises(UnknownApiKey):
        revoke_api_key(cloud.state.store, 999, now=cloud.clock.now)


async def test_only_a_hash_and_a_prefix_of_the_key_are_stored(cloud: Cloud) -> None:
    key = cloud.api_key
    with cloud.state.store.transaction() as tx:
        [row] = tx.scalars(select(ApiKeyRow)).all()
        stored = [str(getattr(row, c.key)) for c in ApiKeyRow.__table__.columns]
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest() != key
    assert row.prefix == key_prefix(key) == key[:11] and row.role == "admin"
    secret_part = key[len(row.prefix) :]
    assert len(secret_part) == 35
    assert not any(secret_part[:8] in value for value in stored)


def test_authenticate_errors_without_a_database() -> None:
    class _NoStore:
        def transaction(self) -> None:
            raise AssertionError("a malformed key must not reach the database")

    for presented, error in ((None, MissingApiKey), ("", MissingApiKey), ("x" * 46, InvalidApiKey)):
        with pytest.raises(error):
            authenticate(_NoStore(), presented)  # type: ignore[arg-type]
    assert all(issubclass(e, NotAuthenticated) for e in (InvalidApiKey, RevokedApiKey))


def _cli(settings: CloudSettings, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=cli_env(settings))
    return result.exit_code, result.stdout, result.stderr


async def test_cli_create_prints_a_key_that_works_and_revoke_stops_it(cloud: Cloud) -> None:
    settings = cloud.state.settings
    code, out, err = _cli(settings, "cloud", "apikey", "create", "--name", "ci bot")
    assert code == 0, err
    key = out.strip()
    assert re.fullmatch(r"ek_[A-Za-z0-9_-]{43}", key)
    assert "shown only now" in err and key not in err
    async with client(cloud.app, key) as http:
        assert (await http.post("/api/v1/installations", json={"name": "cli"})).status_code == 201

    code, out, _ = _cli(settings, "cloud", "apikey", "list")
    assert code == 0 and "ci bot" in out and key_prefix(key) in out and key not in out
    with cloud.state.store.transaction() as tx:
        [row] = [r for r in account_queries.api_keys(tx) if r.name == "ci bot"]
    code, out, _ = _cli(settings, "cloud", "apikey", "revoke", str(row.id))
    assert code == 0 and "revoked" in out
    async with client(cloud.app, key) as http:
        assert (await http.get("/api/v1/installations")).status_code == 401

    code, _, err = _cli(settings, "cloud", "apikey", "revoke", "999")
    assert code == 1 and "no API key with id 999" in err
    code, _, err = _cli(settings, "cloud", "apikey", "create", "--name", "  ")
    assert code == 2 and "printable" in err


async def test_cli_user_create_reads_the_password_from_a_prompt_or_a_file(
    cloud: Cloud, tmp_path: Path
) -> None:
    settings = cloud.state.settings
    env = cli_env(settings)
    result = CliRunner().invoke(
        cli,
        ["cloud", "user", "company", "--name", "Integra", "--partner-id", "P-7"],
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    password = "a long enough passphrase"
    result = CliRunner().invoke(
        cli,
        ["cloud", "user", "create", "--email", "fit@integra.example", "--role", "partner"]
        + ["--company", "P-7"],
        input=f"{password}\n{password}\n",
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    assert password not in result.stdout
    secret = tmp_path / "pw"
    secret.write_text("another long passphrase\n")
    result = CliRunner().invoke(
        cli,
        ["cloud", "user", "create", "--email", "root@vendor.example", "--role", "admin"]
        + ["--password-file", str(secret)],
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    code, out, err = _cli(settings, "cloud", "user", "list")
    assert code == 0 and "fit@integra.example" in out and "root@vendor.example" in out
    code, _, err = _cli(
        settings, "cloud", "user", "create", "--email", "x@y.example", "--role", "king"
    )
    assert code == 2 and "unknown role" in err

    async with client(cloud.app) as http:
        body = {"email": "FIT@integra.example", "password": password}
        response = await http.post("/api/v1/auth/login", json=body)
        assert response.status_code == 200 and response.json()["user"]["role"] == "partner"
        body = {"email": "root@vendor.example", "password": "another long passphrase"}
        assert (await http.post("/api/v1/auth/login", json=body)).status_code == 200

    code, out, err = _cli(
        settings, "cloud", "apikey", "create", "--name", "fitter", "--user", "fit@integra.example"
    )
    assert code == 0, err
    async with client(cloud.app, out.strip()) as http:
        me = (await http.get("/api/v1/auth/me")).json()
    assert me["role"] == "partner" and me["user"]["email"] == "fit@integra.example"
    code, _, err = _cli(
        settings, "cloud", "apikey", "create", "--name", "x", "--user", "no@x.example"
    )
    assert code == 1 and "no user" in err
