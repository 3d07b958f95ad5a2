"""Who works on an installation: system integrators (partner companies) and its one owner.

Several partner companies may integrate one installation; every partner user
of such a company sees it. The owner is one user with the ``owner`` role
(the table is keyed by installation, so setting an owner replaces the
previous one). A partner creating an installation makes its company an
integrator. Every change is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import Role
from cloud.accounts.tables import CompanyRow, UserRow
from cloud.accounts.users import Contact, company, user
from cloud.devices.tables import InstallationRow, IntegratorRow, OwnerRow
from cloud.errors import N_, InvalidRequest, NotFound, UnknownInstallation

__all__ = [
    "Integrator",
    "Members",
    "People",
    "add_integrator",
    "authorised_contacts",
    "members",
    "people",
    "remove_integrator",
    "set_owner",
]


@dataclass(frozen=True, slots=True)
class Members:
    installation_id: str
    owner_user_id: int | None
    integrator_company_ids: tuple[int, ...]


def _installation(session: Session, installation_id: str) -> None:
    if session.get(InstallationRow, installation_id) is None:
        raise UnknownInstallation(f"no installation {installation_id}")


def members(session: Session, installation_id: str) -> Members:
    """Raises: UnknownInstallation."""
    _installation(session, installation_id)
    owner = session.get(OwnerRow, installation_id)
    companies = session.scalars(
        select(IntegratorRow.company_id)
        .where(IntegratorRow.installation_id == installation_id)
        .order_by(IntegratorRow.company_id)
    ).all()
    return Members(
        installation_id=installation_id,
        owner_user_id=None if owner is None else owner.user_id,
        integrator_company_ids=tuple(companies),
    )


def _snapshot(m: Members) -> dict[str, object]:
    return {"owner_user_id": m.owner_user_id, "integrators": list(m.integrator_company_ids)}


def set_owner(
    session: Session, installation_id: str, user_id: int, *, actor: Principal | str, now: int
) -> Members:
    """Make ``user_id`` (an owner user) the one owner, replacing any previous owner.

    Raises:
        UnknownInstallation, UnknownUser, InvalidRequest (the user is not an owner user).
    """
    before = members(session, installation_id)
    if user(session, user_id).role is not Role.OWNER:
        raise InvalidRequest(N_("user %(user)s does not have the owner role"), user=user_id)
    row = session.get(OwnerRow, installation_id, with_for_update=True)
    if row is None:
        session.add(OwnerRow(installation_id=installation_id, user_id=user_id, created_at=now))
    else:
        row.user_id, row.created_at = user_id, now
    session.flush()
    after = members(session, installation_id)
    _audit(session, "installation.owner", before, after, actor=actor, now=now)
    return after


def add_integrator(
    session: Session, installation_id: str, company_id: int, *, actor: Principal | str, now: int
) -> Members:
    """Add a partner company as a system integrator (adding it twice changes nothing).

    Raises:
        UnknownInstallation, UnknownCompany.
    """
    before = members(session, installation_id)
    company(session, company_id)
    if company_id in before.integrator_company_ids:
        return before
    session.add(
        IntegratorRow(installation_id=installation_id, company_id=company_id, created_at=now)
    )
    session.flush()
    after = members(session, installation_id)
    _audit(session, "installation.integrator.add", before, after, actor=actor, now=now)
    return after


def remove_integrator(
    session: Session, installation_id: str, company_id: int, *, actor: Principal | str, now: int
) -> Members:
    """Raises: UnknownInstallation, NotFound (the company is not an integrator of it)."""
    before = members(session, installation_id)
    row = session.get(IntegratorRow, (installation_id, company_id))
    if row is None:
        raise NotFound(f"company {company_id} is not a system integrator of {installation_id}")
    session.delete(row)
    session.flush()
    after = members(session, installation_id)
    _audit(session, "installation.integrator.remove", before, after, actor=actor, now=now)
    return after


def _audit(
    session: Session,
    action: str,
    before: Members,
    after: Members,
    *,
    actor: Principal | str,
    now: int,
) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type="installation",
        object_id=before.installation_id,
        before=_snapshot(before),
        after=_snapshot(after),
        now=now,
    )


def authorised_contacts(
    session: Session, installation_id: str, *, staff_domains: Sequence[str]
) -> list[Contact]:
    """The owner and the integrators' partner users of an installation, staff excluded.

    Vendor staff (an address at one of ``staff_domains``) may be members for
    support work; they are not contacts of the customer. Disabled users neither.

    Raises:
        UnknownInstallation: no such installation.
    """
    if session.get(InstallationRow, installation_id) is None:
        raise UnknownInstallation(f"no installation {installation_id}")
    owners = select(OwnerRow.user_id).where(OwnerRow.installation_id == installation_id)
    companies = select(IntegratorRow.company_id).where(
        IntegratorRow.installation_id == installation_id
    )
    query = (
        select(UserRow)
        .where(
            UserRow.disabled_at.is_(None),
            UserRow.id.in_(owners)
            | (UserRow.company_id.in_(companies) & (UserRow.role == Role.PARTNER)),
        )
        .order_by(UserRow.id)
    )
    domains = {d.lower().lstrip("@") for d in staff_domains}
    return [
        Contact(r.id, r.email, r.name, r.company_id, phone=r.phone)
        for r in session.scalars(query)
        if r.email.rpartition("@")[2] not in domains
    ]


@dataclass(frozen=True, slots=True)
class Integrator:
    """A system integrator of an installation: a partner company and how it pays."""

    company_id: int
    name: str
    payment_type: str


@dataclass(frozen=True, slots=True)
class People:
    """Who works on an installation, by name: its owner and its system integrators."""

    owner: Contact | None
    integrators: tuple[Integrator, ...]


def people(session: Session, installation_id: str) -> People:
    """The owner (None: no owner yet) and the integrator companies, by name.

    Raises:
        UnknownInstallation: no such installation.
    """
    m = members(session, installation_id)
    owner = None
    if m.owner_user_id is not None:
        row = user(session, m.owner_user_id)
        owner = Contact(user_id=row.id, email=row.email, name=row.name, company_id=row.company_id)
    query = (
        select(CompanyRow)
        .where(CompanyRow.id.in_(m.integrator_company_ids))
        .order_by(CompanyRow.name, CompanyRow.id)
    )
    integrators = tuple(
        Integrator(company_id=c.id, name=c.name, payment_type=c.payment_type.value)
        for c in session.scalars(query)
    )
    return People(owner=owner, integrators=integrators)
