"""Local query API on a Unix socket, for other processes on the device.

``GET /features`` → every feature the token names with its decision;
``GET /features/{name}`` → one decision (a feature the token does not name
is simply not allowed); ``GET /status`` → token, key set, trusted time,
clock set-back and rejection counters. Read-only: nothing here changes state.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["AgentView", "make_app", "serve"]

log = logging.getLogger(__name__)


class AgentView(Protocol):
    """What the local API reads of the agent (:class:`agent.runtime.Agent` is one).

    The API depends on this small interface, not on the runtime, so the runtime
    can start the API without the two importing each other.
    """

    @property
    def device_id(self) -> str: ...

    def decisions(self) -> Mapping[str, tuple[bool, str]]: ...

    def check(self, feature: str) -> tuple[bool, str]: ...

    def status_details(self) -> dict[str, Any]: ...


def _decision(name: str, allowed: bool, reason: str) -> dict[str, object]:
    return {"feature": name, "allowed": allowed, "reason": reason}


def make_app(agent: AgentView) -> Starlette:
    """The ASGI app answering from ``agent``'s current state."""

    async def features(request: Request) -> JSONResponse:
        decisions = agent.decisions()
        return JSONResponse(
            {
                "device_id": agent.device_id,
                "features": [_decision(n, a, r) for n, (a, r) in sorted(decisions.items())],
            }
        )

    async def feature(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        allowed, reason = agent.check(name)
        return JSONResponse(_decision(name, allowed, reason))

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(agent.status_details())

    return Starlette(
        routes=[
            Route("/features", features),
            Route("/features/{name}", feature),
            Route("/status", status),
        ]
    )


async def serve(agent: AgentView, socket_path: Path) -> None:
    """Serve the local API until cancelled; the socket is removed afterwards."""
    socket_path.parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # noqa: ASYNC240
    config = uvicorn.Config(
        make_app(agent),
        uds=str(socket_path),
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    # the agent owns signal handling; uvicorn must not capture SIGINT/SIGTERM
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    try:
        await server.serve()
    finally:
        server.should_exit = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
