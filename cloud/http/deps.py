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

from collections.abc import Awaitable, Callable
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
    "state_of",
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


# The dependencies here only read ``app.state``: ``async def`` runs them on the event loop.
# A plain ``def`` dependency costs a thread-pool hop per request (FastAPI runs sync
# dependencies in threads), which waits for the GIL behind the MQTT and database threads.
def state_of(request: Request) -> AppState:
    """The app's state, for code that is not a dependency (a page's own helper)."""
    state: AppState = request.app.state.cloud
    return state


async def get_state(request: Request) -> AppState:
    return state_of(request)


def provided(kind: type[_T]) -> Callable[[Request], Awaitable[_T]]:
    """A dependency returning the app's ``kind`` (a service the lifespan built), found by class."""

    async def dependency(request: Request) -> _T:
        return state_of(request).provided(kind)

    dependency.__name__ = f"provided_{kind.__name__}"
    return dependency


async def get_store(state: Annotated[AppState, Depends(get_state)]) -> Store:
    return state.store


async def get_settings(state: Annotated[AppState, Depends(get_state)]) -> CloudSettings:
    return state.settings


async def get_clock(state: Annotated[AppState, Depends(get_state)]) -> Clock:
    return state.clock


async def get_bridge(state: Annotated[AppState, Depends(get_state)]) -> MqttBridge | None:
    return state.bridge


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[CloudSettings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
BridgeDep = Annotated[MqttBridge | None, Depends(get_bridge)]
