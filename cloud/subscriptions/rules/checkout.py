"""Buying for several installations in one checkout (TTecomm): the items checked. Pure.

A checkout is all or nothing: every item is checked before any order exists, and
the first refusal refuses the whole checkout, naming the installation and why
(the refusal keeps its own type, so its HTTP status). One order follows, one line
per item naming its installation, one payment; each subscription is activated
when that payment arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloud.errors import N_, CloudError, InvalidRequest
from cloud.subscriptions.rules.catalogue import Product, product, term_price
from cloud.subscriptions.rules.lifecycle import purchase

__all__ = ["MAX_CHECKOUT_ITEMS", "CheckoutItem", "plan_checkout", "refused_for"]

MAX_CHECKOUT_ITEMS = 50


@dataclass(frozen=True, slots=True)
class CheckoutItem:
    """One service for one installation, as it will be bought."""

    installation_id: str
    product: Product
    term_months: int
    amount_cents: int


def refused_for(installation_id: str, exc: CloudError) -> CloudError:
    """``exc`` restated as a refusal of the whole checkout because of one installation
    (same type, so the same HTTP status)."""
    try:
        restated = type(exc)(
            N_("installation %(installation)s: %(reason)s; nothing was bought"),
            installation=installation_id,
            reason=exc.message % exc.params if exc.params else exc.message,
        )
    except TypeError:  # a class with its own signature: keep it as it is
        return exc
    return restated


def plan_checkout(
    items: Sequence[tuple[str, str, int | None]], *, now: int
) -> tuple[CheckoutItem, ...]:
    """The checked items of ``(installation_id, product_code, term_months)`` tuples.

    Raises:
        InvalidRequest: no items or too many, the same service twice for one
            installation; an unknown product or a term not offered (restated for its
            installation by :func:`refused_for`).
    """
    if not 0 < len(items) <= MAX_CHECKOUT_ITEMS:
        raise InvalidRequest(
            N_("a checkout has 1-%(most)s items, not %(count)s"),
            most=MAX_CHECKOUT_ITEMS,
            count=len(items),
        )
    seen: set[tuple[str, str]] = set()
    planned = []
    for installation_id, code, term_months in items:
        try:
            item = product(code)
            term = term_months or item.default_term_months
            purchase(
                sub_id="check",
                installation_id=installation_id,
                product=item,
                purchaser=0,
                term_months=term,
                now=now,
                paid=True,
            )
        except CloudError as exc:
            raise refused_for(installation_id, exc) from exc
        if (installation_id, item.feature) in seen:
            raise InvalidRequest(
                N_(
                    "installation %(installation)s has %(feature)s twice in this checkout; "
                    "nothing was bought"
                ),
                installation=installation_id,
                feature=item.feature,
            )
        seen.add((installation_id, item.feature))
        planned.append(CheckoutItem(installation_id, item, term, term_price(item, term)))
    return tuple(planned)
