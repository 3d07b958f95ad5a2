"""Devices: register (credentials returned once), look up, remove; their tokens.

Scoped like their installation (:mod:`cloud.devices.access`): a device
outside the caller's installations answers 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.devices.deps import DevicesDep
from cloud.devices.schemas import DeviceCreate, DeviceCredentialsOut, DeviceOut, EntitlementOut
from cloud.http.errors import documented
from cloud.http.schemas import DEVICE_ID_PATTERN

__all__ = ["router"]

router = APIRouter(prefix="/devices", tags=["devices"])

DeviceId = Path(pattern=DEVICE_ID_PATTERN)
Reader = Annotated[Principal, Depends(require(Permission.DEVICES_READ))]
Writer = Annotated[Principal, Depends(require(Permission.DEVICES_WRITE))]


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
    body: DeviceCreate, principal: Writer, service: DevicesDep
) -> DeviceCredentialsOut:
    """Register a device and issue its first token; the password is shown only here."""
    return await service.add(principal, body)


@router.get("/{device_id}", responses=documented({404: "unknown device"}))
def get_device(principal: Reader, service: DevicesDep, device_id: str = DeviceId) -> DeviceOut:
    return service.get(principal, device_id)


@router.delete(
    "/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=documented(
        {404: "unknown device", 503: "the broker did not remove the login; nothing changed"}
    ),
)
async def delete_device(
    principal: Writer, service: DevicesDep, device_id: str = DeviceId
) -> Response:
    """Delete the device and its broker account, and clear its retained token."""
    await service.remove(principal, device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{device_id}/entitlement", responses=documented({404: "unknown device"}))
def get_entitlement(
    principal: Reader, service: DevicesDep, device_id: str = DeviceId
) -> EntitlementOut:
    """The device's current token and its claims."""
    return service.entitlement(principal, device_id)
