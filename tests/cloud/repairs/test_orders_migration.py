"""Revision 0023: repair orders get their own kind, on SQLite and PostgreSQL, up and down."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from cloud.database import Store, downgrade, upgrade

_ORDER = (
    "INSERT INTO orders (id, number, kind, installation_id, status, pay_with, amount_cents, "
    "currency, idempotency_key, notify, created_at, updated_at) VALUES (:id, :number, :kind, "
    "'inst-1', 'Succeed', 'card', 100, 'EUR', :number, '[]', 0, 0)"
)
_LINE = (
    "INSERT INTO order_lines (order_id, product_code, description, months, amount_cents, "
    "quantity, unit_cents) VALUES (:id, :product, 'x', 0, 100, 1, 100)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    opened = Store.open(url)  # at the head
    request.addfinalizer(opened.close)
    return opened


def _kinds(store: Store) -> dict[int, str]:
    with store.engine.connect() as connection:
        return dict(connection.execute(text("SELECT id, kind FROM orders ORDER BY id")).all())


def _add_order(store: Store, order_id: int, kind: str, product: str) -> None:
    with store.engine.begin() as connection:
        connection.execute(text(_ORDER), {"id": order_id, "number": f"N{order_id}", "kind": kind})
        connection.execute(text(_LINE), {"id": order_id, "product": product})


def test_repair_purchases_become_repair_orders_and_back(store: Store) -> None:
    downgrade(store.engine, "0022")
    with store.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO installations (id, name, created_at) VALUES ('inst-1', 'Home', 0)")
        )
    with pytest.raises(IntegrityError):  # before 0023 the CHECK refuses the kind
        _add_order(store, 9, "repair", "REPAIR")
    _add_order(store, 1, "purchase", "REPAIR")
    _add_order(store, 2, "purchase", "TSF16100")
    _add_order(store, 3, "renewal", "TSF16100")

    upgrade(store.engine, "0023")
    assert _kinds(store) == {1: "repair", 2: "purchase", 3: "renewal"}
    with store.engine.connect() as connection:  # rebuilding orders keeps the rows of others
        assert connection.execute(text("SELECT COUNT(*) FROM order_lines")).scalar() == 3
    _add_order(store, 4, "repair", "REPAIR")  # the CHECK takes the new kind
    with pytest.raises(IntegrityError):
        _add_order(store, 5, "sideways", "REPAIR")

    downgrade(store.engine, "0022")
    assert _kinds(store) == {1: "purchase", 2: "purchase", 3: "renewal", 4: "purchase"}
    with pytest.raises(IntegrityError):
        _add_order(store, 6, "repair", "REPAIR")
    upgrade(store.engine)
    assert _kinds(store)[4] == "repair"
