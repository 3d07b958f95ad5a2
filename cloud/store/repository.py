"""Queries and writes, grouped so that one change is one transaction.

``with store.transaction() as tx:`` commits on success and rolls back on any
exception. Rows returned stay readable after the transaction (no lazy
loading: the models have no relationships).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from cloud.domain import DeviceKind, Grant, GrantStatus, TokenState
from cloud.store.database import make_engine, upgrade
from cloud.store.models import ApiKeyRow, DeviceRow, GrantRow, InstallationRow, TokenRow

__all__ = ["Store", "Tx"]


class Tx:
    """The operations available inside one transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # installations ----------------------------------------------------------
    def add_installation(self, *, installation_id: str, name: str, now: int) -> InstallationRow:
        row = InstallationRow(id=installation_id, name=name, created_at=now)
        self.session.add(row)
        self.session.flush()
        return row

    def installation(self, installation_id: str, *, lock: bool = False) -> InstallationRow | None:
        query = select(InstallationRow).where(InstallationRow.id == installation_id)
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).one_or_none()

    def installations(self, *, limit: int, offset: int = 0) -> Sequence[InstallationRow]:
        query = select(InstallationRow).order_by(InstallationRow.created_at, InstallationRow.id)
        return self.session.scalars(query.limit(limit).offset(offset)).all()

    # devices ----------------------------------------------------------------
    def add_device(
        self,
        *,
        device_id: str,
        installation_id: str,
        kind: DeviceKind,
        password_hash: str,
        now: int,
    ) -> DeviceRow:
        row = DeviceRow(
            id=device_id,
            installation_id=installation_id,
            kind=kind,
            mqtt_password_hash=password_hash,
            created_at=now,
        )
        self.session.add(row)
        self.session.flush()
        return row

    def device(self, device_id: str, *, lock: bool = False) -> DeviceRow | None:
        query = select(DeviceRow).where(DeviceRow.id == device_id)
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).one_or_none()

    def devices(self, device_ids: Sequence[str], *, lock: bool = False) -> Sequence[DeviceRow]:
        """The devices with these ids that exist, locked in id order (no deadlock cycles)."""
        if not device_ids:
            return []
        query = select(DeviceRow).where(DeviceRow.id.in_(device_ids)).order_by(DeviceRow.id)
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).all()

    def devices_of(self, installation_id: str, *, lock: bool = False) -> Sequence[DeviceRow]:
        query = (
            select(DeviceRow)
            .where(DeviceRow.installation_id == installation_id)
            .order_by(DeviceRow.id)
        )
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).all()

    def count_devices(self, installation_id: str) -> int:
        query = (
            select(func.count())
            .select_from(DeviceRow)
            .where(DeviceRow.installation_id == installation_id)
        )
        return int(self.session.scalar(query) or 0)

    def device_ids(self) -> Sequence[str]:
        return self.session.scalars(select(DeviceRow.id).order_by(DeviceRow.id)).all()

    def delete_device(self, device_id: str) -> None:
        self.session.execute(delete(TokenRow).where(TokenRow.device_id == device_id))
        self.session.execute(delete(DeviceRow).where(DeviceRow.id == device_id))

    # grants -----------------------------------------------------------------
    def grants_of(self, installation_id: str) -> Sequence[GrantRow]:
        query = (
            select(GrantRow)
            .where(GrantRow.installation_id == installation_id)
            .order_by(GrantRow.feature)
        )
        return self.session.scalars(query).all()

    def active_grants(self, installation_id: str) -> list[Grant]:
        query = select(GrantRow).where(
            GrantRow.installation_id == installation_id,
            GrantRow.status == GrantStatus.ACTIVE,
        )
        return [
            Grant(feature=g.feature, until=g.valid_until, params=g.params, status=g.status)
            for g in self.session.scalars(query)
        ]

    def upsert_grant(
        self,
        *,
        installation_id: str,
        feature: str,
        until: int,
        params: dict[str, Any],
        source: str,
        now: int,
    ) -> GrantRow:
        """Create the grant or make the existing one active with these terms."""
        query = select(GrantRow).where(
            GrantRow.installation_id == installation_id, GrantRow.feature == feature
        )
        row = self.session.scalars(query.with_for_update()).one_or_none()
        if row is None:
            row = GrantRow(
                installation_id=installation_id,
                feature=feature,
                created_at=now,
            )
            self.session.add(row)
        row.params = dict(params)
        row.valid_until = until
        row.source = source
        row.status = GrantStatus.ACTIVE
        row.updated_at = now
        row.ended_at = None
        self.session.flush()
        return row

    def end_grant(
        self, *, installation_id: str, feature: str, status: GrantStatus, now: int
    ) -> GrantRow | None:
        """Mark an active grant revoked or ended; None if there is no active grant."""
        query = select(GrantRow).where(
            GrantRow.installation_id == installation_id,
            GrantRow.feature == feature,
            GrantRow.status == GrantStatus.ACTIVE,
        )
        row = self.session.scalars(query.with_for_update()).one_or_none()
        if row is None:
            return None
        row.status = status
        row.updated_at = now
        row.ended_at = now
        self.session.flush()
        return row

    # tokens -----------------------------------------------------------------
    def current_token(self, device_id: str) -> TokenRow | None:
        query = (
            select(TokenRow)
            .where(TokenRow.device_id == device_id)
            .order_by(TokenRow.id.desc())
            .limit(1)
        )
        return self.session.scalars(query).one_or_none()

    def current_tokens(self, device_ids: Sequence[str]) -> dict[str, TokenRow]:
        """The current token of each of these devices that has one."""
        if not device_ids:
            return {}
        latest = (
            select(func.max(TokenRow.id))
            .where(TokenRow.device_id.in_(device_ids))
            .group_by(TokenRow.device_id)
            .scalar_subquery()
        )
        rows = self.session.scalars(select(TokenRow).where(TokenRow.id.in_(latest)))
        return {row.device_id: row for row in rows}

    def add_tokens(self, rows: Sequence[TokenRow]) -> None:
        """Insert issued tokens; their ids are set on return."""
        self.session.add_all(rows)
        self.session.flush()

    def mark_published(self, token_ids: Sequence[int], *, now: int) -> None:
        if token_ids:
            self.session.execute(
                update(TokenRow)
                .where(TokenRow.id.in_(token_ids), TokenRow.published_at.is_(None))
                .values(published_at=now)
            )

    def refresh_candidates(
        self, *, now: int, refresh_before_s: int, epoch: int
    ) -> list[TokenState]:
        """Current tokens that may need work: a superset of what the job acts on."""
        current = select(func.max(TokenRow.id)).group_by(TokenRow.device_id).scalar_subquery()
        query = select(TokenRow).where(
            TokenRow.id.in_(current),
            (TokenRow.exp < now + refresh_before_s)
            | (TokenRow.min_until <= now)
            | TokenRow.published_at.is_(None)
            | (TokenRow.epoch != epoch),
        )
        return [row.refresh_state() for row in self.session.scalars(query)]

    # API keys ---------------------------------------------------------------
    def add_api_key(
        self, *, name: str, prefix: str, key_hash: str, role: str, now: int
    ) -> ApiKeyRow:
        row = ApiKeyRow(name=name, prefix=prefix, key_hash=key_hash, role=role, created_at=now)
        self.session.add(row)
        self.session.flush()
        return row

    def api_keys_with_prefix(self, prefix: str) -> Sequence[ApiKeyRow]:
        """Candidates for a presented key (normally one; prefixes may collide)."""
        query = select(ApiKeyRow).where(ApiKeyRow.prefix == prefix).order_by(ApiKeyRow.id)
        return self.session.scalars(query).all()

    def api_keys(self) -> Sequence[ApiKeyRow]:
        return self.session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id)).all()

    def api_key(self, key_id: int, *, lock: bool = False) -> ApiKeyRow | None:
        query = select(ApiKeyRow).where(ApiKeyRow.id == key_id)
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).one_or_none()


class Store:
    """The cloud database: an engine, a session factory and the schema version."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Connect to ``url`` and, by default, upgrade the schema to the newest revision."""
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One transaction: committed when the block ends, rolled back on an exception."""
        with self._sessions.begin() as session:
            yield Tx(session)

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
