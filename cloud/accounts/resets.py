"""Forgotten passwords: single-use, expiring reset links, stored only as hashes.

A link carries a random 32-byte token; the database keeps its SHA-256, the
user, and when it was made, expires and was used. A token works once, until
it expires, and only while it is the user's newest (issuing one deletes the
older ones). Asking for a link says the same whether the address is an
account or not; one account gets at most one link a minute
(:data:`RESEND_AFTER_S`), so the form cannot be used to flood a mailbox.

Setting a new password through a link also unlocks the account and ends
every login session of the user: whoever held the old password is logged out.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.passwords import hash_password
from cloud.accounts.sessions import token_hash
from cloud.accounts.tables import LoginSessionRow, PasswordResetRow, UserRow
from cloud.accounts.users import checked_password, normalise_email, user_by_email, user_view
from cloud.errors import N_, Conflict, InvalidRequest

__all__ = [
    "RESEND_AFTER_S",
    "IssuedReset",
    "ResetLinkInvalid",
    "issue_reset",
    "reset_user",
    "use_reset",
]

_log = logging.getLogger(__name__)

RESEND_AFTER_S = 60
_TOKEN_BYTES = 32
_TOKEN_CHARS = 43  # base64url of 32 bytes


class ResetLinkInvalid(Conflict):
    """A reset link that is unknown, used, replaced by a newer one, or expired."""


@dataclass(frozen=True, slots=True)
class IssuedReset:
    """A link just made: ``token`` goes into the e-mail only."""

    token: str
    user_id: int
    email: str
    name: str
    locale: str
    expires_at: int

    def __repr__(self) -> str:  # never the token
        return f"IssuedReset(user={self.user_id}, expires_at={self.expires_at})"


def issue_reset(session: Session, *, email: str, now: int, ttl_s: int) -> IssuedReset | None:
    """A new reset link for the account of ``email``; None if there is none to send.

    None for an address that is no account, a disabled account, or one that
    got a link less than :data:`RESEND_AFTER_S` ago. The caller answers the
    same in every case.
    """
    try:
        email = normalise_email(email)
    except InvalidRequest:
        return None
    row = user_by_email(session, email, lock=True)
    if row is None or row.disabled_at is not None:
        return None
    recent = session.scalars(
        select(PasswordResetRow.id).where(
            PasswordResetRow.user_id == row.id,
            PasswordResetRow.used_at.is_(None),
            PasswordResetRow.created_at > now - RESEND_AFTER_S,
        )
    ).first()
    if recent is not None:
        _log.info("password reset for user %d not sent: one was sent under a minute ago", row.id)
        return None
    session.execute(delete(PasswordResetRow).where(PasswordResetRow.user_id == row.id))
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    session.add(
        PasswordResetRow(
            token_hash=token_hash(token),
            user_id=row.id,
            created_at=now,
            expires_at=now + ttl_s,
        )
    )
    session.flush()
    _log.info("password reset link made for user %d", row.id)
    return IssuedReset(
        token=token,
        user_id=row.id,
        email=row.email,
        name=row.name,
        locale=row.locale,
        expires_at=now + ttl_s,
    )


def reset_user(
    session: Session, token: str, *, now: int, lock: bool = False
) -> tuple[PasswordResetRow, UserRow] | None:
    """The link and its user if ``token`` still works, else None."""
    if len(token) != _TOKEN_CHARS:
        return None
    query = select(PasswordResetRow).where(PasswordResetRow.token_hash == token_hash(token))
    link = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if link is None or link.used_at is not None or now >= link.expires_at:
        return None
    user = session.get(UserRow, link.user_id, with_for_update=lock)
    if user is None or user.disabled_at is not None:
        return None
    return link, user


def use_reset(session: Session, token: str, *, password: str, now: int) -> UserRow:
    """Set a new password through a link; the link is spent and every login ends.

    Raises:
        ResetLinkInvalid: the link is unknown, used, replaced or expired.
        InvalidRequest: the password is too short or too long (the link still works).
    """
    found = reset_user(session, token, now=now, lock=True)
    if found is None:
        raise ResetLinkInvalid(
            N_(
                "this password reset link has been used, replaced by a newer one, or has "
                "expired: ask for a new one"
            )
        )
    link, user = found
    user.password_hash = hash_password(checked_password(password))
    before = user_view(user)
    user.failed_logins, user.locked_until = 0, None
    link.used_at = now
    session.execute(
        delete(PasswordResetRow).where(
            PasswordResetRow.user_id == user.id, PasswordResetRow.id != link.id
        )
    )
    session.execute(delete(LoginSessionRow).where(LoginSessionRow.user_id == user.id))
    session.flush()
    actor = Principal(key_id=None, name=user.email, role=user.role.value, user_id=user.id)
    audit.record(
        session,
        actor=actor,
        action="user.password_reset",
        object_type="user",
        object_id=str(user.id),
        before=before,
        after={**user_view(user), "password_changed": True},
        now=now,
    )
    _log.info("user %d set a new password through a reset link", user.id)
    return user
