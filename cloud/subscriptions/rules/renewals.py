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
from dataclasses import dataclass

from cloud.subscriptions.rules.lifecycle import Charge

__all__ = ["MAX_RENEWAL_LINES", "Due", "RenewalOrder", "consolidate"]

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
