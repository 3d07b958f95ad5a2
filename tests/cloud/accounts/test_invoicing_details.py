"""Companies' invoicing details (address, country, EU VAT number or Indian GSTIN) printed on
their invoices, contacts' phone numbers, and who is billed for an installation nobody is
authorised for (API and pages; SQLite, PostgreSQL)."""

from __future__ import annotations

import io

import pypdf
import pytest
from sqlalchemy import select

from cloud.accounts.rules import InvoicingDetails, check_invoicing, check_phone
from cloud.accounts.tables import AuditRow
from cloud.billing.orders import Billing
from cloud.billing.payments import CARD_OK
from cloud.errors import InvalidRequest
from tests.cloud.billing_harness import LINES
from tests.cloud.harness import Cloud, client, every_row, new_company, new_user, user_api_key
from tests.cloud.pages import csrf_of, signed_in

NL_VAT = "NL004495445B01"
GSTIN = "27AAPFU0939F1ZV"
ADDRESS = {
    "address": "Damrak 1\nSecond floor",
    "postcode": "1012 LG",
    "city": "Amsterdam",
    "country": "nl",
    "vat_number": "nl 0044.95.445.b01",
}


# ADDRESS as stored: trimmed, upper case, the VAT number without its dots and spaces
SAVED = {
    "address": "Damrak 1\nSecond floor",
    "postcode": "1012 LG",
    "city": "Amsterdam",
    "country": "NL",
    "vat_number": NL_VAT,
    "gst_number": None,
}


def _billing(cloud: Cloud) -> Billing:
    assert cloud.state.billing is not None
    return cloud.state.billing


async def _bought(cloud: Cloud, buyer: int, inst: str, key: str = "k1") -> int:
    result = await _billing(cloud).place_order(
        kind="purchase",
        buyer=buyer,
        installation_id=inst,
        lines=LINES,
        pay_with="card",
        card_token=CARD_OK,
        idempotency_key=key,
        now=cloud.clock(),
    )
    return result.order_id


def _pdf(content: bytes) -> str:
    return "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(content)).pages)


async def test_invoicing_details_are_saved_audited_and_printed(cloud: Cloud) -> None:
    company = new_company(cloud.app, name="Integra BV", payment_type="card")
    fitter = new_user(cloud.app, role="partner", company_id=company)
    saved = await cloud.http.patch(f"/api/v1/companies/{company}", json={"invoicing": ADDRESS})
    assert saved.status_code == 200, saved.text
    assert saved.json()["invoicing"] == SAVED
    assert (await cloud.http.get(f"/api/v1/companies/{company}")).json() == saved.json()
    with cloud.state.store.transaction() as tx:
        [after] = tx.scalars(
            select(AuditRow.after).where(
                AuditRow.action == "company.update", AuditRow.object_id == str(company)
            )
        ).all()
    assert after["vat_number"] == NL_VAT and after["city"] == "Amsterdam"

    inst = await cloud.installation("Shop")
    order = await _bought(cloud, fitter, inst)
    pdf = _pdf((await cloud.http.get(f"/api/v1/orders/{order}/invoice.pdf")).content)
    for expected in ("Integra BV", "Damrak 1", "Second floor", "1012 LG Amsterdam", "NL"):
        assert expected in pdf, expected
    assert f"VAT id: {NL_VAT}" in pdf

    indian = {"country": "IN", "gst_number": GSTIN.lower(), "city": "Mumbai"}
    saved = await cloud.http.patch(f"/api/v1/companies/{company}", json={"invoicing": indian})
    assert saved.json()["invoicing"]["vat_number"] is None  # replaced all at once
    pdf = _pdf((await cloud.http.get(f"/api/v1/orders/{order}/invoice.pdf")).content)
    assert f"GSTIN: {GSTIN}" in pdf and "Mumbai" in pdf and "VAT id" not in pdf.split("Bill to")[1]


@pytest.mark.parametrize(
    ("invoicing", "says"),
    [
        ({"vat_number": "NL004495446B01"}, "not a valid VAT number"),
        ({"vat_number": "US123456789"}, "code of an EU country"),
        ({"country": "DE", "vat_number": NL_VAT}, "company in DE starts with DE"),
        ({"country": "NL", "gst_number": GSTIN}, "company in India"),
        ({"gst_number": "27AAPFU0939F1ZW"}, "not a valid GSTIN"),
        ({"vat_number": NL_VAT, "gst_number": GSTIN}, "not both"),
        ({"country": "XX"}, "not a country code"),
        ({"country": "N1"}, "string_pattern_mismatch"),
        ({"address": "a\nb\nc\nd\ne"}, "at most 4 lines"),
        ({"vat_number": "x" * 30}, "string_too_long"),
    ],
)
async def test_bad_invoicing_details_are_refused_and_change_nothing(
    cloud: Cloud, invoicing: dict[str, str], says: str
) -> None:
    company = new_company(cloud.app, name="Integra BV", payment_type="card")
    await cloud.http.patch(f"/api/v1/companies/{company}", json={"invoicing": ADDRESS})
    before = every_row(cloud.app)
    refused = await cloud.http.patch(f"/api/v1/companies/{company}", json={"invoicing": invoicing})
    assert refused.status_code == 422 and says in refused.text, refused.text
    assert every_row(cloud.app) == before


def test_the_tax_rules() -> None:
    greek = check_invoicing(InvoicingDetails(country="gr", vat_number="EL 094259216"))
    assert (greek.country, greek.vat_number) == ("GR", "EL094259216")
    assert check_invoicing(InvoicingDetails(address="  ", city="")) == InvoicingDetails()


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+31 20 123 4567", "+31201234567"),
        ("+31 (0)6-12345678", "+31612345678"),
        ("+91 98765 43210", "+919876543210"),
        ("020 123 4567", None),  # no country code
        ("+1 555", None),
        ("+31 20 123 4567 ext", None),
    ],
)
def test_phone_numbers(raw: str, e164: str | None) -> None:
    if e164 is None:
        with pytest.raises(InvalidRequest, match="country code"):
            check_phone(raw)
    else:
        assert check_phone(raw) == e164


async def test_a_contact_has_a_phone_number(cloud: Cloud) -> None:
    owner = new_user(cloud.app, role="owner", email="anna@villa.example")
    changed = await cloud.http.patch(f"/api/v1/users/{owner}", json={"phone": "+31 20 123 4567"})
    assert changed.status_code == 200 and changed.json()["phone"] == "+31201234567"
    before = every_row(cloud.app)
    bad = await cloud.http.patch(f"/api/v1/users/{owner}", json={"phone": "0612345678"})
    assert bad.status_code == 422 and "country code" in bad.text
    assert every_row(cloud.app) == before
    inst = await cloud.installation("Villa")
    put = await cloud.http.put(f"/api/v1/installations/{inst}/owner", json={"user_id": owner})
    assert put.status_code == 200, put.text
    activity = await cloud.http.get(
        "/api/v1/orders/customer-activity", params={"installation_id": inst}
    )
    assert activity.status_code == 200, activity.text
    [place] = activity.json()["installations"]
    assert [(c["email"], c["phone"]) for c in place["contacts"]] == [
        ("anna@villa.example", "+31201234567")
    ]
    assert place["billed_to"] is None  # somebody is authorised
    cleared = await cloud.http.patch(f"/api/v1/users/{owner}", json={"phone": None})
    assert cleared.json()["phone"] is None


async def test_without_authorised_contacts_the_page_says_who_is_billed(cloud: Cloud) -> None:
    company = new_company(cloud.app, name="Integra BV", payment_type="card")
    fitter = new_user(cloud.app, role="partner", company_id=company, email="fitter@integra.example")
    await cloud.http.patch(f"/api/v1/users/{fitter}", json={"phone": "+31 20 123 4567"})
    inst = await cloud.installation("Empty house")  # no owner, no integrator
    order = await _bought(cloud, fitter, inst)
    activity = await cloud.http.get(
        "/api/v1/orders/customer-activity", params={"installation_id": inst}
    )
    [place] = activity.json()["installations"]
    assert place["contacts"] == []
    billed = place["billed_to"]
    assert billed["contact"]["email"] == "fitter@integra.example"
    assert billed["contact"]["phone"] == "+31201234567"
    assert billed["company_name"] == "Integra BV"
    assert billed["order_number"] == f"EN-2026-{order:06d}"
    owner = user_api_key(cloud.app, new_user(cloud.app, role="owner"))
    async with client(cloud.app, owner) as as_owner:  # staff only
        refused = await as_owner.get("/api/v1/orders/customer-activity")
        assert refused.status_code == 403
    async with signed_in(cloud.app, role="support") as (http, _):
        page = await http.get("/customers", params={"q": inst, "by": "installation"})
        assert page.status_code == 200, page.text
        assert "Billed to Test partner" in page.text and "Integra BV" in page.text
        assert "tel:+31201234567" in page.text


async def test_the_company_page_edits_invoicing_details(cloud: Cloud) -> None:
    company = new_company(cloud.app, name="Integra BV", payment_type="card")
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        page = await http.get(f"/admin/companies/{company}")
        assert "Invoicing details" in page.text
        form = {"csrf_token": csrf_of(page.text), **ADDRESS}
        saved = await http.post(f"/admin/companies/{company}/invoicing", data=form)
        assert saved.status_code == 303
        again = await http.get(f"/admin/companies/{company}")
        assert NL_VAT in again.text and "Amsterdam" in again.text
        before = every_row(cloud.app)
        bad = {**form, "vat_number": "NL004495446B01"}
        refused = await http.post(f"/admin/companies/{company}/invoicing", data=bad)
        assert refused.status_code == 422
        assert "not a valid VAT number" in refused.text and "NL004495446B01" in refused.text
        assert every_row(cloud.app) == before
