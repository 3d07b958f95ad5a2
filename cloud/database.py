"""The cloud database: engine, migrations, the declarative base and transactions.

SQLite file or PostgreSQL (``postgresql+psycopg://``). Each feature keeps its
tables in its own ``tables`` module on :class:`Base`; :mod:`cloud.schema`
imports them all so that ``Base.metadata`` is the whole schema.

SQLite runs in WAL mode with foreign keys on and every transaction started
``BEGIN IMMEDIATE``, so two writers queue on the busy timeout instead of
failing on a lock upgrade. A read-only transaction (:meth:`Store.reading`)
starts deferred with ``PRAGMA query_only`` on, so it reads a WAL snapshot without
queueing behind a writer (an API key checked while the ingest commits a batch);
on PostgreSQL it is ``BEGIN READ ONLY``. Either way a write in it is refused.
PostgreSQL migrations take an advisory lock, so several workers starting at
once upgrade the schema once.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Connection, Engine, Enum, MetaData, Table, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

__all__ = [
    "MIGRATIONS_DIR",
    "Base",
    "Store",
    "downgrade",
    "enum_column",
    "executemany",
    "in_values",
    "insert_rows",
    "make_engine",
    "param_mark",
    "upgrade",
]

_log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x656E7469746C65  # "entitle": one advisory lock id for schema upgrades
_SQLITE_BUSY_MS = 10_000
_READ_ONLY = "entitle_read_only"  # execution option of Store.reading()'s engine


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")  # deferred: a snapshot, no write lock
            connection.exec_driver_sql("PRAGMA query_only = ON")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    def _writable_again(connection: Connection) -> None:
        # the pooled connection goes back to writers: query_only is per connection
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("PRAGMA query_only = OFF")

    event.listen(engine, "commit", _writable_again)
    event.listen(engine, "rollback", _writable_again)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` set up for our access pattern."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        _sqlite_setup(engine)
        return engine
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The connection is handed over directly: no URL (and no password) in the config.
    config.attributes["connection"] = connection
    return config


def _migrate(engine: Engine, revision: str, *, down: bool) -> None:
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # SQLite's own recipe for changing a table: foreign keys off *outside* the
            # transaction (batch mode drops and recreates a table, and a DROP would
            # cascade to or be refused by the rows that refer to it), checked before commit
            _driver_sql(connection, "PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                if not sqlite:
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK}
                    )
                step = command.downgrade if down else command.upgrade
                step(_alembic_config(connection), revision)
                if sqlite and (
                    broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                ):
                    raise RuntimeError(f"migration to {revision} breaks foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                _driver_sql(connection, "PRAGMA foreign_keys = ON")
    _log.info("database schema at %s (%s)", revision, engine.url.render_as_string())


def _driver_sql(connection: Connection, sql: str) -> None:
    """``sql`` on the DB-API connection as it is: no transaction begun around it."""
    connection.connection.driver_connection.execute(sql)  # type: ignore[union-attr]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (Alembic), in one transaction where supported."""
    _migrate(engine, revision, down=False)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema down to ``revision`` (``"base"`` drops every table)."""
    _migrate(engine, revision, down=True)


_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def enum_column(cls: type, name: str) -> Enum:
    # VARCHAR + CHECK rather than a native type: the same DDL on SQLite and
    # PostgreSQL, and adding a value later is a plain migration.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


_NAMED = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")


def executemany(session: Session, sql: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Plain DBAPI ``executemany`` of ``sql`` (``:name`` parameters) in the session's
    transaction; returns the rows affected (summed over ``rows``).

    For measured hot paths (a job's bulk writes): SQLAlchemy's per-row parameter
    processing costs more than the database's own work there. The caller
    passes what the driver takes: JSON dumped to text, enums as their values.
    """
    if not rows:
        return 0
    connection = session.connection()
    if connection.dialect.name == "postgresql":  # psycopg: pyformat
        sql = _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))
    cursor = connection.connection.cursor()
    try:
        cursor.executemany(sql, rows)
        return int(cursor.rowcount)
    finally:
        cursor.close()


def insert_rows(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *, tail: str = ""
) -> None:
    """INSERT ``rows`` into ``table`` in their order, ``tail`` after (an ``ON CONFLICT``
    clause naming columns as ``excluded.<name>``), in the session's transaction.

    Each row maps the same column names to what the driver takes (JSON dumped to
    text, enums as their values). On PostgreSQL, rows without ``tail`` go in by
    ``COPY … FROM STDIN`` (psycopg's copy, in the row order); with a ``tail``
    (COPY takes no ``ON CONFLICT``), one statement over one JSON document
    (``json_to_recordset``, each field typed as the table declares it, ``WITH
    ORDINALITY`` for the order). Measured on 1,000 audit rows: COPY 8 ms and 1.5 ms
    of Python, the JSON statement 19 ms and 4.8 ms; psycopg's ``executemany``
    spent more Python on each row than the whole renewal sweep's rule. SQLite
    gets the driver's ``executemany`` (in C).
    """
    if not rows:
        return
    connection = session.connection()
    quote = connection.dialect.identifier_preparer.quote
    names = list(rows[0])
    columns = ", ".join(quote(n) for n in names)
    if connection.dialect.name != "postgresql":
        marks = ", ".join(f":{n}" for n in names)
        executemany(session, f"INSERT INTO {table.name} ({columns}) VALUES ({marks}) {tail}", rows)
        return
    if not tail:
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:  # type: ignore[attr-defined]
            with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row[n] for n in names])
        return
    fields, values = [], []
    for name in names:
        column = table.c[name]
        if isinstance(column.type, JSON):  # dumped to text already: parsed as JSON here
            fields.append(f"{quote(name)} text")
            values.append(f"r.{quote(name)}::json")
        else:
            fields.append(f"{quote(name)} {column.type.compile(dialect=connection.dialect)}")
            values.append(f"r.{quote(name)}")
    connection.exec_driver_sql(
        f"INSERT INTO {table.name} ({columns}) SELECT {', '.join(values)} "
        f"FROM ROWS FROM (json_to_recordset(%s::json) AS ({', '.join(fields)})) "
        f"WITH ORDINALITY AS r({columns}, _n) ORDER BY r._n {tail}",
        (json.dumps(list(rows)),),
    )


def param_mark(connection: Connection) -> str:
    """A positional parameter in the driver's SQL (``exec_driver_sql``): ``%s`` on
    PostgreSQL, ``?`` on SQLite."""
    return "%s" if connection.dialect.name == "postgresql" else "?"


def in_values(connection: Connection, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """``IN (...)`` of ``values`` for the driver's SQL, and its parameters: ``= ANY(%s)``
    with one array on PostgreSQL (one parameter, one statement text however many values),
    ``IN (?, ?, ...)`` on SQLite (at most 32,766 parameters a statement)."""
    mark = param_mark(connection)
    if connection.dialect.name == "postgresql":
        return f"= ANY({mark})", (list(values),)
    return f"IN ({', '.join([mark] * len(values))})", tuple(values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class Store:
    """The cloud database: an engine, a session factory and the schema version."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        read_only = (
            {_READ_ONLY: True} if engine.dialect.name == "sqlite" else {"postgresql_readonly": True}
        )
        self._readers = sessionmaker(engine.execution_options(**read_only), expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to ``url`` and, by default, upgrade the schema to the newest revision."""
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on an exception.

        Every feature's reads and writes are functions taking this session
        (``queries.device(tx, device_id)``); rows stay readable after it ends
        (no lazy loading: the models have no relationships).
        """
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """One read-only transaction, for a request that only looks.

        It never waits for a writer (SQLite reads its WAL snapshot instead of
        queueing for ``BEGIN IMMEDIATE``) and any write in it fails
        (``sqlalchemy.exc.OperationalError`` on SQLite, ``InternalError`` on
        PostgreSQL): use :meth:`transaction` to change anything.
        """
        with self._readers.begin() as session:
            yield session

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
