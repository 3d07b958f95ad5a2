"""Invoices as PDF: ``GET /api/v1/orders/{order_id}/invoice.pdf``.

Scoped like the order itself: partners and owners get the invoices of their
installations' orders only, and an order out of scope is a 404 like one that
does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.billing.deps import OrdersDep
from cloud.http.errors import documented

__all__ = ["router"]

router = APIRouter(prefix="/orders", tags=["orders"])

OrderId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get(
    "/{order_id}/invoice.pdf",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "the invoice (PDF)"},
        **documented(
            {
                404: "unknown order (or not one of yours)",
                409: "the order is not paid or invoiced: no invoice yet",
            }
        ),
    },
)
async def get_invoice_pdf(
    principal: Annotated[Principal, Depends(require(Permission.ORDERS_READ))],
    service: OrdersDep,
    order_id: OrderId,
) -> Response:
    """The invoice of a paid or invoiced order, as a PDF download."""
    invoice = await service.invoice_pdf(principal, order_id)
    return Response(
        content=invoice.pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{invoice.filename}"',
            "Cache-Control": "private, no-store",
        },
    )
