"""Keys: the public JWK Set and signed key set (no API key needed), and rotation."""

from __future__ import annotations

import base64
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.devices.deps import IssuingDep, SignerDep
from cloud.devices.schemas import KeysetOut, RotateRequest, RotateResult, token_versions
from cloud.devices.signer import Signer
from cloud.http.errors import documented

__all__ = ["public_router", "router"]

_log = logging.getLogger(__name__)

public_router = APIRouter(tags=["keys"])
router = APIRouter(tags=["keys"])


COSE_KEY_SET = "application/cose-key-set"  # RFC 9052 section 7, registered with IANA


def _quality(accept: str, media_type: str) -> tuple[int, float]:
    """How specifically ``accept`` names ``media_type`` (3 exact, 2 ``type/*``, 1 ``*/*``,
    0 not at all) and the q-value of that most specific range (RFC 9110 section 12.5.1)."""
    kind = media_type.split("/")[0]
    ranks = {media_type: 3, f"{kind}/*": 2, "*/*": 1}
    found = (0, 0.0)
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        rank = ranks.get(name.lower(), 0)
        if rank <= found[0]:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value)))
                except ValueError:
                    q = 0.0
        found = (rank, q)
    return found


def _wants_cose(accept: str) -> bool:
    """JSON stays the default: the COSE key set only for a client that names it."""
    rank, q = _quality(accept, COSE_KEY_SET)
    return rank == 3 and q > 0 and q >= _quality(accept, "application/json")[1]


@public_router.get(
    "/keys",
    response_model=dict[str, Any],
    responses={
        200: {
            "description": "the JWK Set (JSON), or with 'Accept: application/cose-key-set' "
            "the COSE_KeySet (CBOR) that COSE libraries load as it is",
            "content": {COSE_KEY_SET: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def jwks(signer: SignerDep, request: Request, response: Response) -> Any:
    """Current token and root public keys (Ed25519): a JWK Set, or a COSE_KeySet.

    Tokens carry an 8-byte binary kid. A JWK ``kid`` is text, so the JWK Set
    gives the base64url of it and JOSE-side loaders (``cwt.COSEKey.from_jwk``)
    cannot match it to a token; ask for ``application/cose-key-set`` to get
    COSE_Keys whose kid is the token's own (``cwt.COSEKey.new``, pycose's
    ``CoseKey.from_dict``). ``entitle_role`` says what each key signs.
    """
    if _wants_cose(request.headers.get("accept", "")):
        return Response(
            signer.public_keys_cose(), media_type=COSE_KEY_SET, headers={"Vary": "Accept"}
        )
    response.headers["Vary"] = "Accept"
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
    service: IssuingDep,
    principal: Annotated[Principal, Depends(require(Permission.KEYS_ROTATE))],
) -> RotateResult:
    """New token key (and root keys if asked): key set version + 1, every device re-issued."""
    _log.info("key rotation requested by %s (%s)", principal.actor, principal.name)
    issued = await service.rotate_keys(new_root=body.new_root, new_epoch=body.new_epoch)
    return RotateResult(
        **_keyset_out(service.signer).model_dump(),
        tokens=token_versions(issued),
    )
