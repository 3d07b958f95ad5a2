"""The issuer keys' page (``/admin/keys``): the key set devices trust now, and rotating it.

It lives beside the signer and ``POST /api/v1/keys/rotate`` (:mod:`cloud.devices.routes.keys`)
and calls the same :meth:`~cloud.devices.issuing.IssuingService.rotate_keys`; the rest of
administration is :mod:`cloud.accounts.pages.admin`. A rotation has a confirm step: every
device's token is signed again and published.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import page_require
from cloud.accounts.rules import Permission
from cloud.devices.deps import IssuingDep, SignerDep
from cloud.devices.signer import Signer
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import render, translator
from protocol.keyset import MAX_ROTATIONS

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Rotator = Annotated[Principal, Depends(page_require(Permission.KEYS_ROTATE))]


def _keyset(signer: Signer) -> dict[str, Any]:
    current = signer.keyset
    return {
        "version": current.version,
        "epoch": current.epoch,
        "threshold": current.threshold,
        "roots": sorted(kid.hex() for kid in current.root),
        "tokens": sorted(kid.hex() for kid in current.token),
        "signing": signer.token_kid.hex(),
        "chain": len(signer.chain()),
    }


@router.get("/admin/keys")
def issuer_keys_page(request: Request, who: Rotator, signer: SignerDep) -> HTMLResponse:
    """The key set devices trust now, and what a rotation does."""
    return render(
        request,
        "devices/keys.html",
        {"keyset": _keyset(signer), "max_rotations": MAX_ROTATIONS},
    )


@router.get("/admin/keys/rotate")
def rotate_confirm(
    request: Request,
    who: Rotator,
    signer: SignerDep,
    new_root: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    """The confirm step: a new token key (and root keys if asked), every token re-issued."""
    context = {"keyset": _keyset(signer), "new_root": new_root}
    return render(request, "devices/keys_rotate.html", context)


@router.post("/admin/keys/rotate")
async def rotate_submit(
    request: Request, who: Rotator, form: CheckedForm, issuing: IssuingDep
) -> Response:
    """Rotate as ``POST /api/v1/keys/rotate`` does; every device gets a new token."""
    new_root = form.get("new_root") == "true"
    issued = await issuing.rotate_keys(new_root=new_root, new_epoch=False)
    version = issuing.signer.keyset.version
    text = translator(request).ngettext(
        "Rotated: key set version %(version)d; %(num)d device token re-issued.",
        "Rotated: key set version %(version)d; %(num)d device tokens re-issued.",
        len(issued),
    ) % {"version": version, "num": len(issued)}
    return redirect("/admin/keys", text)
