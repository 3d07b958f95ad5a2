"""Dashboard logins: the session cookie, expiry and idle timeout, logout, throttling, rehash.

Also: the argon2 hash is never returned or logged, and the session token is
stored only as its SHA-256.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cloud.accounts.deps import SESSION_COOKIE
from cloud.accounts.sessions import LOCK_AFTER, lock_seconds
from cloud.accounts.tables import LoginSessionRow, UserRow
from cloud.accounts.users import normalise_email
from cloud.errors import InvalidRequest
from tests.cloud.harness import PASSWORD, Cloud, client, new_user, user_api_key

EMAIL = "ops@customer.example"


async def _login(
    http: httpx.AsyncClient, email: str = EMAIL, password: str = PASSWORD
) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"email": email, "password": password})


def _set_cookie(response: httpx.Response) -> str:
    [header] = response.headers.get_list("set-cookie")
    return header


async def test_login_sets_a_strict_httponly_cookie_and_me_answers(cloud: Cloud) -> None:
    user_id = new_user(cloud.app, role="cs_admin", email=EMAIL)
    async with client(cloud.app) as http:
        response = await _login(http, email="  OPS@customer.example ")
        assert response.status_code == 200, response.text
        cookie = _set_cookie(response)
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "max-age", "path", "samesite"} <= attributes
        assert "samesite=strict" in cookie.lower() and "secure" not in attributes  # plain http
        token = response.cookies[SESSION_COOKIE]
        body = response.json()
        assert body["user"]["id"] == user_id and token not in response.text
        assert body["expires_at"] == cloud.clock.now + cloud.state.settings.session_ttl_s

        me = (await http.get("/api/v1/auth/me")).json()
        assert me["role"] == "cs_admin" and me["user"]["email"] == EMAIL
        assert me["api_key_id"] is None and "blacklist" in me["permissions"]
    with cloud.state.store.transaction() as tx:
        [row] = tx.scalars(select(LoginSessionRow)).all()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() != token


async def test_the_cookie_is_secure_over_https(cloud: Cloud) -> None:
    new_user(cloud.app, role="owner", email=EMAIL)
    transport = httpx.ASGITransport(app=cloud.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://cloud") as http:
        response = await _login(http)
        assert "; secure" in _set_cookie(response).lower()
        assert (await http.get("/api/v1/auth/me")).status_code == 200


async def test_idle_timeout_absolute_expiry_and_logout(cloud: Cloud) -> None:
    new_user(cloud.app, role="support", email=EMAIL)
    settings = cloud.state.settings
    async with client(cloud.app) as http:
        await _login(http)
        cloud.clock.advance(settings.session_idle_s)  # exactly the idle time: still alive
        assert (await http.get("/api/v1/auth/me")).status_code == 200
        cloud.clock.advance(settings.session_idle_s + 1)
        response = await http.get("/api/v1/auth/me")
        assert response.status_code == 401 and "log in again" in response.json()["detail"]

        await _login(http)
        step = settings.session_idle_s // 2
        for _ in range(settings.session_ttl_s // step - 1):  # busy all along, until the end
            cloud.clock.advance(step)
            assert (await http.get("/api/v1/installations")).status_code == 200
        cloud.clock.advance(step)
        assert (await http.get("/api/v1/installations")).status_code == 401

        await _login(http)
        stolen = http.cookies[SESSION_COOKIE]
        assert (await http.post("/api/v1/auth/logout")).status_code == 204
        assert SESSION_COOKIE not in http.cookies
    async with client(cloud.app) as other:
        other.cookies.set(SESSION_COOKIE, stolen)
        assert (await other.get("/api/v1/auth/me")).status_code == 401
        other.cookies.set(SESSION_COOKIE, "x" * 43)
        assert (await other.get("/api/v1/auth/me")).status_code == 401
    with cloud.state.store.transaction() as tx:
        assert tx.scalars(select(LoginSessionRow)).all() == []


async def test_a_bearer_key_wins_over_a_cookie(cloud: Cloud) -> None:
    owner = new_user(cloud.app, role="owner", email=EMAIL)
    async with client(cloud.app, cloud.api_key) as http:  # bare admin key
        http.cookies.set(SESSION_COOKIE, "not-a-session")
        assert (await http.get("/api/v1/auth/me")).json()["role"] == "admin"
    async with client(cloud.app, user_api_key(cloud.app, owner)) as http:
        me = (await http.get("/api/v1/auth/me")).json()
        assert (me["role"], me["user"]["id"]) == ("owner", owner) and me["api_key_id"]


async def test_failed_logins_lock_the_account_for_longer_and_longer(cloud: Cloud) -> None:
    new_user(cloud.app, role="partner", email=EMAIL)
    async with client(cloud.app) as http:
        unknown = await _login(http, email="nobody@customer.example")
        for _ in range(LOCK_AFTER):
            wrong = await _login(http, password="not the password")
            assert wrong.status_code == 401
        assert wrong.json()["detail"] == unknown.json()["detail"] == "wrong e-mail or password"
        locked = await _login(http)  # the right password, but locked
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == str(lock_seconds(LOCK_AFTER)) == "30"
        cloud.clock.advance(30)
        assert (await _login(http, password="still wrong!")).status_code == 401
        assert (await _login(http)).headers["retry-after"] == "60"  # doubled
        cloud.clock.advance(60)
        assert (await _login(http)).status_code == 200
        assert (await _login(http, password="wrong again")).status_code == 401  # count restarts
        assert (await _login(http)).status_code == 200
    assert lock_seconds(LOCK_AFTER - 1) == 0 and lock_seconds(100) == 900


async def test_a_hash_with_old_parameters_is_replaced_at_login(cloud: Cloud) -> None:
    user_id = new_user(cloud.app, role="owner", email=EMAIL)
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with cloud.state.store.transaction() as tx:
        tx.get(UserRow, user_id).password_hash = old  # type: ignore[union-attr]
    async with client(cloud.app) as http:
        assert (await _login(http)).status_code == 200
    with cloud.state.store.transaction() as tx:
        new = tx.get(UserRow, user_id).password_hash  # type: ignore[union-attr]
    assert new != old and new.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(new) and PasswordHasher().verify(new, PASSWORD)


async def test_a_role_change_or_disabling_ends_logins_and_keys(cloud: Cloud) -> None:
    user_id = new_user(cloud.app, role="cs_admin", email=EMAIL)
    key = user_api_key(cloud.app, user_id)
    async with client(cloud.app) as http, client(cloud.app, key) as by_key:
        await _login(http)
        await cloud.http.patch(f"/api/v1/users/{user_id}", json={"role": "support"})
        assert (await http.get("/api/v1/auth/me")).status_code == 401
        assert (await by_key.get("/api/v1/auth/me")).json()["role"] == "support"  # follows the user
        await _login(http)
        await cloud.http.delete(f"/api/v1/users/{user_id}")
        assert (await http.get("/api/v1/auth/me")).status_code == 401
        response = await by_key.get("/api/v1/auth/me")
        assert response.status_code == 401 and "disabled user" in response.json()["detail"]
        assert (await _login(http)).status_code == 401


async def test_the_password_hash_is_never_shown_nor_logged(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    body = {"email": EMAIL, "name": "Ops", "password": PASSWORD, "role": "owner"}
    created = await cloud.http.post("/api/v1/users", json=body)
    user_id = created.json()["id"]
    async with client(cloud.app) as http:
        login = await _login(http)
        token = http.cookies[SESSION_COOKIE]
        await _login(http, password="wrong password")
    shown = [
        created.text,
        login.text,
        (await cloud.http.get(f"/api/v1/users/{user_id}")).text,
        (await cloud.http.get("/api/v1/users")).text,
        (
            await cloud.http.patch(f"/api/v1/users/{user_id}", json={"password": "new " + PASSWORD})
        ).text,
        (await cloud.http.get("/api/v1/audit")).text,
        json.dumps((await cloud.http.get("/openapi.json")).json()),
    ]
    with cloud.state.store.transaction() as tx:
        row = tx.get(UserRow, user_id)
        assert row is not None
        stored, shown_repr = row.password_hash, repr(row)
    assert stored.startswith("$argon2id$")
    for text in [*shown, shown_repr, caplog.text]:
        assert "$argon2" not in text and stored not in text
        assert PASSWORD not in text and token not in text


@given(st.integers(min_value=0, max_value=10_000))
def test_the_lock_grows_with_failures_and_is_bounded(failures: int) -> None:
    lock = lock_seconds(failures)
    assert 0 <= lock <= 900
    assert (lock == 0) == (failures < LOCK_AFTER)
    assert lock_seconds(failures + 1) >= lock


@given(st.text(max_size=300))
def test_normalise_email_accepts_only_addresses_and_is_idempotent(text: str) -> None:
    try:
        email = normalise_email(text)
    except InvalidRequest:
        return
    assert email == email.strip().lower() and email.count("@") == 1 and len(email) <= 254
    assert normalise_email(email) == email
