"""The repairs pages without a browser: a customer requests, staff quote, the customer pays
through the form; scope (another customer's repair is the not-found page), CSRF, refusals
shown translated, and the links from the device and ticket pages."""

from __future__ import annotations

import pytest

from cloud.billing.payments import CARD_OK
from tests.cloud.harness import Cloud
from tests.cloud.pages import csrf_of, pdf_text, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

OUT_OF_WARRANTY = 800 * 86_400


async def test_request_quote_pay_and_scope_through_the_pages(cloud: Cloud) -> None:
    inst = await cloud.installation("Shop")
    device = (await cloud.device(inst, kind="camera"))["device_id"]
    cloud.clock.advance(OUT_OF_WARRANTY)  # before signing in: a login idles out
    async with (
        signed_in(cloud.app, role="owner", email="owner@example.com") as (owner, owner_id),
        signed_in(cloud.app, role="owner", email="other@example.com") as (other, _),
        signed_in(cloud.app, role="admin", email="admin@vendor.example") as (admin, _),
    ):
        put = await cloud.http.put(
            f"/api/v1/installations/{inst}/owner", json={"user_id": owner_id}
        )
        assert put.status_code == 200

        form = await owner.get(f"/repairs/new?device={device}")
        assert form.status_code == 200
        assert (await other.get(f"/repairs/new?device={device}")).status_code == 404
        no_csrf = await owner.post(
            "/repairs/new", data={"device_id": device, "problem": "x", "ship_to": "y"}
        )
        assert no_csrf.status_code == 403
        empty = await owner.post(
            "/repairs/new",
            data={
                "csrf_token": csrf_of(form.text),
                "device_id": device,
                "problem": "",
                "ship_to": "",
            },
        )
        assert empty.status_code == 422 and "Describe the problem" in empty.text
        made = await owner.post(
            "/repairs/new",
            data={
                "csrf_token": csrf_of(form.text),
                "device_id": device,
                "problem": "no picture",
                "ship_to": "Shop Ltd\nMain street 1",
            },
        )
        assert made.status_code == 303
        url = made.headers["location"]
        page = await owner.get(url)
        assert "Out of warranty: paid repair" in page.text and "Requested" in page.text
        assert "Registered" in page.text  # the warranty runs from the device's registration
        assert 'action="' + url + '/quote"' not in page.text  # a customer does not quote
        assert (await other.get(url)).status_code == 404

        staff_page = await admin.get(url)
        assert f'action="{url}/quote"' in staff_page.text
        quoted = await admin.post(
            f"{url}/quote",
            data={
                "csrf_token": csrf_of(staff_page.text),
                "amount": "125.50",
                "description": "new sensor",
            },
        )
        assert quoted.status_code == 303
        bad = await admin.post(
            f"{url}/quote",
            data={"csrf_token": csrf_of(staff_page.text), "amount": "12", "description": "x"},
        )
        followed = await admin.get(bad.headers["location"])
        assert "quoted cannot quote" in followed.text  # the refusal, shown on the page

        page = await owner.get(url)
        assert "Accept and pay" in page.text and "125" in page.text
        paid = await owner.post(
            f"{url}/accept", data={"csrf_token": csrf_of(page.text), "card_number": CARD_OK}
        )
        assert paid.status_code == 303
        page = await owner.get(url)
        assert "Thank you: the repair is paid." in page.text
        assert "Paid" in page.text and "Succeed" in page.text

        # the quote's order is a repair order: so it says in the history, the order, the invoice
        order_id = (await cloud.http.get(f"/api/v1{url}")).json()["order_id"]
        order = await cloud.http.get(f"/api/v1/orders/{order_id}")
        assert order.json()["type"] == "repair"
        history = await owner.get("/orders?type=repair")
        assert f"/orders/{order_id}" in history.text and "<td>Repair<br>" in history.text
        assert f"/orders/{order_id}" not in (await owner.get("/orders?type=purchase")).text
        assert "Repair ·" in (await owner.get(f"/orders/{order_id}")).text
        invoice = await owner.get(f"/orders/{order_id}/invoice.pdf")
        assert "Order type: Repair" in pdf_text(invoice.content)
        owner.cookies.set("entitle_lang", "nl")
        assert "<td>Reparatie<br>" in (await owner.get("/orders")).text
        owner.cookies.delete("entitle_lang")

        listed = await admin.get("/repairs?status=paid")
        assert url in listed.text
        assert url not in (await admin.get("/repairs?status=closed")).text
        assert url not in (await other.get("/repairs")).text


async def test_dutch_reader_sees_the_repair_in_dutch(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="admin", email="admin@vendor.example") as (admin, _):
        inst = await cloud.installation("Shop")
        device = (await cloud.device(inst, kind="camera"))["device_id"]
        made = await cloud.http.post(
            "/api/v1/repairs", json={"device_id": device, "problem": "x", "ship_to": "y"}
        )
        assert made.status_code == 201
        admin.cookies.set("entitle_lang", "nl")
        page = await admin.get(f"/repairs/{made.json()['id']}")
        assert "Reparatie" in page.text and "Vervanging goedkeuren" in page.text
        ticket = await cloud.http.post(  # its ticket page links to the device's repairs
            "/api/v1/tickets",
            json={
                "category": "device_fault",
                "subject": "x",
                "body": "x",
                "installation_id": inst,
                "device_ids": [device],
            },
        )
        assert ticket.status_code == 201
        ticket_page = await admin.get(f"/tickets/{ticket.json()['id']}")
        assert ticket_page.status_code == 200
        listed = await admin.get(f"/repairs?device={device}")
        assert f"/repairs/{made.json()['id']}" in listed.text
        other = await admin.get("/repairs?device=other-1")
        assert f"/repairs/{made.json()['id']}" not in other.text


async def test_staff_ship_reship_and_cancel_a_shipment_through_the_forms(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="support", email="agent@vendor.example") as (agent, _):
        inst = await cloud.installation("Shop")
        device = (await cloud.device(inst, kind="camera"))["device_id"]
        made = await cloud.http.post(
            "/api/v1/repairs", json={"device_id": device, "problem": "x", "ship_to": "y"}
        )
        url = f"/repairs/{made.json()['id']}"
        page = await agent.get(url)
        approved = await agent.post(
            f"{url}/steps", data={"csrf_token": csrf_of(page.text), "step": "approve"}
        )
        assert approved.status_code == 303
        page = await agent.get(url)
        shipped = await agent.post(
            f"{url}/shipments",
            data={
                "csrf_token": csrf_of(page.text),
                "kind": "replacement",
                "carrier": "DHL",
                "tracking": "A1",
                "serial": "cam-77",
            },
        )
        assert shipped.status_code == 303
        shipment = (await cloud.http.get(f"/api/v1{url}")).json()["shipments"][0]["id"]
        page = await agent.get(url)
        assert "Lost or wrong?" in page.text
        assert "<td>cam-77</td>" in page.text  # the replacement's serial
        bad = await agent.post(
            f"{url}/shipments/{shipment}/reship",
            data={"csrf_token": csrf_of(page.text), "carrier": "", "tracking": ""},
        )
        assert "Give the carrier" in (await agent.get(bad.headers["location"])).text
        again = await agent.post(
            f"{url}/shipments/{shipment}/reship",
            data={
                "csrf_token": csrf_of(page.text),
                "carrier": "UPS",
                "tracking": "B2",
                "serial": "cam-78",
            },
        )
        assert again.status_code == 303
        now = (await cloud.http.get(f"/api/v1{url}")).json()
        assert [(s["status"], s["tracking"]) for s in now["shipments"]] == [
            ("reshipped", "A1"),
            ("active", "B2"),
        ]
        page = await agent.get(url)
        cancelled = await agent.post(
            f"{url}/shipments/{now['shipments'][1]['id']}/cancel",
            data={"csrf_token": csrf_of(page.text)},
        )
        assert cancelled.status_code == 303
        after = (await cloud.http.get(f"/api/v1{url}")).json()
        assert after["status"] == "approved"
        assert (await agent.get(f"{url}/shipments/{shipment}/slip.pdf")).content[:4] == b"%PDF"
        assert (await agent.get(f"{url}/shipments/999/slip.pdf")).status_code == 404
