"""Tables: subscriptions, orders, transactions, invoices, refunds and the notification outbox."""

from __future__ import annotations

__all__: list[str] = []
