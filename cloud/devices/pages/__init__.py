"""The devices feature's dashboard pages: installations and devices. ``router`` gathers them."""

from fastapi import APIRouter

from cloud.devices.pages import device, installation, keys

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
router.include_router(installation.router)
router.include_router(device.router)
router.include_router(keys.router)  # /admin/keys: beside the signer (issue 15, admin helper)
