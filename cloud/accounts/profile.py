"""One's own account: name, language, and a password change that needs the current password.

A wrong current password counts as a failed login (the same lock as
:mod:`cloud.accounts.sessions`), so a borrowed session cannot be used to
guess it. A new password ends every other login session of the user; the one
that changed it stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.passwords import hash_password, verify_password
from cloud.accounts.sessions import lock_seconds, token_hash
from cloud.accounts.tables import LoginSessionRow
from cloud.accounts.users import checked_password, user, user_view
from cloud.errors import N_, InvalidRequest, LoginFailed, LoginThrottled

__all__ = ["LOCALES", "PasswordChange", "change_password", "update_profile"]

_log = logging.getLogger(__name__)

LOCALES = ("en", "nl")  # English (the source) and Dutch (the TTecomm manuals' language)


@dataclass(frozen=True, slots=True)
class PasswordChange:
    """What a password change did; ``error`` is raised after the commit (a failure counts)."""

    ended_sessions: int
    error: LoginFailed | LoginThrottled | InvalidRequest | None


def update_profile(
    session: Session, principal: Principal, *, name: str, locale: str, now: int
) -> None:
    """Change one's own name and language (audited as ``user.profile``).

    Raises:
        InvalidRequest: an empty or over-long name, or a language not offered.
        UnknownUser: the principal is not a user (a bare API key).
    """
    name = name.strip()
    if not 0 < len(name) <= 200 or not name.isprintable():
        raise InvalidRequest(N_("a name has 1-200 printable characters"))
    if locale not in LOCALES:
        raise InvalidRequest(
            N_("the language must be one of %(languages)s"), languages=", ".join(LOCALES)
        )
    if principal.user_id is None:
        raise InvalidRequest(N_("an API key has no profile; sign in as a user"))
    row = user(session, principal.user_id, lock=True)
    before = {**user_view(row), "locale": row.locale}
    if (row.name, row.locale) == (name, locale):
        return
    row.name, row.locale = name, locale
    session.flush()
    audit.record(
        session,
        actor=principal,
        action="user.profile",
        object_type="user",
        object_id=str(row.id),
        before=before,
        after={**user_view(row), "locale": row.locale},
        now=now,
    )


def change_password(
    session: Session,
    principal: Principal,
    *,
    current: str,
    new: str,
    keep_session: str | None,
    now: int,
) -> PasswordChange:
    """Change one's own password; every login session but ``keep_session`` ends.

    Commit the transaction whatever the outcome, then raise ``error`` if set:
    a wrong current password counts towards the account's login lock.
    """
    if principal.user_id is None:
        return PasswordChange(
            0, InvalidRequest(N_("an API key has no password; sign in as a user"))
        )
    row = user(session, principal.user_id, lock=True)
    if row.locked_until is not None and now < row.locked_until:
        wait = row.locked_until - now
        return PasswordChange(
            0,
            LoginThrottled(
                N_("too many wrong passwords for this account: try again in %(retry_after)s s"),
                retry_after=wait,
            ),
        )
    if not verify_password(current, row.password_hash):
        row.failed_logins += 1
        lock = lock_seconds(row.failed_logins)
        row.locked_until = now + lock if lock else None
        _log.info("password change refused: user %d gave a wrong current password", row.id)
        return PasswordChange(0, LoginFailed("the current password is wrong"))
    try:
        new = checked_password(new)
    except InvalidRequest as exc:
        return PasswordChange(0, exc)
    row.password_hash = hash_password(new)
    row.failed_logins, row.locked_until = 0, None
    others = delete(LoginSessionRow).where(LoginSessionRow.user_id == row.id)
    if keep_session:
        others = others.where(LoginSessionRow.token_hash != token_hash(keep_session))
    ended = int(getattr(session.execute(others), "rowcount", 0) or 0)
    session.flush()
    audit.record(
        session,
        actor=principal,
        action="user.password",
        object_type="user",
        object_id=str(row.id),
        before=None,
        after={"password_changed": True, "sessions_ended": ended},
        now=now,
    )
    _log.info("user %d changed their password; %d other session(s) ended", row.id, ended)
    return PasswordChange(ended, None)
