"""The repairs service a route depends on, as an ``Annotated`` alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.http.deps import provided
from cloud.repairs.service import RepairService

__all__ = ["RepairsDep"]

RepairsDep = Annotated[RepairService, Depends(provided(RepairService))]
