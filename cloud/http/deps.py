"""What every route may depend on, as ``Annotated`` aliases (FastAPI full-stack template style).

This is plumbing: it imports no feature. The app's lifespan hangs what it
built on ``app.state.cloud`` (:class:`cloud.app.CloudState`); a route reaches
the store, the settings and the clock through the aliases here, and its own
feature's service through an alias its slice declares with :func:`provided`::

    TicketsDep = Annotated[TicketService, Depends(provided(TicketService))]

Who is calling (``CurrentPrincipal``, ``require(Permission.X)``) is
:mod:`cloud.accounts.deps`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Protocol, TypeVar

from fastapi import Depends, Request

from cloud.bridge import MqttBridge
from cloud.database import Store
from cloud.settings import CloudSettings
from common.clock import Clock

__all__ = [
    "AppState",
    "BridgeDep",
    "ClockDep",
    "SettingsDep",
    "StoreDep",
    "get_state",
    "provided",
]

_T = TypeVar("_T")


class AppState(Protocol):
    """What every route may reach on ``app.state.cloud``; the app's state has more."""

    @property
    def store(self) -> Store: ...

    @property
    def settings(self) -> CloudSettings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def bridge(self) -> MqttBridge | None:
        """The cloud's MQTT link; None when a custom publisher was given."""
        ...

    def provided(self, kind: type[_T]) -> _T:
        """The one ``kind`` the lifespan built; LookupError if it built none."""
        ...


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.cloud
    return state


def provided(kind: type[_T]) -> Callable[[Request], _T]:
    """A dependency returning the app's ``kind`` (a service the lifespan built), found by class."""

    def dependency(request: Request) -> _T:
        return get_state(request).provided(kind)

    dependency.__name__ = f"provided_{kind.__name__}"
    return dependency


def get_store(state: Annotated[AppState, Depends(get_state)]) -> Store:
    return state.store


def get_settings(state: Annotated[AppState, Depends(get_state)]) -> CloudSettings:
    return state.settings


def get_clock(state: Annotated[AppState, Depends(get_state)]) -> Clock:
    return state.clock


def get_bridge(state: Annotated[AppState, Depends(get_state)]) -> MqttBridge | None:
    return state.bridge


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[CloudSettings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
BridgeDep = Annotated[MqttBridge | None, Depends(get_bridge)]
