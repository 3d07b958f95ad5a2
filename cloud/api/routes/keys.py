"""Public keys: the JWK Set and the signed key set devices are provisioned with."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter

from cloud.api.deps import ServiceDep, SignerDep
from cloud.api.schemas import KeysetOut, RotateRequest, RotateResult, token_versions
from cloud.signer import Signer

__all__ = ["router"]

router = APIRouter(tags=["keys"])


@router.get("/keys")
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


@router.get("/keyset")
def keyset(signer: SignerDep) -> KeysetOut:
    """The current signed key set (COSE_Sign, base64) for provisioning devices."""
    return _keyset_out(signer)


@router.post("/keys/rotate")
async def rotate(body: RotateRequest, service: ServiceDep) -> RotateResult:
    """New token key (and root keys if asked): key set version + 1, every device re-issued."""
    issued = await service.rotate_keys(new_root=body.new_root, new_epoch=body.new_epoch)
    return RotateResult(
        **_keyset_out(service.signer).model_dump(),
        tokens=token_versions(issued),
    )
