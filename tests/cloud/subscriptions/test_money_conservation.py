"""Money conservation over plan changes and consolidated renewals, interleaved (issue 17's
must-show 4), through the running app on SQLite and PostgreSQL.

Two purchasers share one or two installations; on each, each holds a camera plan (on a
camera of its own) and an installation service, all paid by card: purchaser 0's card settles
at once, purchaser 1's the next day. A hypothesis-chosen sequence of steps interleaves plan
changes of a camera plan up or down (paid, declined), a subscription's card made to work or
decline, days passing with every job running, a jump to the day before the next consolidated
renewal charge, settling, voids and full or partial (goodwill) refunds of whole orders,
one-line refunds of consolidated renewal orders and credit granted by billing staff. After
every step, per purchaser::

    card kept + credit used == applied + owed back

*card kept*: the purchaser's succeeded charges less the succeeded voids and refunds of them
(billing's transactions); *credit used*: what the purchaser's credit ledger lost to orders
(granted less balance). Both are billing's side. *applied* and *owed back* are computed
from the subscriptions' side, never from the transactions: for each card order's link (one
per line, so per subscription) whose outcome is ``applied``, its line's amount less the
downgrades refunded from that order for that subscription
(:class:`~cloud.subscriptions.tables.PlanChangeRow`, difference < 0) less the goodwill
refunds this test made on the order (counted once per order still applying anything); a
link ``refund`` (undeliverable, the refund pending) is owed back its line's amount; links
``refunded``, ``reversed``, ``cancelled`` or unsettled apply nothing. Once the refunds due
went out (:meth:`_World.finish`) nothing is owed.

Also after every step: the credit ledger never goes below zero, every order with money
captured has a settled outcome on each link (callbacks ran), each active subscription's grant
carries its plan's parameters, and each subscription whose purchase applies ends where its
purchase ended plus one month per applied renewal (plan changes keep the end).

To add a step: add a dataclass to ``_Step``'s union, its strategy to ``_steps`` and its case
to :meth:`_World.run`; the invariants stay.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cloud import create_app
from cloud.billing.payments import CARD_DECLINED, CARD_OK, CARD_SETTLED
from cloud.billing.rules import OrderStatus, TxnType
from cloud.billing.tables import CreditRow, OrderLineRow, OrderRow, TransactionRow
from cloud.devices import memberships
from cloud.devices import queries as device_queries
from cloud.settings import CloudSettings
from cloud.subscriptions.rules.calendar import add_months
from cloud.subscriptions.rules.catalogue import product
from cloud.subscriptions.tables import (
    Outcome,
    PlanChangeRow,
    SubscriptionOrderRow,
    SubscriptionRow,
)
from cloud.testing import AccountsSimulator, PublisherSimulator
from tests.cloud.conftest import _empty_tables
from tests.cloud.harness import (
    DAY,
    FakeClock,
    client,
    connect,
    new_api_key,
    new_company,
    new_user,
    running,
    user_api_key,
)

# each example runs the app on a database of its own: minutes on a shared machine
pytestmark = pytest.mark.timeout(900)

BUY = "/api/v1/subscriptions"
PLANS = ("VR-720P-07D", "VR-1080P-07D", "VR-720P-30D", "VR-4K-30D", "VR-4K-90D")
SERVICES = ("TSF16100", "TSF12125")  # purchaser 0's and purchaser 1's on each installation
START = 1_769_860_800  # 2026-01-31T12:00:00Z: the last day of a month
WHO = (0, 1)  # purchaser 0 pays with a card that settles at once, 1 with one that does not
CARDS = {"ok": CARD_OK, "settled": CARD_SETTLED, "declined": CARD_DECLINED}
GONE = (Outcome.REFUNDED, Outcome.REVERSED, Outcome.CANCELLED)


@dataclass(frozen=True)
class Change:
    who: int
    cam: int  # which of the purchaser's camera plans (modulo how many)
    to: str
    card: str


@dataclass(frozen=True)
class Card:
    who: int
    sub: int  # which of the purchaser's subscriptions (modulo how many)
    card: str  # "ok" or "declined": what its renewals are charged to


@dataclass(frozen=True)
class Void:
    who: int
    pick: int  # which of the purchaser's paid orders (modulo how many; -1 the newest)


@dataclass(frozen=True)
class Refund:
    who: int
    pick: int
    part: int  # 0: all that is left; 1-99: that percent of the order (a goodwill gesture)


@dataclass(frozen=True)
class RefundLine:
    who: int
    pick: int  # which renewal order (modulo how many), then which of its lines


@dataclass(frozen=True)
class Credit:
    who: int
    units: int  # billing staff grant units x 1.00


@dataclass(frozen=True)
class Settle:
    pass


@dataclass(frozen=True)
class Wait:
    days: int  # time passes; every job runs


@dataclass(frozen=True)
class ToRenewal:
    pass  # to the day before the next consolidated renewal charge; every job runs


_Step = Change | Card | Void | Refund | RefundLine | Credit | Settle | Wait | ToRenewal

_who = st.sampled_from(WHO)
_steps = st.one_of(
    st.builds(
        Change, _who, st.integers(0, 1), st.sampled_from(PLANS), st.sampled_from(list(CARDS))
    ),
    st.builds(Card, _who, st.integers(0, 3), st.sampled_from(("ok", "declined"))),
    st.builds(Void, _who, st.integers(-1, 6)),
    st.builds(Refund, _who, st.integers(-1, 6), st.integers(0, 99)),
    st.builds(RefundLine, _who, st.integers(0, 40)),
    st.builds(Credit, _who, st.integers(1, 150)),
    st.just(Settle()),
    st.builds(Wait, st.integers(1, 40)),
    st.just(ToRenewal()),
)


@dataclass
class _World:
    """The running app, the two purchasers with their subscriptions, where each
    subscription's purchase ended it, and the goodwill refunds this test made
    (order id -> cents)."""

    app: object
    admin: object
    clock: FakeClock
    buyers: list[int] = field(default_factory=list)
    partners: list[object] = field(default_factory=list)
    cams: list[list[str]] = field(default_factory=lambda: [[], []])
    subs: list[list[str]] = field(default_factory=lambda: [[], []])
    bought_end: dict[str, int] = field(default_factory=dict)
    goodwill: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def state(self):  # noqa: ANN201 (the app's CloudState)
        return self.app.state.cloud  # type: ignore[attr-defined]

    async def run(self, step: _Step) -> None:  # noqa: C901 (one case per step)
        admin = self.admin
        match step:
            case Change(who=who, cam=cam, to=to, card=card):
                cams = self.cams[who]
                r = await self.partners[who].post(  # type: ignore[attr-defined]
                    f"{BUY}/{cams[cam % len(cams)]}/plan-change",
                    json={"product": to, "card_token": CARDS[card]},
                )
                assert r.status_code in (200, 402, 409), r.text
            case Card(who=who, sub=sub, card=card):
                subs = self.subs[who]
                r = await self.partners[who].put(  # type: ignore[attr-defined]
                    f"{BUY}/{subs[sub % len(subs)]}/card", json={"card_token": CARDS[card]}
                )
                assert r.status_code == 200, r.text
            case Void(who=who, pick=pick):
                order = self._paid_order(who, pick)
                if order is not None:
                    r = await admin.post(f"/api/v1/orders/{order}/void")  # type: ignore[attr-defined]
                    assert r.status_code in (200, 409), r.text
            case Refund(who=who, pick=pick, part=part):
                order = self._paid_order(who, pick)
                if order is None:
                    return
                amount = None
                if part:
                    amount = max(1, self._amount(order) * part // 100)
                r = await admin.post(  # type: ignore[attr-defined]
                    f"/api/v1/orders/{order}/refund",
                    json=None if amount is None else {"amount_cents": amount},
                )
                assert r.status_code in (200, 409, 422), r.text
                if r.status_code == 200 and amount is not None:
                    self.goodwill[order] += amount
            case RefundLine(who=who, pick=pick):
                renewals = self._orders(who, kind="renewal")
                if not renewals:
                    return
                order = renewals[pick % len(renewals)]
                lines = (await admin.get(f"/api/v1/orders/{order}")).json()["lines"]  # type: ignore[attr-defined]
                line = lines[(pick // len(renewals)) % len(lines)]
                r = await admin.post(f"/api/v1/orders/{order}/lines/{line['id']}/refund")  # type: ignore[attr-defined]
                assert r.status_code < 500, r.text  # refused (409/422) or done, never a crash
            case Credit(who=who, units=units):
                r = await admin.post(  # type: ignore[attr-defined]
                    f"/api/v1/customers/{self.buyers[who]}/credit",
                    json={"amount_cents": units * 100, "reason": "goodwill"},
                )
                assert r.status_code == 200, r.text
            case Settle():
                await self.state.billing.provider.settle_all()
            case Wait(days=days):
                self.clock.advance(days * DAY)
                await self.state.jobs.run_once()
            case ToRenewal():
                with self.state.store.transaction() as tx:
                    ends = tx.scalars(
                        select(SubscriptionRow.ends_at).where(SubscriptionRow.status == "active")
                    ).all()
                later = [add_months(end, -1) - DAY for end in ends]
                later = [t for t in later if t > self.clock.now]
                if later:
                    self.clock.now = min(later)
                    await self.state.jobs.run_once()

    def _orders(self, who: int, *, kind: str | None = None, paid: bool = False) -> list[int]:
        query = select(OrderRow.id).where(OrderRow.buyer_user_id == self.buyers[who])
        if kind is not None:
            query = query.where(OrderRow.kind == kind)
        if paid:
            query = query.where(OrderRow.status == OrderStatus.SUCCEED)
        with self.state.store.transaction() as tx:
            return list(tx.scalars(query.order_by(OrderRow.id)).all())

    def _paid_order(self, who: int, pick: int) -> int | None:
        ids = self._orders(who, paid=True)
        return ids[pick % len(ids)] if ids else None

    def _amount(self, order_id: int) -> int:
        with self.state.store.transaction() as tx:
            row = tx.get(OrderRow, order_id)
            assert row is not None
            return row.amount_cents

    def check(self, *, settled: bool = False) -> None:
        """The invariants of the module docstring (``settled``: nothing may be owed)."""
        for uid in self.buyers:
            self._check_purchaser(uid, settled=settled)
        with self.state.store.transaction() as tx:
            # what the devices enforce is the plan the subscription is on
            for sub in tx.scalars(select(SubscriptionRow)):
                if sub.status != "active":
                    continue
                [grant] = [
                    g
                    for g in device_queries.grants_of(tx, sub.installation_id)
                    if g.scope == sub.scope and g.feature == sub.service
                ]
                assert grant.params == dict(product(sub.product_code).params), sub.id

    def _check_purchaser(self, uid: int, *, settled: bool) -> None:
        with self.state.store.transaction() as tx:
            orders = {
                o.id: o for o in tx.scalars(select(OrderRow).where(OrderRow.buyer_user_id == uid))
            }
            # billing's side: the card's transactions and the credit ledger
            kept = 0
            charged: set[int] = set()
            for t in tx.scalars(select(TransactionRow).where(TransactionRow.order_id.in_(orders))):
                if t.status != OrderStatus.SUCCEED:
                    continue
                if t.type == TxnType.CHARGE:
                    kept += t.amount_cents
                    charged.add(t.order_id)
                else:
                    kept -= t.amount_cents
            ledger = list(tx.scalars(select(CreditRow).where(CreditRow.user_id == uid)))
            used = -sum(e.amount_cents for e in ledger if e.entry != "grant")
            granted = sum(e.amount_cents for e in ledger if e.entry == "grant")
            assert used >= 0 and granted - used >= 0, (uid, granted, used)
            # the subscriptions' side: outcomes, plan-change rows, the test's goodwill
            lines = {
                line.id: line
                for line in tx.scalars(
                    select(OrderLineRow).where(OrderLineRow.order_id.in_(orders))
                )
            }
            links = tx.scalars(
                select(SubscriptionOrderRow)
                .where(SubscriptionOrderRow.order_id.in_(orders))
                .order_by(SubscriptionOrderRow.id)
            ).all()
            downgrades: dict[tuple[int, str], int] = defaultdict(int)
            for change in tx.scalars(
                select(PlanChangeRow).where(
                    PlanChangeRow.order_id.in_(orders), PlanChangeRow.difference_cents < 0
                )
            ):
                assert change.order_id is not None
                downgrades[change.order_id, change.subscription_id] += change.difference_cents
            applied = owed = 0
            applying: set[int] = set()
            renewed: dict[str, int] = defaultdict(int)
            bought: set[str] = set()
            for link in links:
                order = orders[link.order_id]
                if link.order_id in charged and link.outcome is None:
                    raise AssertionError(f"order {order.number} was paid and never settled")
                if order.pay_with != "card":
                    continue
                assert link.line_id is not None, order.number
                amount = lines[link.line_id].amount_cents
                if link.outcome == Outcome.APPLIED:
                    applied += amount + downgrades[link.order_id, link.subscription_id]
                    applying.add(link.order_id)
                    if link.kind == "purchase":
                        bought.add(link.subscription_id)
                    elif link.kind == "renewal":
                        renewed[link.subscription_id] += link.months
                elif link.outcome == Outcome.REFUND:
                    owed += amount
            applied -= sum(self.goodwill.get(order_id, 0) for order_id in applying)
            assert kept + used == applied + owed, (uid, kept, used, applied, owed)
            if settled:
                assert owed == 0, (uid, owed)
            for sub_id in bought:  # what its applied payments bought, plan changes or not
                row = tx.get(SubscriptionRow, sub_id)
                assert row is not None
                end = add_months(self.bought_end[sub_id], renewed[sub_id])
                assert row.ends_at == end, (sub_id, row.ends_at, end)

    async def finish(self) -> None:
        """Charges settle, the jobs run, the refunds due go out: nothing may be left owing."""
        await self.state.billing.provider.settle_all()
        self.clock.advance(2 * DAY)
        await self.state.jobs.run_once()
        await self.state.jobs.run_once()
        await self.state.subscriptions.settlement.refund_due()
        with self.state.store.transaction() as tx:
            owed = tx.scalars(
                select(SubscriptionOrderRow.order_id).where(
                    SubscriptionOrderRow.outcome == Outcome.REFUND
                )
            ).all()
            assert owed == []
        self.check(settled=True)


@asynccontextmanager
async def _world(settings_: CloudSettings, installations: int) -> AsyncIterator[_World]:
    clock = FakeClock(START)
    app = create_app(
        settings_, publisher=PublisherSimulator(), accounts=AccountsSimulator(), clock=clock
    )
    async with running(app):
        async with client(app, new_api_key(app)) as admin:
            world = _World(app, admin, clock)
            insts = []
            for i in range(installations):
                r = await admin.post("/api/v1/installations", json={"name": f"Site {i}"})
                insts.append(r.json()["id"])
                await connect(app, admin, insts[-1])
            for who, card in zip(WHO, (CARD_SETTLED, CARD_OK), strict=True):
                company = new_company(app, name=f"SI {who}", payment_type="card")
                uid = new_user(app, role="partner", company_id=company)
                partner = client(app, user_api_key(app, uid))
                await partner.__aenter__()
                world.buyers.append(uid)
                world.partners.append(partner)
                for inst in insts:
                    with world.state.store.transaction() as tx:
                        memberships.add_integrator(tx, inst, company, actor="t", now=clock())
                    body = {"installation_id": inst, "kind": "camera"}
                    cam = (await admin.post("/api/v1/devices", json=body)).json()["device_id"]
                    for extra in (
                        {"product": "VR-1080P-07D", "device_id": cam},
                        {"product": SERVICES[who]},
                    ):
                        r = await partner.post(
                            BUY, json={"installation_id": inst, "card_token": card, **extra}
                        )
                        assert r.status_code == 201, r.text
                        sub = r.json()["subscription"]["id"]
                        world.subs[who].append(sub)
                        if "device_id" in extra:
                            world.cams[who].append(sub)
            with world.state.store.transaction() as tx:
                for sub_id in world.subs[0] + world.subs[1]:
                    row = tx.get(SubscriptionRow, sub_id)
                    assert row is not None
                    world.bought_end[sub_id] = row.ends_at
            try:
                yield world
            finally:
                for partner in world.partners:
                    await partner.__aexit__(None, None, None)  # type: ignore[attr-defined]


def _database(database_url: str, tmp_path: Path, n: int) -> str:
    """A database of its own for each example: a new SQLite file, or the test's PostgreSQL
    database emptied (migrated once; a new database per example costs seconds)."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / f'example-{n}.db'}"
    _empty_tables(database_url)
    return database_url


_examples = iter(range(1_000_000))


@settings(
    derandomize=True,
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(installations=st.integers(1, 2), steps=st.lists(_steps, max_size=10))
# plan changes (from the plan-change half): an upgrade refunded in full, a downgrade then the
# rest refunded, a declined upgrade, a void of an unsettled upgrade, a goodwill refund then
# a downgrade then the rest refunded (order picks: 0 the camera's purchase, -1 the newest)
@example(installations=1, steps=[Change(0, 0, "VR-4K-30D", "settled"), Refund(0, -1, 0)])
@example(installations=1, steps=[Wait(100), Change(0, 0, "VR-720P-07D", "ok"), Refund(0, 0, 0)])
@example(installations=1, steps=[Change(1, 0, "VR-4K-90D", "declined"), Wait(30)])
@example(
    installations=1,
    steps=[Change(1, 0, "VR-4K-30D", "ok"), Void(1, -1), Change(1, 0, "VR-720P-07D", "ok")],
)
@example(
    installations=1,
    steps=[Refund(0, 0, 50), Change(0, 0, "VR-720P-07D", "ok"), Refund(0, 0, 0)],
)
# consolidated renewals (from the renewals half, purchaser 1 whose card settles a day late;
# "the day before the charge day" is ToRenewal): a line refunded, declines retried whole
# then paid and a line and the order given back, a renewal voided, a purchase refunded after
# renewing, credit used then lines refunded, credit with declines then a void
@example(installations=2, steps=[ToRenewal(), Wait(1), RefundLine(1, 1), Wait(2)])
@example(
    installations=2,
    steps=[
        ToRenewal(),
        Card(1, 0, "declined"),
        Card(1, 2, "declined"),
        Wait(1),
        Card(1, 0, "ok"),
        Card(1, 2, "ok"),
        Wait(3),
        Wait(2),
        RefundLine(1, 0),
        Void(1, -1),
    ],
)
@example(installations=1, steps=[ToRenewal(), Wait(1), Void(1, 2), Wait(1)])
@example(installations=1, steps=[ToRenewal(), Wait(1), Wait(2), Refund(1, 0, 0)])
@example(
    installations=2,
    steps=[Credit(1, 130), ToRenewal(), Wait(1), Wait(2), RefundLine(1, 1), RefundLine(1, 2)],
)
@example(
    installations=1,
    steps=[
        Credit(1, 50),
        ToRenewal(),
        Card(1, 0, "declined"),
        Card(1, 1, "declined"),
        Wait(1),
        Card(1, 0, "ok"),
        Card(1, 1, "ok"),
        Wait(3),
        Wait(2),
        Void(1, -1),
    ],
)
# found by this machine: a downgrade refunded from the consolidated renewal charge, then the
# camera's renewal line given back: the line refunded its whole amount again (the charge's
# other lines' money covered it), so the purchaser got the downgrade's refund twice
@example(
    installations=1,
    steps=[ToRenewal(), Wait(1), Change(0, 0, "VR-720P-07D", "ok"), RefundLine(0, 1)],
)
def test_money_in_equals_money_applied_or_given_back(
    database_url: str, tmp_path: Path, installations: int, steps: list[_Step]
) -> None:
    async def story(settings_: CloudSettings) -> None:
        async with _world(settings_, installations) as world:
            world.check(settled=True)
            for step in steps:
                await world.run(step)
                world.check()
            await world.finish()

    settings_ = CloudSettings(
        data_dir=tmp_path / "data",
        database_url=_database(database_url, tmp_path, next(_examples)),
        broker_url="mqtt://cloud:secret@broker.example:1883",
        refresh_interval_s=3600,
    )
    asyncio.run(story(settings_))
