"""What the customers page asks of the account service: customers found by name, e-mail
or partner id, never vendor staff (SQLite and PostgreSQL)."""

from __future__ import annotations

from cloud.accounts.rules import PaymentType
from cloud.accounts.service import AccountService
from cloud.accounts.users import create_company
from tests.cloud.harness import Cloud, new_user


def _accounts(cloud: Cloud) -> AccountService:
    assert cloud.state.accounts is not None
    return cloud.state.accounts


def _found(cloud: Cloud, text: str, by: str) -> list[tuple[str, str]]:
    hits = _accounts(cloud).find_customers(text, by=by)  # type: ignore[arg-type]
    return [(h.kind, h.name) for h in hits]


async def test_customers_are_found_by_name_email_and_partner_id(cloud: Cloud) -> None:
    with cloud.state.store.transaction() as tx:
        company = create_company(
            tx,
            name="De Vries Installaties",
            partner_id="P-4711",
            payment_type=PaymentType.INVOICE,
            actor="system:tests",
            now=cloud.clock(),
        ).id
    new_user(cloud.app, role="partner", email="jan@devries.example", company_id=company)
    new_user(cloud.app, role="owner", email="marie.devries@home.example")
    new_user(cloud.app, role="support", email="devries@entitle.example")  # staff: never found
    new_user(cloud.app, role="owner", email="100%@odd.example")
    assert _found(cloud, "VRIES", "email") == [("user", "Test owner"), ("user", "Test partner")]
    assert _found(cloud, "vries inst", "name") == [("company", "De Vries Installaties")]
    assert _found(cloud, "p-4711", "partner_id") == [
        ("company", "De Vries Installaties"),
        ("user", "Test partner"),
    ]
    assert _found(cloud, "P-47", "partner_id") == []  # a partner id is exact
    assert _found(cloud, "%", "email") == [("user", "Test owner")]  # literally
    assert _found(cloud, "  ", "name") == []
    [partner] = _accounts(cloud).find_customers("jan@", by="email")
    assert (partner.partner_id, partner.company_name) == ("P-4711", "De Vries Installaties")
    assert not partner.blacklisted and not partner.disabled
