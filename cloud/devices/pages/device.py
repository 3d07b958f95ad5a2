"""The device page is served by ``cloud.health.pages`` (``GET /devices/{id}``), not here.

It shows the device's health, diagnosis, charts and commands beside its
entitlement, and ``cloud.devices`` sits below ``cloud.health`` in the import
layers (pyproject.toml: health may use devices, never the other way round).
This router stays empty so the devices feature's page router keeps its shape.
"""

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
