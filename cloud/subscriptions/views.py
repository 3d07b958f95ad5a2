"""What the API shows of a subscription, and of a request that changed one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloud.subscriptions import queries as rows
from cloud.subscriptions.rules.catalogue import Product
from cloud.subscriptions.rules.lifecycle import NextRenewal, status_text
from cloud.subscriptions.tables import SubscriptionRow

__all__ = [
    "ExpiringLine",
    "OfficeRoster",
    "PurchaseResult",
    "Quote",
    "SubscriptionLine",
    "subscription_view",
]


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    """A subscription after a request, the order behind it and what is due now."""

    subscription: dict[str, Any]
    order_id: int | None = None
    order_status: str | None = None
    due_now_cents: int = 0


def subscription_view(row: SubscriptionRow) -> dict[str, Any]:
    """What the API shows of a subscription."""
    sub = rows.load(row)
    return {
        "id": row.id,
        "installation_id": row.installation_id,
        "product": row.product_code,
        "service": row.service,
        "scope": row.scope,
        "device_id": row.scope.removeprefix("device:") if row.scope.startswith("device:") else None,
        "user_ref": row.scope.removeprefix("user:") if row.scope.startswith("user:") else None,
        "purchaser_id": row.purchaser_id,
        "pay_with": row.pay_with,
        "card_last4": row.card_token[-4:] if row.pay_with == "card" and row.card_token else None,
        "status": row.status.value,
        "status_text": status_text(sub),
        "term_months": row.term_months,
        "start": row.starts_at,
        "end": row.ends_at,
        "auto_renew": row.auto_renew,
        "awaiting_payment": row.awaiting_payment,
        "next_notice_at": row.next_notice_at,
        "next_charge_at": row.next_charge_at,
        "next_retry_at": row.next_retry_at,
        "version": row.version,
    }


@dataclass(frozen=True, slots=True)
class SubscriptionLine:
    """A subscription as a page shows it: the API's view, the product's name, the status
    as one word (:func:`~cloud.subscriptions.rules.lifecycle.status_kind`), who pays
    (``mine``: the viewer) and, when it renews on its own, its next renewal."""

    view: dict[str, Any]
    name: str
    state: str
    purchaser_name: str
    purchaser_email: str
    mine: bool
    next_renewal: NextRenewal | None


@dataclass(frozen=True, slots=True)
class Quote:
    """What a change would cost before it is made: the line, the renewal it leads to,
    and how the viewer pays (``card``, ``invoice``)."""

    line: SubscriptionLine
    renewal: NextRenewal
    pay_with: str


@dataclass(frozen=True, slots=True)
class ExpiringLine:
    """A subscription ending soon, with its installation's name (follow-up lists)."""

    line: SubscriptionLine
    installation_name: str


@dataclass(frozen=True, slots=True)
class OfficeRoster:
    """An installation's users (or departments) of a per-user product: a line each, those
    still running first, by name; ``live`` of them count against ``maximum`` (every one
    not expired, ended-at-period-end ones until that end)."""

    product: Product
    lines: list[SubscriptionLine]
    live: int
    maximum: int

    @property
    def room(self) -> int:
        """How many more users may be added now."""
        return max(0, self.maximum - self.live)
