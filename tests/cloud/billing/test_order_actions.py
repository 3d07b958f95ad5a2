"""Order actions: the invoice after every card payment (read at a real SMTP server), resend
of the invoice and refund mails, hiding orders from a customer's history, the customer
filter, and quantity × unit price on lines (SQLite, PostgreSQL)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from sqlalchemy import select

from cloud.accounts.rules import Role
from cloud.accounts.tables import AuditRow, UserRow
from cloud.billing.errors import BadOrderRequest
from cloud.billing.orders import Billing, OrderLine, OrderStatus
from cloud.billing.payments import CARD_DECLINED, CARD_OK, CARD_TIMEOUT
from cloud.billing.rules import MAX_QUANTITY, hidden_filter, line_amount
from cloud.notifications.mailer import SmtpMailer
from cloud.notifications.queries import notifications
from cloud.notifications.sender import OutboxSender
from tests.cloud.billing.test_orders_api import _billing, _order, _user_key
from tests.cloud.billing_harness import LINES, TOTAL
from tests.cloud.harness import Cloud, client, every_row
from tests.cloud.pages import pdf_text
from tests.smtp_fixtures import SmtpServer

S = OrderStatus
BUYER = "owner@example.com"


@pytest.fixture
async def shop(cloud: Cloud) -> tuple[str, str]:
    """Two installations; user 1 (the buyer of every order) owns the first."""
    inst_a, inst_b = await cloud.installation("A"), await cloud.installation("B")
    _user_key(cloud, BUYER, Role.OWNER, installation_id=inst_a)
    return inst_a, inst_b


async def _send(cloud: Cloud, server: SmtpServer) -> list[EmailMessage]:
    mailer = SmtpMailer(
        host=server.host, port=server.port, sender="billing@entitle.example", security="none"
    )
    await OutboxSender(
        store=cloud.state.store, mailer=mailer, sender="billing@entitle.example", clock=cloud.clock
    ).run_once()
    return [d.message for d in server.deliveries]


def _pdf_text(message: EmailMessage) -> str:
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    return pdf_text(attachment.get_content())


def _number(order_id: int) -> str:
    return f"EN-2026-{order_id:06d}"


# the invoice after every payment (TTecomm) ------------------------------------------


@pytest.mark.parametrize("kind", ["purchase", "renewal"])
async def test_a_card_payment_mails_one_invoice_with_its_pdf(
    cloud: Cloud, shop: tuple[str, str], smtp_server: SmtpServer, kind: str
) -> None:
    order_id = await _order(cloud, shop[0], "k1", card=CARD_OK, kind=kind)
    await _billing(cloud).reconcile(now=cloud.clock())  # a second pass mails nothing more
    [mail] = await _send(cloud, smtp_server)
    assert mail["X-Entitle-Kind"] == "invoice" and mail["To"] == BUYER
    assert mail["Subject"] == f"Invoice for order {_number(order_id)}"
    assert f"({kind})" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    pdf = _pdf_text(mail)
    assert _number(order_id) in pdf and f"Total EUR {TOTAL / 100:.2f}" in pdf
    assert "Paid by card ending 4242" in pdf


async def test_a_declined_charge_mails_no_invoice_and_checkout_then_does(
    cloud: Cloud, shop: tuple[str, str], smtp_server: SmtpServer
) -> None:
    order_id = await _order(cloud, shop[0], "k1", card=CARD_DECLINED)
    assert await _send(cloud, smtp_server) == []
    paid = await cloud.http.post(f"/api/v1/orders/{order_id}/pay", json={"card_token": CARD_OK})
    assert paid.status_code == 200 and paid.json()["status"] == "Succeed"
    [mail] = await _send(cloud, smtp_server)
    assert mail["X-Entitle-Kind"] == "invoice" and _number(order_id) in _pdf_text(mail)


async def test_a_lost_answer_reconciled_as_charged_mails_its_invoice_once(
    cloud: Cloud, shop: tuple[str, str], smtp_server: SmtpServer
) -> None:
    order_id = await _order(cloud, shop[0], "k1", card=CARD_TIMEOUT)
    assert await _send(cloud, smtp_server) == []
    for _ in range(2):
        await _billing(cloud).reconcile(now=cloud.clock())
    [mail] = await _send(cloud, smtp_server)
    assert _number(order_id) in _pdf_text(mail)


# resend ------------------------------------------------------------------------------


async def test_staff_resend_the_invoice_and_the_refund_mail(
    cloud: Cloud, shop: tuple[str, str], smtp_server: SmtpServer
) -> None:
    order_id = await _order(cloud, shop[0], "k1", card=CARD_OK)
    url = f"/api/v1/orders/{order_id}/resend"
    none_yet = await cloud.http.post(url, json={"mail": "refund"})
    assert none_yet.status_code == 409 and "no void or refund" in none_yet.text
    again = await cloud.http.post(url, json={"mail": "invoice"})
    assert again.status_code == 200, again.text
    assert again.json() == {"order_id": order_id, "mail": "invoice", "to": [BUYER], "resend": 1}
    support = _user_key(cloud, "agent@entitle.example", Role.SUPPORT)
    async with client(cloud.app, support) as as_support:
        assert (await as_support.post(url, json={"mail": "invoice"})).json()["resend"] == 2
    assert (await cloud.http.post(f"/api/v1/orders/{order_id}/refund")).status_code == 200
    refund = await cloud.http.post(url, json={"mail": "refund"})
    assert refund.status_code == 200 and refund.json()["resend"] == 1
    kinds = [m["X-Entitle-Kind"] for m in await _send(cloud, smtp_server)]
    assert sorted(kinds) == ["invoice"] * 3 + ["refund"] * 2
    with cloud.state.store.transaction() as tx:
        resends = tx.scalars(
            select(AuditRow.after).where(
                AuditRow.action == "order.resend", AuditRow.object_id == str(order_id)
            )
        ).all()
    assert [(a["mail"], a["resend"]) for a in resends] == [
        ("invoice", 1),
        ("invoice", 2),
        ("refund", 1),
    ]


async def test_resend_refusals_queue_nothing(cloud: Cloud, shop: tuple[str, str]) -> None:
    unpaid = await _order(cloud, shop[0], "k1")
    theirs = await _order(cloud, shop[1], "k2", card=CARD_OK)
    owner = _user_key(cloud, "other@example.com", Role.OWNER, installation_id=shop[0])
    with cloud.state.store.transaction() as tx:
        before = len(notifications(tx, limit=100))
    no_invoice = await cloud.http.post(f"/api/v1/orders/{unpaid}/resend", json={"mail": "invoice"})
    assert no_invoice.status_code == 409 and "Processing" in no_invoice.text
    bad = await cloud.http.post(f"/api/v1/orders/{unpaid}/resend", json={"mail": "fax"})
    assert bad.status_code == 422
    missing = await cloud.http.post("/api/v1/orders/999/resend", json={"mail": "invoice"})
    assert missing.status_code == 404
    async with client(cloud.app, owner) as as_owner:
        mine = await as_owner.post(f"/api/v1/orders/{unpaid}/resend", json={"mail": "invoice"})
        assert mine.status_code == 403 and "accounts:read" in mine.text
        other = await as_owner.post(f"/api/v1/orders/{theirs}/resend", json={"mail": "invoice"})
        assert other.status_code == 403  # staff only, before any lookup
    with cloud.state.store.transaction() as tx:
        assert len(notifications(tx, limit=100)) == before


# hidden from a customer's history ----------------------------------------------------


async def test_a_customer_hides_an_order_and_staff_still_see_it(
    cloud: Cloud, shop: tuple[str, str]
) -> None:
    kept = await _order(cloud, shop[0], "k1", card=CARD_OK)
    hidden = await _order(cloud, shop[0], "k2", card=CARD_DECLINED)
    owner = _user_key(cloud, "co-owner@example.com", Role.OWNER, installation_id=shop[0])
    async with client(cloud.app, owner) as as_owner:

        async def ids(**params: object) -> list[int]:
            response = await as_owner.get("/api/v1/orders", params=params)
            assert response.status_code == 200, response.text
            return [o["id"] for o in response.json()]

        done = await as_owner.post(f"/api/v1/orders/{hidden}/hide")
        assert done.status_code == 200 and done.json()["hidden_at"] == cloud.clock()
        assert (await as_owner.post(f"/api/v1/orders/{hidden}/hide")).status_code == 200  # no-op
        assert await ids() == [kept]
        assert await ids(hidden="true") == [hidden]
        detail = await as_owner.get(f"/api/v1/orders/{hidden}")  # a link still opens it
        assert detail.status_code == 200 and detail.json()["hidden_at"] == cloud.clock()
    staff = [(o["id"], o["hidden_at"]) for o in (await cloud.http.get("/api/v1/orders")).json()]
    assert staff == [(hidden, cloud.clock()), (kept, None)]
    refused = await cloud.http.post(f"/api/v1/orders/{kept}/hide")
    assert refused.status_code == 403 and "only the customer" in refused.text
    async with client(cloud.app, owner) as as_owner:
        assert (await as_owner.post(f"/api/v1/orders/{hidden}/unhide")).json()["hidden_at"] is None
        assert [o["id"] for o in (await as_owner.get("/api/v1/orders")).json()] == [hidden, kept]
    with cloud.state.store.transaction() as tx:
        actions = tx.scalars(
            select(AuditRow.action)
            .where(AuditRow.object_id == str(hidden), AuditRow.action.like("order.%hide"))
            .order_by(AuditRow.id)
        ).all()
    assert actions == ["order.hide", "order.unhide"]


async def test_another_customers_order_cannot_be_hidden(
    cloud: Cloud, shop: tuple[str, str]
) -> None:
    theirs = await _order(cloud, shop[1], "k1", card=CARD_OK)
    owner = _user_key(cloud, "co-owner@example.com", Role.OWNER, installation_id=shop[0])
    before = every_row(cloud.app)
    async with client(cloud.app, owner) as as_owner:
        assert (await as_owner.post(f"/api/v1/orders/{theirs}/hide")).status_code == 404
        assert (await as_owner.post("/api/v1/orders/0/hide")).status_code == 422
    assert every_row(cloud.app) == before


def test_hidden_filter() -> None:
    assert hidden_filter(staff=True, show_hidden=False) is None
    assert hidden_filter(staff=False, show_hidden=False) is False
    assert hidden_filter(staff=False, show_hidden=True) is True
    assert hidden_filter(staff=True, show_hidden=True) is True


# orders by customer ------------------------------------------------------------------


async def test_orders_filtered_by_customer(cloud: Cloud, shop: tuple[str, str]) -> None:
    inst_a, inst_b = shop
    _user_key(cloud, "fitter@integra.example", Role.PARTNER, installation_id=inst_b)
    with cloud.state.store.transaction() as tx:
        fitter = tx.scalars(select(UserRow).where(UserRow.email == "fitter@integra.example")).one()
        company_id, fitter_id = fitter.company_id, fitter.id
    a = await _order(cloud, inst_a, "k1", card=CARD_OK)  # bought by user 1, the owner of A
    result = await _billing(cloud).place_order(
        kind="purchase",
        buyer=fitter_id,
        installation_id=inst_b,
        lines=LINES,
        pay_with="card",
        card_token=CARD_OK,
        idempotency_key="k2",
        now=cloud.clock(),
    )
    b = result.order_id
    renewal = await _order(cloud, inst_b, "k3", kind="renewal")  # user 1 pays B's renewal

    async def ids(**params: object) -> list[int]:
        response = await cloud.http.get("/api/v1/orders", params=params)
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()]

    assert await ids(customer_user_id=1) == [renewal, a]
    assert await ids(customer_user_id=fitter_id) == [b]
    assert await ids(customer_company_id=company_id) == [renewal, b]  # it integrates B
    assert await ids(customer="integra") == [b]  # a search: buyers' names, e-mails, companies
    assert await ids(customer_user_id=9999) == []
    for bad in ({"customer_user_id": 0}, {"customer_company_id": "x"}, {"customer": ""}):
        assert (await cloud.http.get("/api/v1/orders", params=bad)).status_code == 422


# quantity × unit price ---------------------------------------------------------------


async def test_lines_carry_quantity_and_unit_price(cloud: Cloud, shop: tuple[str, str]) -> None:
    lines = (OrderLine("TSF16100", "Remote Services", 12, 3_000, quantity=3, unit_cents=1_000),)
    billing: Billing = _billing(cloud)
    result = await billing.place_order(
        kind="purchase",
        buyer=1,
        installation_id=shop[0],
        lines=lines,
        pay_with="card",
        card_token=CARD_OK,
        idempotency_key="q1",
        now=cloud.clock(),
    )
    detail = (await cloud.http.get(f"/api/v1/orders/{result.order_id}")).json()
    [line] = detail["lines"]
    assert (line["quantity"], line["unit_cents"], line["amount_cents"]) == (3, 1_000, 3_000)
    pdf = await cloud.http.get(f"/api/v1/orders/{result.order_id}/invoice.pdf")
    text = pdf_text(pdf.content)
    assert "Remote Services 12 3 EUR 10.00 EUR 30.00" in text
    plain = await _order(cloud, shop[0], "q2", card=CARD_OK)  # no unit given: one unit
    [first, _] = (await cloud.http.get(f"/api/v1/orders/{plain}")).json()["lines"]
    assert (first["quantity"], first["unit_cents"]) == (1, LINES[0].amount_cents)


@pytest.mark.parametrize(
    ("quantity", "unit", "amount", "match"),
    [
        (3, 1_000, 2_999, "not 3 × 1000"),
        (0, 1_000, 0, "quantity must be"),
        (MAX_QUANTITY + 1, 1, MAX_QUANTITY + 1, "quantity must be"),
        (1, -5, -5, "negative"),
        (2, 100, None, "not 2 × 100"),  # no unit price: the amount is one unit
    ],
)
async def test_a_line_that_is_not_quantity_times_unit_is_refused(
    cloud: Cloud, shop: tuple[str, str], quantity: int, unit: int, amount: int | None, match: str
) -> None:
    if amount is None:
        line = OrderLine("TSF16100", "Remote Services", 12, 100, quantity=quantity)
    else:
        line = OrderLine("TSF16100", "Remote Services", 12, amount, quantity, unit)
    before = every_row(cloud.app)
    with pytest.raises(BadOrderRequest, match=match):
        await _billing(cloud).place_order(
            kind="purchase",
            buyer=1,
            installation_id=shop[0],
            lines=(line,),
            pay_with="card",
            card_token=CARD_OK,
            idempotency_key="bad",
            now=cloud.clock(),
        )
    assert every_row(cloud.app) == before
    assert _billing(cloud).provider.charges_made == 0


def test_line_amount() -> None:
    assert line_amount(quantity=3, unit_cents=1_000) == 3_000
    assert line_amount(quantity=1, unit_cents=0, amount_cents=0) == 0
