"""Scratch databases for the benchmarks: a temp SQLite file, a throw-away PostgreSQL database.

Shared by ``bench_purchases.py`` and ``bench_expiry.py``; each also measures
the database's raw speed with :func:`raw_insert_rate` and :func:`raw_update_rate`
so its figures can be read against the floor of the same database.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, update
from sqlalchemy.engine import Engine

__all__ = ["PG_ADMIN", "raw_insert_rate", "raw_update_rate", "scratch_database"]

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"  # trust auth; CREATE/DROP run here


@contextmanager
def scratch_database(kind: str) -> Iterator[str]:
    """Yield the URL of an empty ``kind`` database ("sqlite" or "postgresql"); drop it after."""
    if kind == "sqlite":
        root = Path(tempfile.mkdtemp(prefix="entitle-bench-"))
        try:
            yield f"sqlite:///{root / 'cloud.db'}"
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}: sqlite or postgresql")
    name = f"entitle_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise RuntimeError(
            f"PostgreSQL not reachable at {PG_ADMIN} ({exc}): start it, or pass --databases sqlite"
        ) from exc
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scratch_table(engine: Engine) -> Table:
    meta = MetaData()
    table = Table(
        "bench_raw",
        meta,
        Column("id", Integer, primary_key=True),
        Column("name", String(64)),
        Column("at", BigInteger),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    return table


def raw_insert_rate(engine: Engine, *, rows: int) -> float:
    """Rows/s of one-row ``INSERT`` + ``COMMIT`` transactions: the floor under any write request."""
    table = _scratch_table(engine)
    try:
        start = time.perf_counter()
        for i in range(rows):
            with engine.begin() as connection:
                connection.execute(table.insert().values(id=i, name=f"row-{i}", at=i))
        return rows / (time.perf_counter() - start)
    finally:
        table.drop(engine)


def raw_update_rate(engine: Engine, *, rows: int, batch: int = 100) -> float:
    """Rows/s of single-row ``UPDATE``s committed ``batch`` at a time (the sweep's shape)."""
    table = _scratch_table(engine)
    try:
        with engine.begin() as connection:
            connection.execute(
                table.insert(), [{"id": i, "name": f"row-{i}", "at": 0} for i in range(rows)]
            )
        start = time.perf_counter()
        for first in range(0, rows, batch):
            with engine.begin() as connection:
                for i in range(first, min(rows, first + batch)):
                    connection.execute(update(table).where(table.c.id == i).values(at=1))
        return rows / (time.perf_counter() - start)
    finally:
        table.drop(engine)
