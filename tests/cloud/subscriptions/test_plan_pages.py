"""The plan-change page without a browser: the confirm step shows the days left, both
plans' daily values and the prorated price before anything changes; confirming with a
card changes the plan (and mails the purchaser); a refused change shows why, in Dutch
for a Dutch reader, and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cloud.billing.payments import CARD_OK
from cloud.billing.tables import OrderRow
from cloud.devices import memberships
from cloud.notifications.tables import NotificationRow
from tests.cloud.conftest import Cloud
from tests.cloud.harness import client, new_company, new_user, user_api_key
from tests.cloud.pages import csrf_of, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def ts(y: int, m: int, d: int, h: int = 0) -> int:
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp())


async def test_plan_change_page_quotes_then_changes(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst = await cloud.connected("Cameras")
    cam = (await cloud.device(inst, kind="camera"))["device_id"]
    company = new_company(cloud.app, name="SI card", payment_type="card")
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="system:tests", now=1)
    buyer = new_user(cloud.app, role="partner", company_id=company)
    async with client(cloud.app, user_api_key(cloud.app, buyer)) as api:
        r = await api.post(
            "/api/v1/subscriptions",
            json={
                "installation_id": inst,
                "product": "VR-720P-07D",
                "device_id": cam,
                "card_token": CARD_OK,
            },
        )
        assert r.status_code == 201, r.text
        sub = r.json()["subscription"]["id"]
    # a colleague of the same integrator changes it on day 100 (a login lasts hours)
    cloud.clock.now = ts(2026, 5, 12, 9)
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get(f"/installations/{inst}")
        assert f"/subscriptions/{sub}/plan-change" in page.text and cam in page.text
        review = await http.get(f"/subscriptions/{sub}/plan-change?product=VR-4K-30D")
        assert review.status_code == 200, review.text
        assert "265 days left" in review.text
        assert "3.29 cents" in review.text and "39.45 cents" in review.text
        assert "€95.84" in review.text
        orders = _orders(cloud)
        done = await http.post(
            f"/subscriptions/{sub}/plan-change",
            data={
                "csrf_token": csrf_of(review.text),
                "product": "VR-4K-30D",
                "card_number": "4242 4242 4242 4242",
            },
        )
        assert done.status_code == 303, done.text
        assert "The plan is now" in (await http.get(done.headers["location"])).text
        assert _orders(cloud) == orders + 1
        # without the CSRF token nothing happens
        forged = await http.post(
            f"/subscriptions/{sub}/plan-change", data={"product": "VR-720P-07D"}
        )
        assert forged.status_code == 403
    with cloud.state.store.transaction() as tx:
        [mail] = tx.scalars(
            select(NotificationRow).where(NotificationRow.kind == "plan_changed")
        ).all()
        assert "95.84 was charged" in mail.body and "device " + cam in mail.body


async def test_a_refused_plan_change_page_says_why_in_dutch(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst = await cloud.connected("Cameras")
    cam = (await cloud.device(inst, kind="camera"))["device_id"]
    company = new_company(cloud.app, name="SI invoice", payment_type="invoice")
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="system:tests", now=1)
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, uid):
        async with client(cloud.app, user_api_key(cloud.app, uid)) as api:
            r = await api.post(
                "/api/v1/subscriptions",
                json={"installation_id": inst, "product": "VR-4K-30D", "device_id": cam},
            )
            sub = r.json()["subscription"]["id"]
        review = await http.get(
            f"/subscriptions/{sub}/plan-change?product=VR-720P-07D",
            headers={"Accept-Language": "nl"},
        )
        assert review.status_code == 200
        orders = _orders(cloud)
        refused = await http.post(
            f"/subscriptions/{sub}/plan-change",
            data={"csrf_token": csrf_of(review.text), "product": "VR-720P-07D"},
            headers={"Accept-Language": "nl"},
        )
        assert refused.status_code == 409
        assert "terug te betalen" in refused.text  # NothingRefundable, in Dutch
        assert _orders(cloud) == orders


def _orders(cloud: Cloud) -> int:
    with cloud.state.store.transaction() as tx:
        return len(tx.scalars(select(OrderRow.id)).all())


async def test_office_users_and_a_refused_precondition_on_the_buy_page(cloud: Cloud) -> None:
    inst = await cloud.installation("Office")
    gw = (await cloud.device(inst))["device_id"]  # a controller that has not reported yet
    company = new_company(cloud.app, name="SI invoice", payment_type="invoice")
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="system:tests", now=1)
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get(f"/installations/{inst}")
        assert "Prosoft 3.7.3 or higher" in page.text and 'name="office_user"' in page.text
        # said before anyone tries: the controller has not reported
        assert 'id="not-connected"' in page.text and "in the last 7 days" in page.text
        # nothing is sold to an installation none of whose devices has reported
        refused = await http.get(f"/installations/{inst}/buy?office_user=Sales")
        assert refused.status_code == 409 and "not connected" in refused.text
        assert "wait for its report" in refused.text
        forged = await http.post(
            f"/installations/{inst}/buy",
            data={"csrf_token": csrf_of(page.text), "office_user": "Sales"},
        )
        assert forged.status_code == 409 and "not connected" in forged.text
        assert _orders(cloud) == 0
        cloud.report(gw, fw="Prosoft 3.6.2")
        page = await http.get(f"/installations/{inst}")
        assert 'id="not-connected"' not in page.text
        review = await http.get(f"/installations/{inst}/buy?office_user=Sales")
        assert review.status_code == 200 and "user Sales" in review.text
        done = await http.post(
            f"/installations/{inst}/buy",
            data={"csrf_token": csrf_of(review.text), "office_user": "Sales"},
        )
        assert done.status_code == 303, done.text
        subs = (await cloud.http.get(f"/api/v1/subscriptions?installation_id={inst}")).json()
        assert [(s["product"], s["user_ref"], s["term_months"]) for s in subs] == [
            ("AKV-OFFICE-USER", "Sales", 1)
        ]
        # Remote Diagnostics needs the controller on Prosoft 3.7.3
        orders = _orders(cloud)
        review = await http.get(f"/installations/{inst}/buy?product=TSF16110")
        refused = await http.post(
            f"/installations/{inst}/buy",
            data={"csrf_token": csrf_of(review.text), "product": "TSF16110"},
        )
        assert refused.status_code == 409
        assert "3.7.3 or higher" in refused.text and "3.6.2" in refused.text
        assert _orders(cloud) == orders
