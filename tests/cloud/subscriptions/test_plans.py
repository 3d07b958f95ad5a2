"""Per-device plans, plan changes and purchase preconditions through the running app
(SQLite and PostgreSQL): a camera's plan goes into that camera's token only; a 720p/7-day
plan changed to 4K/30-day with 265 days left is charged the prorated difference, and the
camera's agent then keeps 30 days of recordings; a product needing Prosoft 3.7.3 is
refused for an installation whose controller reports older firmware, or none lately."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from agent.enforcers import RetentionPruner
from agent.enforcers.retention import DAY_S
from agent.runtime import open_agent
from cloud.accounts.tables import AuditRow
from cloud.billing.payments import CARD_DECLINED, CARD_OK, CARD_SETTLED
from cloud.billing.tables import OrderRow, TransactionRow
from cloud.devices import memberships
from cloud.devices import queries as device_queries
from cloud.subscriptions.tables import PlanChangeRow, SubscriptionRow
from protocol.token import verify_token
from tests.cloud.harness import DAY, Cloud, client, new_company, new_user, user_api_key


def ts(y: int, m: int, d: int, h: int = 0) -> int:
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp())


async def _partner(cloud: Cloud, inst: str, *, payment_type: str = "card"):
    company = new_company(cloud.app, name=f"SI {payment_type}", payment_type=payment_type)
    uid = new_user(cloud.app, role="partner", company_id=company)
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="system:tests", now=cloud.clock())
    return uid, client(cloud.app, user_api_key(cloud.app, uid))


async def _features(cloud: Cloud, device_id: str) -> dict:
    token = cloud.publisher.entitlement(device_id)
    assert token is not None
    claims = verify_token(
        token, key_for=(await cloud.keyset()).token_key, device_id=device_id, now=cloud.clock()
    )
    return {name: dict(f.params) for name, f in claims.ent.items() if cloud.clock() < f.until}


async def _plan(si: httpx.AsyncClient, inst: str, cam: str, code: str, card: str) -> httpx.Response:
    """A camera's own plan bought by the partner ``si`` with ``card``."""
    return await si.post(
        "/api/v1/subscriptions",
        json={"installation_id": inst, "product": code, "device_id": cam, "card_token": card},
    )


def _grant_days(cloud: Cloud, inst: str, device_id: str) -> int:
    with cloud.state.store.transaction() as tx:
        [grant] = [
            g
            for g in device_queries.grants_of(tx, inst)
            if g.feature == "video_retention" and g.scope == f"device:{device_id}"
        ]
        return int(grant.params["days"])


def _detail(response: object) -> str:
    return str(response.json()["detail"])  # type: ignore[attr-defined]


def _count(cloud: Cloud, model: type) -> int:
    with cloud.state.store.transaction() as tx:
        return int(tx.scalar(select(func.count()).select_from(model)) or 0)


async def _two_cameras(cloud: Cloud) -> tuple[str, str, str, str]:
    inst = await cloud.installation()
    gw = (await cloud.device(inst))["device_id"]
    cloud.report(gw)  # connected: services can be bought
    cam_a = (await cloud.device(inst, "camera"))["device_id"]
    cam_b = (await cloud.device(inst, "camera"))["device_id"]
    return inst, gw, cam_a, cam_b


async def test_a_cameras_plan_is_in_that_cameras_token_only(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst, gw, cam_a, cam_b = await _two_cameras(cloud)
    _, si = await _partner(cloud, inst)
    async with si:
        for cam, code in ((cam_a, "VR-720P-07D"), (cam_b, "VR-4K-30D")):
            r = await _plan(si, inst, cam, code, CARD_OK)
            assert r.status_code == 201, r.text
            assert r.json()["subscription"]["device_id"] == cam
        # one site mixes 7-day 720p and 30-day 4K cameras
        assert (await _features(cloud, cam_a))["video_retention"] == {
            "days": 7,
            "resolution": "720p",
        }
        assert (await _features(cloud, cam_b))["video_retention"] == {
            "days": 30,
            "resolution": "4k",
        }
        assert "video_retention" not in await _features(cloud, gw)
        # a second plan for the same camera is refused; the gateway is no camera
        again = await si.post(
            "/api/v1/subscriptions",
            json={"installation_id": inst, "product": "VR-4K-90D", "device_id": cam_a},
        )
        assert again.status_code == 409, again.text
        wrong = await si.post(
            "/api/v1/subscriptions",
            json={"installation_id": inst, "product": "VR-4K-90D", "device_id": gw},
        )
        assert wrong.status_code == 422 and "camera" in _detail(wrong)
        # another installation's camera is unknown here
        other = await cloud.installation("Other")
        stranger = (await cloud.device(other, "camera"))["device_id"]
        foreign = await si.post(
            "/api/v1/subscriptions",
            json={"installation_id": inst, "product": "VR-4K-90D", "device_id": stranger},
        )
        assert foreign.status_code == 404, foreign.text
    assert _count(cloud, SubscriptionRow) == 2


async def test_apply_to_all_cameras_buys_one_plan_per_camera(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst, gw, cam_a, cam_b = await _two_cameras(cloud)
    _, si = await _partner(cloud, inst)
    async with si:
        r = await si.post(
            "/api/v1/subscriptions/cameras",
            json={"installation_id": inst, "product": "VR-1080P-30D", "card_token": CARD_OK},
        )
        assert r.status_code == 201, r.text
        bought = r.json()["bought"]
        assert sorted(b["subscription"]["device_id"] for b in bought) == sorted([cam_a, cam_b])
        for cam in (cam_a, cam_b):
            assert (await _features(cloud, cam))["video_retention"]["days"] == 30
        assert "video_retention" not in await _features(cloud, gw)
        # again: every camera has it, nothing more is bought or charged
        orders = _count(cloud, OrderRow)
        again = await si.post(
            "/api/v1/subscriptions/cameras",
            json={"installation_id": inst, "product": "VR-1080P-30D", "card_token": CARD_OK},
        )
        assert again.status_code == 409
        assert _count(cloud, OrderRow) == orders


async def test_more_than_ten_cameras_but_not_an_eleventh_controller(cloud: Cloud) -> None:
    inst = await cloud.installation()
    for _ in range(10):
        await cloud.device(inst)
    for _ in range(12):
        await cloud.device(inst, "camera")
    refused = await cloud.http.post(
        "/api/v1/devices", json={"installation_id": inst, "kind": "gateway"}
    )
    assert refused.status_code == 409 and "controllers" in _detail(refused)


def _recordings(folder: Path, ages_days: dict[str, float], *, now: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, age in ages_days.items():
        path = folder / name
        path.write_bytes(b"mp4")
        stamp = now - age * DAY_S
        os.utime(path, (stamp, stamp))


async def test_camera_plan_changed_on_day_100_is_charged_the_prorated_difference(
    cloud: Cloud, tmp_path: Path
) -> None:
    """Bought on 31 Jan 2026 (paid through 1 Feb 2027); changed on 12 May 2026 with 265 of
    the year's 365 days left. 720p/7d is 1.00 a month (12.00 a year), 4K/30d 12.00 a month
    (144.00 a year): the difference is 13200 x 265 / 365 = 9583.56 -> 9584 cents."""
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst, _, cam, _ = await _two_cameras(cloud)
    uid, si = await _partner(cloud, inst)
    async with si:
        bought = await _plan(si, inst, cam, "VR-720P-07D", CARD_OK)
        assert bought.status_code == 201, bought.text
        sub = bought.json()["subscription"]
        assert sub["end"] == ts(2027, 2, 1)

        cloud.clock.now = ts(2026, 5, 12, 9)
        quote = await si.get(
            f"/api/v1/subscriptions/{sub['id']}/plan-change/quote?product=VR-4K-30D"
        )
        assert quote.status_code == 200, quote.text
        q = quote.json()
        assert (q["days_left"], q["difference_cents"], q["direction"]) == (265, 9584, "upgrade")
        assert round(q["old_daily_cents"], 2) == 3.29 and round(q["new_daily_cents"], 2) == 39.45
        # the quote stores nothing
        assert _count(cloud, PlanChangeRow) == 0

        changed = await si.post(
            f"/api/v1/subscriptions/{sub['id']}/plan-change",
            json={"product": "VR-4K-30D", "card_token": CARD_OK},
        )
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert body["order_status"] == "Succeed"
        assert body["subscription"]["product"] == "VR-4K-30D"
        # the term is unchanged: same end, same purchaser
        assert body["subscription"]["end"] == sub["end"]
        assert body["subscription"]["purchaser_id"] == uid
    with cloud.state.store.transaction() as tx:
        order = tx.get(OrderRow, body["order_id"])
        assert order is not None and order.amount_cents == 9584
        [change] = tx.scalars(select(PlanChangeRow)).all()
        assert (change.status, change.difference_cents, change.days_left) == ("applied", 9584, 265)
        actions = set(tx.scalars(select(AuditRow.action)))
        assert {"subscription.plan_change_ordered", "subscription.plan_changed"} <= actions
    assert (await _features(cloud, cam))["video_retention"] == {"days": 30, "resolution": "4k"}

    # the camera's agent, given the token issued after the change, keeps 30 days
    now = cloud.clock()
    folder = tmp_path / "recordings"
    ages = {"d01.mp4": 1, "d07.mp4": 6.5, "d08.mp4": 8, "d20.mp4": 20, "d29.mp4": 29.5}
    ages |= {"d31.mp4": 31, "d60.mp4": 60}
    _recordings(folder, ages, now=now)
    pruner = RetentionPruner(folder)
    keyset = base64.b64decode((await cloud.http.get("/api/v1/keyset")).json()["keyset_b64"])
    agent = open_agent(
        device_id=cam,
        data_dir=tmp_path / "agent",
        connection=None,
        root_keyset=keyset,
        clock=cloud.clock,
        enforcers=[pruner],
    )
    try:
        token = cloud.publisher.entitlement(cam)
        assert token is not None
        assert await agent.apply_token(token)
        assert pruner.days == 30
        left = {p.name for p in folder.iterdir()}
        assert left == {"d01.mp4", "d07.mp4", "d08.mp4", "d20.mp4", "d29.mp4"}
    finally:
        agent.close()


async def test_a_declined_upgrade_changes_nothing(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst, _, cam, _ = await _two_cameras(cloud)
    _, si = await _partner(cloud, inst)
    async with si:
        sub = (await _plan(si, inst, cam, "VR-720P-07D", CARD_OK)).json()["subscription"]
        cloud.clock.advance(100 * DAY)
        r = await si.post(
            f"/api/v1/subscriptions/{sub['id']}/plan-change",
            json={"product": "VR-4K-30D", "card_token": CARD_DECLINED},
        )
        assert r.status_code == 402, r.text
        after = (await si.get(f"/api/v1/subscriptions/{sub['id']}")).json()
        assert after["product"] == "VR-720P-07D"
        with cloud.state.store.transaction() as tx:
            [change] = tx.scalars(select(PlanChangeRow)).all()
            assert change.status == "cancelled"
        assert _grant_days(cloud, inst, cam) == 7
        # refused inputs: the same plan, another service's plan, an unknown plan
        for product, code in (("VR-720P-07D", 409), ("TSF16100", 409), ("NOPE", 422)):
            bad = await si.get(
                f"/api/v1/subscriptions/{sub['id']}/plan-change/quote?product={product}"
            )
            assert bad.status_code == code, bad.text


async def test_a_downgrade_refunds_the_prorated_difference_until_nothing_is_left(
    cloud: Cloud,
) -> None:
    """4K/30d (144.00 a year) down to 1080p/7d (24.00 a year) with 265 days left gives back
    12000 x 265 / 365 = 8712.33 -> 8712 cents from the purchase's charge; once the rest
    of that charge was refunded too, a further downgrade (871 cents) is refused."""
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst, _, cam, _ = await _two_cameras(cloud)
    _, si = await _partner(cloud, inst)
    async with si:
        sub = (await _plan(si, inst, cam, "VR-4K-30D", CARD_SETTLED)).json()["subscription"]
        cloud.clock.now = ts(2026, 5, 12, 9)  # 265 days left
        quote = await si.get(
            f"/api/v1/subscriptions/{sub['id']}/plan-change/quote?product=VR-1080P-07D"
        )
        assert (quote.json()["difference_cents"], quote.json()["direction"]) == (
            -8712,
            "downgrade",
        )
        r = await si.post(
            f"/api/v1/subscriptions/{sub['id']}/plan-change", json={"product": "VR-1080P-07D"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["refunded_cents"] == 8712
        assert r.json()["subscription"]["product"] == "VR-1080P-07D"
        assert (await _features(cloud, cam))["video_retention"]["days"] == 7
        with cloud.state.store.transaction() as tx:
            refunds = tx.scalars(
                select(TransactionRow.amount_cents).where(TransactionRow.type == "refund")
            ).all()
            assert refunds == [8712]
            [purchase] = tx.scalars(select(OrderRow)).all()
            [change] = tx.scalars(select(PlanChangeRow)).all()
            assert (change.status, change.order_id) == ("refunded", purchase.id)
        # the rest of the charge but 1 cent is refunded by hand (a goodwill gesture)
        await cloud.state.billing.refunds.refund(
            purchase.id, amount_cents=14_400 - 8712 - 1, actor="system:tests", now=cloud.clock()
        )
        before = (_count(cloud, TransactionRow), _count(cloud, PlanChangeRow))
        refused = await si.post(
            f"/api/v1/subscriptions/{sub['id']}/plan-change", json={"product": "VR-720P-07D"}
        )
        assert refused.status_code == 409, refused.text
        assert "8.71 EUR left to refund" in _detail(refused)
        assert (_count(cloud, TransactionRow), _count(cloud, PlanChangeRow)) == before
        assert (await si.get(f"/api/v1/subscriptions/{sub['id']}")).json()["product"] == (
            "VR-1080P-07D"
        )
        assert _grant_days(cloud, inst, cam) == 7


async def test_an_invoiced_term_is_not_downgraded_by_refund(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst, _, cam, _ = await _two_cameras(cloud)
    _, si = await _partner(cloud, inst, payment_type="invoice")
    async with si:
        sub = (
            await si.post(
                "/api/v1/subscriptions",
                json={"installation_id": inst, "product": "VR-4K-30D", "device_id": cam},
            )
        ).json()["subscription"]
        assert sub["status"] == "active"
        cloud.clock.advance(100 * DAY)
        before = (_count(cloud, TransactionRow), _count(cloud, PlanChangeRow))
        r = await si.post(
            f"/api/v1/subscriptions/{sub['id']}/plan-change", json={"product": "VR-720P-07D"}
        )
        assert r.status_code == 409, r.text
        assert "invoiced" in _detail(r)
        assert (_count(cloud, TransactionRow), _count(cloud, PlanChangeRow)) == before
        assert _grant_days(cloud, inst, cam) == 30


async def test_old_controller_firmware_refuses_the_purchase_naming_the_minimum(
    cloud: Cloud,
) -> None:
    inst = await cloud.installation()
    gw = (await cloud.device(inst))["device_id"]
    cam = (await cloud.device(inst, "camera"))["device_id"]
    _, si = await _partner(cloud, inst)
    buy = {"installation_id": inst, "product": "TSF16110", "card_token": CARD_OK}
    async with si:
        # nothing reported yet: not connected
        r = await si.post("/api/v1/subscriptions", json=buy)
        assert r.status_code == 409 and "not connected" in _detail(r), r.text
        # the controller reports Prosoft 3.6.9; a camera's newer firmware does not count
        cloud.report(gw, seq=1, fw="3.6.9")
        cloud.report(cam, seq=1, fw="9.0.0", kind="camera")
        r = await si.post("/api/v1/subscriptions", json=buy)
        assert r.status_code == 409, r.text
        detail = _detail(r)
        assert "3.7.3 or higher" in detail and "3.6.9" in detail, detail
        assert _count(cloud, SubscriptionRow) == 0 and _count(cloud, OrderRow) == 0
        # updated: 3.7.10 is above 3.7.3 (compared as versions, not text)
        cloud.report(gw, seq=2, fw="3.7.10")
        r = await si.post("/api/v1/subscriptions", json=buy)
        assert r.status_code == 201, r.text


async def test_a_controller_silent_beyond_the_window_is_not_connected(cloud: Cloud) -> None:
    inst = await cloud.installation()
    gw = (await cloud.device(inst))["device_id"]
    _, si = await _partner(cloud, inst)
    cloud.report(gw, seq=1, fw="3.8.0")
    cloud.clock.advance(cloud.state.settings.purchase_connected_window_s + 1)
    async with si:
        r = await si.post(
            "/api/v1/subscriptions",
            json={"installation_id": inst, "product": "TSF16110", "card_token": CARD_OK},
        )
        assert r.status_code == 409 and "not connected" in _detail(r), r.text
    assert _count(cloud, OrderRow) == 0


async def test_office_users_by_the_month_at_most_60(cloud: Cloud) -> None:
    inst = await cloud.installation()
    gw = (await cloud.device(inst))["device_id"]
    cloud.report(gw)
    _, si = await _partner(cloud, inst, payment_type="invoice")
    async with si:
        missing = await si.post(
            "/api/v1/subscriptions", json={"installation_id": inst, "product": "AKV-OFFICE-USER"}
        )
        assert missing.status_code == 422 and "user_ref" in _detail(missing)
        for i in range(60):
            r = await si.post(
                "/api/v1/subscriptions",
                json={"installation_id": inst, "product": "AKV-OFFICE-USER", "user_ref": f"u{i}"},
            )
            assert r.status_code == 201, r.text
        assert r.json()["subscription"]["term_months"] == 1
        full = await si.post(
            "/api/v1/subscriptions",
            json={"installation_id": inst, "product": "AKV-OFFICE-USER", "user_ref": "u60"},
        )
        assert full.status_code == 409 and "maximum is 60" in _detail(full)
    users = (await _features(cloud, gw))["office_user"]["users"]
    assert len(users) == 60 and "u0" in users


async def test_apply_a_new_plan_to_all_cameras_at_once(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31, 12)
    inst, gw, cam_a, cam_b = await _two_cameras(cloud)
    cam_c = (await cloud.device(inst, "camera"))["device_id"]  # no plan of its own
    _, si = await _partner(cloud, inst)
    async with si:
        for cam, code in ((cam_a, "VR-720P-07D"), (cam_b, "VR-4K-30D")):
            r = await _plan(si, inst, cam, code, CARD_OK)
            assert r.status_code == 201, r.text
        cloud.clock.now = ts(2026, 5, 12, 9)
        orders = _count(cloud, OrderRow)
        # a listed camera without a plan refuses the whole request before any order
        refused = await si.post(
            "/api/v1/subscriptions/cameras/plan-change",
            json={"installation_id": inst, "product": "VR-4K-30D", "device_ids": [cam_a, cam_c]},
        )
        assert refused.status_code == 409 and cam_c in _detail(refused)
        assert _count(cloud, OrderRow) == orders
        # every camera with a plan: the one on 4K/30d already is left as it is
        r = await si.post(
            "/api/v1/subscriptions/cameras/plan-change",
            json={"installation_id": inst, "product": "VR-4K-30D", "card_token": CARD_OK},
        )
        assert r.status_code == 200, r.text
        [changed] = r.json()["changed"]
        assert changed["subscription"]["device_id"] == cam_a
        assert changed["quote"]["difference_cents"] == 9584
        assert _count(cloud, OrderRow) == orders + 1
        for cam in (cam_a, cam_b):
            assert (await _features(cloud, cam))["video_retention"]["days"] == 30
        again = await si.post(
            "/api/v1/subscriptions/cameras/plan-change",
            json={"installation_id": inst, "product": "VR-4K-30D", "card_token": CARD_OK},
        )
        assert again.status_code == 422 and "nothing to change" in _detail(again)
