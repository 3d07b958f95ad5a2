"""Installations: create, list, show with devices and grants; grant and revoke services."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, HTTPException, Path, Query, status

from cloud.api.deps import ClockDep, ServiceDep, StoreDep
from cloud.api.errors import documented, http_error
from cloud.api.routes.devices import device_out
from cloud.api.schemas import (
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
from cloud.errors import CloudError
from cloud.issuing import Issued
from cloud.store import GrantRow, InstallationRow

__all__ = ["router"]

router = APIRouter(prefix="/installations", tags=["installations"])

_MAX_OFFSET = 2**31 - 1
InstallationId = Path(pattern=ID_PATTERN)


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


@router.post("", status_code=status.HTTP_201_CREATED, responses=documented(body=True))
def create_installation(
    body: InstallationCreate, store: StoreDep, clock: ClockDep
) -> InstallationOut:
    with store.transaction() as tx:
        row = tx.add_installation(
            installation_id=f"inst_{secrets.token_hex(8)}", name=body.name, now=clock()
        )
    return _installation_out(row)


@router.get("")
def list_installations(
    store: StoreDep,
    limit: int = Query(default=100, ge=1, le=1000),
    # bounded: SQLite takes at most a signed 64-bit integer (2**63 was a 500)
    offset: int = Query(default=0, ge=0, le=_MAX_OFFSET),
) -> list[InstallationOut]:
    with store.transaction() as tx:
        return [_installation_out(r) for r in tx.installations(limit=limit, offset=offset)]


@router.get("/{installation_id}", responses=documented({404: "unknown installation"}))
def get_installation(store: StoreDep, installation_id: str = InstallationId) -> InstallationDetail:
    with store.transaction() as tx:
        row = tx.installation(installation_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no installation {installation_id}")
        rows = tx.devices_of(installation_id)
        tokens = tx.current_tokens([d.id for d in rows])
        devices = [device_out(d, tokens.get(d.id)) for d in rows]
        grants = [_grant_out(g) for g in tx.grants_of(installation_id)]
    return InstallationDetail(
        id=row.id, name=row.name, created_at=row.created_at, devices=devices, grants=grants
    )


@router.post(
    "/{installation_id}/grants",
    responses=documented({404: "unknown installation"}, body=True),
)
async def grant_service(
    body: GrantCreate, service: ServiceDep, installation_id: str = InstallationId
) -> GrantResult:
    """Grant (or renew) a service; every device of the installation gets a new token."""
    try:
        issued = await service.grant(
            installation_id, body.feature, until=body.until, params=body.params
        )
    except CloudError as exc:
        raise http_error(exc) from exc
    return _grant_result(installation_id, body.feature, issued)


@router.delete(
    "/{installation_id}/grants/{feature}",
    responses=documented({404: "unknown installation or no active grant"}),
)
async def revoke_service(
    service: ServiceDep,
    installation_id: str = InstallationId,
    feature: str = Path(pattern=FEATURE_PATTERN),
) -> GrantResult:
    """Revoke a service; every device of the installation gets a token without it."""
    try:
        issued = await service.end_grant(installation_id, feature)
    except CloudError as exc:
        raise http_error(exc) from exc
    return _grant_result(installation_id, feature, issued)
