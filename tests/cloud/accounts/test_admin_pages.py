"""Administration and profile pages without a browser: who may open what, what changes.

The roles' reach is the role table's (``accounts:write``, ``keys:rotate``, ``audit:read``);
a cs_admin never changes an admin account or its keys; a new API key is shown once.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from cloud.accounts.tables import ApiKeyRow, LoginSessionRow
from tests.cloud.harness import PASSWORD, Cloud, client, new_user
from tests.cloud.pages import csrf_of, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

_KEY = re.compile(r"ek_[A-Za-z0-9_-]{43}")


@pytest.mark.parametrize(
    ("role", "users", "keys", "audit"),
    [
        ("admin", 200, 200, 200),
        ("cs_admin", 200, 403, 200),
        ("support", 403, 403, 403),
        ("partner", 403, 403, 403),
        ("owner", 403, 403, 403),
    ],
)
async def test_who_may_open_which_admin_page(
    cloud: Cloud, role: str, users: int, keys: int, audit: int
) -> None:
    async with signed_in(cloud.app, role=role) as (http, _):
        assert (await http.get("/admin/users")).status_code == users
        assert (await http.get("/admin/companies")).status_code == users
        assert (await http.get("/admin/api-keys")).status_code == users
        assert (await http.get("/admin/keys")).status_code == keys
        assert (await http.get("/admin/audit")).status_code == audit
        index = await http.get("/admin")
        assert index.status_code == (200 if users == 200 else 403)
        assert ('href="/admin/keys"' in index.text) == (keys == 200)


async def test_an_admin_creates_a_user_and_a_key_shown_once(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="admin") as (http, _):
        form = await http.get("/admin/users/new")
        made = await http.post(
            "/admin/users/new",
            data={
                "csrf_token": csrf_of(form.text),
                "email": "new.person@customer.example",
                "name": "New Person",
                "password": PASSWORD,
                "role": "support",
                "company": "",
            },
        )
        assert made.status_code == 303, made.text[:500]
        page = await http.get(made.headers["location"])
        assert "New Person" in page.text and "The user new.person@customer.example" in page.text
        user_id = int(made.headers["location"].rsplit("/", 1)[1])
        shown = await http.post(
            f"/admin/users/{user_id}/api-keys",
            data={"csrf_token": csrf_of(page.text), "name": "export"},
        )
        assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
        [key] = _KEY.findall(shown.text)
        again = await http.get(f"/admin/users/{user_id}")
        assert not _KEY.search(again.text) and key[:11] in again.text  # the prefix only
        listed = await http.get("/admin/api-keys")
        assert not _KEY.search(listed.text) and key[:11] in listed.text
        duplicate = await http.post(
            "/admin/users/new",
            data={
                "csrf_token": csrf_of(form.text),
                "email": "new.person@customer.example",
                "name": "Again",
                "password": PASSWORD,
                "role": "owner",
                "company": "",
            },
        )
        assert duplicate.status_code == 422 and "exists already" in duplicate.text
    async with client(cloud.app, key) as machine:
        assert (await machine.get("/api/v1/auth/me")).json()["role"] == "support"


async def test_a_cs_admin_cannot_touch_an_admin(cloud: Cloud) -> None:
    admin_id = new_user(cloud.app, role="admin", email="boss@entitle.example")
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        page = await http.get(f"/admin/users/{admin_id}")
        assert page.status_code == 200
        assert "Only an administrator changes an administrator" in page.text
        assert "Make an API key" not in page.text and "Disable this account" not in page.text
        assert '<option value="admin"' not in (await http.get("/admin/users/new")).text
        token = csrf_of(page.text)
        role = await http.post(
            f"/admin/users/{admin_id}",
            data={"csrf_token": token, "name": "X", "role": "owner", "company": ""},
        )
        key = await http.post(
            f"/admin/users/{admin_id}/api-keys", data={"csrf_token": token, "name": "mine"}
        )
        disable = await http.post(f"/admin/users/{admin_id}/disable", data={"csrf_token": token})
        assert role.status_code == key.status_code == 422 and disable.status_code == 403
    with cloud.state.store.transaction() as tx:
        assert tx.scalars(select(ApiKeyRow).where(ApiKeyRow.user_id == admin_id)).all() == []


async def test_disabling_and_revoking_have_a_confirm_step(cloud: Cloud) -> None:
    victim = new_user(cloud.app, role="owner", email="leaving@customer.example")
    async with client(cloud.app) as elsewhere:
        form = await elsewhere.get("/login")
        await elsewhere.post(
            "/login",
            data={
                "csrf_token": csrf_of(form.text),
                "email": "leaving@customer.example",
                "password": PASSWORD,
            },
        )
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        confirm = await http.get(f"/admin/users/{victim}/disable")
        assert confirm.status_code == 200 and "API keys stop working" in confirm.text
        with cloud.state.store.transaction() as tx:  # nothing happened on GET
            assert tx.scalars(
                select(LoginSessionRow).where(LoginSessionRow.user_id == victim)
            ).all()
        done = await http.post(
            f"/admin/users/{victim}/disable", data={"csrf_token": csrf_of(confirm.text)}
        )
        assert done.status_code == 303
        with cloud.state.store.transaction() as tx:
            assert not tx.scalars(
                select(LoginSessionRow).where(LoginSessionRow.user_id == victim)
            ).all()
        keys = await http.get("/admin/api-keys")
        bare = re.search(r'href="/admin/api-keys/(\d+)/revoke"', keys.text)
        assert bare is not None  # the test harness's own admin key
        revoke = await http.get(f"/admin/api-keys/{bare.group(1)}/revoke")
        assert revoke.status_code == 200
        unknown = await http.get("/admin/api-keys/999999/revoke")
        assert unknown.status_code == 404  # as the revoke itself (and the API) answer
        refused = await http.post(
            f"/admin/api-keys/{bare.group(1)}/revoke", data={"csrf_token": csrf_of(revoke.text)}
        )
        assert refused.status_code == 403  # an admin's key: only an admin revokes it
    assert (await cloud.http.get("/api/v1/auth/me")).status_code == 200


async def test_the_audit_log_filters_and_pages(cloud: Cloud) -> None:
    for n in range(30):
        new_user(cloud.app, role="owner", email=f"o{n}@customer.example")
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        first = await http.get("/admin/audit?action=user.create")
        assert first.status_code == 200 and "Page 1 of 2" in first.text
        second = await http.get("/admin/audit?action=user.create&page=2")
        assert "Page 2 of 2" in second.text
        assert (await http.get("/admin/audit?action=nothing.such")).text.count("<tr>") == 0
        day = await http.get("/admin/audit?since=2026-01-01&until=2026-01-01")
        assert "Page 1 of 2" in day.text  # the fake clock's day, UTC
        none = await http.get("/admin/audit?since=2026-01-02")
        assert "No entry matches." in none.text
        assert (await http.get("/admin/audit?since=yesterday")).status_code == 422


async def test_key_rotation_has_a_confirm_step(cloud: Cloud) -> None:
    before = (await cloud.http.get("/api/v1/keyset")).json()["version"]
    async with signed_in(cloud.app, role="admin") as (http, _):
        status = await http.get("/admin/keys")
        assert f"<dd>{before}</dd>" in status.text
        confirm = await http.get("/admin/keys/rotate")
        assert (await cloud.http.get("/api/v1/keyset")).json()["version"] == before
        done = await http.post("/admin/keys/rotate", data={"csrf_token": csrf_of(confirm.text)})
        assert done.status_code == 303
    assert (await cloud.http.get("/api/v1/keyset")).json()["version"] == before + 1


async def test_companies_are_created_and_change_how_they_pay(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        form = await http.get("/admin/companies/new")
        made = await http.post(
            "/admin/companies/new",
            data={
                "csrf_token": csrf_of(form.text),
                "name": "Zuid Techniek",
                "partner_id": "",
                "payment_type": "card",
            },
        )
        assert made.status_code == 303
        page = await http.get(made.headers["location"])
        changed = await http.post(
            made.headers["location"],
            data={
                "csrf_token": csrf_of(page.text),
                "name": "Zuid Techniek",
                "payment_type": "invoice",
            },
        )
        assert changed.status_code == 303
        listed = await http.get("/admin/companies?q=zuid")
        assert "Zuid Techniek" in listed.text and "Invoice (saved directly)" in listed.text


async def test_my_profile_language_and_password(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="partner") as (http, user_id):
        page = await http.get("/profile")
        assert page.status_code == 200 and "Partner (system integrator)" in page.text
        token = csrf_of(page.text)
        saved = await http.post(
            "/profile", data={"csrf_token": token, "name": "Piet Partner", "locale": "nl"}
        )
        assert saved.status_code == 303
        dutch = await http.get("/profile")
        assert '<html lang="nl"' in dutch.text and "Uw profiel is opgeslagen." in dutch.text
        wrong = await http.post(
            "/profile/password",
            data={"csrf_token": token, "current": "nope", "new": "x" * 12, "repeat": "x" * 12},
        )
        assert wrong.status_code == 422 and "onjuist" in wrong.text
        changed = await http.post(
            "/profile/password",
            data={"csrf_token": token, "current": PASSWORD, "new": "x" * 12, "repeat": "x" * 12},
        )
        assert changed.status_code == 303
        assert (await http.get("/profile")).status_code == 200  # this session stays
