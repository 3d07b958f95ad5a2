"""Tables: users, partner companies, installation memberships, login sessions, the audit log.

Memberships: the system integrators of an installation are partner
*companies* (every partner user of the company works on it; several
companies may integrate one installation); its owner is one *user*
(``installation_owners`` is keyed by the installation, so there is at most
one). ``audit_log`` has no foreign keys and is never updated or deleted:
triggers refuse both (migration 0003).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from cloud.accounts.rules import PaymentType, Role
from cloud.database import Base
from cloud.database import enum_column as _enum

__all__ = [
    "ApiKeyRow",
    "AuditRow",
    "CompanyRow",
    "LoginSessionRow",
    "PasswordResetRow",
    "UserRow",
]


class CompanyRow(Base):
    """A partner company (system integrator); ``partner_id`` is the vendor's reference.

    The invoicing details (address, ``country`` ISO 3166 alpha-2, an EU VAT
    number or an Indian GSTIN) are printed on its invoices.
    """

    __tablename__ = "companies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    partner_id: Mapped[str] = mapped_column(String(32), unique=True)
    payment_type: Mapped[PaymentType] = mapped_column(_enum(PaymentType, "payment_type"))
    blacklisted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[int] = mapped_column(BigInteger)
    address: Mapped[str | None] = mapped_column(String(500))  # street lines, one per line
    postcode: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str | None] = mapped_column(String(2))
    vat_number: Mapped[str | None] = mapped_column(String(20))
    gst_number: Mapped[str | None] = mapped_column(String(15))


class UserRow(Base):
    """A person who logs in to the dashboard; ``password_hash`` is argon2id, never shown.

    ``failed_logins`` and ``locked_until`` slow down password guessing per
    account; ``disabled_at`` ends every login session and API key of the user.
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"))
    company_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("companies.id", ondelete="RESTRICT"), index=True
    )
    blacklisted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    failed_logins: Mapped[int] = mapped_column(Integer, server_default="0")
    locked_until: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    disabled_at: Mapped[int | None] = mapped_column(BigInteger)
    locale: Mapped[str | None] = mapped_column(String(8))  # dashboard language; None: browser's
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164, e.g. +31201234567

    def __repr__(self) -> str:  # never the hash
        return f"UserRow(id={self.id}, email={self.email!r}, role={self.role!r})"


class LoginSessionRow(Base):
    """A dashboard login: only the SHA-256 of its random token is stored."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_seen_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class AuditRow(Base):
    """One change, appended: who (``actor``), when, what, and the object before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    actor_user_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ApiKeyRow(Base):
    """An operator's API key: the SHA-256 of the key and a public prefix to find it by.

    The key itself is never stored. A key with a ``user_id`` acts as that
    user, with the user's role; a key without one is a bare key of ``role``
    (``admin`` from ``entitle cloud apikey create``). Revoked keys are kept (with
    ``revoked_at``) so that ``apikey list`` shows what was revoked and when.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16), server_default=text("'admin'"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    # the user the key acts for (its role is the user's); None: a bare admin key (migration 0003)
    user_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )


class PasswordResetRow(Base):
    """A forgotten-password link: only the SHA-256 of its random token is stored.

    It works once (``used_at``), until ``expires_at``, and only while it is the
    user's newest: issuing a new one deletes the older ones (migration 0014).
    """

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger)
