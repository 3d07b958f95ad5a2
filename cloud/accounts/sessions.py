"""Dashboard logins: password checks slowed down per account, and hashed session tokens.

A login session is a random 32-byte token, given to the browser once (an
HttpOnly cookie) and stored only as its SHA-256. It ends at ``expires_at``
(absolute), after ``idle_s`` without a request, at logout, when the user is
disabled, and when the user's role or password changes.

Failed logins are counted per account: after ``LOCK_AFTER`` failures in a
row, every further attempt is refused, without checking the password, until
a lock that doubles with each failure (30 s, 60 s, ... up to 15 min) has
passed. An unknown e-mail costs as much time as a known one and says the same.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.passwords import (
    hash_password,
    needs_rehash,
    verify_password,
    waste_a_verification,
)
from cloud.accounts.tables import LoginSessionRow, UserRow
from cloud.accounts.users import user_by_email
from cloud.errors import LoginFailed, LoginThrottled, NotAuthenticated

__all__ = [
    "LOCK_AFTER",
    "LoginOutcome",
    "attempt_login",
    "end_session",
    "lock_seconds",
    "resolve_session",
    "token_hash",
]

_log = logging.getLogger(__name__)

LOCK_AFTER = 5
_LOCK_BASE_S = 30
_LOCK_MAX_S = 900
_TOUCH_EVERY_S = 60  # last_seen_at is written at most once a minute per session
_TOKEN_BYTES = 32
_TOKEN_CHARS = 43  # base64url of 32 bytes


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """What a login attempt did: a new session, or the error to answer with.

    The attempt's bookkeeping (failure counter, lock, rehash) must be
    committed either way, so the error is returned rather than raised.
    """

    token: str | None
    user: UserRow | None
    expires_at: int | None
    error: NotAuthenticated | LoginThrottled | None

    def __repr__(self) -> str:  # never the token
        return f"LoginOutcome(user={self.user!r}, error={type(self.error).__name__})"


def token_hash(token: str) -> str:
    """What is stored of a session token: hex SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def lock_seconds(failures: int) -> int:
    """How long an account stays locked after ``failures`` failed logins in a row."""
    if failures < LOCK_AFTER:
        return 0
    return int(min(_LOCK_MAX_S, _LOCK_BASE_S * 2 ** min(failures - LOCK_AFTER, 16)))


def attempt_login(
    session: Session, *, email: str, password: str, now: int, ttl_s: int
) -> LoginOutcome:
    """Check a password and open a session; commit the transaction whatever the outcome."""
    failed = LoginFailed("wrong e-mail or password")
    row = user_by_email(session, email, lock=True)
    if row is None or row.disabled_at is not None:
        waste_a_verification(password)
        return LoginOutcome(token=None, user=None, expires_at=None, error=failed)
    if row.locked_until is not None and now < row.locked_until:
        wait = row.locked_until - now
        _log.info("login refused: user %d locked for %d s more", row.id, wait)
        throttled = LoginThrottled(
            f"too many failed logins for this account: try again in {wait} s", retry_after=wait
        )
        return LoginOutcome(token=None, user=None, expires_at=None, error=throttled)
    if not verify_password(password, row.password_hash):
        row.failed_logins += 1
        lock = lock_seconds(row.failed_logins)
        row.locked_until = now + lock if lock else None
        _log.info("login failed: user %d, %d failures in a row", row.id, row.failed_logins)
        return LoginOutcome(token=None, user=None, expires_at=None, error=failed)
    row.failed_logins, row.locked_until = 0, None
    if needs_rehash(row.password_hash):
        row.password_hash = hash_password(password)
        _log.info("password hash of user %d upgraded to the current parameters", row.id)
    session.execute(
        delete(LoginSessionRow).where(
            LoginSessionRow.user_id == row.id, LoginSessionRow.expires_at <= now
        )
    )
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    expires_at = now + ttl_s
    session.add(
        LoginSessionRow(
            token_hash=token_hash(token),
            user_id=row.id,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    _log.info("user %d logged in", row.id)
    return LoginOutcome(token=token, user=row, expires_at=expires_at, error=None)


def resolve_session(session: Session, token: str, *, now: int, idle_s: int) -> Principal | None:
    """The user a session token stands for, or None (a dead session is deleted)."""
    if len(token) != _TOKEN_CHARS:
        return None
    row = session.scalars(
        select(LoginSessionRow).where(LoginSessionRow.token_hash == token_hash(token))
    ).one_or_none()
    if row is None:
        return None
    user = session.get(UserRow, row.user_id)
    if (
        now >= row.expires_at
        or now - row.last_seen_at > idle_s
        or user is None
        or user.disabled_at is not None
    ):
        session.delete(row)
        return None
    if now - row.last_seen_at >= _TOUCH_EVERY_S:
        row.last_seen_at = now
    return Principal(
        key_id=None, name=user.email, role=user.role.value, user_id=user.id, locale=user.locale
    )


def end_session(session: Session, token: str) -> bool:
    """Log out: delete the session; False if there was none."""
    result = session.execute(
        delete(LoginSessionRow).where(LoginSessionRow.token_hash == token_hash(token))
    )
    return bool(getattr(result, "rowcount", 0))
