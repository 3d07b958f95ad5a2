"""The repairs desk: the list (by status), a new request, and a repair with its timeline.

Every page calls :class:`~cloud.repairs.service.RepairService`, the same service as
``/api/v1/repairs``: scoping (another customer's repair is the not-found page), who may
take which step (:func:`cloud.repairs.rules.steps`) and the money (billing) are the
service's. A page shows only the forms of the steps the viewer may take now; a refused
form comes back to the repair with the refusal, translated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import page_require
from cloud.accounts.rules import STAFF_ROLES, Permission
from cloud.devices.deps import DevicesDep
from cloud.errors import CloudError
from cloud.http.deps import SettingsDep
from cloud.http.schemas import DEVICE_ID_PATTERN
from cloud.repairs.deps import RepairsDep
from cloud.repairs.routes import slip_response
from cloud.repairs.rules import ShipmentKind, Status, Step
from cloud.repairs.schemas import Cancel, Quote, RepairCreate, Reship, ShipmentCreate, StepTaken
from cloud.repairs.service import UnknownRepair, UnknownShipment
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import error_text, render, translator
from protocol.topics import DEVICE_ID_MAX_LEN

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(page_require(Permission.TICKETS_READ))]
Writer = Annotated[Principal, Depends(page_require(Permission.TICKETS_WRITE))]
Payer = Annotated[Principal, Depends(page_require(Permission.ORDERS_WRITE))]
RepairId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ShipmentId = Annotated[int, Path(ge=1, le=2**31 - 1)]
PER_PAGE = 50
_CARD = re.compile(r"[0-9]{12,19}")


def _field(form: Any, name: str) -> str:
    return str(form.get(name, "")).strip()


async def _act(request: Request, repair_id: int, done: str, action: Callable[[], Any]) -> Response:
    """Run the service call; back to the repair with ``done``, or with the refusal."""
    back = f"/repairs/{repair_id}"
    try:
        result = action()
        if hasattr(result, "__await__"):
            await result
    except (UnknownRepair, UnknownShipment):
        raise
    except CloudError as exc:
        return redirect(back, error_text(request, exc), level="error")
    return redirect(back, done)


def _shipment_help(_: Callable[[str], str]) -> str:
    return _(
        "Give the carrier and the tracking number (and a replacement's serial: letters, "
        "digits, - and _)."
    )


def _invalid(request: Request, repair_id: int, text: str) -> Response:
    return redirect(f"/repairs/{repair_id}", text, level="error")


# the list ----------------------------------------------------------------------------
@router.get("/repairs")
def repairs_page(
    request: Request,
    who: Reader,
    service: RepairsDep,
    status: Annotated[Status | None, Query()] = None,
    device: Annotated[
        str | None, Query(max_length=DEVICE_ID_MAX_LEN, pattern=DEVICE_ID_PATTERN)
    ] = None,
    ticket: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Repairs, newest first, filtered by status (and a device's or a ticket's)."""
    shown = service.list(
        who,
        status=status,
        device_id=device,
        ticket_id=ticket,
        limit=PER_PAGE + 1,
        offset=(page - 1) * PER_PAGE,
    )
    context = {
        "device": device,
        "ticket": ticket,
        "repairs": shown[:PER_PAGE],
        "more": len(shown) > PER_PAGE,
        "page": page,
        "statuses": [s.value for s in Status],
        "status": None if status is None else status.value,
    }
    return render(request, "repairs/list.html", context)


# a new request -----------------------------------------------------------------------
def _new_form(
    request: Request, values: dict[str, Any], *, error: str | None = None, code: int = 200
) -> HTMLResponse:
    return render(request, "repairs/new.html", {"values": values, "error": error}, status_code=code)


@router.get("/repairs/new")
def new_repair(
    request: Request,
    who: Writer,
    devices: DevicesDep,
    device: Annotated[str, Query(max_length=DEVICE_ID_MAX_LEN, pattern=DEVICE_ID_PATTERN)],
    ticket: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> HTMLResponse:
    """The request form for a device (``?ticket=`` when it comes from a ticket)."""
    found = devices.get(who, device)  # out of scope: the not-found page
    values = {"device_id": found.device_id, "ticket_id": ticket or "", "problem": "", "ship_to": ""}
    return _new_form(request, values)


@router.post("/repairs/new")
def new_repair_submit(
    request: Request, who: Writer, form: CheckedForm, service: RepairsDep
) -> Response:
    _ = translator(request).gettext
    values = {k: _field(form, k) for k in ("device_id", "ticket_id", "problem", "ship_to")}
    try:
        body = RepairCreate(
            device_id=values["device_id"],
            ticket_id=int(values["ticket_id"]) if values["ticket_id"].isdigit() else None,
            problem=values["problem"],
            ship_to=values["ship_to"].replace("\r\n", "\n"),
        )
    except ValidationError:
        return _new_form(
            request,
            values,
            error=_(
                "Describe the problem and give the address to ship to (at most 500 characters)."
            ),
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    try:
        made = service.request(
            who,
            device_id=body.device_id,
            ticket_id=body.ticket_id,
            problem=body.problem,
            ship_to=body.ship_to,
        )
    except CloudError as exc:
        return _new_form(
            request,
            values,
            error=error_text(request, exc),
            code=status.HTTP_409_CONFLICT,
        )
    return redirect(
        f"/repairs/{made.id}", _("Repair %(number)s is requested.") % {"number": made.number}
    )


# one repair --------------------------------------------------------------------------
@router.get("/repairs/{repair_id}")
def repair_page(
    request: Request, repair_id: RepairId, who: Reader, service: RepairsDep, settings: SettingsDep
) -> HTMLResponse:
    """Status, warranty, quote, shipments with their packing slips, the timeline, and the
    forms of the steps the viewer may take."""
    repair = service.get(who, repair_id)
    context = {
        "repair": repair,
        "staff": who.role in STAFF_ROLES,
        "kinds": [k.value for k in ShipmentKind],
        "sandbox": settings.payment_provider == "sandbox",
    }
    return render(request, "repairs/repair.html", context)


@router.post("/repairs/{repair_id}/steps")
async def take_step(
    request: Request, repair_id: RepairId, who: Writer, form: CheckedForm, service: RepairsDep
) -> Response:
    _ = translator(request).gettext
    try:
        taken = StepTaken(step=_field(form, "step"), note=_field(form, "note"))  # type: ignore[arg-type]
    except ValidationError:
        return _invalid(request, repair_id, _("Choose a step; a note is one line."))
    return await _act(
        request,
        repair_id,
        _("The repair has moved on."),
        lambda: service.step(who, repair_id, Step(taken.step), note=taken.note),
    )


@router.post("/repairs/{repair_id}/quote")
async def quote(
    request: Request, repair_id: RepairId, who: Writer, form: CheckedForm, service: RepairsDep
) -> Response:
    _ = translator(request).gettext
    try:
        amount = Decimal(_field(form, "amount").replace(",", "."))
        body = Quote(
            amount_cents=int((amount * 100).to_integral_exact()),
            description=_field(form, "description"),
        )
    except (InvalidOperation, ValidationError, ValueError):
        return _invalid(
            request, repair_id, _("Give the price as an amount like 125.00 and a description.")
        )
    return await _act(
        request,
        repair_id,
        _("The quote is sent to the customer."),
        lambda: service.quote(
            who, repair_id, amount_cents=body.amount_cents, text=body.description
        ),
    )


@router.post("/repairs/{repair_id}/accept")
async def accept(
    request: Request, repair_id: RepairId, who: Payer, form: CheckedForm, service: RepairsDep
) -> Response:
    _ = translator(request).gettext
    card: str | None = re.sub(r"[\s-]", "", _field(form, "card_number")) or None
    if card is not None and not _CARD.fullmatch(card):
        return _invalid(request, repair_id, _("Enter a card number of 12 to 19 digits."))
    return await _act(
        request,
        repair_id,
        _("Thank you: the repair is paid."),
        lambda: service.accept(who, repair_id, card_token=card),
    )


@router.post("/repairs/{repair_id}/shipments")
async def ship(
    request: Request, repair_id: RepairId, who: Writer, form: CheckedForm, service: RepairsDep
) -> Response:
    _ = translator(request).gettext
    try:
        body = ShipmentCreate(
            kind=_field(form, "kind"),  # type: ignore[arg-type]
            carrier=_field(form, "carrier"),
            tracking=_field(form, "tracking"),
            serial=_field(form, "serial") or None,
        )
    except ValidationError:
        return _invalid(request, repair_id, _shipment_help(_))
    return await _act(
        request,
        repair_id,
        _("The shipment is recorded."),
        lambda: service.ship(
            who,
            repair_id,
            kind=body.kind,
            carrier=body.carrier,
            tracking=body.tracking,
            serial=body.serial,
        ),
    )


@router.post("/repairs/{repair_id}/shipments/{shipment_id}/reship")
async def reship(
    request: Request,
    repair_id: RepairId,
    shipment_id: ShipmentId,
    who: Writer,
    form: CheckedForm,
    service: RepairsDep,
) -> Response:
    _ = translator(request).gettext
    try:
        body = Reship(
            carrier=_field(form, "carrier"),
            tracking=_field(form, "tracking"),
            serial=_field(form, "serial") or None,
        )
    except ValidationError:
        return _invalid(request, repair_id, _shipment_help(_))
    return await _act(
        request,
        repair_id,
        _("The shipment is sent again."),
        lambda: service.reship(
            who,
            repair_id,
            shipment_id,
            carrier=body.carrier,
            tracking=body.tracking,
            serial=body.serial,
        ),
    )


@router.post("/repairs/{repair_id}/shipments/{shipment_id}/cancel")
async def cancel_shipment(
    request: Request,
    repair_id: RepairId,
    shipment_id: ShipmentId,
    who: Writer,
    form: CheckedForm,
    service: RepairsDep,
) -> Response:
    _ = translator(request).gettext
    return await _act(
        request,
        repair_id,
        _("The shipment is cancelled."),
        lambda: service.cancel_shipment(who, repair_id, shipment_id),
    )


@router.get("/repairs/{repair_id}/shipments/{shipment_id}/slip.pdf")
def packing_slip(
    repair_id: RepairId, shipment_id: ShipmentId, who: Reader, service: RepairsDep
) -> Response:
    return slip_response(service.slip(who, repair_id, shipment_id))


@router.post("/repairs/{repair_id}/cancel")
async def cancel(
    request: Request, repair_id: RepairId, who: Writer, form: CheckedForm, service: RepairsDep
) -> Response:
    _ = translator(request).gettext
    try:
        body = Cancel(reason=_field(form, "reason"))
    except ValidationError:
        return _invalid(request, repair_id, _("Say in one line why the repair is cancelled."))
    return await _act(
        request,
        repair_id,
        _("The repair is cancelled."),
        lambda: service.cancel(who, repair_id, reason=body.reason),
    )
