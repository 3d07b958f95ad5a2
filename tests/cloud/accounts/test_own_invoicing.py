"""A partner edits their own company's invoicing details (API ``/api/v1/me/company`` and the
page ``/profile/company``; SQLite, PostgreSQL): checked as staff's changes are, audited,
printed on the company's invoices; a refusal says why and stores nothing; never another
company's, and nobody without a company (owners, staff) has any."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cloud.accounts.tables import AuditRow, CompanyRow
from tests.cloud.accounts.test_invoicing_details import (
    ADDRESS,
    GSTIN,
    NL_VAT,
    SAVED,
    _bought,
    _pdf,
)
from tests.cloud.harness import Cloud, client, every_row, new_company, new_user, user_api_key
from tests.cloud.pages import csrf_of, signed_in

MINE = "/api/v1/me/company"


def _invoicing_of(cloud: Cloud, company: int) -> tuple[str | None, ...]:
    with cloud.state.store.transaction() as tx:
        row = tx.get(CompanyRow, company)
        assert row is not None
        return (row.address, row.postcode, row.city, row.country, row.vat_number, row.gst_number)


async def test_a_partner_sets_his_company_invoicing_details_through_the_api(cloud: Cloud) -> None:
    mine = new_company(cloud.app, name="Integra BV", payment_type="card")
    other = new_company(cloud.app, name="Other BV", payment_type="card")
    fitter = new_user(cloud.app, role="partner", company_id=mine)
    async with client(cloud.app, user_api_key(cloud.app, fitter)) as http:
        shown = await http.get(MINE)
        assert shown.status_code == 200 and shown.json()["id"] == mine
        assert shown.json()["invoicing"]["vat_number"] is None
        saved = await http.put(f"{MINE}/invoicing", json=ADDRESS)
        assert saved.status_code == 200, saved.text
        assert saved.json()["id"] == mine and saved.json()["invoicing"] == SAVED
        assert (await http.get(MINE)).json() == saved.json()
        with cloud.state.store.transaction() as tx:
            [audited] = tx.scalars(
                select(AuditRow).where(
                    AuditRow.action == "company.update", AuditRow.object_id == str(mine)
                )
            ).all()
        assert audited.actor == f"user:{fitter}" and audited.after["vat_number"] == NL_VAT
        assert _invoicing_of(cloud, other) == (None,) * 6  # only his own company changed
        # printed on the company's next invoice
        order = await _bought(cloud, fitter, await cloud.installation("Shop"))
        pdf = _pdf((await cloud.http.get(f"/api/v1/orders/{order}/invoice.pdf")).content)
        assert f"VAT id: {NL_VAT}" in pdf and "Damrak 1" in pdf
        # never another company's: the staff routes stay staff's
        before = every_row(cloud.app)
        for method, path, body in (
            ("GET", f"/api/v1/companies/{other}", None),
            ("PATCH", f"/api/v1/companies/{other}", {"invoicing": ADDRESS}),
            ("PATCH", f"/api/v1/companies/{mine}", {"invoicing": ADDRESS}),
        ):
            refused = await http.request(method, path, json=body)
            assert refused.status_code == 403, (method, path, refused.text)
        assert every_row(cloud.app) == before


@pytest.mark.parametrize(
    ("invoicing", "says"),
    [
        ({"vat_number": "NL004495446B01"}, "not a valid VAT number"),
        ({"country": "DE", "vat_number": NL_VAT}, "company in DE starts with DE"),
        ({"country": "NL", "gst_number": GSTIN}, "company in India"),
        ({"country": "XX"}, "not a country code"),
    ],
)
async def test_bad_details_of_his_own_company_are_refused_and_change_nothing(
    cloud: Cloud, invoicing: dict[str, str], says: str
) -> None:
    mine = new_company(cloud.app, name="Integra BV", payment_type="card")
    fitter = new_user(cloud.app, role="partner", company_id=mine)
    async with client(cloud.app, user_api_key(cloud.app, fitter)) as http:
        assert (await http.put(f"{MINE}/invoicing", json=ADDRESS)).status_code == 200
        before = every_row(cloud.app)
        refused = await http.put(f"{MINE}/invoicing", json=invoicing)
        assert refused.status_code == 422 and says in refused.text, refused.text
        assert every_row(cloud.app) == before


@pytest.mark.parametrize("role", ["owner", "admin", "support"])
async def test_who_has_no_company_has_no_invoicing_details(cloud: Cloud, role: str) -> None:
    user = new_user(cloud.app, role=role)
    async with client(cloud.app, user_api_key(cloud.app, user)) as http:
        before = every_row(cloud.app)
        assert (await http.get(MINE)).status_code == 404
        put = await http.put(f"{MINE}/invoicing", json=ADDRESS)
        assert put.status_code == 404 and "not a partner company" in put.text
        assert every_row(cloud.app) == before
    async with signed_in(cloud.app, role=role) as (page, _):
        assert (await page.get("/profile/company")).status_code == 404
        assert "/profile/company" not in (await page.get("/profile")).text


async def test_a_blacklisted_partner_changes_nothing(cloud: Cloud) -> None:
    mine = new_company(cloud.app, name="Integra BV", payment_type="card")
    fitter = new_user(cloud.app, role="partner", company_id=mine)
    put = await cloud.http.put(
        f"/api/v1/companies/{mine}/blacklist", json={"blacklisted": True, "reason": "unpaid"}
    )
    assert put.status_code == 200, put.text
    async with client(cloud.app, user_api_key(cloud.app, fitter)) as http:
        before = every_row(cloud.app)
        refused = await http.put(f"{MINE}/invoicing", json=ADDRESS)
        assert refused.status_code == 403 and "blacklisted" in refused.text
        assert every_row(cloud.app) == before


async def test_the_company_page_saves_valid_details_and_refuses_a_bad_vat_number(
    cloud: Cloud,
) -> None:
    mine = new_company(cloud.app, name="Integra BV", payment_type="card")
    async with signed_in(cloud.app, role="partner", company_id=mine) as (http, _):
        profile = await http.get("/profile")
        assert 'href="/profile/company"' in profile.text
        page = await http.get("/profile/company")
        assert page.status_code == 200 and "Integra BV" in page.text
        form = {"csrf_token": csrf_of(page.text), **ADDRESS}
        saved = await http.post("/profile/company", data=form)
        assert saved.status_code == 303 and saved.headers["location"] == "/profile/company"
        again = await http.get("/profile/company")
        assert "Your invoicing details are saved." in again.text
        assert NL_VAT in again.text and "Amsterdam" in again.text
        assert _invoicing_of(cloud, mine) == tuple(SAVED.values())
        before = every_row(cloud.app)
        bad = {**form, "vat_number": "NL004495446B01", "city": "Rotterdam"}
        refused = await http.post("/profile/company", data=bad)
        assert refused.status_code == 422
        assert 'id="invoicing-error"' in refused.text
        assert "not a valid VAT number" in refused.text and "NL004495446B01" in refused.text
        assert "Rotterdam" in refused.text  # what was typed is kept to correct
        assert every_row(cloud.app) == before and _invoicing_of(cloud, mine) == tuple(
            SAVED.values()
        )
        forged = await http.post("/profile/company", data={**form, "csrf_token": "forged"})
        assert forged.status_code in (400, 403) and every_row(cloud.app) == before


async def test_the_company_page_is_in_dutch(cloud: Cloud) -> None:
    mine = new_company(cloud.app, name="Integra BV", payment_type="card")
    async with signed_in(cloud.app, role="partner", company_id=mine) as (http, _):
        page = await http.get("/profile/company", headers={"Accept-Language": "nl"})
        assert "Factuurgegevens" in page.text and "Mijn profiel" in page.text
        form = {"csrf_token": csrf_of(page.text), **ADDRESS, "vat_number": "NL004495446B01"}
        refused = await http.post("/profile/company", data=form, headers={"Accept-Language": "nl"})
        assert refused.status_code == 422 and "geen geldig btw-nummer" in refused.text
