"""Keys: the public JWK Set and signed key set (no API key needed), and rotation."""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from cloud.api.deps import ServiceDep, SignerDep, require
from cloud.api.errors import documented
from cloud.api.schemas import KeysetOut, RotateRequest, RotateResult, token_versions
from cloud.apikeys import Principal
from cloud.domain.roles import Permission
from cloud.signer import Signer

__all__ = ["public_router", "router"]

_log = logging.getLogger(__name__)

public_router = APIRouter(tags=["keys"])
router = APIRouter(tags=["keys"])


@public_router.get("/keys")
def jwks(signer: SignerDep) -> dict[str, Any]:
    """Current root and token public keys as a JWK Set (OKP / Ed25519)."""
    return signer.public_keys_jwks()


def _keyset_out(signer: Signer) -> KeysetOut:
    current = signer.keyset
    return KeysetOut(
        version=current.version,
        epoch=current.epoch,
        keyset_b64=base64.b64encode(signer.keyset_bytes).decode("ascii"),
    )


@public_router.get("/keyset")
def keyset(signer: SignerDep) -> KeysetOut:
    """The current signed key set (COSE_Sign, base64) for provisioning devices."""
    return _keyset_out(signer)


@router.post("/keys/rotate", responses=documented(body=True))
async def rotate(
    body: RotateRequest,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.KEYS_ROTATE))],
) -> RotateResult:
    """New token key (and root keys if asked): key set version + 1, every device re-issued."""
    _log.info("key rotation requested by %s (%s)", principal.actor, principal.name)
    issued = await service.rotate_keys(new_root=body.new_root, new_epoch=body.new_epoch)
    return RotateResult(
        **_keyset_out(service.signer).model_dump(),
        tokens=token_versions(issued),
    )
