"""Scoping: which installations and devices a principal may see or change.

The role table (:mod:`cloud.accounts.rules`) says *what* a principal may do;
this module says *where*:

- ``admin`` and ``cs_admin``: every installation, read and write;
- ``support``: every installation, read only (``write=True`` is 403);
- ``partner``: installations whose system integrators include the user's company;
- ``owner``: installations the user owns.

An installation out of a partner's or owner's scope answers exactly like
one that does not exist (404 ``UnknownInstallation`` / ``UnknownDevice``),
so ids cannot be probed. A blacklisted customer keeps read access, but
``write=True`` is 403 (:class:`~cloud.errors.Blacklisted`): they cannot buy
or change anything.

``write`` means the request changes what the installation has: devices,
grants, subscriptions, orders, memberships. Reading, support tickets and
diagnostic commands are ``write=False``: support must still reach a
blacklisted customer. A change that names no installation yet (creating
one) asks :func:`ensure_may_change` directly, the same rule and message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import Role
from cloud.accounts.tables import UserRow
from cloud.accounts.users import ensure_not_blacklisted
from cloud.database import Store
from cloud.devices.tables import DeviceRow, InstallationRow, IntegratorRow, OwnerRow
from cloud.errors import N_, Forbidden, UnknownDevice, UnknownInstallation

__all__ = [
    "check_device",
    "check_installation",
    "ensure_device_access",
    "ensure_installation_access",
    "ensure_may_change",
    "visible_installation_ids",
]

_EVERYWHERE = frozenset({Role.ADMIN, Role.CS_ADMIN, Role.SUPPORT})


def _role(principal: Principal) -> Role:
    try:
        return Role(principal.role)
    except ValueError:
        raise Forbidden(
            N_("unknown role '%(role)s': ask an administrator"), role=principal.role
        ) from None


def visible_installation_ids(session: Session, principal: Principal) -> Select[Any] | None:
    """A query of the installation ids ``principal`` may see, or None for "all of them".

    Use as ``query.where(Row.installation_id.in_(ids))`` when it is not None.
    """
    role = _role(principal)
    if role in _EVERYWHERE:
        return None
    if principal.user_id is None:  # a bare key of a customer role: nothing is its own
        return select(InstallationRow.id).where(InstallationRow.id.is_(None))
    if role is Role.PARTNER:
        company = select(UserRow.company_id).where(UserRow.id == principal.user_id)
        return select(IntegratorRow.installation_id).where(
            IntegratorRow.company_id == company.scalar_subquery()
        )
    return select(OwnerRow.installation_id).where(OwnerRow.user_id == principal.user_id)


def ensure_installation_access(
    session: Session, principal: Principal, installation_id: str, *, write: bool
) -> None:
    """Return if ``principal`` may see (``write=False``) or change the installation.

    Raises:
        UnknownInstallation: no such installation, or not one of the principal's.
        Forbidden: a support agent asking to change it (or an unknown role).
        Blacklisted: a blacklisted customer asking to change it.
    """
    unknown = UnknownInstallation(f"no installation {installation_id}")
    if session.get(InstallationRow, installation_id) is None:
        raise unknown
    role = _role(principal)
    if role in (Role.ADMIN, Role.CS_ADMIN):
        return
    if role is Role.SUPPORT:
        if write:
            raise Forbidden(
                N_(
                    "support agents look up installations but do not change them "
                    "(devices, services, subscriptions): ask the customer, their partner "
                    "or an administrator"
                )
            )
        return
    if not _is_member(session, principal, role, installation_id):
        raise unknown
    if write:
        ensure_may_change(session, principal)


def ensure_may_change(session: Session, principal: Principal) -> None:
    """Return unless ``principal`` is a blacklisted customer (user, or user of such a company).

    Raises:
        Blacklisted: they may look, but not buy or change anything.
    """
    ensure_not_blacklisted(session, principal.user_id)


def _is_member(session: Session, principal: Principal, role: Role, installation_id: str) -> bool:
    if principal.user_id is None:
        return False
    if role is Role.PARTNER:
        company = select(UserRow.company_id).where(UserRow.id == principal.user_id)
        query = select(IntegratorRow.installation_id).where(
            IntegratorRow.installation_id == installation_id,
            IntegratorRow.company_id == company.scalar_subquery(),
        )
    else:
        query = select(OwnerRow.installation_id).where(
            OwnerRow.installation_id == installation_id, OwnerRow.user_id == principal.user_id
        )
    return session.scalar(select(exists(query))) is True


def ensure_device_access(
    session: Session, principal: Principal, device_id: str, *, write: bool
) -> None:
    """:func:`ensure_installation_access` for the device's installation.

    Raises:
        UnknownDevice: no such device, or not in one of the principal's installations.
        Forbidden, Blacklisted: as for the installation.
    """
    device = session.get(DeviceRow, device_id)
    if device is None:
        raise UnknownDevice(f"no device {device_id}")
    try:
        ensure_installation_access(session, principal, device.installation_id, write=write)
    except UnknownInstallation:
        raise UnknownDevice(f"no device {device_id}") from None


async def check_installation(
    store: Store, principal: Principal, installation_id: str, *, write: bool
) -> None:
    """:func:`ensure_installation_access` in its own transaction, off the event loop."""

    def check() -> None:
        with store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=write)

    await asyncio.to_thread(check)


async def check_device(store: Store, principal: Principal, device_id: str, *, write: bool) -> None:
    """:func:`ensure_device_access` in its own transaction, off the event loop."""

    def check() -> None:
        with store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=write)

    await asyncio.to_thread(check)
