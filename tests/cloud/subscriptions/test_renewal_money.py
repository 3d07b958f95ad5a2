"""Money conservation over consolidated renewals (must-show 4, the renewals half), through the
running app on SQLite and PostgreSQL.

For any sequence of declines, working cards, days passing, voids and refunds of whole orders
and refunds of single lines, per purchaser: the money kept (charges that succeeded, less
voids and refunds that succeeded) equals the money applied (lines whose subscription got
what they paid for) plus the money owed back (lines that could not be delivered, refund
pending) — and, once the refunds went out, owed is zero. Each subscription's end is its
purchase's end plus one term per applied renewal: what was kept is what was delivered.

Shape: a scenario is a list of actions (tuples) applied by :class:`Purchaser` and checked by
:func:`check_money` after each; the plan-change half (test_money_conservation.py) adds its
actions (change plan, prorate) to the same list and the same check, so the two become one
walk after the merge.
"""

from __future__ import annotations

from collections import defaultdict

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.billing.tables import CreditRow, OrderLineRow, OrderRow, TransactionRow
from cloud.devices import memberships
from cloud.subscriptions.rules.calendar import add_months, month_start
from cloud.subscriptions.tables import Outcome, SubscriptionOrderRow, SubscriptionRow
from tests.cloud.harness import DAY, Cloud, client, new_company, new_user, user_api_key

BUY = "/api/v1/subscriptions"
PRODUCTS = ("TSF16100", "TSF12125")
YEAR_DAYS = 366

Action = tuple[str, int]
ACTIONS = st.one_of(
    st.tuples(st.just("days"), st.integers(1, 12)),  # time passes; the renewal job runs
    st.tuples(st.just("card_ok"), st.integers(0, 5)),  # one subscription gets a working card
    st.tuples(st.just("card_declined"), st.integers(0, 5)),
    st.tuples(st.just("refund_line"), st.integers(0, 40)),  # one line of one renewal order
    st.tuples(st.just("void_order"), st.integers(0, 10)),  # void or refund a whole order
    st.tuples(st.just("refund_order"), st.integers(0, 10)),
    st.tuples(st.just("credit"), st.integers(1, 150)),  # billing staff grant n x 1.00 credit
)


class Purchaser:
    """One card purchaser with a few subscriptions (two services on each installation), on the
    running app; a new one per example, each later in time than the last."""

    def __init__(self, cloud: Cloud, si: httpx.AsyncClient, uid: int) -> None:
        self.cloud, self.si, self.uid = cloud, si, uid
        self.subs: list[str] = []

    async def renewals(self) -> None:
        [job] = [j for j in self.cloud.state.jobs.jobs if j.name == "subscription-renewals"]
        await job.run_once()

    def _orders(self) -> list[OrderRow]:
        with self.cloud.state.store.transaction() as tx:
            query = select(OrderRow).where(OrderRow.buyer_user_id == self.uid)
            return list(tx.scalars(query.order_by(OrderRow.id)))

    async def act(self, action: Action) -> None:
        kind, n = action
        http = self.cloud.http
        if kind == "days":
            self.cloud.clock.advance(n * DAY)
            await self.renewals()
            return
        if kind == "credit":
            r = await http.post(
                f"/api/v1/customers/{self.uid}/credit",
                json={"amount_cents": n * 100, "reason": "goodwill"},
            )
            assert r.status_code == 200, r.text
            return
        if kind in ("card_ok", "card_declined"):
            sub = self.subs[n % len(self.subs)]
            card = CARD_OK if kind == "card_ok" else CARD_DECLINED
            r = await self.si.put(f"{BUY}/{sub}/card", json={"card_token": card})
            assert r.status_code == 200, r.text
            return
        orders = self._orders()
        if kind == "refund_line":
            renewals = [o for o in orders if o.kind == "renewal"]
            if not renewals:
                return
            order = renewals[n % len(renewals)]
            lines = (await http.get(f"/api/v1/orders/{order.id}")).json()["lines"]
            line = lines[(n // len(renewals)) % len(lines)]
            r = await http.post(f"/api/v1/orders/{order.id}/lines/{line['id']}/refund")
        else:
            order = orders[n % len(orders)]
            verb = "void" if kind == "void_order" else "refund"
            r = await http.post(f"/api/v1/orders/{order.id}/{verb}")
        assert r.status_code < 500, r.text  # refused (409/422) or done, never a crash


def check_money(cloud: Cloud, uid: int, *, bought_end: int, settled: bool) -> None:
    """Per purchaser: money in (card kept + credit consumed) == applied + owed (owed == 0
    once ``settled``); the credit balance is what was granted less what orders consume; each
    subscription's end is what its applied payments bought."""
    with cloud.state.store.transaction() as tx:
        orders = {
            o.id: o for o in tx.scalars(select(OrderRow).where(OrderRow.buyer_user_id == uid))
        }
        kept = 0
        for t in tx.scalars(select(TransactionRow).where(TransactionRow.order_id.in_(orders))):
            if t.status != "Succeed":
                continue
            kept += t.amount_cents if t.type == "charge" else -t.amount_cents
        lines = {
            line.id: line
            for line in tx.scalars(select(OrderLineRow).where(OrderLineRow.order_id.in_(orders)))
        }
        links = list(
            tx.scalars(
                select(SubscriptionOrderRow).where(SubscriptionOrderRow.order_id.in_(orders))
            )
        )
        applied = owed = 0
        renewed: dict[str, int] = defaultdict(int)
        bought: set[str] = set()
        for link in links:
            assert link.line_id is not None
            amount = lines[link.line_id].amount_cents
            if orders[link.order_id].pay_with != "card":
                continue
            if link.outcome == Outcome.APPLIED:
                applied += amount
                if link.kind == "purchase":
                    bought.add(link.subscription_id)
                else:
                    renewed[link.subscription_id] += link.months
            elif link.outcome == Outcome.REFUND:
                owed += amount
        ledger = list(tx.scalars(select(CreditRow).where(CreditRow.user_id == uid)))
        consumed = -sum(e.amount_cents for e in ledger if e.entry != "grant")
        granted = sum(e.amount_cents for e in ledger if e.entry == "grant")
        assert consumed >= 0 and granted - consumed >= 0  # never more credit used than given
        assert kept + consumed == applied + owed, (kept, consumed, applied, owed)
        if settled:
            assert owed == 0
        for sub_id in bought:  # a paid purchase: its end is what its applied renewals bought
            row = tx.get(SubscriptionRow, sub_id)
            assert row is not None
            assert row.ends_at == add_months(bought_end, renewed[sub_id]), sub_id


async def _scenario(cloud: Cloud, installations: int, actions: list[Action]) -> None:
    # a fresh purchaser, later than every earlier example's: buy on the last day of a month
    later = month_start(cloud.clock.now + 3 * YEAR_DAYS * DAY)
    cloud.clock.now = later - DAY
    company = new_company(cloud.app, name=f"SI {later}", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    async with client(cloud.app, user_api_key(cloud.app, uid)) as si:
        buyer = Purchaser(cloud, si, uid)
        for i in range(installations):
            inst = await cloud.installation(f"Shop {uid}-{i}")
            with cloud.state.store.transaction() as tx:
                memberships.add_integrator(tx, inst, company, actor="t", now=0)
            for code in PRODUCTS:
                r = await si.post(
                    BUY, json={"installation_id": inst, "product": code, "card_token": CARD_OK}
                )
                assert r.status_code == 201, r.text
                buyer.subs.append(r.json()["subscription"]["id"])
        end = (await si.get(f"{BUY}/{buyer.subs[0]}")).json()["end"]
        cloud.clock.now = add_months(end, -1) - DAY  # the day before the charge day
        check_money(cloud, uid, bought_end=end, settled=True)
        for action in actions:
            await buyer.act(action)
            check_money(cloud, uid, bought_end=end, settled=False)
        cloud.clock.advance(2 * DAY)  # charges settle; refunds due go out
        await buyer.renewals()
        await buyer.renewals()
        check_money(cloud, uid, bought_end=end, settled=True)


@settings(
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(installations=st.integers(1, 3), actions=st.lists(ACTIONS, max_size=10))
@example(installations=2, actions=[("days", 1), ("refund_line", 1), ("days", 2)])
@example(
    installations=2,
    actions=[
        ("card_declined", 0),
        ("card_declined", 2),
        ("days", 1),
        ("card_ok", 0),
        ("card_ok", 2),
        ("days", 3),
        ("days", 2),
        ("refund_line", 0),
        ("void_order", 4),
    ],
)
@example(installations=1, actions=[("days", 1), ("void_order", 2), ("days", 1)])
@example(installations=1, actions=[("days", 1), ("days", 2), ("refund_order", 0)])
@example(
    installations=2,
    actions=[("credit", 130), ("days", 1), ("days", 2), ("refund_line", 1), ("refund_line", 2)],
)
@example(
    installations=1,
    actions=[
        ("credit", 50),
        ("card_declined", 0),
        ("card_declined", 1),
        ("days", 1),
        ("card_ok", 0),
        ("card_ok", 1),
        ("days", 3),
        ("days", 2),
        ("void_order", 3),
    ],
)
async def test_money_kept_is_money_applied_or_refunded(
    cloud: Cloud, installations: int, actions: list[Action]
) -> None:
    await _scenario(cloud, installations, actions)
