"""Devices: register (credentials returned once), look up, remove; their tokens.

Scoped like their installation (:mod:`cloud.accounts.access`): a device
outside the caller's installations answers 404.
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Response, status

from cloud.accounts.access import check_device, check_installation, ensure_device_access
from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.devices import queries as device_queries
from cloud.devices.deps import IssuingDep
from cloud.devices.tables import DeviceRow, TokenRow
from cloud.errors import CloudError
from cloud.http.deps import SettingsDep, StoreDep
from cloud.http.errors import documented, http_error
from cloud.http.schemas import (
    DEVICE_ID_PATTERN,
    DeviceCreate,
    DeviceCredentialsOut,
    DeviceOut,
    EntitlementOut,
    TokenSummary,
)
from common.settings import parse_broker_url

__all__ = ["device_out", "router"]

router = APIRouter(prefix="/devices", tags=["devices"])

DeviceId = Path(pattern=DEVICE_ID_PATTERN)
Reader = Annotated[Principal, Depends(require(Permission.DEVICES_READ))]
Writer = Annotated[Principal, Depends(require(Permission.DEVICES_WRITE))]


def device_out(device: DeviceRow, token: TokenRow | None) -> DeviceOut:
    summary = None
    if token is not None:
        summary = TokenSummary(
            ver=token.ver,
            epoch=token.epoch,
            iat=token.iat,
            exp=token.exp,
            published=token.published_at is not None,
        )
    return DeviceOut(
        device_id=device.id,
        installation_id=device.installation_id,
        kind=device.kind,
        created_at=device.created_at,
        token=summary,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        {
            404: "unknown installation",
            409: "full or taken",
            503: "the broker did not take the device's login; nothing was stored, retry",
        },
        body=True,
    ),
)
async def create_device(
    body: DeviceCreate,
    principal: Writer,
    service: IssuingDep,
    store: StoreDep,
    settings: SettingsDep,
) -> DeviceCredentialsOut:
    """Register a device and issue its first token; the password is shown only here."""
    try:
        await check_installation(store, principal, body.installation_id, write=True)
        new = await service.add_device(
            installation_id=body.installation_id, kind=body.kind, device_id=body.device_id
        )
    except CloudError as exc:
        raise http_error(exc) from exc
    broker = parse_broker_url(settings.broker_url)  # host and port only: no secrets read
    scheme = "mqtts" if broker.tls else "mqtt"
    return DeviceCredentialsOut(
        device_id=new.device_id,
        mqtt_username=new.mqtt_username,
        mqtt_password=new.mqtt_password,
        broker_url=f"{scheme}://{broker.host}:{broker.port}",
    )


@router.get("/{device_id}", responses=documented({404: "unknown device"}))
def get_device(principal: Reader, store: StoreDep, device_id: str = DeviceId) -> DeviceOut:
    with store.transaction() as tx:
        try:
            ensure_device_access(tx, principal, device_id, write=False)
        except CloudError as exc:
            raise http_error(exc) from exc
        device = device_queries.device(tx, device_id)
        if device is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id}")
        return device_out(device, device_queries.current_token(tx, device_id))


@router.delete(
    "/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=documented(
        {404: "unknown device", 503: "the broker did not remove the login; nothing changed"}
    ),
)
async def delete_device(
    principal: Writer, service: IssuingDep, store: StoreDep, device_id: str = DeviceId
) -> Response:
    """Delete the device and its broker account, and clear its retained token."""
    try:
        await check_device(store, principal, device_id, write=True)
        await service.remove_device(device_id)
    except CloudError as exc:
        raise http_error(exc) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{device_id}/entitlement", responses=documented({404: "unknown device"}))
def get_entitlement(
    principal: Reader, store: StoreDep, device_id: str = DeviceId
) -> EntitlementOut:
    """The device's current token and its claims."""
    with store.transaction() as tx:
        try:
            ensure_device_access(tx, principal, device_id, write=False)
        except CloudError as exc:
            raise http_error(exc) from exc
        token = device_queries.current_token(tx, device_id)
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id} or no token yet")
    return EntitlementOut(
        device_id=device_id,
        token_b64=base64.b64encode(token.token).decode("ascii"),
        claims=token.claims,
    )
