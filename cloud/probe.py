"""Readiness: the database answers; the broker link is reported."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response, status
from sqlalchemy.exc import SQLAlchemyError

from cloud.devices.deps import SignerDep
from cloud.http.deps import BridgeDep, StoreDep
from cloud.http.schemas import HealthOut

__all__ = ["router"]

_log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get(
    "/healthz", responses={503: {"model": HealthOut, "description": "the database is unreachable"}}
)
async def healthz(
    store: StoreDep, bridge: BridgeDep, signer: SignerDep, response: Response
) -> HealthOut:
    database = "ok"
    try:
        await asyncio.wait_for(asyncio.to_thread(store.ping), timeout=5)
    except (SQLAlchemyError, TimeoutError) as exc:
        _log.warning("readiness: database not reachable: %s", exc)
        database = "unreachable"
    if bridge is None:
        broker = "external"
    else:
        broker = "connected" if bridge.connected else "disconnected"
    ok = database == "ok"
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthOut(
        status="ok" if ok else "unavailable",
        database=database,
        broker=broker,
        keyset_version=signer.keyset.version,
    )
