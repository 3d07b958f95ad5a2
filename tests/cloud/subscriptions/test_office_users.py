"""Office users (AKV-OFFICE-USER, a subscription per user or department, by the month, at
most 60 an installation) without a browser: their page lists each user with its status,
period end and next renewal and counts "N of 60"; several are added at once through the buy
page's confirm step (or ``POST /api/v1/subscriptions/users``), all refused together before
any order when one cannot be added; one is ended at the end of its month and kept after all
through the auto-renew confirm steps, which return to the page. Roles that may not change
subscriptions get no control and a 403; someone else's installation answers 404."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from cloud.accounts.apikeys import Principal
from cloud.billing.tables import OrderRow
from cloud.devices import memberships
from cloud.subscriptions import service as subscription_service
from cloud.subscriptions.tables import SubscriptionRow
from tests.cloud.conftest import Cloud
from tests.cloud.harness import client, new_company, user_api_key
from tests.cloud.pages import csrf_of, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

OFFICE = "AKV-OFFICE-USER"


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


def _integrate(cloud: Cloud, installation_id: str, *, payment_type: str) -> int:
    company = new_company(cloud.app, name=f"SI {payment_type}", payment_type=payment_type)
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, installation_id, company, actor="system:tests", now=1)
    return company


def _users(cloud: Cloud, installation_id: str) -> dict[str, dict]:
    """Each user's subscription (the API's view) by its user_ref."""
    service = cloud.state.subscriptions
    assert service is not None
    admin = Principal(key_id=1, name="tests", role="admin")
    return {s["user_ref"]: s for s in service.list_for(admin, installation_id, scope="user")}


def _count(cloud: Cloud, table: type) -> int:
    with cloud.state.store.transaction() as tx:
        return int(tx.scalar(select(func.count()).select_from(table)) or 0)


def _row(page: str, user: str) -> str:
    """The table row of ``user`` on the office users page."""
    start = page.index(f'data-user="{user}"')
    return page[start : page.index("</tr>", start)]


def _posted(html: str, **more: str) -> dict[str, list[str]]:
    """What a browser posts from a confirm step: its form's hidden fields, and ``more``."""
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html):
        fields.setdefault(name, []).append(value)
    return {**fields, **{k: [v] for k, v in more.items()}}


async def _confirm(http: httpx.AsyncClient, url: str, data: dict) -> httpx.Response:
    """Open the confirm step at ``url`` and post its form (``data``) back with its token."""
    review = await http.get(url)
    assert review.status_code == 200, review.text[:600]
    action = url.split("?")[0]
    return await http.post(action, data={"csrf_token": csrf_of(review.text), **data})


async def test_add_two_users_end_one_and_keep_it_after_all(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.clock.now = ts(2026, 3, 10)
    inst = await cloud.connected("Harbour Office")
    company = _integrate(cloud, inst, payment_type="invoice")
    silent = await cloud.installation("Not online yet")
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, silent, company, actor="system:tests", now=1)
    page_url = f"/installations/{inst}/office-users"
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        empty = await http.get(page_url)
        assert empty.status_code == 200
        assert "0 of 60" in empty.text and "No office users yet." in empty.text
        assert 'id="not-connected"' not in empty.text
        # an installation none of whose devices reported: the add form says so first
        unsold = await http.get(f"/installations/{silent}/office-users")
        assert 'id="not-connected"' in unsold.text and "in the last 7 days" in unsold.text
        # two names in the text area, one a line: one confirm step with both, then saved
        review = await http.get(
            f"/installations/{inst}/buy",
            params={"office_user": "Sales\r\n  Reception \n\n", "back": "office-users"},
        )
        assert review.status_code == 200, review.text[:600]
        assert "user Sales" in review.text and "user Reception" in review.text
        assert "€3.00" in review.text  # 2 × €1.50, the first month
        assert f'href="{page_url}"' in review.text  # Cancel goes back to the page
        assert _users(cloud, inst) == {}  # the confirm step changed nothing
        posted = _posted(review.text)
        assert posted["office_user"] == ["Sales", "Reception"] and "product" not in posted
        done = await http.post(f"/installations/{inst}/buy", data=posted)
        assert done.status_code == 303, done.text[:600]
        assert done.headers["location"] == page_url
        users = _users(cloud, inst)
        assert sorted(users) == ["Reception", "Sales"]
        assert {u["status"] for u in users.values()} == {"active"}
        listed = (await http.get(page_url)).text
        assert "Subscriptions saved: Intercom office user (Sales)" in listed  # the flash
        assert "2 of 60" in listed
        sales = _row(listed, "Sales")
        assert "active, renews" in sales and "May 1, 2026" in sales  # its period ends
        assert "€1.50 for 1 month, charged on Apr 1, 2026" in sales
        assert f"/subscriptions/{users['Sales']['id']}/auto-renew?turn=off" in sales

        # end Sales at the end of its month: the confirm step, then back to the page
        sub = users["Sales"]["id"]
        ended = await _confirm(
            http,
            f"/subscriptions/{sub}/auto-renew?turn=off&back=office-users",
            {"turn": "off", "back": "office-users"},
        )
        assert ended.status_code == 303 and ended.headers["location"] == page_url
        assert _users(cloud, inst)["Sales"]["auto_renew"] is False
        listed = (await http.get(page_url)).text
        sales, reception = _row(listed, "Sales"), _row(listed, "Reception")
        assert "ends at period end" in sales and "none: it ends" in sales
        assert "Keep it renewing" in sales and "turn=off" not in sales
        assert "active, renews" in reception
        assert "2 of 60" in listed  # it runs, and counts, until its end
        # the installation page counts them and links here; users are not in its table
        inst_page = (await http.get(f"/installations/{inst}")).text
        assert "2 of 60" in inst_page and page_url in inst_page
        assert "user Sales" not in inst_page

        # changed their mind: undo (the lifecycle's reactivation: nothing due now)
        orders = _count(cloud, OrderRow)
        kept = await _confirm(
            http,
            f"/subscriptions/{sub}/auto-renew?turn=on&back=office-users",
            {"turn": "on", "back": "office-users"},
        )
        assert kept.status_code == 303 and kept.headers["location"] == page_url
        assert _users(cloud, inst)["Sales"]["auto_renew"] is True
        assert _count(cloud, OrderRow) == orders
        assert "active, renews" in _row((await http.get(page_url)).text, "Sales")

        # the page reads the one purchaser's contact once, the installation page not at all
        # (no line there but the users, whom it counts)
        real, read = subscription_service.user_contact, []
        monkeypatch.setattr(
            subscription_service,
            "user_contact",
            lambda tx, user_id: read.append(user_id) or real(tx, user_id),
        )
        assert "2 of 60" in (await http.get(page_url)).text
        assert "2 of 60" in (await http.get(f"/installations/{inst}")).text
        assert len(read) == 1, read


async def test_a_card_partner_adds_users_at_checkout_in_dutch(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 3, 10)
    inst = await cloud.connected("Kantoor")
    company = _integrate(cloud, inst, payment_type="card")
    dutch = {"Accept-Language": "nl"}
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get(f"/installations/{inst}/office-users", headers=dutch)
        assert "Kantoorgebruikers toevoegen" in page.text and "0 van 60" in page.text
        review = await http.get(
            f"/installations/{inst}/buy",
            params={"office_user": "Verkoop\nReceptie", "back": "office-users"},
        )
        done = await http.post(
            f"/installations/{inst}/buy",
            data=_posted(review.text, card_number="4242 4242 4242 4242"),
        )
        assert done.status_code == 303, done.text[:600]
        listed = (await http.get(done.headers["location"], headers=dutch)).text
        assert "2 van 60" in listed and "actief, wordt verlengd" in listed
        assert {u["pay_with"] for u in _users(cloud, inst).values()} == {"card"}


async def test_names_that_cannot_all_be_added_add_none(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 3, 10)
    inst = await cloud.connected("Full Office")
    company = _integrate(cloud, inst, payment_type="invoice")
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, uid):
        async with client(cloud.app, user_api_key(cloud.app, uid)) as api:
            bought = await api.post(
                "/api/v1/subscriptions/users",
                json={"installation_id": inst, "user_refs": [f"u{i}" for i in range(58)]},
            )
            assert bought.status_code == 201, bought.text[:600]
            assert len(bought.json()["bought"]) == 58
            before = (_count(cloud, OrderRow), _count(cloud, SubscriptionRow))
            for refs, status, why in (
                (["Sales", "Sales"], 422, "named more than once"),
                (["Sales", "u3"], 409, "u3 has Intercom office user already"),
                (["a", "b", "c"], 409, "add at most 2 more, not 3"),
                ([], 422, "user_refs"),
            ):
                refused = await api.post(
                    "/api/v1/subscriptions/users", json={"installation_id": inst, "user_refs": refs}
                )
                assert refused.status_code == status and why in refused.text, refused.text
            # the page refuses the same at its confirm step and at the final POST
            review = await http.get(f"/installations/{inst}/buy", params={"office_user": "a\nb\nc"})
            assert review.status_code == 409 and "add at most 2 more, not 3" in review.text
            forced = await http.post(
                f"/installations/{inst}/buy",
                data={"csrf_token": csrf_of(review.text), "office_user": ["a", "b", "c"]},
            )
            assert forced.status_code == 409 and "add at most 2 more" in forced.text
            assert (_count(cloud, OrderRow), _count(cloud, SubscriptionRow)) == before
            # the list filter: the users only, the installation's own services apart
            await api.post(
                "/api/v1/subscriptions", json={"installation_id": inst, "product": "TSF12125"}
            )
            users = await api.get(f"/api/v1/subscriptions?installation_id={inst}&scope=user")
            assert len(users.json()) == 58 and all(s["user_ref"] for s in users.json())
            whole = await api.get(
                f"/api/v1/subscriptions?installation_id={inst}&scope=installation"
            )
            assert [s["product"] for s in whole.json()] == ["TSF12125"]
            bad = await api.get(f"/api/v1/subscriptions?installation_id={inst}&scope=team")
            assert bad.status_code == 422
        page = (await http.get(f"/installations/{inst}/office-users")).text
        assert "58 of 60" in page and "You may add 2 more." in page


async def test_who_may_see_and_change_office_users(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 3, 10)
    inst = await cloud.connected("Harbour Office")
    company = _integrate(cloud, inst, payment_type="invoice")
    elsewhere = await cloud.connected("Villa Dune")
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, uid):
        async with client(cloud.app, user_api_key(cloud.app, uid)) as api:
            r = await api.post(
                "/api/v1/subscriptions/users", json={"installation_id": inst, "user_refs": ["Hr"]}
            )
            assert r.status_code == 201, r.text
            sub = r.json()["bought"][0]["subscription"]["id"]
    page_url = f"/installations/{inst}/office-users"
    # the owner may buy and end, like the installation's subscriptions
    async with signed_in(cloud.app, role="owner") as (http, uid):
        with cloud.state.store.transaction() as tx:
            memberships.set_owner(tx, inst, uid, actor="system:tests", now=1)
        page = (await http.get(page_url)).text
        assert "turn=off" in _row(page, "Hr") and 'name="office_user"' in page
        other = await http.get(f"/installations/{elsewhere}/office-users")
        assert other.status_code == 404
    # support and customer-service admins look, but get no control, and a 403 when they try
    for role in ("support", "cs_admin"):
        async with signed_in(cloud.app, role=role) as (http, _):
            page = await http.get(page_url)
            assert page.status_code == 200 and "1 of 60" in page.text
            assert "turn=off" not in page.text and 'name="office_user"' not in page.text
            refused = await http.get(f"/subscriptions/{sub}/auto-renew?turn=off")
            assert refused.status_code == 403
            token = csrf_of(page.text)
            for url, data in (
                (f"/subscriptions/{sub}/auto-renew", {"turn": "off", "back": "office-users"}),
                (f"/installations/{inst}/buy", {"office_user": "Spy"}),
            ):
                r = await http.post(url, data={"csrf_token": token, **data})
                assert r.status_code == 403, (role, url, r.status_code)
    # a partner who does not integrate it, and another owner: as if it did not exist
    async with signed_in(cloud.app, role="partner") as (http, uid):
        assert (await http.get(page_url)).status_code == 404
        async with client(cloud.app, user_api_key(cloud.app, uid)) as api:
            r = await api.post(
                "/api/v1/subscriptions/users", json={"installation_id": inst, "user_refs": ["X"]}
            )
            assert r.status_code == 404
    async with signed_in(cloud.app, role="owner") as (http, _):
        assert (await http.get(page_url)).status_code == 404
    assert _users(cloud, inst)["Hr"]["auto_renew"] is True
    assert sorted(_users(cloud, inst)) == ["Hr"]
