"""A blacklisted customer may look but not buy or change anything (SQLite and PostgreSQL).

The walk is generic like test_roles.py: it finds every /api/v1 route that
changes something and that a partner's role allows, calls each as a
partner whose company (or whose own account) is blacklisted, and expects
403 naming the blacklist, with every table of the database exactly as it
was. Support tickets are the exception on purpose: support must still
reach a blacklisted customer, so those stay open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cloud.accounts.rules import Permission, Role, allowed
from cloud.billing.payments import CARD_OK
from cloud.devices import memberships
from tests.cloud.accounts.test_roles import api_routes
from tests.cloud.harness import Cloud, client, every_row, new_company, new_user, user_api_key

# open to blacklisted customers on purpose: support must still reach them
STILL_OPEN = {Permission.TICKETS_WRITE}


@dataclass
class _Shop:
    partner: int
    company: int
    installation: str
    device: str
    subscription: str
    unpaid_order: int
    repair: int


async def _shop(cloud: Cloud, http: httpx.AsyncClient, partner: int, company: int) -> _Shop:
    """What a partner has bought and built before it is blacklisted, done by itself."""
    created = await http.post("/api/v1/installations", json={"name": "Shop"})
    assert created.status_code == 201, created.text
    inst = created.json()["id"]
    device = await http.post("/api/v1/devices", json={"installation_id": inst, "kind": "gateway"})
    assert device.status_code == 201, device.text
    cloud.report(device.json()["device_id"])  # connected: services can be bought
    bought = await http.post(
        "/api/v1/subscriptions",
        json={"installation_id": inst, "product": "TSF16100", "card_token": CARD_OK},
    )
    assert bought.status_code == 201 and bought.json()["order_status"] == "Succeed", bought.text
    at_checkout = await http.post(  # a card order waiting for checkout: payable, cancellable
        "/api/v1/subscriptions",
        json={"installation_id": inst, "product": "VR-1080P-30D", "pay_with": "card"},
    )
    assert at_checkout.json()["order_status"] == "Processing", at_checkout.text
    # a repair of its device (requested by the repair centre): the partner may accept quotes
    repair = await cloud.http.post(
        "/api/v1/repairs",
        json={"device_id": device.json()["device_id"], "problem": "no power", "ship_to": "Shop"},
    )
    assert repair.status_code == 201, repair.text
    return _Shop(
        partner=partner,
        company=company,
        installation=inst,
        device=device.json()["device_id"],
        subscription=bought.json()["subscription"]["id"],
        unpaid_order=at_checkout.json()["order_id"],
        repair=repair.json()["id"],
    )


def _requests(shop: _Shop) -> dict[tuple[str, str], tuple[str, dict[str, Any] | None]]:
    """(method, route path) → (the path with this shop's ids, a body the route would accept).

    A route listed here that the app does not have (yet) is not called.
    """
    sub, order = shop.subscription, shop.unpaid_order
    return {
        ("POST", "/api/v1/installations"): ("/api/v1/installations", {"name": "Another"}),
        ("POST", "/api/v1/devices"): (
            "/api/v1/devices",
            {"installation_id": shop.installation, "kind": "camera"},
        ),
        ("DELETE", "/api/v1/devices/{device_id}"): (f"/api/v1/devices/{shop.device}", None),
        ("POST", "/api/v1/subscriptions"): (
            "/api/v1/subscriptions",
            {"installation_id": shop.installation, "product": "TSF12125", "card_token": CARD_OK},
        ),
        ("POST", "/api/v1/subscriptions/{sub_id}/renew"): (
            f"/api/v1/subscriptions/{sub}/renew",
            {"months": 12, "card_token": CARD_OK},
        ),
        ("POST", "/api/v1/subscriptions/{sub_id}/deactivate"): (
            f"/api/v1/subscriptions/{sub}/deactivate",
            None,
        ),
        ("POST", "/api/v1/subscriptions/{sub_id}/reactivate"): (
            f"/api/v1/subscriptions/{sub}/reactivate",
            {"card_token": CARD_OK},
        ),
        ("POST", "/api/v1/subscriptions/cameras"): (
            "/api/v1/subscriptions/cameras",
            {"installation_id": shop.installation, "product": "VR-720P-07D"},
        ),
        ("POST", "/api/v1/subscriptions/users"): (
            "/api/v1/subscriptions/users",
            {"installation_id": shop.installation, "user_refs": ["Sales", "Reception"]},
        ),
        ("POST", "/api/v1/subscriptions/cameras/plan-change"): (
            "/api/v1/subscriptions/cameras/plan-change",
            {"installation_id": shop.installation, "product": "VR-4K-30D"},
        ),
        ("POST", "/api/v1/subscriptions/{sub_id}/plan-change"): (
            f"/api/v1/subscriptions/{sub}/plan-change",
            {"product": "TSF12125", "card_token": CARD_OK},
        ),
        ("PUT", "/api/v1/subscriptions/{sub_id}/card"): (
            f"/api/v1/subscriptions/{sub}/card",
            {"card_token": CARD_OK},
        ),
        ("POST", "/api/v1/orders/{order_id}/pay"): (
            f"/api/v1/orders/{order}/pay",
            {"card_token": CARD_OK},
        ),
        ("POST", "/api/v1/orders/{order_id}/cancel"): (f"/api/v1/orders/{order}/cancel", None),
        ("POST", "/api/v1/subscriptions/checkout"): (
            "/api/v1/subscriptions/checkout",
            {
                "items": [{"installation_id": shop.installation, "product": "TSF12125"}],
                "card_token": CARD_OK,
            },
        ),
        ("POST", "/api/v1/repairs/{repair_id}/accept"): (
            f"/api/v1/repairs/{shop.repair}/accept",
            {"card_token": CARD_OK},
        ),
        ("POST", "/api/v1/orders/{order_id}/hide"): (f"/api/v1/orders/{order}/hide", None),
        ("POST", "/api/v1/orders/{order_id}/unhide"): (f"/api/v1/orders/{order}/unhide", None),
        ("PUT", "/api/v1/me/company/invoicing"): (
            "/api/v1/me/company/invoicing",
            {"city": "Amsterdam", "country": "NL"},
        ),
    }


def _customer_writes(cloud: Cloud) -> set[tuple[str, str]]:
    """Every route that changes something and that a partner's or owner's role allows."""
    return {
        route
        for route, permissions in api_routes(cloud.app).items()
        for permission in permissions  # public routes (login, logout) have none
        if route[0] != "GET"
        and permission not in STILL_OPEN
        and (allowed(Role.PARTNER, permission) or allowed(Role.OWNER, permission))
    }


@pytest.mark.parametrize("blacklisted", ["company", "user"])
async def test_a_blacklisted_partner_changes_nothing_anywhere(
    cloud: Cloud, blacklisted: str
) -> None:
    company = new_company(cloud.app, name="Shady", payment_type="card")
    partner = new_user(cloud.app, role="partner", company_id=company)
    async with client(cloud.app, user_api_key(cloud.app, partner)) as http:
        shop = await _shop(cloud, http, partner, company)
        routes = _customer_writes(cloud)
        requests = {route: r for route, r in _requests(shop).items() if route in routes}
        assert set(requests) == routes, (
            "a customer write route is not walked here: add it (and its blacklist check)"
        )
        target = f"companies/{company}" if blacklisted == "company" else f"users/{partner}"
        response = await cloud.http.put(
            f"/api/v1/{target}/blacklist", json={"blacklisted": True, "reason": "chargebacks"}
        )
        assert response.status_code == 200, response.text

        before = every_row(cloud.app)
        answers = {}
        for route, (path, body) in sorted(requests.items()):
            response = await http.request(route[0], path, json=body)
            answers[route] = (response.status_code, response.text)
        wrong = {
            route: answer
            for route, answer in answers.items()
            if answer[0] != 403 or "blacklisted" not in answer[1] or "may look" not in answer[1]
        }
        assert not wrong, wrong
        assert every_row(cloud.app) == before, "a refused change stored something"
        # still looks
        for path in (
            f"/api/v1/installations/{shop.installation}",
            f"/api/v1/subscriptions/{shop.subscription}",
            f"/api/v1/orders/{shop.unpaid_order}",
        ):
            assert (await http.get(path)).status_code == 200, path

        # off the blacklist, the same requests are served again (so the 403s were the blacklist)
        await cloud.http.put(
            f"/api/v1/{target}/blacklist", json={"blacklisted": False, "reason": "paid"}
        )
        path, body = requests[("POST", "/api/v1/installations")]
        assert (await http.post(path, json=body)).status_code == 201
        path, body = requests[("POST", "/api/v1/devices")]
        assert (await http.post(path, json=body)).status_code == 201


async def test_a_blacklisted_customer_still_reaches_support(cloud: Cloud) -> None:
    company = new_company(cloud.app, name="Shady", payment_type="invoice")
    partner = new_user(cloud.app, role="partner", company_id=company)
    owner = new_user(cloud.app, role="owner")
    inst = await cloud.connected()
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="system:tests", now=cloud.clock())
        memberships.set_owner(tx, inst, owner, actor="system:tests", now=cloud.clock())
    await cloud.http.put(
        f"/api/v1/companies/{company}/blacklist", json={"blacklisted": True, "reason": "unpaid"}
    )
    await cloud.http.put(
        f"/api/v1/users/{owner}/blacklist", json={"blacklisted": True, "reason": "chargebacks"}
    )
    for user in (partner, owner):
        async with client(cloud.app, user_api_key(cloud.app, user)) as http:
            opened = await http.post(
                "/api/v1/tickets",
                json={
                    "category": "service",
                    "subject": "Why can I not renew?",
                    "body": "The renewal answers 403.",
                    "installation_id": inst,
                },
            )
            assert opened.status_code == 201, opened.text
            ticket = opened.json()["id"]
            reply = await http.post(
                f"/api/v1/tickets/{ticket}/messages", json={"body": "Any news?"}
            )
            assert reply.status_code == 200, reply.text
            refused = await http.post(
                "/api/v1/subscriptions", json={"installation_id": inst, "product": "TSF12125"}
            )
            assert refused.status_code == 403 and "blacklisted" in refused.json()["detail"]
