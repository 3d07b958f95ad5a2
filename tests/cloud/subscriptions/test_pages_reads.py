"""What the installation and partners' pages read from the services (SQLite and PostgreSQL):
subscription lines with their purchasers and status words, the quotes a confirm step
shows before money moves or a purchaser changes, and the "expiring soon" list, scoped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloud.accounts.apikeys import Principal
from cloud.devices import memberships
from cloud.errors import BadTerm, InvalidTransition, UnknownInstallation, UnknownSubscription
from tests.cloud.harness import DAY, Cloud, new_company, new_user


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


def _as(uid: int, role: str) -> Principal:
    return Principal(key_id=None, name=f"user {uid}", role=role, user_id=uid)


def _integrate(cloud: Cloud, inst: str, *, payment_type: str) -> int:
    company = new_company(cloud.app, name=f"SI {payment_type}", payment_type=payment_type)
    uid = new_user(cloud.app, role="partner", company_id=company)
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="system:tests", now=cloud.clock())
    return uid


async def test_lines_quotes_and_expiring_follow_the_rules(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31) + 3600
    service = cloud.state.subscriptions
    assert service is not None
    inst = await cloud.connected("Shop")
    other = await cloud.connected("Elsewhere")
    invoiced = _integrate(cloud, inst, payment_type="invoice")
    carded = _integrate(cloud, inst, payment_type="card")
    outsider = _integrate(cloud, other, payment_type="invoice")
    a, b, c = _as(invoiced, "partner"), _as(carded, "partner"), _as(outsider, "partner")
    assert (service.pays_with(a), service.pays_with(b)) == ("invoice", "card")

    bought = await service.purchase(
        a,
        installation_id=inst,
        product_code="TSF12125",
        term_months=None,
        pay_with=None,
        card_token=None,
        start=None,
    )
    sub_id = bought.subscription["id"]
    [line] = service.lines(a, inst)
    assert (line.name, line.state, line.mine) == ("Voice Control", "renews", True)
    assert line.purchaser_email.startswith("partner-")
    assert line.next_renewal is not None
    # a year from the end of January; charged a month before; 12 x 3.00
    assert line.next_renewal.charge_at == ts(2027, 1, 1)
    assert (line.next_renewal.months, line.next_renewal.amount_cents) == (12, 3600)
    assert line.next_renewal.until == ts(2028, 2, 1)
    assert not service.lines(b, inst)[0].mine

    # renewing: price and the new end shown before paying; the rule refuses 61 months
    quote = service.renewal_quote(b, sub_id, 3)
    assert (quote.renewal.amount_cents, quote.renewal.until, quote.pay_with) == (
        900,
        ts(2027, 5, 1),
        "card",
    )
    with pytest.raises(BadTerm):
        service.renewal_quote(b, sub_id, 61)

    # reactivating: refused while it renews for someone else; after deactivation the
    # card partner becomes the purchaser, nothing due now, next renewal billed to them
    with pytest.raises(InvalidTransition):
        service.reactivation_quote(b, sub_id)
    await service.deactivate(a, sub_id)
    assert service.line(a, sub_id).state == "expires"
    assert service.line(a, sub_id).next_renewal is None
    quote = service.reactivation_quote(b, sub_id)
    assert quote.pay_with == "card" and quote.line.state == "expires"
    assert (quote.renewal.charge_at, quote.renewal.amount_cents) == (ts(2027, 1, 1), 3600)
    assert service.line(a, sub_id).view["purchaser_id"] == invoiced  # a quote changes nothing

    # out of scope answers like unknown
    with pytest.raises(UnknownInstallation):
        service.lines(c, inst)
    with pytest.raises(UnknownSubscription):
        service.line(c, "sub_0000000000000000")
    with pytest.raises(UnknownInstallation):
        service.renewal_quote(c, sub_id, 1)

    # expiring soon: nothing in the next 60 days now; 40 days before the end it is listed
    assert service.expiring(a) == ([], 0)
    cloud.clock.now = ts(2027, 2, 1) - 40 * DAY
    found, total = service.expiring(a)
    assert total == 1 and found[0].installation_name == "Shop"
    assert found[0].line.view["id"] == sub_id
    assert service.expiring(c) == ([], 0)
    admin = Principal(key_id=1, name="admin", role="admin")
    assert service.expiring(admin)[1] == 1
