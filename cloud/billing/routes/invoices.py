"""Invoices as PDF: ``GET /api/v1/orders/{order_id}/invoice.pdf``.

Scoped like the order itself: partners and owners get the invoices of their
installations' orders only, and an order out of scope is a 404 like one that
does not exist.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.billing import repository as orders
from cloud.billing.errors import UnknownOrder
from cloud.billing.invoices import Invoice, invoice_filename, invoice_for_order, render_invoice
from cloud.database import Store
from cloud.devices.access import ensure_installation_access
from cloud.errors import CloudError, UnknownInstallation
from cloud.http.deps import SettingsDep, StoreDep
from cloud.http.errors import documented, http_error
from cloud.settings import CloudSettings

__all__ = ["router"]

router = APIRouter(prefix="/orders", tags=["orders"])

OrderId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _invoice(store: Store, principal: Principal, order_id: int, settings: CloudSettings) -> Invoice:
    with store.transaction() as tx:
        row = orders.get_order(tx, order_id)
        if row is None:
            raise UnknownOrder(f"no order {order_id}")
        try:
            ensure_installation_access(tx, principal, row.installation_id, write=False)
        except UnknownInstallation:
            raise UnknownOrder(f"no order {order_id}") from None
        return invoice_for_order(tx, order_id, settings=settings)


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
    store: StoreDep,
    settings: SettingsDep,
    order_id: OrderId,
) -> Response:
    """The invoice of a paid or invoiced order, as a PDF download."""
    try:
        invoice = await asyncio.to_thread(_invoice, store, principal, order_id, settings)
    except CloudError as exc:
        raise http_error(exc) from exc
    pdf = await asyncio.to_thread(render_invoice, invoice)
    return Response(
        content=pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{invoice_filename(invoice)}"',
            "Cache-Control": "private, no-store",
        },
    )
