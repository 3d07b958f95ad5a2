"""What routes depend on, as ``Annotated`` aliases (FastAPI full-stack template style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from cloud.bridge import MqttBridge
from cloud.issuing import IssuingService
from cloud.jobs import RefreshJob
from cloud.ports import Clock, EntitlementPublisher
from cloud.signer import Signer
from cloud.store import Store
from entitle.config import Settings

__all__ = [
    "ClockDep",
    "CloudState",
    "ServiceDep",
    "SettingsDep",
    "SignerDep",
    "StateDep",
    "StoreDep",
]


@dataclass(frozen=True, slots=True)
class CloudState:
    """Everything the lifespan built, hung on ``app.state.cloud``."""

    settings: Settings
    store: Store
    signer: Signer
    service: IssuingService
    publisher: EntitlementPublisher
    bridge: MqttBridge | None
    refresh_job: RefreshJob
    clock: Clock


def get_state(request: Request) -> CloudState:
    state: CloudState = request.app.state.cloud
    return state


def get_store(state: Annotated[CloudState, Depends(get_state)]) -> Store:
    return state.store


def get_service(state: Annotated[CloudState, Depends(get_state)]) -> IssuingService:
    return state.service


def get_signer(state: Annotated[CloudState, Depends(get_state)]) -> Signer:
    return state.signer


def get_settings(state: Annotated[CloudState, Depends(get_state)]) -> Settings:
    return state.settings


def get_clock(state: Annotated[CloudState, Depends(get_state)]) -> Clock:
    return state.clock


StateDep = Annotated[CloudState, Depends(get_state)]
StoreDep = Annotated[Store, Depends(get_store)]
ServiceDep = Annotated[IssuingService, Depends(get_service)]
SignerDep = Annotated[Signer, Depends(get_signer)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
