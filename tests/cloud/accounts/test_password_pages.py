"""Forgotten password pages: a single-use, expiring link by e-mail, through the real outbox.

The mails are sent by the app's own outbox sender (``run_once``) to a real SMTP server
(aiosmtpd, :mod:`tests.smtp_fixtures`); the tests read the link out of the mail that
arrived. Nothing here says whether an address is an account.
"""

from __future__ import annotations

import hashlib
import re
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cloud.accounts.resets import RESEND_AFTER_S
from cloud.accounts.tables import LoginSessionRow, PasswordResetRow, UserRow
from cloud.notifications.tables import NotificationRow
from cloud.settings import CloudSettings
from tests.cloud.harness import DAY, PASSWORD, Cloud, client, new_user
from tests.cloud.pages import csrf_of
from tests.smtp_fixtures import SmtpServer

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

EMAIL = "ada@customer.example"
NEW = "a brand new passphrase"
_LINK = re.compile(r"https?://\S+/password/reset/([A-Za-z0-9_-]+)")


@pytest.fixture
def settings(tmp_path: Path, database_url: str, smtp_server: SmtpServer) -> CloudSettings:
    """The cloud's settings with the test SMTP server as its mail server."""
    return CloudSettings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="mqtt://cloud:secret@broker.example:1883",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        public_url="https://dashboard.example",
        token_ttl_s=14 * DAY,
        refresh_before_s=3 * DAY,
        refresh_interval_s=3600,
    )


async def _ask(http: httpx.AsyncClient, email: str) -> httpx.Response:
    form = await http.get("/password/forgot")
    assert form.status_code == 200
    return await http.post(
        "/password/forgot", data={"csrf_token": csrf_of(form.text), "email": email}
    )


async def _deliver(cloud: Cloud, smtp: SmtpServer) -> list[EmailMessage]:
    """Run the outbox sender once; every mail the SMTP server now holds."""
    assert cloud.state.outbox is not None
    await cloud.state.outbox.run_once()
    return smtp.messages


def _token(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    found = _LINK.search(body.get_content())
    assert found is not None, body.get_content()
    return found.group(1)


async def _set(http: httpx.AsyncClient, token: str, password: str, repeat: str | None = None):
    page = await http.get(f"/password/reset/{token}")
    csrf = (
        csrf_of(page.text) if page.status_code == 200 else csrf_of((await http.get("/login")).text)
    )
    return page, await http.post(
        f"/password/reset/{token}",
        data={
            "csrf_token": csrf,
            "password": password,
            "repeat": password if repeat is None else repeat,
        },
    )


async def _login(http: httpx.AsyncClient, password: str) -> int:
    form = await http.get("/login")
    got = await http.post(
        "/login",
        data={"csrf_token": csrf_of(form.text), "email": EMAIL, "password": password, "next": "/"},
    )
    return got.status_code


async def test_the_link_arrives_by_mail_works_once_and_ends_every_session(
    cloud: Cloud, smtp_server: SmtpServer
) -> None:
    user_id = new_user(cloud.app, role="owner", email=EMAIL)
    async with client(cloud.app) as elsewhere:  # a session that must end
        assert await _login(elsewhere, PASSWORD) == 303
    async with client(cloud.app) as http:
        asked = await _ask(http, EMAIL.upper())
        assert asked.status_code == 303 and asked.headers["location"] == "/login"
        notice = await http.get("/login")
        assert "If an account has this address" in notice.text
        [mail] = await _deliver(cloud, smtp_server)
        assert mail["To"] == EMAIL and mail["X-Entitle-Kind"] == "password_reset"
        token = _token(mail)
        assert (
            "https://dashboard.example/password/reset/" in mail.get_body(("plain",)).get_content()
        )

        form, done = await _set(http, token, NEW)
        assert form.status_code == 200 and form.headers["cache-control"] == "no-store"
        assert form.headers["referrer-policy"] == "no-referrer"
        assert done.status_code == 303 and done.headers["location"] == "/login"

        again, refused = await _set(http, token, "yet another passphrase")
        assert again.status_code == 410 and refused.status_code == 410
        assert "This link no longer works" in refused.text

        assert await _login(http, PASSWORD) == 401
        assert await _login(http, NEW) == 303
    with cloud.state.store.transaction() as tx:
        sessions = tx.scalars(select(LoginSessionRow).where(LoginSessionRow.user_id == user_id))
        assert len(sessions.all()) == 1  # the old one ended; the one just opened
        [link] = tx.scalars(select(PasswordResetRow)).all()
        assert link.used_at is not None
        assert link.token_hash == hashlib.sha256(token.encode()).hexdigest() != token


async def test_an_unknown_address_answers_the_same_and_sends_nothing(
    cloud: Cloud, smtp_server: SmtpServer
) -> None:
    new_user(cloud.app, role="owner", email=EMAIL)
    async with client(cloud.app) as http:
        known = await _ask(http, EMAIL)
        known_page = (await http.get("/login")).text
        unknown = await _ask(http, "nobody@customer.example")
        unknown_page = (await http.get("/login")).text
        garbage = await _ask(http, "not an address")
    assert known.status_code == unknown.status_code == garbage.status_code == 303
    assert known.headers["location"] == unknown.headers["location"]
    strip = re.compile(r'name="csrf_token" value="[^"]+"')
    assert strip.sub("", known_page) == strip.sub("", unknown_page)
    assert [m["To"] for m in await _deliver(cloud, smtp_server)] == [EMAIL]


async def test_a_link_expires_and_a_newer_one_replaces_it(
    cloud: Cloud, smtp_server: SmtpServer
) -> None:
    new_user(cloud.app, role="partner", email=EMAIL)
    ttl = cloud.state.settings.password_reset_ttl_s
    async with client(cloud.app) as http:
        await _ask(http, EMAIL)
        [first] = await _deliver(cloud, smtp_server)
        await _ask(http, EMAIL)  # within a minute: no second mail
        assert len(await _deliver(cloud, smtp_server)) == 1
        cloud.clock.advance(RESEND_AFTER_S + 1)
        await _ask(http, EMAIL)
        second = (await _deliver(cloud, smtp_server))[-1]
        old, new = _token(first), _token(second)
        assert old != new
        assert (await http.get(f"/password/reset/{old}")).status_code == 410  # replaced
        assert (await http.get(f"/password/reset/{new}")).status_code == 200
        cloud.clock.advance(ttl)
        page, refused = await _set(http, new, NEW)
        assert page.status_code == 410 and refused.status_code == 410  # expired
        assert await _login(http, PASSWORD) == 303


async def test_a_mistyped_password_keeps_the_link(cloud: Cloud, smtp_server: SmtpServer) -> None:
    new_user(cloud.app, role="owner", email=EMAIL)
    async with client(cloud.app) as http:
        await _ask(http, EMAIL)
        token = _token((await _deliver(cloud, smtp_server))[0])
        _, differ = await _set(http, token, NEW, repeat=NEW + "!")
        assert differ.status_code == 422 and "The two passwords differ" in differ.text
        _, short = await _set(http, token, "short")
        assert short.status_code == 422
        _, done = await _set(http, token, NEW)
        assert done.status_code == 303


async def test_the_mail_is_in_the_users_language(cloud: Cloud, smtp_server: SmtpServer) -> None:
    user_id = new_user(cloud.app, role="owner", email=EMAIL)
    with cloud.state.store.transaction() as tx:
        row = tx.get(UserRow, user_id)
        assert row is not None
        row.locale = "nl"
    async with client(cloud.app) as http:
        await _ask(http, EMAIL)
    [mail] = await _deliver(cloud, smtp_server)
    assert mail["Subject"] == "Stel een nieuw Entitle-wachtwoord in"
    assert "Hallo Test owner" in mail.get_body(("plain",)).get_content()


async def test_a_forged_form_changes_nothing(cloud: Cloud, smtp_server: SmtpServer) -> None:
    new_user(cloud.app, role="owner", email=EMAIL)
    async with client(cloud.app) as http:
        await http.get("/password/forgot")
        forged = await http.post("/password/forgot", data={"email": EMAIL})
    assert forged.status_code == 403
    with cloud.state.store.transaction() as tx:
        assert tx.scalars(select(NotificationRow)).all() == []
