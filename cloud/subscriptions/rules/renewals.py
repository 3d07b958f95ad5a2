"""Consolidated renewals: which due charges become one order. Pure.

The one-year-to-end-of-month rule exists so that a purchaser "gets at most one
renewal invoice per month" (the vendor's manual). Every term ends at the first
second of a month, so the subscriptions of one purchaser whose terms end in
the same month share one ``end`` and one charge day (``end`` minus a month):
their renewal charges are one order, one line per subscription (the line
names its installation), one charge and one invoice.

Rule: due charges join one order when they have the same purchaser, the same
``end`` (the billing month), the same way of paying (card or invoice) and the
same card on file; within that, at most :data:`MAX_RENEWAL_LINES` lines an
order, listed by installation, then product (so the invoice reads per
installation, and the split is the same in every worker).
Everything else about a charge (its attempt, its key) stays the
subscription's own, so a decline applies to every line and they are retried
together, on the rule's retry day, as one order again.

The order's idempotency key is the single charge's own key when it is alone
(unchanged from one-order-per-subscription), else
``renewals:{buyer}:{end}:{digest of the sorted charge keys}``: the same charges
always make the same order, however many workers place it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cloud.errors import N_, InvalidRequest, InvalidTransition
from cloud.subscriptions.rules.calendar import add_months, iso, month_start, term_end
from cloud.subscriptions.rules.lifecycle import (
    Charge,
    GrantService,
    Status,
    Subscription,
    Transition,
    charge_in_flight,
)

__all__ = [
    "MAX_RENEWAL_LINES",
    "MAX_SHIFT_MONTHS",
    "BillingDateChange",
    "Due",
    "RenewalOrder",
    "billing_date_change",
    "consolidate",
    "force_bill",
]

MAX_SHIFT_MONTHS = 24  # a billing date moves by at most two years either way
MAX_RENEWAL_LINES = 200  # billing's MAX_LINES and an invoice's most lines


@dataclass(frozen=True, slots=True)
class Due:
    """A renewal charge the sweep decided on, with what placing its order needs."""

    sub_id: str
    installation_id: str
    product_code: str
    description: str
    pay_with: str
    card_token: str | None
    charge: Charge


@dataclass(frozen=True, slots=True)
class RenewalOrder:
    """One order of consolidated renewal charges: one line per item, one charge."""

    idempotency_key: str
    buyer: int
    end: int
    pay_with: str
    card_token: str | None
    items: tuple[Due, ...]

    @property
    def amount_cents(self) -> int:
        return sum(item.charge.amount_cents for item in self.items)


def _key(buyer: int, end: int, items: Sequence[Due]) -> str:
    if len(items) == 1:
        return items[0].charge.idempotency_key
    keys = "\n".join(sorted(item.charge.idempotency_key for item in items))
    return f"renewals:{buyer}:{end}:{hashlib.sha256(keys.encode()).hexdigest()[:40]}"


def consolidate(
    dues: Sequence[Due], *, max_lines: int = MAX_RENEWAL_LINES
) -> tuple[RenewalOrder, ...]:
    """The orders ``dues`` make (see the module docstring); every due is in exactly one."""
    if max_lines < 1:
        raise ValueError("max_lines must be at least 1")
    groups: dict[tuple[int, int, str, str | None], list[Due]] = defaultdict(list)
    for due in dues:
        groups[(due.charge.buyer, due.charge.end, due.pay_with, due.card_token)].append(due)
    orders = []
    for (buyer, end, pay_with, card), items in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3] or "")
    ):
        ordered = sorted(items, key=lambda d: (d.installation_id, d.product_code, d.sub_id))
        for first in range(0, len(ordered), max_lines):
            chunk = tuple(ordered[first : first + max_lines])
            orders.append(
                RenewalOrder(
                    idempotency_key=_key(buyer, end, chunk),
                    buyer=buyer,
                    end=end,
                    pay_with=pay_with,
                    card_token=card if pay_with == "card" else None,
                    items=chunk,
                )
            )
    return tuple(orders)


def force_bill(sub: Subscription, *, now: int) -> Transition:
    """Charge the current cycle now rather than on its charge day (an operator's order action).

    The current cycle is the renewal of the term ending at ``sub.end``. The charge is the
    one the renewal job would send on the charge day: same amount, same attempt and key
    form (``renewal:{sub}:{end}:{attempt}:{serial}``), marked in flight, so the job never
    sends it again, and its answer is applied as the scheduled charge's would be (paid: the
    end moves on by the term; declined: the rule's retries). Never twice for one cycle:
    once paid, the end is a whole term beyond what a purchase made now would run to, and
    that is refused.

    Raises:
        InvalidTransition: not active, not renewing, a charge in flight, or billed through
            a whole term ahead already.
    """
    if sub.status is not Status.ACTIVE or sub.awaiting_payment:
        raise InvalidTransition(N_("only an active subscription can be billed now"))
    if not sub.auto_renew:
        raise InvalidTransition(
            N_("the subscription does not renew: reactivate it before billing it")
        )
    if sub.charging is not None:
        raise InvalidTransition(
            N_("a renewal charge for the term ending %(end)s is being made already"),
            end=iso(sub.end),
        )
    if sub.end >= term_end(now, sub.term_months):
        raise InvalidTransition(
            N_("the subscription is paid through %(end)s already: nothing is due this cycle"),
            end=iso(sub.end),
        )
    billed = replace(
        sub,
        charging=sub.attempts,
        charge_sent_at=now,
        next_retry_at=None,
        charges_sent=sub.charges_sent + 1,
    )
    charge = charge_in_flight(billed)
    assert charge is not None
    return Transition(billed, (charge,), due_now_cents=charge.amount_cents)


@dataclass(frozen=True, slots=True)
class BillingDateChange:
    """A subscription's renewal date moved by ``months`` (+ later, - earlier).

    Later: the purchaser pays ``amount_cents`` now for the added months (the state
    changes when that payment is applied, as a renewal of ``months``). Earlier: the
    state is ``earlier`` at once (the end moved back, the grant with it) and the
    purchaser is credited ``amount_cents`` for the months given up.
    """

    months: int
    amount_cents: int
    earlier: Transition | None = None


def billing_date_change(sub: Subscription, *, new_end: int, now: int) -> BillingDateChange:
    """Move the renewal date (the end of the paid term) to ``new_end``, a month's first second.

    The rule for what the shifted period costs: every month added or given up is priced
    at the product's one-month price (``monthly_cents``), whatever the term; adding
    months is paid now, giving them up is credited to the purchaser (credit that pays
    the next renewals first). The new date must be after the current month (the month
    under way stays paid) and at most :data:`MAX_SHIFT_MONTHS` away. Renewal
    bookkeeping restarts for the new end (notice, attempts), so the next renewal is
    noticed and charged on the new date's schedule.

    Raises:
        InvalidRequest: not a month's first second, the same date, in or before the
            current month, or too far.
        InvalidTransition: not active, or a renewal charge is in flight.
    """
    if month_start(new_end) != new_end:
        raise InvalidRequest(
            N_("a renewal date is the first day of a month, not %(day)s"), day=iso(new_end)
        )
    if sub.status is not Status.ACTIVE or sub.awaiting_payment:
        raise InvalidTransition(N_("only an active subscription has a renewal date to move"))
    if sub.charging is not None:
        raise InvalidTransition(
            N_("a renewal charge for the term ending %(end)s is being made already"),
            end=iso(sub.end),
        )
    if new_end == sub.end:
        raise InvalidRequest(N_("the subscription renews on %(day)s already"), day=iso(new_end))
    if new_end <= add_months(month_start(now), 1):
        raise InvalidRequest(
            N_("a renewal date must be after the current month, not %(day)s"), day=iso(new_end)
        )
    months = _months_between(sub.end, new_end)
    if abs(months) > MAX_SHIFT_MONTHS:
        raise InvalidRequest(
            N_("a renewal date moves by at most %(most)s months"), most=MAX_SHIFT_MONTHS
        )
    amount = abs(months) * sub.product.monthly_cents
    if months > 0:
        return BillingDateChange(months, amount)
    moved = replace(
        sub,
        end=new_end,
        notice_for=None,
        attempts=0,
        charging=None,
        charge_sent_at=None,
        next_retry_at=None,
    )
    grant = GrantService(sub.product.feature, sub.product.params, new_end)
    return BillingDateChange(months, amount, Transition(moved, (grant,)))


def _months_between(start: int, end: int) -> int:
    """Whole months from one month start to another (negative when ``end`` is earlier)."""
    a, b = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    return (b.year * 12 + b.month) - (a.year * 12 + a.month)
