"""Partner companies: create, rename, change how they pay, look up.

A company's ``payment_type`` decides checkout: ``card`` partners go through
checkout, ``invoice`` partners save subscriptions directly (H7's billing
reads it with :func:`company_payment_type`). Every change is audited.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import InvoicingDetails, PaymentType, check_invoicing
from cloud.accounts.tables import CompanyRow
from cloud.errors import N_, AccountExists, UnknownCompany

__all__ = [
    "company",
    "company_payment_type",
    "company_view",
    "count_companies",
    "create_company",
    "find_companies",
    "invoicing_of",
    "update_company",
]


def company_view(row: CompanyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "partner_id": row.partner_id,
        "payment_type": row.payment_type.value,
        "blacklisted": row.blacklisted,
        "created_at": row.created_at,
        "address": row.address,
        "postcode": row.postcode,
        "city": row.city,
        "country": row.country,
        "vat_number": row.vat_number,
        "gst_number": row.gst_number,
    }


def invoicing_of(row: CompanyRow) -> InvoicingDetails:
    """The company's invoicing details as stored."""
    return InvoicingDetails(
        row.address, row.postcode, row.city, row.country, row.vat_number, row.gst_number
    )


def company(session: Session, company_id: int, *, lock: bool = False) -> CompanyRow:
    """Raises: UnknownCompany."""
    query = select(CompanyRow).where(CompanyRow.id == company_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise UnknownCompany(f"no partner company with id {company_id}")
    return row


def company_payment_type(session: Session, company_id: int) -> Literal["card", "invoice"]:
    """Raises: UnknownCompany."""
    if company(session, company_id).payment_type is PaymentType.INVOICE:
        return "invoice"
    return "card"


def find_companies(
    session: Session,
    *,
    partner_id: str | None = None,
    name: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[CompanyRow]:
    """Companies matching every filter given (``name``: a case-insensitive substring)."""
    query = select(CompanyRow).where(*_company_filter(partner_id, name))
    return session.scalars(query.order_by(CompanyRow.id).limit(limit).offset(offset)).all()


def count_companies(
    session: Session, *, partner_id: str | None = None, name: str | None = None
) -> int:
    """How many companies :func:`find_companies` would find without a limit."""
    query = select(func.count()).select_from(CompanyRow)
    return int(session.scalar(query.where(*_company_filter(partner_id, name))) or 0)


def _company_filter(partner_id: str | None, name: str | None) -> list[Any]:
    where: list[Any] = []
    if partner_id:
        where.append(CompanyRow.partner_id == partner_id)
    if name:
        where.append(func.lower(CompanyRow.name).contains(name.lower()))
    return where


def create_company(
    session: Session,
    *,
    name: str,
    partner_id: str | None,
    payment_type: PaymentType,
    actor: Principal | str,
    now: int,
) -> CompanyRow:
    """Create a partner company; ``partner_id`` is generated (``P`` + 8 hex) when not given.

    Raises:
        AccountExists: the partner id is taken.
    """
    partner_id = partner_id or f"P{secrets.token_hex(4).upper()}"
    if session.scalars(select(CompanyRow).where(CompanyRow.partner_id == partner_id)).first():
        raise AccountExists(
            N_("a company with partner id %(partner_id)s exists already"), partner_id=partner_id
        )
    row = CompanyRow(
        name=name,
        partner_id=partner_id,
        payment_type=payment_type,
        blacklisted=False,
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="company.create",
        object_type="company",
        object_id=str(row.id),
        before=None,
        after=company_view(row),
        now=now,
    )
    return row


def update_company(
    session: Session,
    company_id: int,
    *,
    actor: Principal | str,
    now: int,
    name: str | None = None,
    payment_type: PaymentType | None = None,
    invoicing: InvoicingDetails | None = None,
) -> CompanyRow:
    """Rename a company, change how it pays or its invoicing details (audited).

    ``invoicing`` replaces all the details (a None field clears it).

    Raises:
        UnknownCompany.
        InvalidRequest: invoicing details :func:`~cloud.accounts.rules.check_invoicing` refuses.
    """
    checked = None if invoicing is None else check_invoicing(invoicing)
    row = company(session, company_id, lock=True)
    before = company_view(row)
    if name is not None:
        row.name = name
    if payment_type is not None:
        row.payment_type = payment_type
    if checked is not None:
        row.address, row.postcode, row.city = checked.address, checked.postcode, checked.city
        row.country, row.vat_number = checked.country, checked.vat_number
        row.gst_number = checked.gst_number
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="company.update",
        object_type="company",
        object_id=str(row.id),
        before=before,
        after=company_view(row),
        now=now,
    )
    return row
