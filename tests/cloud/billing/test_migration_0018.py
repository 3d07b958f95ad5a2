"""Migration 0018 on existing data: order lines made before it become one unit of their
amount (quantity 1, unit price = amount); SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cloud.billing.rules import line_amount
from cloud.database import upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_lines_before_0018_become_one_unit_of_their_amount(fresh_url: str) -> None:
    engine = create_engine(fresh_url)
    try:
        upgrade(engine, "0017")
        with engine.begin() as connection:  # an order as 0017 stored it
            connection.execute(
                text("INSERT INTO installations (id, name, created_at) VALUES ('i1', 'Shop', 0)")
            )
            connection.execute(
                text(
                    "INSERT INTO orders (id, number, kind, installation_id, status, pay_with, "
                    "amount_cents, currency, idempotency_key, notify, created_at, updated_at) "
                    "VALUES (1, 'EN-2026-000001', 'purchase', 'i1', 'Succeed', 'card', 5150, "
                    "'EUR', 'k1', '[]', 0, 0)"
                )
            )
            for code, amount in (("TSF16100", 4_900), ("TSF99999", 250)):
                connection.execute(
                    text(
                        "INSERT INTO order_lines (order_id, product_code, description, months, "
                        "amount_cents) VALUES (1, :code, 'Old line', 12, :amount)"
                    ),
                    {"code": code, "amount": amount},
                )
        upgrade(engine)
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT product_code, quantity, unit_cents, amount_cents FROM order_lines "
                    "ORDER BY id"
                )
            ).all()
            hidden = connection.execute(text("SELECT hidden_at FROM orders")).scalar_one()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("TSF16100", 1, 4_900, 4_900), ("TSF99999", 1, 250, 250)]
    for _, quantity, unit, amount in rows:
        assert line_amount(quantity=quantity, unit_cents=unit, amount_cents=amount) == amount
    assert hidden is None  # nothing hidden by the migration
