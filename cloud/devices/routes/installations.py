"""Installations: create, list, show with devices and grants; grant and revoke services;
members (system integrators, owner) and authorised contacts.

Partners and owners see only their installations (others answer 404, as if
they did not exist: :mod:`cloud.devices.access`). A partner creating an
installation makes its company a system integrator of it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.accounts.schemas import ContactOut, IntegratorAdd, MembersOut, OwnerSet
from cloud.devices.deps import InstallationsDep
from cloud.devices.schemas import (
    FEATURE_PATTERN,
    GrantCreate,
    GrantResult,
    InstallationCreate,
    InstallationDetail,
    InstallationOut,
)
from cloud.http.errors import documented
from cloud.http.schemas import ID_PATTERN

__all__ = ["router"]

router = APIRouter(prefix="/installations", tags=["installations"])

_MAX_OFFSET = 2**31 - 1
InstallationId = Path(pattern=ID_PATTERN)
Reader = Annotated[Principal, Depends(require(Permission.INSTALLATIONS_READ))]
Writer = Annotated[Principal, Depends(require(Permission.INSTALLATIONS_WRITE))]
Granter = Annotated[Principal, Depends(require(Permission.GRANTS_WRITE))]
AccountReader = Annotated[Principal, Depends(require(Permission.ACCOUNTS_READ))]
AccountWriter = Annotated[Principal, Depends(require(Permission.ACCOUNTS_WRITE))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented({403: "the role may not, or the caller is blacklisted"}, body=True),
)
def create_installation(
    body: InstallationCreate, principal: Writer, service: InstallationsDep
) -> InstallationOut:
    """Create an installation; a partner's company becomes its system integrator."""
    return service.create(principal, body)


@router.get("")
def list_installations(
    principal: Reader,
    service: InstallationsDep,
    limit: int = Query(default=100, ge=1, le=1000),
    # bounded: SQLite takes at most a signed 64-bit integer (2**63 was a 500)
    offset: int = Query(default=0, ge=0, le=_MAX_OFFSET),
) -> list[InstallationOut]:
    """The installations the caller may see (partners and owners: only theirs)."""
    return service.visible(principal, limit=limit, offset=offset)


@router.get("/{installation_id}", responses=documented({404: "unknown installation"}))
def get_installation(
    principal: Reader, service: InstallationsDep, installation_id: str = InstallationId
) -> InstallationDetail:
    return service.detail(principal, installation_id)


@router.post(
    "/{installation_id}/grants",
    responses=documented({404: "unknown installation"}, body=True),
)
async def grant_service(
    body: GrantCreate,
    principal: Granter,
    service: InstallationsDep,
    installation_id: str = InstallationId,
) -> GrantResult:
    """Grant (or renew) a service; every device of the installation gets a new token."""
    return await service.grant(principal, installation_id, body)


@router.delete(
    "/{installation_id}/grants/{feature}",
    responses=documented({404: "unknown installation or no active grant"}),
)
async def revoke_service(
    principal: Granter,
    service: InstallationsDep,
    installation_id: str = InstallationId,
    feature: str = Path(pattern=FEATURE_PATTERN),
) -> GrantResult:
    """Revoke a service; every device of the installation gets a token without it."""
    return await service.revoke(principal, installation_id, feature)


# members and contacts -----------------------------------------------------------
@router.get("/{installation_id}/members", responses=documented({404: "unknown installation"}))
def get_members(
    principal: Reader, service: InstallationsDep, installation_id: str = InstallationId
) -> MembersOut:
    """Its system integrators (partner companies) and its owner (a user)."""
    return service.members(principal, installation_id)


@router.put(
    "/{installation_id}/owner",
    responses=documented({404: "unknown installation or user"}, body=True),
)
def set_owner(
    body: OwnerSet,
    principal: AccountWriter,
    service: InstallationsDep,
    installation_id: str = InstallationId,
) -> MembersOut:
    """Make a user with the owner role the installation's one owner (replacing any other)."""
    return service.set_owner(principal, installation_id, body.user_id)


@router.post(
    "/{installation_id}/integrators",
    responses=documented({404: "unknown installation or company"}, body=True),
)
def add_integrator(
    body: IntegratorAdd,
    principal: AccountWriter,
    service: InstallationsDep,
    installation_id: str = InstallationId,
) -> MembersOut:
    """Add a partner company as a system integrator."""
    return service.add_integrator(principal, installation_id, body.company_id)


@router.delete(
    "/{installation_id}/integrators/{company_id}",
    responses=documented({404: "unknown installation, or not an integrator"}),
)
def remove_integrator(
    principal: AccountWriter,
    service: InstallationsDep,
    installation_id: str = InstallationId,
    company_id: int = Path(ge=1, le=2**31 - 1),
) -> MembersOut:
    return service.remove_integrator(principal, installation_id, company_id)


@router.get("/{installation_id}/contacts", responses=documented({404: "unknown installation"}))
def get_contacts(
    principal: AccountReader, service: InstallationsDep, installation_id: str = InstallationId
) -> list[ContactOut]:
    """Authorised contacts: the owner and the integrators' partner users, not vendor staff."""
    return service.contacts(principal, installation_id)
