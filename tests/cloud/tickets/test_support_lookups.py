"""What a support agent does with a customer on the phone (SQLite and PostgreSQL).

They look up the account (by e-mail, by id, by the partner id the customer
reads out), the installation's authorised contacts (never vendor staff),
the installation, its subscriptions and orders; and they cannot change a
subscription or an order: every such request answers 403 saying who can,
and nothing changes.
"""

from __future__ import annotations

import httpx

from cloud.billing.payments import CARD_OK
from cloud.devices import memberships
from tests.cloud.harness import Cloud, client, new_user, user_api_key


async def _support(cloud: Cloud) -> httpx.AsyncClient:
    return client(cloud.app, user_api_key(cloud.app, new_user(cloud.app, role="support")))


async def test_support_finds_the_customer_by_partner_id_email_and_installation(
    cloud: Cloud,
) -> None:
    made = await cloud.http.post(
        "/api/v1/companies",
        json={"name": "Integra Fitters", "partner_id": "P-4711", "payment_type": "invoice"},
    )
    assert made.status_code == 201, made.text
    company = made.json()["id"]
    await cloud.http.post(
        "/api/v1/companies",
        json={"name": "Other Fitters", "partner_id": "P-4712", "payment_type": "card"},
    )
    fitter = new_user(cloud.app, role="partner", company_id=company, email="fitter@integra.example")
    new_user(cloud.app, role="partner", company_id=company, email="helper@entitle.example")
    owner = new_user(cloud.app, role="owner", email="owner@home.example")
    inst = await cloud.connected()
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="tests", now=cloud.clock())
        memberships.set_owner(tx, inst, owner, actor="tests", now=cloud.clock())

    async with await _support(cloud) as support:
        [found] = (await support.get("/api/v1/companies", params={"partner_id": "P-4711"})).json()
        assert (found["id"], found["name"], found["partner_id"]) == (
            company,
            "Integra Fitters",
            "P-4711",
        )
        assert (await support.get(f"/api/v1/companies/{company}")).json()["partner_id"] == "P-4711"
        assert (await support.get("/api/v1/companies", params={"partner_id": "P-0"})).json() == []
        staff = {
            u["email"] for u in (await support.get(f"/api/v1/users?company_id={company}")).json()
        }
        assert staff == {"fitter@integra.example", "helper@entitle.example"}  # the accounts
        [user] = (await support.get("/api/v1/users", params={"email": "fitter@"})).json()
        assert (user["id"], user["company_id"], user["role"]) == (fitter, company, "partner")
        assert (await support.get(f"/api/v1/users/{owner}")).json()["email"] == "owner@home.example"

        contacts = (await support.get(f"/api/v1/installations/{inst}/contacts")).json()
        # the contacts a customer may be called at: vendor staff in the company are left out
        assert {c["user_id"]: (c["email"], c["company_id"]) for c in contacts} == {
            owner: ("owner@home.example", None),
            fitter: ("fitter@integra.example", company),
        }
        members = (await support.get(f"/api/v1/installations/{inst}/members")).json()
        assert members["integrator_company_ids"] == [company]
        assert members["owner_user_id"] == owner


async def test_support_gets_403_saying_who_may_on_every_subscription_and_order_change(
    cloud: Cloud,
) -> None:
    inst = await cloud.connected()
    owner = new_user(cloud.app, role="owner")
    with cloud.state.store.transaction() as tx:
        memberships.set_owner(tx, inst, owner, actor="tests", now=cloud.clock())
    async with client(cloud.app, user_api_key(cloud.app, owner)) as customer:
        bought = await customer.post(
            "/api/v1/subscriptions",
            json={"installation_id": inst, "product": "TSF16100", "card_token": CARD_OK},
        )
        assert bought.status_code == 201, bought.text
        waiting = await customer.post(
            "/api/v1/subscriptions",
            json={"installation_id": inst, "product": "TSF12125", "pay_with": "card"},
        )
        assert waiting.json()["order_status"] == "Processing", waiting.text
    sub = bought.json()["subscription"]["id"]
    order = waiting.json()["order_id"]
    before = (await cloud.http.get(f"/api/v1/subscriptions?installation_id={inst}")).json()
    orders_before = (await cloud.http.get(f"/api/v1/orders?installation_id={inst}")).json()

    subscription_changes = [
        ("/api/v1/subscriptions", {"installation_id": inst, "product": "VR-720P-07D"}),
        (f"/api/v1/subscriptions/{sub}/renew", {"months": 12, "card_token": CARD_OK}),
        (f"/api/v1/subscriptions/{sub}/deactivate", None),
        (f"/api/v1/subscriptions/{sub}/reactivate", {"card_token": CARD_OK}),
    ]
    order_changes = [
        (f"/api/v1/orders/{order}/pay", {"card_token": CARD_OK}),
        (f"/api/v1/orders/{order}/cancel", None),
    ]
    async with await _support(cloud) as support:
        # it may look at all of it
        assert (await support.get(f"/api/v1/subscriptions/{sub}")).status_code == 200
        assert (await support.get(f"/api/v1/orders/{order}")).status_code == 200
        for path, body in subscription_changes:
            response = await support.post(path, json=body)
            assert response.status_code == 403, (path, response.text)
            detail = response.json()["detail"]
            assert "support agents never add or change subscriptions" in detail, detail
            assert "'subscriptions:write'" in detail
            # it names only who can: customer-service admins cannot either
            assert "customer-service admin" not in detail and "cs_admin" not in detail
        for path, body in order_changes:
            response = await support.post(path, json=body)
            assert response.status_code == 403, (path, response.text)
            detail = response.json()["detail"]
            assert "support agents never place or pay orders" in detail, detail
            assert "'orders:write'" in detail and "cs_admin" not in detail
    assert (await cloud.http.get(f"/api/v1/subscriptions?installation_id={inst}")).json() == before
    assert (await cloud.http.get(f"/api/v1/orders?installation_id={inst}")).json() == orders_before
