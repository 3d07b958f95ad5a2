"""What the API shows of a subscription, and of a request that changed one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloud.subscriptions import queries as rows
from cloud.subscriptions.rules.lifecycle import status_text
from cloud.subscriptions.tables import SubscriptionRow

__all__ = ["PurchaseResult", "subscription_view"]


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
