"""Users: create, change, disable, blacklist (users and companies), look up, contacts.

The company functions of :mod:`cloud.accounts.companies` are re-exported
here, so that ``cloud.accounts.users.company_payment_type`` is one import
with ``user_contact`` and ``is_blacklisted``. Only partner users belong to
a company (and must); the others stand alone. Every change is audited in
the caller's transaction. A password hash never leaves this module's rows:
:func:`user_view` is what the API and the audit log see of a user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.companies import (
    company,
    company_payment_type,
    company_view,
    count_companies,
    create_company,
    find_companies,
    update_company,
)
from cloud.accounts.passwords import MAX_PASSWORD, MIN_PASSWORD, check_password, hash_password
from cloud.accounts.rules import Role, check_phone
from cloud.accounts.tables import LoginSessionRow, UserRow
from cloud.errors import (
    N_,
    AccountExists,
    Blacklisted,
    Forbidden,
    InvalidRequest,
    UnknownUser,
)

__all__ = [
    "Contact",
    "checked_password",
    "company",
    "company_payment_type",
    "company_view",
    "count_companies",
    "count_users",
    "create_company",
    "create_user",
    "disable_user",
    "ensure_not_blacklisted",
    "find_companies",
    "find_users",
    "is_blacklisted",
    "normalise_email",
    "set_blacklisted",
    "update_company",
    "update_user",
    "user",
    "user_by_email",
    "user_contact",
    "user_view",
]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Contact:
    """Where to reach a user (notifications, invoices, support look-ups)."""

    user_id: int
    email: str
    name: str
    company_id: int | None
    phone: str | None = None  # E.164


def normalise_email(email: str) -> str:
    """Trimmed and lower-cased, so that one address is one account.

    Raises:
        InvalidRequest: not shaped like an address, or longer than 254 characters.
    """
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email) or not email.isprintable():
        raise InvalidRequest(N_("%(email)s is not an e-mail address"), email=repr(email[:80]))
    return email


def checked_password(password: str) -> str:
    """The password if it is acceptable (:func:`cloud.accounts.passwords.check_password`).

    Raises:
        InvalidRequest: shorter than ``MIN_PASSWORD`` or longer than ``MAX_PASSWORD``
            characters (the check's English, marked for the dashboard to translate), or
            not encodable as UTF-8 (a lone surrogate), which the hasher would refuse.
    """
    try:
        password.encode()
    except UnicodeEncodeError:
        raise InvalidRequest(N_("a password must be plain text (UTF-8)")) from None
    try:
        return check_password(password)
    except ValueError:
        raise InvalidRequest(
            N_(
                "a password must have %(min)d-%(max)d characters; "
                "a passphrase of a few words is easy to remember"
            ),
            min=MIN_PASSWORD,
            max=MAX_PASSWORD,
        ) from None


def user_view(row: UserRow) -> dict[str, Any]:
    """The user as shown and audited: everything but the password hash and login counters."""
    return {
        "id": row.id,
        "email": row.email,
        "name": row.name,
        "role": row.role.value,
        "company_id": row.company_id,
        "blacklisted": row.blacklisted,
        "created_at": row.created_at,
        "disabled_at": row.disabled_at,
        "phone": row.phone,
    }


# look-ups ---------------------------------------------------------------------
def user(session: Session, user_id: int, *, lock: bool = False) -> UserRow:
    """Raises: UnknownUser."""
    query = select(UserRow).where(UserRow.id == user_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise UnknownUser(f"no user with id {user_id}")
    return row


def user_by_email(session: Session, email: str, *, lock: bool = False) -> UserRow | None:
    query = select(UserRow).where(UserRow.email == email.strip().lower())
    return session.scalars(query.with_for_update() if lock else query).one_or_none()


def user_contact(session: Session, user_id: int) -> Contact:
    """Raises: UnknownUser."""
    row = user(session, user_id)
    return Contact(
        user_id=row.id, email=row.email, name=row.name, company_id=row.company_id, phone=row.phone
    )


def is_blacklisted(session: Session, user_id: int) -> bool:
    """Whether the user, or the user's company, is blacklisted (then they cannot buy).

    Raises:
        UnknownUser: no user with this id.
    """
    row = user(session, user_id)
    if row.blacklisted:
        return True
    return row.company_id is not None and company(session, row.company_id).blacklisted


def ensure_not_blacklisted(session: Session, user_id: int | None) -> None:
    """Return unless the user (or the user's company) is blacklisted; None (a bare key) passes.

    Raises:
        Blacklisted: they may look, but not buy or change anything.
    """
    if user_id is not None and is_blacklisted(session, user_id):
        raise Blacklisted(
            N_(
                "this account is blacklisted: it may look but not buy or change anything; "
                "contact customer service"
            )
        )


def find_users(
    session: Session,
    *,
    email: str | None = None,
    role: Role | None = None,
    company_id: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[UserRow]:
    """Users matching every filter given (``email``: a case-insensitive substring)."""
    query = select(UserRow).where(*_user_filter(email, role, company_id))
    return session.scalars(query.order_by(UserRow.id).limit(limit).offset(offset)).all()


def count_users(
    session: Session,
    *,
    email: str | None = None,
    role: Role | None = None,
    company_id: int | None = None,
) -> int:
    """How many users :func:`find_users` would find without a limit."""
    query = select(func.count()).select_from(UserRow).where(*_user_filter(email, role, company_id))
    return int(session.scalar(query) or 0)


def _user_filter(email: str | None, role: Role | None, company_id: int | None) -> list[Any]:
    where: list[Any] = []
    if email:
        where.append(func.lower(UserRow.email).contains(email.strip().lower()))
    if role is not None:
        where.append(UserRow.role == role)
    if company_id is not None:
        where.append(UserRow.company_id == company_id)
    return where


# changes ----------------------------------------------------------------------
def _check_role_change(actor: Principal, old: Role | None, new: Role) -> None:
    if actor.role != Role.ADMIN and Role.ADMIN in (old, new):
        raise Forbidden(N_("only an admin may give, take or change an admin account"))


def _check_company(session: Session, role: Role, company_id: int | None) -> None:
    if role is Role.PARTNER:
        if company_id is None:
            raise InvalidRequest(N_("a partner user belongs to a partner company: give company_id"))
        company(session, company_id)
    elif company_id is not None:
        raise InvalidRequest(
            N_("only partner users belong to a company, not %(role)s users"), role=role.value
        )


def create_user(
    session: Session,
    *,
    email: str,
    name: str,
    password: str,
    role: Role,
    company_id: int | None,
    actor: Principal | str,
    now: int,
    phone: str | None = None,
) -> UserRow:
    """Create a user (audited as ``user.create``); ``phone`` in international form.

    Raises:
        InvalidRequest: a bad address or password, or a company that does not fit the role.
        AccountExists: the address is taken.
        Forbidden: a non-admin creating an admin.
        UnknownCompany: no such company.
    """
    if isinstance(actor, Principal):
        _check_role_change(actor, None, role)
    email = normalise_email(email)
    checked_password(password)
    _check_company(session, role, company_id)
    phone = check_phone(phone) if phone is not None and phone.strip() else None
    if user_by_email(session, email) is not None:
        raise AccountExists(N_("a user with the e-mail %(email)s exists already"), email=email)
    row = UserRow(
        email=email,
        name=name,
        password_hash=hash_password(password),
        role=role,
        company_id=company_id,
        blacklisted=False,
        failed_logins=0,
        created_at=now,
        phone=phone,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.create",
        object_type="user",
        object_id=str(row.id),
        before=None,
        after=user_view(row),
        now=now,
    )
    return row


def update_user(
    session: Session,
    user_id: int,
    *,
    actor: Principal | str,
    now: int,
    name: str | None = None,
    role: Role | None = None,
    company_id: int | None = _UNSET,
    password: str | None = None,
    phone: str | None = _UNSET,
) -> UserRow:
    """Change a user's name, role, company, phone number (None: none) or password
    (audited; the hash is not).

    A role change ends the user's login sessions, so the new role applies at once.

    Raises:
        UnknownUser, UnknownCompany, InvalidRequest, Forbidden: as for :func:`create_user`.
    """
    row = user(session, user_id, lock=True)
    before = user_view(row)
    new_role = role or row.role
    if isinstance(actor, Principal):
        _check_role_change(actor, row.role, new_role)
    new_company = row.company_id if company_id is _UNSET else company_id
    if role is not None and role is not Role.PARTNER and company_id is _UNSET:
        new_company = None  # leaving the partner role leaves the company
    _check_company(session, new_role, new_company)
    if phone is not _UNSET:
        row.phone = None if phone is None or not phone.strip() else check_phone(phone)
    if password is not None:
        row.password_hash = hash_password(checked_password(password))
    if name is not None:
        row.name = name
    role_changed = new_role is not row.role
    row.role, row.company_id = new_role, new_company
    session.flush()
    if role_changed or password is not None:
        session.execute(delete(LoginSessionRow).where(LoginSessionRow.user_id == row.id))
    after = user_view(row)
    action = "user.role" if role_changed else "user.update"
    if password is not None:
        after["password_changed"] = True
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type="user",
        object_id=str(row.id),
        before=before,
        after=after,
        now=now,
    )
    return row


def disable_user(session: Session, user_id: int, *, actor: Principal | str, now: int) -> UserRow:
    """Disable a user: logins, sessions and API keys stop working (rows are kept).

    Raises:
        UnknownUser, Forbidden (a non-admin disabling an admin).
    """
    row = user(session, user_id, lock=True)
    if isinstance(actor, Principal):
        _check_role_change(actor, row.role, row.role)
    before = user_view(row)
    if row.disabled_at is None:
        row.disabled_at = now
        session.execute(delete(LoginSessionRow).where(LoginSessionRow.user_id == row.id))
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="user.disable",
            object_type="user",
            object_id=str(row.id),
            before=before,
            after=user_view(row),
            now=now,
        )
    return row


def set_blacklisted(
    session: Session,
    *,
    kind: Literal["user", "company"],
    object_id: int,
    blacklisted: bool,
    reason: str,
    actor: Principal | str,
    now: int,
) -> dict[str, Any]:
    """Put a customer on (or off) the blacklist; returns its view. Audited with the reason.

    The permission (``blacklist``: cs_admin and admin only) is checked by the
    route; this function trusts its caller.

    Raises:
        UnknownUser, UnknownCompany.
    """
    if kind == "user":
        user_row = user(session, object_id, lock=True)
        before = user_view(user_row)
        user_row.blacklisted = blacklisted
        session.flush()
        after = user_view(user_row)
    else:
        company_row = company(session, object_id, lock=True)
        before = company_view(company_row)
        company_row.blacklisted = blacklisted
        session.flush()
        after = company_view(company_row)
    audit.record(
        session,
        actor=actor,
        action=f"{kind}.{'blacklist' if blacklisted else 'unblacklist'}",
        object_type=kind,
        object_id=str(object_id),
        before=before,
        after={**after, "reason": reason},
        now=now,
    )
    return after
