"""Helpers of the billing tests: a store with an installation, the sandbox, the service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select

from cloud.accounts import users
from cloud.accounts.rules import Role
from cloud.accounts.tables import AuditRow
from cloud.billing.orders import Billing, OrderLine, OrderResult
from cloud.billing.payments import SandboxPaymentProvider
from cloud.billing.tables import OrderRow, TransactionRow
from cloud.database import Store
from cloud.devices import memberships
from cloud.devices import queries as device_queries
from tests.cloud.harness import FakeClock

__all__ = ["LINES", "Shop", "open_shop"]

LINES = (
    OrderLine("TSF16100", "Remote Services, 12 months", 12, 9_900),
    OrderLine("TSF12125", "Voice Control, 12 months", 12, 4_900),
)
TOTAL = sum(line.amount_cents for line in LINES)
PASSWORD = "correct horse battery staple"


@dataclass
class Shop:
    """One database with one installation, the sandbox provider and the billing service."""

    store: Store
    provider: SandboxPaymentProvider
    billing: Billing
    clock: FakeClock
    installation_id: str
    buyer: int = 0  # the installation's owner (owner@example.com)

    def add_user(self, email: str, role: Role = Role.OWNER) -> int:
        with self.store.transaction() as tx:
            row = users.create_user(
                tx,
                email=email,
                name=email.split("@")[0],
                password=PASSWORD,
                role=role,
                company_id=None,
                actor="system:tests",
                now=self.clock(),
            )
            if role is Role.OWNER:
                memberships.set_owner(
                    tx, self.installation_id, row.id, actor="system:tests", now=self.clock()
                )
            return row.id

    async def order(
        self,
        key: str,
        *,
        card: str | None = None,
        pay_with: str = "card",
        buyer: int = 0,
        kind: str = "purchase",
        lines: tuple[OrderLine, ...] = LINES,
    ) -> OrderResult:
        return await self.billing.place_order(
            kind=kind,
            buyer=buyer or self.buyer,
            installation_id=self.installation_id,
            lines=lines,
            pay_with=pay_with,
            card_token=card,
            idempotency_key=key,
            now=self.clock(),
        )

    def orders(self) -> list[OrderRow]:
        with self.store.transaction() as tx:
            return list(tx.scalars(select(OrderRow).order_by(OrderRow.id)))

    def transactions(self, order_id: int | None = None) -> list[TransactionRow]:
        with self.store.transaction() as tx:
            query = select(TransactionRow).order_by(TransactionRow.id)
            if order_id is not None:
                query = query.where(TransactionRow.order_id == order_id)
            return list(tx.scalars(query))

    def audit(self, order_id: int) -> list[tuple[str, dict | None, dict | None]]:
        with self.store.transaction() as tx:
            query = select(AuditRow).where(
                AuditRow.object_type == "order", AuditRow.object_id == str(order_id)
            )
            return [(r.action, r.before, r.after) for r in tx.scalars(query.order_by(AuditRow.id))]


@contextmanager
def open_shop(database_url: str, clock: FakeClock, **billing: object) -> Iterator[Shop]:
    """A :class:`Shop` on ``database_url`` (migrated), closed after the block."""
    with Store.open(database_url) as store:
        with store.transaction() as tx:
            device_queries.add_installation(
                tx, installation_id="inst_shop", name="Shop", now=clock()
            )
        provider = SandboxPaymentProvider(clock=clock)
        service = Billing(store, provider, **billing)  # type: ignore[arg-type]
        shop = Shop(store, provider, service, clock, "inst_shop")
        shop.buyer = shop.add_user("owner@example.com")
        yield shop
