"""API keys' reads and writes, inside the caller's session."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts.tables import ApiKeyRow

__all__ = ["add_api_key", "api_key", "api_keys", "api_keys_with_prefix"]


def add_api_key(
    session: Session, *, name: str, prefix: str, key_hash: str, role: str, now: int
) -> ApiKeyRow:
    row = ApiKeyRow(name=name, prefix=prefix, key_hash=key_hash, role=role, created_at=now)
    session.add(row)
    session.flush()
    return row


def api_keys_with_prefix(session: Session, prefix: str) -> Sequence[ApiKeyRow]:
    """Candidates for a presented key (normally one; prefixes may collide)."""
    query = select(ApiKeyRow).where(ApiKeyRow.prefix == prefix).order_by(ApiKeyRow.id)
    return session.scalars(query).all()


def api_keys(
    session: Session, *, user_id: int | None = None, newest_first: bool = False
) -> Sequence[ApiKeyRow]:
    """Every API key (revoked ones too), oldest first; only the user's with ``user_id``."""
    query = select(ApiKeyRow).order_by(ApiKeyRow.id.desc() if newest_first else ApiKeyRow.id)
    if user_id is not None:
        query = query.where(ApiKeyRow.user_id == user_id)
    return session.scalars(query).all()


def api_key(session: Session, key_id: int, *, lock: bool = False) -> ApiKeyRow | None:
    query = select(ApiKeyRow).where(ApiKeyRow.id == key_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()
