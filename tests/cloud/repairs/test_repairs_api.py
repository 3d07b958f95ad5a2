"""Repairs over the API (in-process app, SQLite and PostgreSQL, fake clock): both paths end
to end, money only through billing, scope, roles, and bad input that changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from cloud.accounts import audit, users
from cloud.accounts.apikeys import create_api_key
from cloud.accounts.rules import PaymentType, Role
from cloud.accounts.tables import UserRow
from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.billing.tables import OrderRow, TransactionRow
from cloud.devices import memberships
from cloud.notifications.tables import NotificationRow
from tests.cloud.harness import DAY, client, every_row
from tests.cloud.pages import pdf_text
from tests.cloud.tickets.test_tickets_api import (
    FAULT,
    App,
    open_ticket,
    self_test,
    setup_device,
)

PASSWORD = "correct horse battery staple"
ADDRESS = "Shop Ltd\nMain street 1\n1000 AA Amsterdam"
OUT_OF_WARRANTY = 25 * 31 * DAY


def customer(
    api: App,
    email: str,
    inst: str,
    *,
    role: Role = Role.OWNER,
    pays: PaymentType = PaymentType.CARD,
) -> httpx.AsyncClient:
    """A client acting as a new owner (or partner) of ``inst``."""
    with api.state.store.transaction() as tx:
        company_id = None
        if role is Role.PARTNER:
            company_id = users.create_company(
                tx,
                name=f"{email} Ltd",
                partner_id=None,
                payment_type=pays,
                actor="system:tests",
                now=api.clock(),
            ).id
        user = users.create_user(
            tx,
            email=email,
            name=email,
            password=PASSWORD,
            role=role,
            company_id=company_id,
            actor="system:tests",
            now=api.clock(),
        )
        if company_id is not None:
            memberships.add_integrator(tx, inst, company_id, actor="system:tests", now=api.clock())
        else:
            memberships.set_owner(tx, inst, user.id, actor="system:tests", now=api.clock())
        user_id = user.id
    key = create_api_key(api.state.store, name=email, now=api.clock(), user_id=user_id).key
    return client(api.app, key)


def mails(api: App) -> list[tuple[list[str], str]]:
    with api.state.store.transaction() as tx:
        rows = tx.scalars(
            select(NotificationRow)
            .where(NotificationRow.kind == "repair")
            .order_by(NotificationRow.id)
        ).all()
        return [(list(r.recipients), r.subject) for r in rows]


async def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json())


async def test_rma_in_warranty_replacement_shipped_returned_closed(api: App) -> None:
    inst = await setup_device(api.http)
    owner = customer(api, "owner@example.com", inst)
    ticket = await open_ticket(api.http, inst, device_ids=["cam-1"])
    await self_test(api, "cam-1", FAULT)
    await ok(
        await api.http.post(f"/api/v1/tickets/{ticket['id']}/rma", json={"device_id": "cam-1"})
    )

    repair = await ok(
        await owner.post(
            "/api/v1/repairs",
            json={
                "device_id": "cam-1",
                "ticket_id": ticket["id"],
                "problem": "dead",
                "ship_to": ADDRESS,
            },
        ),
        201,
    )
    assert repair["path"] == "warranty" and repair["in_warranty"] is True
    assert repair["status"] == "approved" and repair["rma_id"] is not None
    assert repair["steps"] == ["cancel"]  # the customer may only cancel now
    rid = repair["id"]
    url = f"/api/v1/repairs/{rid}"

    # the customer cannot ship the replacement; staff can
    refused = await owner.post(
        f"{url}/shipments", json={"kind": "replacement", "carrier": "DHL", "tracking": "JD1"}
    )
    assert refused.status_code == 403
    shipped = await ok(
        await api.http.post(
            f"{url}/shipments",
            json={"kind": "replacement", "carrier": "DHL", "tracking": "JD1", "serial": "cam-9"},
        ),
        201,
    )
    assert shipped["status"] == "replacement_sent"
    first = shipped["shipments"][0]["id"]
    # lost: reshipped with a new tracking number (and another device); the status stays
    reshipped = await ok(
        await api.http.post(
            f"{url}/shipments/{first}/reship",
            json={"carrier": "UPS", "tracking": "1Z9", "serial": "cam-10"},
        )
    )
    assert [(s["status"], s["tracking"]) for s in reshipped["shipments"]] == [
        ("reshipped", "JD1"),
        ("active", "1Z9"),
    ]
    assert reshipped["status"] == "replacement_sent"
    # the old device's parcel, recorded by the customer
    await ok(
        await owner.post(
            f"{url}/shipments", json={"kind": "inbound", "carrier": "PostNL", "tracking": "3S1"}
        ),
        201,
    )
    slip = await owner.get(f"{url}/shipments/{first}/slip.pdf")
    assert slip.status_code == 200 and slip.content.startswith(b"%PDF")
    received = await ok(await api.http.post(f"{url}/steps", json={"step": "receive"}))
    assert received["status"] == "received"
    closed = await ok(await api.http.post(f"{url}/steps", json={"step": "close"}))
    assert closed["status"] == "closed" and closed["steps"] == []
    assert [e["step"] for e in closed["events"]] == [
        "request",
        "ship_replacement",
        "reship",
        "ship_inbound",
        "receive",
        "close",
    ]
    assert all(to == ["owner@example.com"] for to, _ in mails(api))
    assert len(mails(api)) == 6
    with api.state.store.transaction() as tx:
        actions = [e.action for e in audit.entries(tx, object_type="repair", object_id=str(rid))]
    assert "repair.close" in actions and "repair.request" in actions
    again = await api.http.post(f"{url}/steps", json={"step": "close"})
    assert again.status_code == 409
    await owner.aclose()


async def test_out_of_warranty_quote_pay_repair_return(api: App) -> None:
    inst = await setup_device(api.http)
    owner = customer(api, "owner@example.com", inst)
    api.clock.advance(OUT_OF_WARRANTY)
    repair = await ok(
        await owner.post(
            "/api/v1/repairs", json={"device_id": "cam-1", "problem": "lens", "ship_to": ADDRESS}
        ),
        201,
    )
    assert repair["path"] == "paid" and repair["status"] == "requested"
    url = f"/api/v1/repairs/{repair['id']}"
    assert (await api.http.post(f"{url}/steps", json={"step": "approve"})).status_code == 409
    quoted = await ok(
        await api.http.post(f"{url}/quote", json={"amount_cents": 12_50, "description": "lens"})
    )
    assert quoted["status"] == "quoted" and quoted["quote_cents"] == 1250

    # a declined card: 402, the repair stays quoted, the order failed; paying again works
    declined = await owner.post(f"{url}/accept", json={"card_token": CARD_DECLINED})
    assert declined.status_code == 402, declined.text
    still = await ok(await owner.get(url))
    assert still["status"] == "quoted" and still["order_status"] == "Failed"
    paid = await ok(await owner.post(f"{url}/accept", json={"card_token": CARD_OK}))
    assert paid["status"] == "paid" and paid["order_status"] == "Succeed"
    with api.state.store.transaction() as tx:
        order = tx.get(OrderRow, paid["order_id"])
        assert order is not None and order.amount_cents == 1250 and order.kind == "repair"
    # paying twice moves no money
    twice = await owner.post(f"{url}/accept", json={"card_token": CARD_OK})
    assert twice.status_code == 409
    for step, status in [("receive", "received"), ("mark_repaired", "repaired")]:
        assert (await ok(await api.http.post(f"{url}/steps", json={"step": step})))[
            "status"
        ] == status
    back = await ok(
        await api.http.post(
            f"{url}/shipments", json={"kind": "return", "carrier": "DHL", "tracking": "RT1"}
        ),
        201,
    )
    assert back["status"] == "returned"
    closed = await ok(await api.http.post(f"{url}/steps", json={"step": "close"}))
    assert closed["status"] == "closed"
    subjects = [subject for _, subject in mails(api)]
    assert any("quote" in s for s in subjects) and any("paid" in s for s in subjects)
    with api.state.store.transaction() as tx:
        charges = tx.scalars(
            select(TransactionRow).where(TransactionRow.order_id == paid["order_id"])
        ).all()
    assert [(t.type, t.status) for t in charges] == [("charge", "Failed"), ("charge", "Succeed")]
    await owner.aclose()


async def test_cancelling_a_paid_repair_refunds_it_through_billing(api: App) -> None:
    inst = await setup_device(api.http)
    owner = customer(api, "owner@example.com", inst)
    api.clock.advance(OUT_OF_WARRANTY)
    repair = await ok(
        await owner.post(
            "/api/v1/repairs", json={"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}
        ),
        201,
    )
    url = f"/api/v1/repairs/{repair['id']}"
    await ok(await api.http.post(f"{url}/quote", json={"amount_cents": 5000, "description": "x"}))
    paid = await ok(await owner.post(f"{url}/accept", json={"card_token": CARD_OK}))
    # the customer may not cancel once paid; support may not refund
    assert (await owner.post(f"{url}/cancel", json={"reason": "no"})).status_code == 403
    async with api.key("support") as support:
        assert (await support.post(f"{url}/cancel", json={"reason": "no"})).status_code == 403
    cancelled = await ok(await api.http.post(f"{url}/cancel", json={"reason": "no parts"}))
    assert cancelled["status"] == "cancelled"
    assert cancelled["order_status"] == "Cancel"  # the unsettled charge was voided
    with api.state.store.transaction() as tx:
        kinds = [
            t.type
            for t in tx.scalars(
                select(TransactionRow).where(TransactionRow.order_id == paid["order_id"])
            )
        ]
    assert kinds == ["charge", "void"]
    assert "Your payment is given back in full." in (await _last_body(api))
    await owner.aclose()


async def _last_body(api: App) -> str:
    with api.state.store.transaction() as tx:
        row = tx.scalars(select(NotificationRow).order_by(NotificationRow.id.desc())).first()
        assert row is not None
        return row.body


async def test_another_customers_repair_is_not_found_and_bad_input_changes_nothing(
    api: App,
) -> None:
    inst = await setup_device(api.http)
    other_inst = (await api.http.post("/api/v1/installations", json={"name": "Other"})).json()["id"]
    owner = customer(api, "owner@example.com", inst)
    stranger = customer(api, "stranger@example.com", other_inst)
    repair = await ok(
        await owner.post(
            "/api/v1/repairs", json={"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}
        ),
        201,
    )
    url = f"/api/v1/repairs/{repair['id']}"
    assert (await stranger.get(url)).status_code == 404
    assert (await stranger.get("/api/v1/repairs")).json() == []
    assert (await stranger.get(f"{url}/shipments/1/slip.pdf")).status_code == 404
    made = await stranger.post(
        "/api/v1/repairs", json={"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}
    )
    assert made.status_code == 404
    before = every_row(api.app)
    bad = [
        ("/api/v1/repairs", {"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}, 409),
        ("/api/v1/repairs", {"device_id": "cam 1", "problem": "x", "ship_to": ADDRESS}, 422),
        ("/api/v1/repairs", {"device_id": "cam-1", "problem": "", "ship_to": ADDRESS}, 422),
        ("/api/v1/repairs", {"device_id": "cam-1", "problem": "x", "ship_to": "a\x00"}, 422),
        (f"{url}/quote", {"amount_cents": 0, "description": "x"}, 422),
        (f"{url}/quote", {"amount_cents": 10, "description": "x"}, 409),  # in warranty
        (f"{url}/quote", {"amount_cents": "10", "description": "x"}, 422),
        (f"{url}/steps", {"step": "pay"}, 422),
        (f"{url}/steps", {"step": "close"}, 409),
        (f"{url}/shipments", {"kind": "return", "carrier": "DHL", "tracking": "1"}, 409),
        (f"{url}/shipments", {"kind": "sideways", "carrier": "DHL", "tracking": "1"}, 422),
        (f"{url}/shipments", {"kind": "inbound", "carrier": "DHL\n", "tracking": "1"}, 422),
        (f"{url}/shipments/99/reship", {"carrier": "DHL", "tracking": "1"}, 404),
        (f"{url}/accept", {"card_token": CARD_OK}, 409),
        ("/api/v1/repairs/999/steps", {"step": "approve"}, 404),
    ]
    for path, body, status in bad:
        got = await api.http.post(path, json=body)
        assert got.status_code == status, (path, body, got.text)
    assert (await owner.post(f"{url}/steps", json={"step": "approve"})).status_code == 403
    assert every_row(api.app) == before
    await owner.aclose()
    await stranger.aclose()


async def test_a_partner_paying_by_invoice_gets_an_invoiced_order(api: App) -> None:
    inst = await setup_device(api.http)
    partner = customer(
        api, "partner@example.com", inst, role=Role.PARTNER, pays=PaymentType.INVOICE
    )
    api.clock.advance(OUT_OF_WARRANTY)
    repair = await ok(
        await partner.post(
            "/api/v1/repairs", json={"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}
        ),
        201,
    )
    url = f"/api/v1/repairs/{repair['id']}"
    await ok(await api.http.post(f"{url}/quote", json={"amount_cents": 900, "description": "x"}))
    paid = await ok(await partner.post(f"{url}/accept", json={}))
    assert paid["status"] == "paid" and paid["order_status"] == "Succeed"
    with api.state.store.transaction() as tx:
        order = tx.get(OrderRow, paid["order_id"])
        assert order is not None and order.pay_with == "invoice"
    await partner.aclose()


async def shipped_replacement(api: App) -> tuple[str, int]:
    """cam-1's repair, requested by staff, approved, its replacement (serial cam-2) shipped:
    the repair's URL and the shipment's id."""
    repair = await ok(
        await api.http.post(
            "/api/v1/repairs", json={"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}
        ),
        201,
    )
    assert repair["status"] == "requested" and "approve" in repair["steps"]
    url = f"/api/v1/repairs/{repair['id']}"
    await ok(await api.http.post(f"{url}/steps", json={"step": "approve"}))
    shipped = await ok(
        await api.http.post(
            f"{url}/shipments",
            json={"kind": "replacement", "carrier": "DHL", "tracking": "A1", "serial": "cam-2"},
        ),
        201,
    )
    return url, int(shipped["shipments"][0]["id"])


async def test_a_replacement_shipment_cancelled_takes_the_repair_back(api: App) -> None:
    inst = await setup_device(api.http)
    url, sid = await shipped_replacement(api)
    back = await ok(await api.http.post(f"{url}/shipments/{sid}/cancel"))
    assert back["status"] == "approved" and back["shipments"][0]["status"] == "cancelled"
    again = await api.http.post(f"{url}/shipments/{sid}/cancel")
    assert again.status_code == 409
    assert inst


async def test_a_paid_repairs_order_voided_elsewhere_cancels_the_repair(api: App) -> None:
    inst = await setup_device(api.http)
    owner = customer(api, "owner@example.com", inst)
    api.clock.advance(OUT_OF_WARRANTY)
    repair = await ok(
        await owner.post(
            "/api/v1/repairs", json={"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}
        ),
        201,
    )
    url = f"/api/v1/repairs/{repair['id']}"
    await ok(await api.http.post(f"{url}/quote", json={"amount_cents": 700, "description": "x"}))
    paid = await ok(await owner.post(f"{url}/accept", json={"card_token": CARD_OK}))
    await ok(await api.http.post(f"/api/v1/orders/{paid['order_id']}/void", json={}))
    after = await ok(await owner.get(url))
    assert after["status"] == "cancelled" and after["order_status"] == "Cancel"
    assert after["events"][-1]["actor"] == "system:repairs"
    # billing runs the callbacks again (reconcile): nothing more happens
    assert api.state.repairs is not None
    await api.state.repairs.payments.on_reversed(paid["order_id"])
    assert len((await ok(await owner.get(url)))["events"]) == len(after["events"])
    await owner.aclose()


async def test_a_declined_quote_moves_no_money_and_mails_each_reader_in_their_language(
    api: App,
) -> None:
    inst = await setup_device(api.http)
    owner = customer(api, "eigenaar@example.com", inst)
    with api.state.store.transaction() as tx:
        user = tx.scalars(select(UserRow).where(UserRow.email == "eigenaar@example.com")).one()
        user.locale = "nl"
    partner = customer(api, "partner@example.com", inst, role=Role.PARTNER)
    api.clock.advance(OUT_OF_WARRANTY)
    repair = await ok(
        await partner.post(
            "/api/v1/repairs", json={"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}
        ),
        201,
    )
    url = f"/api/v1/repairs/{repair['id']}"
    await ok(await api.http.post(f"{url}/quote", json={"amount_cents": 990, "description": "x"}))
    declined = await ok(await owner.post(f"{url}/steps", json={"step": "decline"}))
    assert declined["status"] == "declined" and declined["order_id"] is None
    closed = await ok(await api.http.post(f"{url}/steps", json={"step": "close"}))
    assert closed["status"] == "closed"
    with api.state.store.transaction() as tx:
        assert tx.scalars(select(OrderRow)).all() == []
    sent = mails(api)
    dutch = [subject for to, subject in sent if to == ["eigenaar@example.com"]]
    english = [subject for to, subject in sent if to == ["partner@example.com"]]
    assert len(dutch) == len(english) == 4  # request, quote, decline, close
    assert "offerte afgewezen" in dutch[2] and "quote declined" in english[2]
    await owner.aclose()
    await partner.aclose()


async def test_a_replacement_names_its_serial_on_the_repair_mail_slip_and_audit(
    api: App,
) -> None:
    inst = await setup_device(api.http)
    owner = customer(api, "owner@example.com", inst)
    repair = await ok(
        await owner.post(
            "/api/v1/repairs", json={"device_id": "cam-1", "problem": "x", "ship_to": ADDRESS}
        ),
        201,
    )
    rid = repair["id"]
    url = f"/api/v1/repairs/{rid}"
    await ok(await api.http.post(f"{url}/steps", json={"step": "approve"}))
    parcel = {"kind": "replacement", "carrier": "DHL", "tracking": "A1"}
    before = every_row(api.app)
    for bad in (
        parcel,  # no serial
        {**parcel, "serial": ""},
        {**parcel, "serial": "cam 2"},
        {**parcel, "serial": "x" * 65},
        {**parcel, "serial": "cam-1"},  # the device it replaces
        {"kind": "inbound", "carrier": "DHL", "tracking": "B1", "serial": "cam-2"},
    ):
        got = await api.http.post(f"{url}/shipments", json=bad)
        assert got.status_code == 422, (bad, got.text)
    assert every_row(api.app) == before  # nothing stored, nothing mailed

    shipped = await ok(
        await api.http.post(f"{url}/shipments", json={**parcel, "serial": "cam-2"}), 201
    )
    assert shipped["status"] == "replacement_sent"
    [shipment] = shipped["shipments"]
    assert shipment["serial"] == "cam-2"
    with api.state.store.transaction() as tx:
        body = tx.scalars(
            select(NotificationRow.body)
            .where(NotificationRow.kind == "repair")
            .order_by(NotificationRow.id.desc())
        ).first()
        [entry] = audit.entries(
            tx, object_type="repair", object_id=str(rid), action="repair.ship_replacement"
        )
    assert body is not None and "serial cam-2" in body
    assert entry.after is not None and entry.after["shipment"]["serial"] == "cam-2"
    slip = await owner.get(f"{url}/shipments/{shipment['id']}/slip.pdf")
    text = pdf_text(slip.content)
    assert "Replacement serial: cam-2" in text and "Replaces device: cam-1" in text

    # a lost replacement is sent again with another device: its serial is required too
    reship = f"{url}/shipments/{shipment['id']}/reship"
    before = every_row(api.app)
    refused = await api.http.post(reship, json={"carrier": "UPS", "tracking": "C3"})
    assert refused.status_code == 422 and "serial" in refused.text
    assert every_row(api.app) == before
    again = await ok(
        await api.http.post(reship, json={"carrier": "UPS", "tracking": "C3", "serial": "cam-3"})
    )
    assert [s["serial"] for s in again["shipments"]] == ["cam-2", "cam-3"]
    await owner.aclose()


async def test_a_dutch_customers_packing_slip_is_in_dutch(api: App) -> None:
    inst = await setup_device(api.http)
    owner = customer(api, "eigenaar@example.com", inst)
    partner = customer(api, "partner@example.com", inst, role=Role.PARTNER)
    with api.state.store.transaction() as tx:
        user = tx.scalars(select(UserRow).where(UserRow.email == "eigenaar@example.com")).one()
        user.locale = "nl"
    url, shipment = await shipped_replacement(api)
    slip_url = f"{url}/shipments/{shipment}/slip.pdf"
    # the customer's language (the owner's), whoever downloads it
    for reader in (partner, api.http):
        text = pdf_text((await reader.get(slip_url)).content)
        assert "PAKBON - VERVANGING" in text and "Vervangend apparaat cam-2" in text, text
        assert "Replacement" not in text
    await owner.aclose()
    await partner.aclose()
