"""The devices services a route depends on, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.devices.issuing import IssuingService
from cloud.devices.service import DeviceService, InstallationService
from cloud.devices.signer import Signer
from cloud.http.deps import provided

__all__ = ["DevicesDep", "InstallationsDep", "IssuingDep", "SignerDep"]

IssuingDep = Annotated[IssuingService, Depends(provided(IssuingService))]
SignerDep = Annotated[Signer, Depends(provided(Signer))]
InstallationsDep = Annotated[InstallationService, Depends(provided(InstallationService))]
DevicesDep = Annotated[DeviceService, Depends(provided(DeviceService))]
