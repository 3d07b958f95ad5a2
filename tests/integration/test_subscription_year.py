"""A subscription's year on the test clock, with real agents on a real Mosquitto (must-show 1).

Bought on 31 January 2026 (UTC), Remote Services ends at 2027-02-01T00:00:00Z;
the renewal notice goes out on 1 December, the charge on 1 January and the
devices follow the renewal. A year later the card is declined: the purchaser
is told, the charge is retried every 3 days, the service expires at the end and
the devices refuse it; a late payment switches it on again. The cloud, its
jobs and the agents all read one :class:`~cloud.testclock.TestClock`, moved by
``POST /api/v1/test-clock/advance``.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.runtime import open_agent
from agent.session import Connection
from cloud import create_app
from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.billing.tables import OrderRow
from cloud.devices import memberships
from cloud.health.connectivity import installation_reports
from cloud.notifications.tables import NotificationRow
from cloud.settings import CloudSettings
from cloud.testclock import TestClock
from common.tasks import cancel_and_wait
from tests.cloud.harness import client, new_api_key, new_company, new_user, running, user_api_key
from tests.waiting import eventually

pytestmark = pytest.mark.usefixtures("require_mosquitto")
FEATURE = "remote_access"


def ts(y: int, m: int, d: int, h: int = 0) -> int:
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp())


async def _until(agents, allowed: bool) -> None:
    await eventually(
        lambda: all(a.check(FEATURE)[0] is allowed for a in agents),
        what=lambda: [a.check(FEATURE) for a in agents],
    )


def _heard_from_all(app, installation_id: str) -> bool:
    with app.state.cloud.store.transaction() as tx:
        found = installation_reports(tx, installation_id)
    return bool(found) and all(r.last_seen is not None for r in found)


def _kinds(app, kind: str) -> list[NotificationRow]:
    with app.state.cloud.store.transaction() as tx:
        return list(tx.scalars(select(NotificationRow).where(NotificationRow.kind == kind)).all())


def _renewal_orders(app) -> list[OrderRow]:
    with app.state.cloud.store.transaction() as tx:
        query = select(OrderRow).where(OrderRow.kind == "renewal").order_by(OrderRow.id)
        return list(tx.scalars(query).all())


# a hang guard, not a speed limit: 365 days of jobs with real agents took over the suite's
# 120 s on PostgreSQL beside stress-ng --cpu 2 (27 min run, 2026-12-07)
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("database", "engine"),
    [("sqlite", "mosquitto"), ("postgresql", "mosquitto"), ("sqlite", "nats")],
    ids=["sqlite", "postgresql", "nats"],
)
async def test_a_year_of_renewal_decline_expiry_and_late_payment(
    tmp_path: Path, database: str, engine: str, request: pytest.FixtureRequest
) -> None:
    # Mosquitto: a broker of its own; NATS: the session's 3-node cluster
    broker = request.getfixturevalue("broker" if engine == "mosquitto" else "nats_cluster")
    url = (
        request.getfixturevalue("postgres_url")
        if database == "postgresql"
        else f"sqlite:///{tmp_path / 'cloud.db'}"
    )
    clock = TestClock(ts(2026, 1, 31, 10))
    settings = CloudSettings(
        data_dir=tmp_path / "cloud",
        database_url=url,
        test_clock=True,
        **broker.cloud_settings("cloud"),
    )
    app = create_app(settings, accounts=broker.accounts, clock=clock)
    agents, tasks = [], []
    async with running(app):
        ops = client(app, new_api_key(app, "ops"))
        company = new_company(app, name="Integrator A", payment_type="card")
        uid = new_user(app, role="partner", company_id=company)
        si = client(app, user_api_key(app, uid))
        async with ops, si:

            async def advance(days: int) -> None:
                r = await ops.post("/api/v1/test-clock/advance", json={"days": days})
                assert r.status_code == 200, r.text

            inst = (await ops.post("/api/v1/installations", json={"name": "Shop"})).json()["id"]
            with app.state.cloud.store.transaction() as tx:
                memberships.add_integrator(tx, inst, company, actor="t", now=clock())
            keyset = base64.b64decode((await ops.get("/api/v1/keyset")).json()["keyset_b64"])
            for i in range(2):
                body = {"installation_id": inst, "kind": "gateway", "device_id": f"gw-{i}"}
                creds = (await ops.post("/api/v1/devices", json=body)).json()
                agent = open_agent(
                    device_id=creds["device_id"],
                    data_dir=tmp_path / f"agent-{i}",
                    connection=Connection(
                        host="127.0.0.1",
                        port=broker.port,
                        username=creds["mqtt_username"],
                        password=creds["mqtt_password"],
                        protocol=broker.mqtt_protocol,
                    ),
                    root_keyset=keyset,
                    clock=clock,
                )
                agents.append(agent)
                tasks.append(asyncio.create_task(agent.run(), name=f"agent-{i}"))
            try:
                # every device holds its first token before the story starts: on NATS a
                # token published while a device is still subscribing can be missed
                # (the retained one it then gets is older; docs/nats.md)
                await eventually(lambda: all(a.state.ver >= 1 for a in agents), what="first tokens")
                # and the cloud has heard from them: only a connected installation can buy
                await eventually(lambda: _heard_from_all(app, inst), what="the devices' status")
                # 31 Jan 2026: bought, runs to the end of January 2027
                r = await si.post(
                    "/api/v1/subscriptions",
                    json={"installation_id": inst, "product": "TSF16100", "card_token": CARD_OK},
                )
                assert r.status_code == 201, r.text
                sub = r.json()["subscription"]
                assert sub["end"] == ts(2027, 2, 1)
                assert sub["status_text"] == "active, renews at 2027-02-01T00:00:00Z"
                await _until(agents, True)

                await advance(303)  # 30 Nov 2026: nothing yet
                assert _kinds(app, "renewal_notice") == []
                await advance(1)  # 1 Dec 2026: two months before the end
                [notice] = _kinds(app, "renewal_notice")
                assert notice.created_at // 86400 == ts(2026, 12, 1) // 86400
                assert "2027-02-01" in notice.subject
                await advance(30)  # 31 Dec 2026: not charged yet
                assert _renewal_orders(app) == []
                await advance(1)  # 1 Jan 2027: one month before, charged and renewed
                [charge] = _renewal_orders(app)
                assert (charge.status, charge.buyer_user_id) == ("Succeed", uid)
                sub = (await si.get(f"/api/v1/subscriptions/{sub['id']}")).json()
                assert sub["end"] == ts(2028, 2, 1)
                await advance(31)  # past the first end: the devices kept the service
                await _until(agents, True)

                # the card on file starts declining before the next charge (1 Jan 2028)
                card = await si.put(
                    f"/api/v1/subscriptions/{sub['id']}/card", json={"card_token": CARD_DECLINED}
                )
                assert card.status_code == 200, card.text
                await advance(333)  # 31 Dec 2027
                assert len(_renewal_orders(app)) == 1
                await advance(1)  # 1 Jan 2028: declined, the purchaser is told
                assert len(_kinds(app, "charge_failed")) == 1
                await advance(3)  # 4 Jan 2028: retried, declined again
                assert len(_kinds(app, "charge_failed")) == 2
                await advance(27)  # 31 Jan 2028: still paid through today
                failed = _renewal_orders(app)[1:]
                assert len(failed) == 11 and {o.status for o in failed} == {"Failed"}
                await _until(agents, True)
                await advance(1)  # 1 Feb 2028: unpaid at the end: expired, devices refuse
                sub = (await si.get(f"/api/v1/subscriptions/{sub['id']}")).json()
                assert sub["status_text"] == "expired"
                await _until(agents, False)

                await advance(9)  # 10 Feb 2028: the late payment switches it on again
                late = await si.post(
                    f"/api/v1/subscriptions/{sub['id']}/renew",
                    json={"months": 12, "card_token": CARD_OK},
                )
                assert late.status_code == 200, late.text
                assert late.json()["subscription"]["status_text"] == (
                    "active, renews at 2029-02-01T00:00:00Z"
                )
                await _until(agents, True)
                for agent in agents:  # the devices enforce the paid-through end themselves
                    assert agent.state.claims.ent[FEATURE].until == ts(2029, 2, 1)
            finally:
                await cancel_and_wait(tasks)
                for agent in agents:
                    agent.store.close()
