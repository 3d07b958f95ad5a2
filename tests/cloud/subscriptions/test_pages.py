"""Subscriptions' pages without a browser: Save subscriptions (invoice) and Checkout (card)
as the Cloudvue article has them, the confirm steps (price, date, who pays) before any
change, auto-renew off and on, renewals, video retention for all cameras, the partners'
follow-up, and no control (and a 403) for a role that may not change subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.devices import memberships
from tests.cloud.conftest import Cloud
from tests.cloud.harness import every_row, new_company
from tests.cloud.pages import csrf_of, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


def _integrate(cloud: Cloud, installation_id: str, *, payment_type: str) -> int:
    company = new_company(cloud.app, name=f"SI {payment_type}", payment_type=payment_type)
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, installation_id, company, actor="system:tests", now=1)
    return company


def _subs(cloud: Cloud, installation_id: str) -> list[dict]:
    service = cloud.state.subscriptions
    assert service is not None
    from cloud.accounts.apikeys import Principal

    admin = Principal(key_id=1, name="tests", role="admin")
    return service.list_for(admin, installation_id)


async def _post(http: httpx.AsyncClient, page_url: str, url: str, data: dict) -> httpx.Response:
    """POST ``data`` to ``url`` with the CSRF token of the page at ``page_url``."""
    page = await http.get(page_url)
    return await http.post(url, data={"csrf_token": csrf_of(page.text), **data})


async def test_invoiced_partner_saves_subscriptions_after_a_confirm_step(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31) + 3600
    inst = await cloud.connected("Shop")
    company = _integrate(cloud, inst, payment_type="invoice")
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, uid):
        page = await http.get(f"/installations/{inst}")
        assert page.status_code == 200
        assert "Save subscriptions" in page.text and "Checkout" not in page.text
        assert "No subscriptions yet." in page.text

        review = await http.get(f"/installations/{inst}/buy?product=TSF12125")
        assert review.status_code == 200
        assert "Voice Control" in review.text and "€36.00" in review.text
        assert "Invoiced to your company" in review.text and "card_number" not in review.text
        assert _subs(cloud, inst) == []  # the confirm step changed nothing

        done = await http.post(
            f"/installations/{inst}/buy",
            data={"csrf_token": csrf_of(review.text), "product": "TSF12125"},
        )
        assert done.status_code == 303, done.text[:400]
        assert done.headers["location"] == f"/installations/{inst}#subscriptions"
        [sub] = _subs(cloud, inst)
        assert (sub["service"], sub["status"], sub["purchaser_id"]) == (
            "voice_control",
            "active",
            uid,
        )
        after = await http.get(f"/installations/{inst}")
        assert "Subscriptions saved: Voice Control" in after.text  # the flash
        assert "active, renews on Feb 1, 2027" in after.text
        assert "€36.00 for 12 months, charged on Jan 1, 2027" in after.text
        assert ">you<" in after.text  # the purchaser is the viewer
        # the order is among the installation's purchases, linked to its page
        purchases = after.text[after.text.index('id="purchases"') :]
        assert 'href="/orders/' in purchases and "Succeeded" in purchases
        assert "TSF12125" in purchases
        # the service is held now: it cannot be chosen again
        assert 'name="product" value="TSF12125"' not in after.text


async def test_card_partner_checks_out_with_the_sandbox_card(cloud: Cloud) -> None:
    inst = await cloud.connected("Card shop")
    company = _integrate(cloud, inst, payment_type="card")
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get(f"/installations/{inst}")
        assert "Checkout" in page.text and "Save subscriptions" not in page.text
        review = await http.get(f"/installations/{inst}/buy?product=TSF16100")
        assert "card_number" in review.text and "Pay €60.00" in review.text
        assert "4242 4242 4242 4242" in review.text  # the sandbox's test cards are named

        token = csrf_of(review.text)
        url = f"/installations/{inst}/buy"
        no_card = await http.post(url, data={"csrf_token": token, "product": "TSF16100"})
        assert no_card.status_code == 422 and "Enter a card number" in no_card.text
        declined = await http.post(
            url, data={"csrf_token": token, "product": "TSF16100", "card_number": CARD_DECLINED}
        )
        assert declined.status_code == 402 and "declined" in declined.text
        assert _subs(cloud, inst) == []  # nothing bought
        paid = await http.post(
            url,
            data={
                "csrf_token": token,
                "product": "TSF16100",
                "card_number": "4242 4242 4242 4242",
            },
        )
        assert paid.status_code == 303
        [sub] = _subs(cloud, inst)
        got = (sub["service"], sub["status"], sub["pay_with"])
        assert got == ("remote_access", "active", "card")
        assert "Paid: Remote Services" in (await http.get(paid.headers["location"])).text


async def test_video_retention_is_applied_to_all_cameras(cloud: Cloud) -> None:
    inst = await cloud.installation("Cameras")
    for _ in range(2):  # connected through its cameras' reports
        cloud.report((await cloud.device(inst, kind="camera"))["device_id"], kind="camera")
    company = _integrate(cloud, inst, payment_type="invoice")
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get(f"/installations/{inst}")
        assert "Apply to all cameras (2 cameras)" in page.text
        refused = await http.get(f"/installations/{inst}/buy?video=VR-1080P-30D")
        assert refused.status_code == 422 and "Apply to all cameras" in refused.text
        review = await http.get(f"/installations/{inst}/buy?video=VR-1080P-30D&apply_all=1")
        assert review.status_code == 200
        # a plan per camera (the Cloudvue manual): 72.00 a year each, 144.00 for two
        assert "applies to all cameras (2 cameras)" in review.text and "€144.00" in review.text
        done = await http.post(
            f"/installations/{inst}/buy",
            data={"csrf_token": csrf_of(review.text), "video": "VR-1080P-30D", "apply_all": "1"},
        )
        assert done.status_code == 303
        subs = _subs(cloud, inst)
        assert [s["product"] for s in subs] == ["VR-1080P-30D"] * 2
        assert {s["device_id"] for s in subs} == {
            d["device_id"]
            for d in (await cloud.http.get(f"/api/v1/installations/{inst}")).json()["devices"]
        }
        # every camera has its plan: nothing more to buy for them
        again = await http.get(f"/installations/{inst}/buy?video=VR-720P-07D&apply_all=1")
        assert again.status_code == 422 and "No camera without a plan" in again.text
        # every camera's token carries the tier
        for device in (await cloud.http.get(f"/api/v1/installations/{inst}")).json()["devices"]:
            claims = await cloud.http.get(f"/api/v1/devices/{device['device_id']}/entitlement")
            assert claims.json()["claims"]["ent"]["video_retention"]["days"] == 30


async def test_auto_renew_off_then_on_by_another_purchaser(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31) + 3600
    inst = await cloud.connected("Shop")
    invoiced = _integrate(cloud, inst, payment_type="invoice")
    carded = _integrate(cloud, inst, payment_type="card")
    async with signed_in(cloud.app, role="partner", company_id=invoiced) as (a, _):
        await _post(
            a, f"/installations/{inst}", f"/installations/{inst}/buy", {"product": "TSF12125"}
        )
        [sub] = _subs(cloud, inst)
        off = await a.get(f"/subscriptions/{sub['id']}/auto-renew?turn=off")
        assert off.status_code == 200
        assert "keeps running until Feb 1, 2027, then stops" in off.text
        assert "Voice Control · Shop" in off.text  # the installation by its name
        assert _subs(cloud, inst)[0]["auto_renew"] is True  # the confirm step changed nothing
        done = await a.post(
            f"/subscriptions/{sub['id']}/auto-renew",
            data={"csrf_token": csrf_of(off.text), "turn": "off"},
        )
        assert done.status_code == 303
        assert _subs(cloud, inst)[0]["auto_renew"] is False
        page = await a.get(f"/installations/{inst}")
        assert "expires on Feb 1, 2027" in page.text and "Turn auto-renew on" in page.text

    async with signed_in(cloud.app, role="partner", company_id=carded) as (b, uid):
        on = await b.get(f"/subscriptions/{sub['id']}/auto-renew?turn=on")
        assert on.status_code == 200
        assert "You become the purchaser of Voice Control" in on.text
        assert "Nothing is due now." in on.text
        assert "€36.00 for 12 months, charged on Jan 1, 2027" in on.text
        assert "card_number" in on.text
        before = every_row(cloud.app)
        assert _subs(cloud, inst)[0]["purchaser_id"] != uid
        done = await b.post(
            f"/subscriptions/{sub['id']}/auto-renew",
            data={"csrf_token": csrf_of(on.text), "turn": "on", "card_number": CARD_OK},
        )
        assert done.status_code == 303
        after = _subs(cloud, inst)[0]
        assert (after["auto_renew"], after["purchaser_id"], after["card_last4"]) == (
            True,
            uid,
            "4242",
        )
        assert every_row(cloud.app)["orders"] == before["orders"]  # nothing charged now


async def test_renew_shows_the_price_first_and_refuses_61_months(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31) + 3600
    inst = await cloud.connected("Shop")
    company = _integrate(cloud, inst, payment_type="invoice")
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        await _post(
            http, f"/installations/{inst}", f"/installations/{inst}/buy", {"product": "TSF16100"}
        )
        [sub] = _subs(cloud, inst)
        quote = await http.get(f"/subscriptions/{sub['id']}/renew?months=3")
        assert quote.status_code == 200
        assert "€15.00" in quote.text and "runs until May 1, 2027" in quote.text
        assert _subs(cloud, inst)[0]["end"] == ts(2027, 2, 1)
        assert (await http.get(f"/subscriptions/{sub['id']}/renew?months=61")).status_code == 422
        forged = await http.post(
            f"/subscriptions/{sub['id']}/renew",
            data={"csrf_token": csrf_of(quote.text), "months": "61"},
        )
        assert forged.status_code == 422 and _subs(cloud, inst)[0]["end"] == ts(2027, 2, 1)
        done = await http.post(
            f"/subscriptions/{sub['id']}/renew",
            data={"csrf_token": csrf_of(quote.text), "months": "3"},
        )
        assert done.status_code == 303
        assert _subs(cloud, inst)[0]["end"] == ts(2027, 5, 1)


async def test_support_gets_no_control_and_a_forged_post_changes_nothing(cloud: Cloud) -> None:
    inst = await cloud.connected("Shop")
    company = _integrate(cloud, inst, payment_type="invoice")
    async with signed_in(cloud.app, role="partner", company_id=company) as (partner, _):
        await _post(
            partner, f"/installations/{inst}", f"/installations/{inst}/buy", {"product": "TSF12125"}
        )
        no_token = await partner.post(f"/installations/{inst}/buy", data={"product": "TSF16100"})
        assert no_token.status_code == 403
    [sub] = _subs(cloud, inst)
    async with signed_in(cloud.app, role="support") as (support, _):
        page = await support.get(f"/installations/{inst}")
        assert page.status_code == 200 and "Voice Control" in page.text
        for control in ("Buy a service", "Turn auto-renew", "Renew", "Checkout", "Save subscr"):
            assert control not in page.text
        before = every_row(cloud.app)
        token = csrf_of(page.text)
        for url, data in [
            (f"/installations/{inst}/buy", {"product": "TSF16100"}),
            (f"/subscriptions/{sub['id']}/auto-renew", {"turn": "off"}),
            (f"/subscriptions/{sub['id']}/renew", {"months": "1"}),
        ]:
            got = await support.post(url, data={"csrf_token": token, **data})
            assert got.status_code == 403, url
        assert (await support.get(f"/subscriptions/{sub['id']}/renew?months=1")).status_code == 403
        assert every_row(cloud.app) == before


async def test_owner_checks_out_and_cannot_reach_another_installation(cloud: Cloud) -> None:
    mine = await cloud.connected("Home")
    theirs = await cloud.connected("Neighbour")
    company = _integrate(cloud, theirs, payment_type="invoice")
    async with signed_in(cloud.app, role="partner", company_id=company) as (partner, _):
        await _post(
            partner,
            f"/installations/{theirs}",
            f"/installations/{theirs}/buy",
            {"product": "TSF12125"},
        )
    [their_sub] = _subs(cloud, theirs)
    async with signed_in(cloud.app, role="owner") as (http, uid):
        with cloud.state.store.transaction() as tx:
            memberships.set_owner(tx, mine, uid, actor="system:tests", now=1)
        page = await http.get(f"/installations/{mine}")
        assert "Checkout" in page.text
        review = await http.get(f"/installations/{mine}/buy?product=TSF16101&app_term=36")
        assert "€80.00" in review.text and "36 months" in review.text
        done = await http.post(
            f"/installations/{mine}/buy",
            data={
                "csrf_token": csrf_of(review.text),
                "product": "TSF16101",
                "app_term": "36",
                "card_number": CARD_OK,
            },
        )
        assert done.status_code == 303
        assert _subs(cloud, mine)[0]["term_months"] == 36
        # another installation's pages answer "not found", like ones that do not exist
        for url in (
            f"/installations/{theirs}/buy?product=TSF16100",
            f"/subscriptions/{their_sub['id']}/renew?months=1",
            f"/subscriptions/{their_sub['id']}/auto-renew?turn=off",
        ):
            assert (await http.get(url)).status_code == 404, url


async def test_follow_up_lists_what_ends_soon_and_failed_charges(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31) + 3600
    inst = await cloud.connected("Bakery")
    other = await cloud.connected("Not theirs")
    company = _integrate(cloud, inst, payment_type="card")
    _integrate(cloud, other, payment_type="card")
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get("/follow-up")
        assert page.status_code == 200
        assert "Nothing ends in the next 60 days." in page.text
        assert "No failed charges." in page.text
        await _post(
            http,
            f"/installations/{inst}",
            f"/installations/{inst}/buy",
            {"product": "TSF16100", "card_number": CARD_OK},
        )
    # the renewal charge fails: the card on file is declined
    service = cloud.state.subscriptions
    assert service is not None
    [sub] = _subs(cloud, inst)
    from cloud.accounts.apikeys import Principal

    admin = Principal(key_id=1, name="tests", role="admin")
    await service.set_card(admin, sub["id"], CARD_DECLINED)
    cloud.clock.now = ts(2027, 1, 2)  # a month before the end: charged (and declined)
    await cloud.state.jobs.run_once()
    # a colleague of the same company signs in (sessions do not last the year)
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get("/follow-up")
        assert "Bakery" in page.text and "Remote Services" in page.text
        assert "Feb 1, 2027" in page.text
        assert "No failed charges." not in page.text and "€60.00" in page.text
        assert "Not theirs" not in page.text


async def test_a_blacklisted_partner_looks_but_gets_no_control(cloud: Cloud) -> None:
    from cloud.accounts.users import set_blacklisted

    inst = await cloud.connected("Shop")
    company = _integrate(cloud, inst, payment_type="invoice")
    with cloud.state.store.transaction() as tx:
        set_blacklisted(
            tx,
            kind="company",
            object_id=company,
            blacklisted=True,
            reason="unpaid invoices",
            actor="system:tests",
            now=cloud.clock(),
        )
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get(f"/installations/{inst}")
        assert page.status_code == 200 and "This account is blacklisted" in page.text
        assert "Buy a service" not in page.text and "Save subscriptions" not in page.text
        before = every_row(cloud.app)
        got = await http.post(
            f"/installations/{inst}/buy",
            data={"csrf_token": csrf_of(page.text), "product": "TSF12125"},
        )
        assert got.status_code == 403 and every_row(cloud.app) == before
