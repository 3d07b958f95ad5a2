"""The orders API: history search, detail, checkout, void/refund, roles, scope and bad input."""

from __future__ import annotations

import pytest

from cloud.accounts import users
from cloud.accounts.apikeys import create_api_key
from cloud.accounts.rules import PaymentType, Role
from cloud.billing.orders import Billing, OrderStatus
from cloud.billing.payments import CARD_DECLINED, CARD_OK, CARD_REFUND_FAILS, CARD_TIMEOUT
from cloud.devices import memberships
from tests.cloud.billing_harness import LINES, PASSWORD, TOTAL
from tests.cloud.harness import Cloud, client

S = OrderStatus


def _billing(cloud: Cloud) -> Billing:
    assert cloud.state.billing is not None
    return cloud.state.billing


def _user_key(cloud: Cloud, email: str, role: Role, *, installation_id: str | None = None) -> str:
    """An API key acting as a new user; a partner integrates, an owner owns ``installation_id``."""
    with cloud.state.store.transaction() as tx:
        company_id = None
        if role is Role.PARTNER:
            company_id = users.create_company(
                tx,
                name=f"{email} Ltd",
                partner_id=None,
                payment_type=PaymentType.CARD,
                actor="system:tests",
                now=cloud.clock(),
            ).id
        user = users.create_user(
            tx,
            email=email,
            name=email,
            password=PASSWORD,
            role=role,
            company_id=company_id,
            actor="system:tests",
            now=cloud.clock(),
        )
        if installation_id is not None and company_id is not None:
            memberships.add_integrator(
                tx, installation_id, company_id, actor="system:tests", now=cloud.clock()
            )
        elif installation_id is not None:
            memberships.set_owner(
                tx, installation_id, user.id, actor="system:tests", now=cloud.clock()
            )
        user_id = user.id
    return create_api_key(cloud.state.store, name=email, now=cloud.clock(), user_id=user_id).key


async def _order(
    cloud: Cloud,
    inst: str,
    key: str,
    *,
    card: str | None = None,
    kind: str = "purchase",
    pay_with: str = "card",
) -> int:
    result = await _billing(cloud).place_order(
        kind=kind,
        buyer=1,
        installation_id=inst,
        lines=LINES,
        pay_with=pay_with,
        card_token=card,
        idempotency_key=key,
        now=cloud.clock(),
    )
    return result.order_id


@pytest.fixture
async def shop(cloud: Cloud) -> tuple[str, str]:
    """Two installations; user 1 (the buyer of every order) owns the first."""
    inst_a, inst_b = await cloud.installation("A"), await cloud.installation("B")
    _user_key(cloud, "owner@example.com", Role.OWNER, installation_id=inst_a)
    return inst_a, inst_b


async def test_history_is_searchable_by_type_status_number_and_installation(
    cloud: Cloud, shop: tuple[str, str]
) -> None:
    inst_a, inst_b = shop
    ok = await _order(cloud, inst_a, "k1", card=CARD_OK)
    declined = await _order(cloud, inst_a, "k2", card=CARD_DECLINED, kind="renewal")
    lost = await _order(cloud, inst_b, "k3", card=CARD_TIMEOUT, kind="renewal")
    unpaid = await _order(cloud, inst_b, "k4")

    async def ids(**params: object) -> list[int]:
        response = await cloud.http.get("/api/v1/orders", params=params)
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()]

    assert await ids() == [unpaid, lost, declined, ok]
    assert await ids(type="renewal") == [lost, declined]
    assert await ids(status="Time out") == [lost]
    assert await ids(status="Processing", installation_id=inst_b) == [unpaid]
    assert await ids(installation_id=inst_a) == [declined, ok]
    assert await ids(type="renewal", status="Failed") == [declined]
    number = f"EN-2026-{ok:06d}"
    assert await ids(number=number) == [ok]
    assert await ids(number=number.lower()) == [ok]
    assert await ids(limit=2, offset=1) == [lost, declined]
    [row] = (await cloud.http.get("/api/v1/orders", params={"number": number})).json()
    assert row == {
        "id": ok,
        "number": number,
        "type": "purchase",
        "installation_id": inst_a,
        "buyer_user_id": 1,
        "status": "Succeed",
        "pay_with": "card",
        "amount_cents": TOTAL,
        "currency": "EUR",
        "created_at": cloud.clock(),
        "updated_at": cloud.clock(),
        "hidden_at": None,
        "installation_ids": [inst_a],
        "other_installations": 0,
    }


async def test_detail_has_lines_transactions_and_refund_retries(
    cloud: Cloud, shop: tuple[str, str]
) -> None:
    order_id = await _order(cloud, shop[0], "k1", card=CARD_REFUND_FAILS)
    await _billing(cloud).provider.settle_all()
    refund = await cloud.http.post(f"/api/v1/orders/{order_id}/refund", json={"amount_cents": 700})
    assert refund.status_code == 200, refund.text
    assert (
        refund.json()["status"] == "Failed" and refund.json()["retry_at"] == cloud.clock() + 86_400
    )
    detail = (await cloud.http.get(f"/api/v1/orders/{order_id}")).json()
    assert [line["product_code"] for line in detail["lines"]] == ["TSF16100", "TSF12125"]
    assert detail["notify"] == ["owner@example.com"]
    charge, refunded = detail["transactions"]
    assert (charge["type"], charge["status"], charge["settled"]) == ("charge", "Succeed", True)
    assert (refunded["type"], refunded["amount_cents"], refunded["parent_id"]) == (
        "refund",
        700,
        charge["id"],
    )
    assert refunded["retry"]["attempts"] == 0 and refunded["retry"]["exhausted_at"] is None


async def test_checkout_void_and_refund_over_http(cloud: Cloud, shop: tuple[str, str]) -> None:
    order_id = await _order(cloud, shop[0], "k1")
    paid = await cloud.http.post(f"/api/v1/orders/{order_id}/pay", json={"card_token": CARD_OK})
    assert paid.status_code == 200 and paid.json()["status"] == "Succeed"
    partial = await cloud.http.post(f"/api/v1/orders/{order_id}/void", json={"amount_cents": 1})
    assert partial.status_code == 422 and "whole charge" in partial.text
    part = await cloud.http.post(f"/api/v1/orders/{order_id}/refund", json={"amount_cents": 1})
    assert part.status_code == 409 and "has not settled" in part.text  # no partial void
    void = await cloud.http.post(f"/api/v1/orders/{order_id}/void")
    assert void.status_code == 200 and void.json()["amount_cents"] == TOTAL
    assert (await cloud.http.get(f"/api/v1/orders/{order_id}")).json()["status"] == "Cancel"
    again = await cloud.http.post(f"/api/v1/orders/{order_id}/pay", json={"card_token": CARD_OK})
    assert again.status_code == 409
    unpaid = await _order(cloud, shop[0], "k2")
    cancelled = await cloud.http.post(f"/api/v1/orders/{unpaid}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "Cancel"


async def test_partners_and_owners_see_only_their_installations(
    cloud: Cloud, shop: tuple[str, str]
) -> None:
    inst_a, inst_b = shop
    mine = await _order(cloud, inst_a, "k1")
    theirs = await _order(cloud, inst_b, "k2")
    partner_key = _user_key(cloud, "si@example.com", Role.PARTNER, installation_id=inst_a)
    async with client(cloud.app, partner_key) as partner:
        assert [o["id"] for o in (await partner.get("/api/v1/orders")).json()] == [mine]
        assert (await partner.get(f"/api/v1/orders/{theirs}")).status_code == 404
        listed = await partner.get("/api/v1/orders", params={"installation_id": inst_b})
        assert listed.status_code == 404
        pay = await partner.post(f"/api/v1/orders/{theirs}/pay", json={"card_token": CARD_OK})
        assert pay.status_code == 404
        pay = await partner.post(f"/api/v1/orders/{mine}/pay", json={"card_token": CARD_OK})
        assert pay.status_code == 200 and pay.json()["status"] == "Succeed"
        refund = await partner.post(f"/api/v1/orders/{mine}/refund")
        assert refund.status_code == 403  # refunds are cs_admin's and admin's
    stranger = _user_key(cloud, "nobody@example.com", Role.OWNER)
    async with client(cloud.app, stranger) as owner:
        assert (await owner.get("/api/v1/orders")).json() == []
    assert _billing(cloud).provider.charges_made == 1


async def test_support_reads_but_does_not_pay_or_refund(
    cloud: Cloud, shop: tuple[str, str]
) -> None:
    order_id = await _order(cloud, shop[0], "k1", card=CARD_OK)
    support_key = _user_key(cloud, "agent@entitle.example", Role.SUPPORT)
    cs_key = _user_key(cloud, "lead@entitle.example", Role.CS_ADMIN)
    async with client(cloud.app, support_key) as support:
        assert (await support.get(f"/api/v1/orders/{order_id}")).status_code == 200
        assert (await support.post(f"/api/v1/orders/{order_id}/void")).status_code == 403
        assert (await support.post(f"/api/v1/orders/{order_id}/cancel")).status_code == 403
    async with client(cloud.app, cs_key) as cs_admin:
        assert (await cs_admin.post(f"/api/v1/orders/{order_id}/void")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/api/v1/orders/999", None, 404),
        ("POST", "/api/v1/orders/999/pay", {"card_token": CARD_OK}, 404),
        ("POST", "/api/v1/orders/999/void", None, 404),
        ("POST", "/api/v1/orders/999/refund", {"amount_cents": 5}, 404),
        ("POST", "/api/v1/orders/0/refund", None, 422),
        ("POST", "/api/v1/orders/{id}/refund", {"amount_cents": -5}, 422),
        ("POST", "/api/v1/orders/{id}/refund", {"amount_cents": 0}, 422),
        ("POST", "/api/v1/orders/{id}/void", {"amount_cents": "all"}, 422),
        ("POST", "/api/v1/orders/{id}/refund", {"amount_cents": 5, "reason": "x"}, 422),
        ("POST", "/api/v1/orders/{id}/pay", {"card_token": ""}, 422),
        ("POST", "/api/v1/orders/{id}/pay", b'{"card_token": "4242', 422),
        ("GET", "/api/v1/orders?status=refunded", None, 422),
        ("GET", "/api/v1/orders?type=gift", None, 422),
        ("GET", "/api/v1/orders?limit=0", None, 422),
    ],
)
async def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    cloud: Cloud, shop: tuple[str, str], method: str, path: str, body: object, status: int
) -> None:
    order_id = await _order(cloud, shop[0], "k1", card=CARD_OK)
    await _billing(cloud).provider.settle_all()
    before = (await cloud.http.get(f"/api/v1/orders/{order_id}")).json()
    url = path.replace("{id}", str(order_id))
    if isinstance(body, bytes):
        response = await cloud.http.request(
            method, url, content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = await cloud.http.request(method, url, json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert (await cloud.http.get(f"/api/v1/orders/{order_id}")).json() == before
    assert _billing(cloud).provider.ledger["ch_sandbox_000001"].refunded_cents == 0
