"""The health services a route depends on, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.health.commands import CommandService
from cloud.health.ingest import HealthIngest
from cloud.health.service import HealthService
from cloud.http.deps import provided

__all__ = ["CommandsDep", "HealthDep", "HealthIngestDep"]

CommandsDep = Annotated[CommandService, Depends(provided(CommandService))]
HealthIngestDep = Annotated[HealthIngest, Depends(provided(HealthIngest))]
HealthDep = Annotated[HealthService, Depends(provided(HealthService))]
