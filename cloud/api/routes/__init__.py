"""All ``/api/v1`` routers, one module per resource."""

from fastapi import APIRouter

from cloud.api.routes import devices, health, installations, keys

__all__ = ["api_router"]

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(installations.router)
api_router.include_router(devices.router)
api_router.include_router(keys.router)
api_router.include_router(health.router)
