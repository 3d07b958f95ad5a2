"""Invoice PDFs: what they say (read back with pypdf), the money rules, and the download route."""

from __future__ import annotations

import io
from decimal import Decimal

import pypdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.accounts import users
from cloud.accounts.apikeys import create_api_key
from cloud.accounts.rules import Role
from cloud.billing.invoices import (
    Invoice,
    InvoiceLine,
    Party,
    format_money,
    invoice_filename,
    render_invoice,
    seller_from_settings,
    vat_included,
)
from cloud.billing.orders import OrderLine
from cloud.billing.payments import CARD_OK
from cloud.devices import memberships
from cloud.settings import CloudSettings
from tests.cloud.harness import DAY, START, Cloud, client
from tests.cloud.pages import pdf_text

SELLER = Party("Entitle GmbH", ("Hauptstrasse 1", "10115 Berlin"), vat_id="DE123456789")
BUYER = Party("Acme Security Ltd", ("Attn: Jo Smith",), email="jo@acme.example")
LINES = (
    InvoiceLine("TSF16100", "Remote Services", 13, 12_000),
    InvoiceLine("TSF12125", "Voice Control", 13, 6_000),
)


def _invoice(**changes: object) -> Invoice:
    fields: dict[str, object] = {
        "number": "EN-2026-000042",
        "order_number": "EN-2026-000042",
        "issued_at": START + 14 * DAY,
        "seller": SELLER,
        "buyer": BUYER,
        "lines": LINES,
        "currency": "EUR",
        "vat_percent": Decimal("19"),
        "paid_at": START + 14 * DAY,
        "installation": "Shop (inst_shop)",
    }
    return Invoice(**(fields | changes))  # type: ignore[arg-type]


def test_the_pdf_says_who_what_when_and_how_much() -> None:
    pdf = render_invoice(_invoice())
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    for expected in (
        "INVOICE",
        "Invoice no.: EN-2026-000042",
        "Order no.: EN-2026-000042",
        "Date: 2026-01-15",
        "Currency: EUR",
        "Entitle GmbH",
        "10115 Berlin",
        "VAT id: DE123456789",
        "Acme Security Ltd",
        "Attn: Jo Smith",
        "Installation: Shop (inst_shop)",
        "TSF16100 Remote Services 13 1 EUR 120.00 EUR 120.00",
        "TSF12125 Voice Control 13 1 EUR 60.00 EUR 60.00",
        "Net amount EUR 151.26",
        "VAT 19% EUR 28.74",
        "Total EUR 180.00",
        "Paid on 2026-01-15",
    ):
        assert expected in text, expected
    assert pypdf.PdfReader(io.BytesIO(pdf)).metadata.title == "Invoice EN-2026-000042"


def test_an_invoiced_order_shows_the_due_date_and_no_vat_when_there_is_none() -> None:
    text = pdf_text(
        render_invoice(_invoice(paid_at=None, due_at=START + 44 * DAY, vat_percent=Decimal(0)))
    )
    assert "Payment due by 2026-02-14." in text
    assert "No VAT charged." in text and "Net amount" not in text
    assert "Total EUR 180.00" in text


def test_the_same_invoice_gives_the_same_bytes() -> None:
    assert render_invoice(_invoice()) == render_invoice(_invoice())


def test_text_outside_latin1_is_transliterated_not_fatal() -> None:
    buyer = Party("Łódź Ochrona Sp. z o.o.", ("ul. Piotrkowska 1 – lokal 2",))
    text = pdf_text(render_invoice(_invoice(buyer=buyer, currency="PLN")))
    assert "Lódz Ochrona Sp. z o.o." in text and "Piotrkowska 1 - lokal 2" in text
    assert "Total PLN 180.00" in text


def test_many_lines_flow_onto_more_pages() -> None:
    lines = tuple(InvoiceLine(f"TSF{i:05d}", f"Camera {i} retention", 12, 1_000) for i in range(80))
    pdf = render_invoice(_invoice(lines=lines))
    assert len(pypdf.PdfReader(io.BytesIO(pdf)).pages) > 1
    text = pdf_text(pdf)
    assert all(f"TSF{i:05d} Camera {i} retention" in text for i in range(80))
    assert "Total EUR 800.00" in text


@pytest.mark.parametrize(
    "changes",
    [{"lines": ()}, {"currency": "EURO"}, {"vat_percent": Decimal(100)}],
)
def test_an_invoice_that_cannot_be_right_is_refused(changes: dict) -> None:
    with pytest.raises(ValueError):
        _invoice(**changes)


def test_money_formats() -> None:
    assert format_money(123_456_78, "eur") == "EUR 123,456.78"
    assert format_money(5, "USD") == "USD 0.05"
    assert format_money(-1_050, "EUR") == "EUR -10.50"
    assert format_money(1500, "JPY") == "JPY 1,500"
    assert invoice_filename(_invoice(number="EN/2026 7")) == "invoice-EN-2026-7.pdf"


@given(
    gross=st.integers(min_value=0, max_value=10**12),
    rate=st.decimals(min_value=0, max_value=99, places=2, allow_nan=False),
)
def test_vat_is_inside_the_gross_amount(gross: int, rate: Decimal) -> None:
    vat = vat_included(gross, rate)
    assert 0 <= vat <= gross
    net = gross - vat
    # the net amount is the gross one without VAT, to the cent
    assert abs(Decimal(net) * (100 + rate) / 100 - gross) <= (100 + rate) / 200


@settings(max_examples=40, deadline=None)
@given(name=st.text(min_size=1, max_size=120), description=st.text(min_size=1, max_size=300))
def test_any_text_renders(name: str, description: str) -> None:
    pdf = render_invoice(
        _invoice(buyer=Party(name), lines=(InvoiceLine("X1", description, 1, 100),))
    )
    assert pdf.startswith(b"%PDF-") and "Total EUR 1.00" in pdf_text(pdf)


# the route ------------------------------------------------------------------------------------
async def _owner_key(cloud: Cloud, installation_id: str, email: str) -> tuple[int, str]:
    store, now = cloud.state.store, cloud.clock()
    with store.transaction() as tx:
        user = users.create_user(
            tx,
            email=email,
            name=email.split("@")[0],
            password="correct horse battery",
            role=Role.OWNER,
            company_id=None,
            actor="system:tests",
            now=now,
        )
        memberships.set_owner(tx, installation_id, user.id, actor="system:tests", now=now)
        user_id = user.id
    return user_id, create_api_key(store, name=email, now=now, user_id=user_id).key


async def test_download_the_invoice_of_an_order(cloud: Cloud) -> None:
    inst = await cloud.installation("Shop")
    other = await cloud.installation("Elsewhere")
    owner, owner_key = await _owner_key(cloud, inst, "jo@acme.example")
    _, stranger_key = await _owner_key(cloud, other, "eve@example.com")
    billing = cloud.state.billing
    assert billing is not None
    lines = [OrderLine("TSF16100", "Remote Services, 12 months", 12, 9_900)]

    async def order(key: str, **how: object) -> int:
        result = await billing.place_order(
            kind="purchase",
            buyer=owner,
            installation_id=inst,
            lines=lines,
            idempotency_key=key,
            now=cloud.clock(),
            **how,  # type: ignore[arg-type]
        )
        return result.order_id

    paid = await order("paid", pay_with="card", card_token=CARD_OK)
    invoiced = await order("invoiced", pay_with="invoice", card_token=None)
    unpaid = await order("unpaid", pay_with="card", card_token=None)

    response = await cloud.http.get(f"/api/v1/orders/{paid}/invoice.pdf")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    number = f"EN-2026-{paid:06d}"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="invoice-{number}.pdf"'
    )
    text = pdf_text(response.content)
    assert f"Invoice no.: {number}" in text and "Bill to\njo" in text
    assert "TSF16100 Remote Services, 12 months 12 1 EUR 99.00 EUR 99.00" in text
    assert "Total EUR 99.00" in text and "Paid by card ending 4242 on 2026-01-01" in text
    assert "Shop (" in text

    async with client(cloud.app, owner_key) as as_owner:
        response = await as_owner.get(f"/api/v1/orders/{invoiced}/invoice.pdf")
        assert response.status_code == 200
        assert "Payment due by 2026-01-31." in pdf_text(response.content)
        assert (await as_owner.get(f"/api/v1/orders/{unpaid}/invoice.pdf")).status_code == 409
    async with client(cloud.app, stranger_key) as as_stranger:
        response = await as_stranger.get(f"/api/v1/orders/{paid}/invoice.pdf")
        assert response.status_code == 404  # like an order that does not exist
    assert (await cloud.http.get("/api/v1/orders/999999/invoice.pdf")).status_code == 404
    async with client(cloud.app) as anonymous:
        assert (await anonymous.get(f"/api/v1/orders/{paid}/invoice.pdf")).status_code == 401


def test_the_seller_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTITLE_CONFIG", "/nonexistent.toml")
    monkeypatch.setenv("ENTITLE_INVOICE_SELLER_NAME", "Entitle GmbH")
    monkeypatch.setenv("ENTITLE_INVOICE_SELLER_ADDRESS", "Hauptstrasse 1\\n10115 Berlin")
    monkeypatch.setenv("ENTITLE_INVOICE_VAT_PERCENT", "19")
    settings = CloudSettings()
    assert seller_from_settings(settings) == Party(
        "Entitle GmbH", ("Hauptstrasse 1", "10115 Berlin")
    )
    assert settings.invoice_vat_percent == Decimal(19)
