"""Installations: create, list, show with devices and grants; grant and revoke services;
members (system integrators, owner) and authorised contacts.

Partners and owners see only their installations (others answer 404, as if
they did not exist: :mod:`cloud.accounts.access`). A partner creating an
installation makes its company a system integrator of it.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from sqlalchemy import select

from cloud.accounts import audit, memberships
from cloud.accounts.access import (
    check_installation,
    ensure_installation_access,
    ensure_may_change,
    visible_installation_ids,
)
from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission, Role
from cloud.accounts.schemas import ContactOut, IntegratorAdd, MembersOut, OwnerSet
from cloud.accounts.users import authorised_contacts, user
from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.deps import IssuingDep
from cloud.devices.issuing import Issued
from cloud.devices.routes.devices import device_out
from cloud.devices.tables import GrantRow, InstallationRow
from cloud.errors import CloudError
from cloud.http.deps import ClockDep, SettingsDep, StoreDep
from cloud.http.errors import documented, http_error
from cloud.http.schemas import (
    FEATURE_PATTERN,
    ID_PATTERN,
    GrantCreate,
    GrantOut,
    GrantResult,
    InstallationCreate,
    InstallationDetail,
    InstallationOut,
    token_versions,
)

__all__ = ["router"]

router = APIRouter(prefix="/installations", tags=["installations"])

_MAX_OFFSET = 2**31 - 1
InstallationId = Path(pattern=ID_PATTERN)
Reader = Annotated[Principal, Depends(require(Permission.INSTALLATIONS_READ))]
Writer = Annotated[Principal, Depends(require(Permission.INSTALLATIONS_WRITE))]
Granter = Annotated[Principal, Depends(require(Permission.GRANTS_WRITE))]
AccountReader = Annotated[Principal, Depends(require(Permission.ACCOUNTS_READ))]
AccountWriter = Annotated[Principal, Depends(require(Permission.ACCOUNTS_WRITE))]


def _installation_out(row: InstallationRow) -> InstallationOut:
    return InstallationOut(id=row.id, name=row.name, created_at=row.created_at)


def _grant_out(row: GrantRow) -> GrantOut:
    return GrantOut(
        feature=row.feature,
        until=row.valid_until,
        params=row.params,
        source=row.source,
        status=row.status,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
    )


def _grant_result(installation_id: str, feature: str, issued: list[Issued]) -> GrantResult:
    return GrantResult(
        installation_id=installation_id, feature=feature, tokens=token_versions(issued)
    )


def _members_out(m: memberships.Members) -> MembersOut:
    return MembersOut(
        installation_id=m.installation_id,
        owner_user_id=m.owner_user_id,
        integrator_company_ids=list(m.integrator_company_ids),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented({403: "the role may not, or the caller is blacklisted"}, body=True),
)
def create_installation(
    body: InstallationCreate, principal: Writer, store: StoreDep, clock: ClockDep
) -> InstallationOut:
    """Create an installation; a partner's company becomes its system integrator."""
    now = clock()
    try:
        with store.transaction() as tx:
            ensure_may_change(tx, principal)
            row = device_queries.add_installation(
                tx, installation_id=f"inst_{secrets.token_hex(8)}", name=body.name, now=now
            )
            if principal.role == Role.PARTNER and principal.user_id is not None:
                company_id = user(tx, principal.user_id).company_id
                if company_id is not None:
                    memberships.add_integrator(tx, row.id, company_id, actor=principal, now=now)
            return _installation_out(row)
    except CloudError as exc:
        raise http_error(exc) from exc


@router.get("")
def list_installations(
    principal: Reader,
    store: StoreDep,
    limit: int = Query(default=100, ge=1, le=1000),
    # bounded: SQLite takes at most a signed 64-bit integer (2**63 was a 500)
    offset: int = Query(default=0, ge=0, le=_MAX_OFFSET),
) -> list[InstallationOut]:
    """The installations the caller may see (partners and owners: only theirs)."""
    with store.transaction() as tx:
        query = select(InstallationRow).order_by(InstallationRow.created_at, InstallationRow.id)
        visible = visible_installation_ids(tx, principal)
        if visible is not None:
            query = query.where(InstallationRow.id.in_(visible))
        rows = tx.scalars(query.limit(limit).offset(offset)).all()
        return [_installation_out(r) for r in rows]


@router.get("/{installation_id}", responses=documented({404: "unknown installation"}))
def get_installation(
    principal: Reader, store: StoreDep, installation_id: str = InstallationId
) -> InstallationDetail:
    with store.transaction() as tx:
        try:
            ensure_installation_access(tx, principal, installation_id, write=False)
        except CloudError as exc:
            raise http_error(exc) from exc
        row = device_queries.installation(tx, installation_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no installation {installation_id}")
        rows = device_queries.devices_of(tx, installation_id)
        tokens = device_queries.current_tokens(tx, [d.id for d in rows])
        devices = [device_out(d, tokens.get(d.id)) for d in rows]
        grants = [_grant_out(g) for g in device_queries.grants_of(tx, installation_id)]
    return InstallationDetail(
        id=row.id, name=row.name, created_at=row.created_at, devices=devices, grants=grants
    )


async def _audit_grant(
    store: Store,
    principal: Principal,
    action: str,
    installation_id: str,
    after: dict[str, Any],
    now: int,
) -> None:
    def write() -> None:
        with store.transaction() as tx:
            audit.record(
                tx,
                actor=principal,
                action=action,
                object_type="installation",
                object_id=installation_id,
                before=None,
                after=after,
                now=now,
            )

    await asyncio.to_thread(write)


@router.post(
    "/{installation_id}/grants",
    responses=documented({404: "unknown installation"}, body=True),
)
async def grant_service(
    body: GrantCreate,
    principal: Granter,
    service: IssuingDep,
    store: StoreDep,
    clock: ClockDep,
    installation_id: str = InstallationId,
) -> GrantResult:
    """Grant (or renew) a service; every device of the installation gets a new token."""
    try:
        await check_installation(store, principal, installation_id, write=True)
        issued = await service.grant(
            installation_id, body.feature, until=body.until, params=body.params
        )
    except CloudError as exc:
        raise http_error(exc) from exc
    grant = {"feature": body.feature, "until": body.until, "params": body.params}
    await _audit_grant(store, principal, "grant.set", installation_id, grant, clock())
    return _grant_result(installation_id, body.feature, issued)


@router.delete(
    "/{installation_id}/grants/{feature}",
    responses=documented({404: "unknown installation or no active grant"}),
)
async def revoke_service(
    principal: Granter,
    service: IssuingDep,
    store: StoreDep,
    clock: ClockDep,
    installation_id: str = InstallationId,
    feature: str = Path(pattern=FEATURE_PATTERN),
) -> GrantResult:
    """Revoke a service; every device of the installation gets a token without it."""
    try:
        await check_installation(store, principal, installation_id, write=True)
        issued = await service.end_grant(installation_id, feature)
    except CloudError as exc:
        raise http_error(exc) from exc
    await _audit_grant(
        store, principal, "grant.revoke", installation_id, {"feature": feature}, clock()
    )
    return _grant_result(installation_id, feature, issued)


# members and contacts -----------------------------------------------------------
@router.get("/{installation_id}/members", responses=documented({404: "unknown installation"}))
def get_members(
    principal: Reader, store: StoreDep, installation_id: str = InstallationId
) -> MembersOut:
    """Its system integrators (partner companies) and its owner (a user)."""
    try:
        with store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            return _members_out(memberships.members(tx, installation_id))
    except CloudError as exc:
        raise http_error(exc) from exc


@router.put(
    "/{installation_id}/owner",
    responses=documented({404: "unknown installation or user"}, body=True),
)
def set_owner(
    body: OwnerSet,
    principal: AccountWriter,
    store: StoreDep,
    clock: ClockDep,
    installation_id: str = InstallationId,
) -> MembersOut:
    """Make a user with the owner role the installation's one owner (replacing any other)."""
    try:
        with store.transaction() as tx:
            m = memberships.set_owner(
                tx, installation_id, body.user_id, actor=principal, now=clock()
            )
            return _members_out(m)
    except CloudError as exc:
        raise http_error(exc) from exc


@router.post(
    "/{installation_id}/integrators",
    responses=documented({404: "unknown installation or company"}, body=True),
)
def add_integrator(
    body: IntegratorAdd,
    principal: AccountWriter,
    store: StoreDep,
    clock: ClockDep,
    installation_id: str = InstallationId,
) -> MembersOut:
    """Add a partner company as a system integrator."""
    try:
        with store.transaction() as tx:
            m = memberships.add_integrator(
                tx, installation_id, body.company_id, actor=principal, now=clock()
            )
            return _members_out(m)
    except CloudError as exc:
        raise http_error(exc) from exc


@router.delete(
    "/{installation_id}/integrators/{company_id}",
    responses=documented({404: "unknown installation, or not an integrator"}),
)
def remove_integrator(
    principal: AccountWriter,
    store: StoreDep,
    clock: ClockDep,
    installation_id: str = InstallationId,
    company_id: int = Path(ge=1, le=2**31 - 1),
) -> MembersOut:
    try:
        with store.transaction() as tx:
            m = memberships.remove_integrator(
                tx, installation_id, company_id, actor=principal, now=clock()
            )
            return _members_out(m)
    except CloudError as exc:
        raise http_error(exc) from exc


@router.get("/{installation_id}/contacts", responses=documented({404: "unknown installation"}))
def get_contacts(
    principal: AccountReader,
    store: StoreDep,
    settings: SettingsDep,
    installation_id: str = InstallationId,
) -> list[ContactOut]:
    """Authorised contacts: the owner and the integrators' partner users, not vendor staff."""
    try:
        with store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            contacts = authorised_contacts(
                tx, installation_id, staff_domains=settings.staff_email_domains
            )
    except CloudError as exc:
        raise http_error(exc) from exc
    return [
        ContactOut(user_id=c.user_id, email=c.email, name=c.name, company_id=c.company_id)
        for c in contacts
    ]
