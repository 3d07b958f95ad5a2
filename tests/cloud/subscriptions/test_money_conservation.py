"""Money conservation over plan changes (through the running app, SQLite and PostgreSQL).

A hypothesis-chosen sequence of steps — plan changes up and down (paid, declined),
voids, full and partial refunds of any order, settling charges, time passing with
the jobs running (renewal charges, reconciliation) — and after every step, per
purchaser::

    captured == applied + given back

*captured*: the purchaser's succeeded charges (billing's transactions);
*given back*: the succeeded voids and refunds of those charges (billing's
transactions); *applied*: computed from the subscriptions' side, never from the
transactions: for each order whose link's outcome is ``applied``, what it paid
for that the service still delivers — a purchase or renewal its order amount less
the downgrades refunded from it (:class:`~cloud.subscriptions.tables.PlanChangeRow`)
less the goodwill refunds this test made on it, an upgrade its prorated difference
less the goodwill refunds; orders whose outcome is ``refunded``, ``reversed`` or
``cancelled`` apply nothing. A payment that can be delivered nowhere has
outcome ``refund`` only until the renewal job sends its refund.

Also after every step: every order with money captured has a settled outcome
(callbacks ran), and each active camera plan's grant carries that plan's parameters.

To add a step (consolidated renewals, credits): add a member to ``_Step``'s union,
its strategy to ``_steps`` and its case to :meth:`_World.run`; the invariants stay.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cloud import create_app
from cloud.billing.payments import CARD_DECLINED, CARD_OK, CARD_SETTLED
from cloud.billing.rules import OrderStatus, TxnType
from cloud.billing.tables import OrderRow, TransactionRow
from cloud.devices import memberships
from cloud.devices import queries as device_queries
from cloud.settings import CloudSettings
from cloud.subscriptions.rules.catalogue import product
from cloud.subscriptions.tables import (
    Outcome,
    PlanChangeRow,
    SubscriptionOrderRow,
    SubscriptionRow,
)
from cloud.testing import AccountsSimulator, PublisherSimulator
from tests.cloud.harness import (
    DAY,
    FakeClock,
    client,
    new_api_key,
    new_company,
    new_user,
    running,
    user_api_key,
)
from tests.database_fixtures import fresh_database

# each example runs the app on a database of its own: minutes on a shared machine
pytestmark = pytest.mark.timeout(900)

PLANS = ("VR-720P-07D", "VR-1080P-07D", "VR-720P-30D", "VR-4K-30D", "VR-4K-90D")
START = 1_769_860_800  # 2026-01-31T12:00:00Z
WHO = (0, 1)  # purchaser A pays with a card that settles at once, B with one that does not
CARDS = {"ok": CARD_OK, "settled": CARD_SETTLED, "declined": CARD_DECLINED}


@dataclass(frozen=True)
class Change:
    who: int
    to: str
    card: str


@dataclass(frozen=True)
class Void:
    who: int
    pick: int  # which of the purchaser's paid orders (modulo how many)


@dataclass(frozen=True)
class Refund:
    who: int
    pick: int
    part: int  # 0: all that is left; 1-99: that percent of the order (a goodwill gesture)


@dataclass(frozen=True)
class Settle:
    pass


@dataclass(frozen=True)
class Wait:
    days: int


_Step = Change | Void | Refund | Settle | Wait

_steps = st.one_of(
    st.builds(Change, st.sampled_from(WHO), st.sampled_from(PLANS), st.sampled_from(list(CARDS))),
    st.builds(Void, st.sampled_from(WHO), st.integers(0, 5)),
    st.builds(Refund, st.sampled_from(WHO), st.integers(0, 5), st.integers(0, 99)),
    st.just(Settle()),
    st.builds(Wait, st.integers(1, 120)),
)


@dataclass
class _World:
    """The running app, two purchasers each with one camera plan, and the test's own record
    of the goodwill refunds it made (order id -> cents)."""

    app: object
    admin: object
    clock: FakeClock
    buyers: list[int] = field(default_factory=list)
    partners: list[object] = field(default_factory=list)
    subs: list[str] = field(default_factory=list)
    goodwill: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def state(self):  # noqa: ANN201 (the app's CloudState)
        return self.app.state.cloud  # type: ignore[attr-defined]

    async def run(self, step: _Step) -> None:
        match step:
            case Change(who=who, to=to, card=card):
                r = await self.partners[who].post(  # type: ignore[attr-defined]
                    f"/api/v1/subscriptions/{self.subs[who]}/plan-change",
                    json={"product": to, "card_token": CARDS[card]},
                )
                assert r.status_code in (200, 402, 409), r.text
            case Void(who=who, pick=pick):
                order = self._paid_order(who, pick)
                if order is not None:
                    r = await self.admin.post(f"/api/v1/orders/{order}/void")  # type: ignore[attr-defined]
                    assert r.status_code in (200, 409), r.text
            case Refund(who=who, pick=pick, part=part):
                order = self._paid_order(who, pick)
                if order is None:
                    return
                amount = None
                if part:
                    amount = max(1, self._amount(order) * part // 100)
                r = await self.admin.post(  # type: ignore[attr-defined]
                    f"/api/v1/orders/{order}/refund",
                    json=None if amount is None else {"amount_cents": amount},
                )
                assert r.status_code in (200, 409, 422), r.text
                if r.status_code == 200 and amount is not None and not self._reversed(order):
                    self.goodwill[order] += amount
            case Settle():
                await self.state.billing.provider.settle_all()
            case Wait(days=days):
                self.clock.advance(days * DAY)
                await self.state.jobs.run_once()

    def _paid_order(self, who: int, pick: int) -> int | None:
        with self.state.store.transaction() as tx:
            ids = tx.scalars(
                select(OrderRow.id)
                .where(
                    OrderRow.buyer_user_id == self.buyers[who],
                    OrderRow.status == OrderStatus.SUCCEED,
                )
                .order_by(OrderRow.id)
            ).all()
        return ids[pick % len(ids)] if ids else None

    def _amount(self, order_id: int) -> int:
        with self.state.store.transaction() as tx:
            row = tx.get(OrderRow, order_id)
            assert row is not None
            return row.amount_cents

    def _reversed(self, order_id: int) -> bool:
        with self.state.store.transaction() as tx:
            link = tx.get(SubscriptionOrderRow, order_id)
            return link is not None and link.outcome != Outcome.APPLIED

    def check(self) -> None:
        """The invariants of the module docstring."""
        with self.state.store.transaction() as tx:
            captured: dict[int, int] = defaultdict(int)
            given_back: dict[int, int] = defaultdict(int)
            applied: dict[int, int] = defaultdict(int)
            for order in tx.scalars(select(OrderRow).order_by(OrderRow.id)):
                buyer = order.buyer_user_id
                assert buyer is not None
                txns = tx.scalars(
                    select(TransactionRow).where(TransactionRow.order_id == order.id)
                ).all()
                ok = [t for t in txns if t.status == OrderStatus.SUCCEED]
                charged = sum(t.amount_cents for t in ok if t.type == TxnType.CHARGE)
                back = sum(t.amount_cents for t in ok if t.type != TxnType.CHARGE)
                captured[buyer] += charged
                given_back[buyer] += back
                link = tx.get(SubscriptionOrderRow, order.id)
                assert link is not None, f"order {order.number} pays for nothing"
                if charged and link.outcome is None:
                    raise AssertionError(f"order {order.number} was paid and never settled")
                if link.outcome == Outcome.REFUND:
                    continue  # owed: the renewal job sends it (checked at the end)
                if link.outcome in (Outcome.REFUNDED, Outcome.REVERSED, Outcome.CANCELLED):
                    assert back == charged, (order.number, link.outcome, charged, back)
                    continue
                if link.outcome != Outcome.APPLIED:
                    continue  # not paid (yet)
                changes = tx.scalars(
                    select(PlanChangeRow).where(PlanChangeRow.order_id == order.id)
                ).all()
                if link.kind == "plan_change":
                    [change] = changes
                    worth = change.difference_cents
                else:
                    credited = [c for c in changes if c.difference_cents < 0]
                    worth = order.amount_cents + sum(c.difference_cents for c in credited)
                applied[buyer] += worth - self.goodwill.get(order.id, 0)
            for buyer in set(captured) | set(given_back):
                assert captured[buyer] == applied[buyer] + given_back[buyer], (
                    buyer,
                    captured[buyer],
                    applied[buyer],
                    given_back[buyer],
                )
            # what the devices enforce is the plan the subscription is on
            for sub in tx.scalars(select(SubscriptionRow)):
                if sub.status != "active":
                    continue
                [grant] = [
                    g
                    for g in device_queries.grants_of(tx, sub.installation_id)
                    if g.scope == sub.scope and g.feature == sub.service
                ]
                assert grant.params == dict(product(sub.product_code).params)

    async def finish(self) -> None:
        """Give back whatever is still owed, then nothing may be left owing."""
        await self.state.subscriptions.settlement.refund_due()
        with self.state.store.transaction() as tx:
            owed = tx.scalars(
                select(SubscriptionOrderRow.order_id).where(
                    SubscriptionOrderRow.outcome == Outcome.REFUND
                )
            ).all()
            assert owed == []
        self.check()


@asynccontextmanager
async def _world(settings_: CloudSettings) -> AsyncIterator[_World]:
    clock = FakeClock(START)
    app = create_app(
        settings_, publisher=PublisherSimulator(), accounts=AccountsSimulator(), clock=clock
    )
    async with running(app):
        async with client(app, new_api_key(app)) as admin:
            world = _World(app, admin, clock)
            inst = (await admin.post("/api/v1/installations", json={"name": "Site"})).json()["id"]
            for who, card in zip(WHO, (CARD_SETTLED, CARD_OK), strict=True):
                body = {"installation_id": inst, "kind": "camera"}
                cam = (await admin.post("/api/v1/devices", json=body)).json()["device_id"]
                company = new_company(app, name=f"SI {who}", payment_type="card")
                uid = new_user(app, role="partner", company_id=company)
                with world.state.store.transaction() as tx:
                    memberships.add_integrator(tx, inst, company, actor="t", now=clock())
                partner = client(app, user_api_key(app, uid))
                await partner.__aenter__()
                r = await partner.post(
                    "/api/v1/subscriptions",
                    json={
                        "installation_id": inst,
                        "product": "VR-1080P-07D",
                        "device_id": cam,
                        "card_token": card,
                    },
                )
                assert r.status_code == 201, r.text
                world.buyers.append(uid)
                world.partners.append(partner)
                world.subs.append(r.json()["subscription"]["id"])
            try:
                yield world
            finally:
                for partner in world.partners:
                    await partner.__aexit__(None, None, None)  # type: ignore[attr-defined]


@contextmanager
def _database(database_url: str, tmp_path: Path, n: int) -> Iterator[str]:
    """A database of its own for each example: a new SQLite file, or a new PostgreSQL
    database (dropped with whatever connections the example's app left)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / f'example-{n}.db'}"
        return
    with fresh_database() as url:
        yield url


_examples = iter(range(1_000_000))


@settings(
    derandomize=True,
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(_steps, max_size=8))
# the stories the must-show names, kept explicit: an upgrade refunded in full, a downgrade
# then the rest refunded, a declined upgrade, a void of an unsettled upgrade
@example([Change(0, "VR-4K-30D", "settled"), Refund(0, 1, 0)])
@example([Wait(100), Change(0, "VR-720P-07D", "ok"), Refund(0, 0, 0)])
@example([Change(1, "VR-4K-90D", "declined"), Wait(30)])
@example([Change(1, "VR-4K-30D", "ok"), Void(1, 1), Change(1, "VR-720P-07D", "ok")])
@example([Refund(0, 0, 50), Change(0, "VR-720P-07D", "ok"), Refund(0, 0, 0)])
def test_money_in_equals_money_applied_or_given_back(
    database_url: str, tmp_path: Path, steps: list[_Step]
) -> None:
    async def story(settings_: CloudSettings) -> None:
        async with _world(settings_) as world:
            world.check()
            for step in steps:
                await world.run(step)
                world.check()
            await world.finish()

    with _database(database_url, tmp_path, next(_examples)) as url:
        settings_ = CloudSettings(
            data_dir=tmp_path / "data",
            database_url=url,
            broker_url="mqtt://cloud:secret@broker.example:1883",
            refresh_interval_s=3600,
        )
        asyncio.run(story(settings_))
