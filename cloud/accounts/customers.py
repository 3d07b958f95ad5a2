"""Customers as staff look them up: owner and partner users, and partner companies.

A support agent on the phone has a name, an e-mail address or the partner id
the customer reads out; :func:`find_customers` finds the accounts that match
(vendor staff are not customers: admin, cs_admin and support users are never
found). Every function takes the caller's ``Session`` and commits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.accounts.rules import Role
from cloud.accounts.tables import CompanyRow, UserRow

__all__ = ["CUSTOMER_ROLES", "CustomerHit", "LookUpBy", "find_customers"]

CUSTOMER_ROLES = (Role.OWNER, Role.PARTNER)
LookUpBy = Literal["name", "email", "partner_id"]


@dataclass(frozen=True, slots=True)
class CustomerHit:
    """One account found: a user (``kind="user"``) or a partner company."""

    kind: Literal["user", "company"]
    id: int
    name: str
    email: str | None
    partner_id: str | None
    role: str | None
    company_id: int | None
    company_name: str | None
    blacklisted: bool
    disabled: bool


def _user_hit(row: UserRow, company: CompanyRow | None) -> CustomerHit:
    return CustomerHit(
        kind="user",
        id=row.id,
        name=row.name,
        email=row.email,
        partner_id=None if company is None else company.partner_id,
        role=row.role.value,
        company_id=row.company_id,
        company_name=None if company is None else company.name,
        blacklisted=row.blacklisted,
        disabled=row.disabled_at is not None,
    )


def _company_hit(row: CompanyRow) -> CustomerHit:
    return CustomerHit(
        kind="company",
        id=row.id,
        name=row.name,
        email=None,
        partner_id=row.partner_id,
        role=None,
        company_id=row.id,
        company_name=row.name,
        blacklisted=row.blacklisted,
        disabled=False,
    )


def find_customers(
    session: Session, text: str, *, by: LookUpBy, limit: int = 50
) -> list[CustomerHit]:
    """Customer accounts matching ``text`` (any part, case ignored; a partner id exactly).

    ``name``: users' and companies' names; ``email``: users' addresses;
    ``partner_id``: the company with that id and its users. Companies first,
    then users, each by name.
    """
    needle = text.strip().lower()
    if not needle:
        return []
    users = (
        select(UserRow, CompanyRow)
        .outerjoin(CompanyRow, UserRow.company_id == CompanyRow.id)
        .where(UserRow.role.in_(CUSTOMER_ROLES))
    )
    companies = select(CompanyRow)
    if by == "name":
        users = users.where(func.lower(UserRow.name).contains(needle, autoescape=True))
        companies = companies.where(func.lower(CompanyRow.name).contains(needle, autoescape=True))
    elif by == "email":
        users = users.where(func.lower(UserRow.email).contains(needle, autoescape=True))
        companies = companies.where(CompanyRow.id.is_(None))
    else:
        users = users.where(func.lower(CompanyRow.partner_id) == needle)
        companies = companies.where(func.lower(CompanyRow.partner_id) == needle)
    found = [
        _company_hit(c)
        for c in session.scalars(
            companies.order_by(func.lower(CompanyRow.name), CompanyRow.id).limit(limit)
        )
    ]
    rows = session.execute(users.order_by(func.lower(UserRow.name), UserRow.id).limit(limit))
    found += [_user_hit(user, company) for user, company in rows]
    return found[:limit]
