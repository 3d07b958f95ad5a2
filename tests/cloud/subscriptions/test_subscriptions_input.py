"""Bad subscription input gets a clear 4xx and changes NOTHING in the store (must-show 6)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from cloud.accounts import users
from cloud.accounts.tables import AuditRow
from cloud.billing.payments import CARD_DECLINED
from cloud.billing.tables import OrderRow
from cloud.devices import memberships
from cloud.devices.tables import GrantRow
from cloud.notifications.tables import NotificationRow
from cloud.subscriptions.tables import SubscriptionOrderRow, SubscriptionRow
from tests.cloud.harness import Cloud, client, new_company, new_user, user_api_key

_TABLES = (SubscriptionRow, SubscriptionOrderRow, OrderRow, GrantRow, NotificationRow, AuditRow)


def _snapshot(cloud: Cloud) -> dict[str, object]:
    """Every row of every table a subscription request may touch."""
    out: dict[str, object] = {}
    with cloud.state.store.transaction() as tx:
        for model in _TABLES:
            out[model.__tablename__] = tx.scalar(select(func.count()).select_from(model))
        out["subs"] = [
            (r.id, r.status, r.ends_at, r.purchaser_id, r.auto_renew, r.version)
            for r in tx.scalars(select(SubscriptionRow).order_by(SubscriptionRow.id))
        ]
    return out


@pytest.fixture
async def shop(cloud: Cloud):
    inst = await cloud.connected()
    company = new_company(cloud.app, name="SI", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="system:tests", now=cloud.clock())
    async with client(cloud.app, user_api_key(cloud.app, uid)) as si:
        bought = await si.post(
            "/api/v1/subscriptions",
            json={
                "installation_id": inst,
                "product": "TSF16100",
                "pay_with": "card",
                "card_token": "4242424242424242",
            },
        )
        assert bought.status_code == 201, bought.text
        yield cloud, si, inst, uid, bought.json()["subscription"]["id"]


def _today_minus(cloud: Cloud, days: int) -> str:
    return datetime.fromtimestamp(cloud.clock() - days * 86_400, UTC).date().isoformat()


BAD_PURCHASES = {
    "unknown product": ({"product": "TSF99999"}, 422, "TSF16100"),
    "term not offered": ({"product": "TSF16101", "term_months": 24}, 422, "12, 36, 60, 120"),
    "unknown field": ({"product": "TSF12125", "colour": "red"}, 422, "extra"),
    "invoice for a card partner": ({"product": "TSF12125", "pay_with": "invoice"}, 422, "invoice"),
    "already subscribed": ({"product": "TSF16100"}, 409, "already has remote_access"),
    "declined card": ({"product": "TSF12125", "card_token": CARD_DECLINED}, 402, "declined"),
}


@pytest.mark.parametrize("case", sorted(BAD_PURCHASES))
async def test_bad_purchase_is_refused_and_nothing_changes(shop, case: str) -> None:
    cloud, si, inst, _, _ = shop
    extra, code, words = BAD_PURCHASES[case]
    before = _snapshot(cloud)
    r = await si.post("/api/v1/subscriptions", json={"installation_id": inst, **extra})
    assert r.status_code == code, r.text
    assert words.lower() in r.text.lower()
    after = _snapshot(cloud)
    if case == "declined card":  # billing keeps its record of the failed order, nothing else
        orders, audit = OrderRow.__tablename__, AuditRow.__tablename__
        assert after[orders] == before[orders] + 1
        after[orders], after[audit] = before[orders], before[audit]
    assert after == before


async def test_start_in_the_past_and_malformed_json_change_nothing(shop) -> None:
    cloud, si, inst, _, _ = shop
    before = _snapshot(cloud)
    past = await si.post(
        "/api/v1/subscriptions",
        json={"installation_id": inst, "product": "TSF12125", "start": _today_minus(cloud, 1)},
    )
    assert past.status_code == 422 and "in the past" in past.text
    broken = await si.post(
        "/api/v1/subscriptions",
        content=b'{"installation_id": ',
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 422 and "json" in broken.text.lower()
    assert _snapshot(cloud) == before


@pytest.mark.parametrize("months", [0, -3, 61, 120])
async def test_renewal_outside_1_to_60_months_is_refused(shop, months: int) -> None:
    cloud, si, _, _, sub_id = shop
    before = _snapshot(cloud)
    r = await si.post(f"/api/v1/subscriptions/{sub_id}/renew", json={"months": months})
    assert r.status_code == 422 and "1 to 60" in r.text
    assert _snapshot(cloud) == before


async def test_blacklisted_buyer_and_support_agent_change_nothing(shop) -> None:
    cloud, si, inst, uid, sub_id = shop
    support = new_user(cloud.app, role="support")
    async with client(cloud.app, user_api_key(cloud.app, support)) as agent:
        before = _snapshot(cloud)
        r = await agent.post(f"/api/v1/subscriptions/{sub_id}/deactivate")
        assert r.status_code == 403
        r = await agent.post(
            "/api/v1/subscriptions", json={"installation_id": inst, "product": "TSF12125"}
        )
        assert r.status_code == 403
        assert (await agent.get(f"/api/v1/subscriptions/{sub_id}")).status_code == 200  # may look
        assert _snapshot(cloud) == before
    with cloud.state.store.transaction() as tx:
        users.user(tx, uid).blacklisted = True
    before = _snapshot(cloud)
    for method, path, body in [
        ("POST", "/api/v1/subscriptions", {"installation_id": inst, "product": "TSF12125"}),
        ("POST", f"/api/v1/subscriptions/{sub_id}/renew", {"months": 1}),
        ("POST", f"/api/v1/subscriptions/{sub_id}/deactivate", None),
    ]:
        r = await si.request(method, path, json=body)
        assert r.status_code == 403 and "blacklisted" in r.text, r.text
    assert _snapshot(cloud) == before


async def test_other_partners_installation_answers_like_an_unknown_one(shop) -> None:
    cloud, _, inst, _, sub_id = shop
    stranger = new_user(cloud.app, role="partner")
    async with client(cloud.app, user_api_key(cloud.app, stranger)) as other:
        before = _snapshot(cloud)
        assert (await other.get(f"/api/v1/subscriptions/{sub_id}")).status_code == 404
        r = await other.post(
            "/api/v1/subscriptions", json={"installation_id": inst, "product": "TSF12125"}
        )
        assert r.status_code == 404
        assert _snapshot(cloud) == before


def _charges(cloud: Cloud) -> tuple[int, list[tuple[object, ...]]]:
    """What the sandbox card processor was asked for: the count and every charge."""
    provider = cloud.state.billing.provider  # type: ignore[union-attr]
    return provider.charges_made, [dataclasses.astuple(e) for e in provider.ledger.values()]


@pytest.mark.parametrize("months", [True, "12", 1.0, "1", None, [1]], ids=repr)
async def test_months_must_be_a_json_integer(shop, months: object) -> None:
    """``true`` was renewed as one month and ``"12"`` as twelve, and the card was charged."""
    cloud, si, _, _, sub_id = shop
    before, charged = _snapshot(cloud), _charges(cloud)
    r = await si.post(
        f"/api/v1/subscriptions/{sub_id}/renew",
        json={"months": months, "pay_with": "card", "card_token": "4242424242424242"},
    )
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "months"], error
    assert _snapshot(cloud) == before and _charges(cloud) == charged
    card = {"pay_with": "card", "card_token": "4242424242424242"}
    ok = await si.post(f"/api/v1/subscriptions/{sub_id}/renew", json={"months": 1, **card})
    assert ok.status_code == 200, ok.text  # the same renewal, written as an integer
    assert _charges(cloud)[0] == charged[0] + 1


async def test_a_body_over_the_limit_is_refused_before_a_route_without_one_runs(shop) -> None:
    """A declared length over the limit is answered first: /deactivate takes no body."""
    cloud, si, _, _, sub_id = shop
    before = _snapshot(cloud)
    big = b"x" * (cloud.state.settings.http_max_body_bytes + 1)
    r = await si.post(f"/api/v1/subscriptions/{sub_id}/deactivate", content=big)
    assert r.status_code == 413 and "ENTITLE_HTTP_MAX_BODY_BYTES" in r.json()["detail"]
    assert _snapshot(cloud) == before
