"""Every route module keeps the route shape: it calls services, it does not persist or map errors.

STYLE.md: a route calls one service method and returns a schema; no SQL in
routes; one exception handler turns the error tree into HTTP. This walks the
source of every ``cloud/<slice>/routes.py`` and ``cloud/<slice>/routes/*.py``
and fails on what would break that: SQLAlchemy, a ``.transaction(`` call, a
slice's ``tables`` / ``queries`` / ``repository`` module or the database
imported, or an error mapped by hand (``HTTPException``, ``http_error``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

CLOUD = Path(__file__).resolve().parents[2] / "cloud"
_PERSISTENCE_MODULES = {"tables", "queries", "repository"}
_FORBIDDEN_MODULES = ("sqlalchemy", "cloud.database")
_FORBIDDEN_NAMES = {"HTTPException", "http_error"}


def route_modules() -> list[Path]:
    found = sorted(CLOUD.glob("*/routes.py")) + sorted(CLOUD.glob("*/routes/*.py"))
    return [p for p in found if p.name != "__init__.py"]


def _imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every module (and ``from m import name``: ``m.name``) the module imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def violations(source: str) -> list[str]:
    """What in ``source`` breaks the route shape, one line each (empty: nothing)."""
    tree = ast.parse(source)
    found = []
    for line, module in _imported(tree):
        parts = module.split(".")
        if any(module == m or module.startswith(m + ".") for m in _FORBIDDEN_MODULES):
            found.append(f"line {line}: imports {module}")
        elif parts[0] == "cloud" and _PERSISTENCE_MODULES.intersection(parts[1:]):
            found.append(f"line {line}: imports {module} (persistence belongs in a service)")
        elif parts[-1] in _FORBIDDEN_NAMES:
            found.append(f"line {line}: imports {parts[-1]} (the app's handler maps errors)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("transaction", "reading"):
                found.append(f"line {node.lineno}: calls .{func.attr}()")
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in _FORBIDDEN_NAMES:
                found.append(f"line {node.lineno}: uses {name} (the app's handler maps errors)")
    return sorted(set(found))


def test_there_are_route_modules_to_walk() -> None:
    names = {p.relative_to(CLOUD).as_posix() for p in route_modules()}
    assert {"accounts/routes/accounts.py", "health/routes.py", "tickets/routes.py"} <= names


@pytest.mark.parametrize("path", route_modules(), ids=lambda p: p.relative_to(CLOUD).as_posix())
def test_route_module_has_no_persistence_and_maps_no_error(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sqlalchemy\n", "imports sqlalchemy"),
        ("from sqlalchemy.orm import Session\n", "imports sqlalchemy.orm"),
        ("from cloud.database import Store\n", "imports cloud.database"),
        ("from cloud.devices import queries\n", "imports cloud.devices.queries"),
        ("from cloud.health.tables import HealthStateRow\n", "imports cloud.health.tables"),
        ("from cloud.billing import queries as repo\n", "imports cloud.billing.queries"),
        ("def f(store):\n    with store.transaction() as tx:\n        pass\n", ".transaction()"),
        ("def f(store):\n    with store.reading() as tx:\n        pass\n", ".reading()"),
        ("from fastapi import HTTPException\n", "imports HTTPException"),
        ("from cloud.http.errors import http_error\n", "imports http_error"),
        ("import fastapi\nraise fastapi.HTTPException(404)\n", "uses HTTPException"),
    ],
)
def test_the_walk_finds_each_kind_of_violation(source: str, expected: str) -> None:
    assert any(expected in v for v in violations(source)), violations(source)


def test_a_route_that_calls_its_service_passes() -> None:
    source = (
        "from cloud.accounts.deps import AccountsDep\n"
        "from cloud.accounts.schemas import UserOut\n"
        "def get_user(service: AccountsDep, user_id: int) -> UserOut:\n"
        "    return service.user(user_id)\n"
    )
    assert violations(source) == []
