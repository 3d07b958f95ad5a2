"""The packing slip of a shipment: a one-page A4 PDF (fpdf2, as billing's invoices).

It names the repair, the device (and a replacement's serial), which way the parcel goes,
carrier and tracking number, sender and addressee, and what is in the parcel; in the
customer's language (``_``: the gettext of it, as the repair's mails), pure.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from cloud.repairs.notices import repair_number
from cloud.repairs.rules import ShipmentKind

__all__ = ["PackingSlip", "render_slip", "slip_filename"]

Gettext = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class PackingSlip:
    repair_id: int
    shipment_id: int
    kind: ShipmentKind
    device_id: str
    device_kind: str
    installation: str
    carrier: str
    tracking: str
    sender: Sequence[str]  # name and address lines
    addressee: Sequence[str]
    created_at: int
    rma_ticket: int | None = None  # the ticket of the approved RMA the repair comes from
    serial: str | None = None  # a replacement's: the serial of the device in the parcel


def _title(kind: ShipmentKind, _: Gettext) -> str:
    return {
        ShipmentKind.REPLACEMENT: _("PACKING SLIP - REPLACEMENT"),
        ShipmentKind.INBOUND: _("PACKING SLIP - RETURN TO REPAIR CENTRE"),
        ShipmentKind.RETURN: _("PACKING SLIP - REPAIRED DEVICE"),
    }[kind]


def _contents(slip: PackingSlip, _: Gettext) -> str:
    params = {"device": slip.device_id, "kind": slip.device_kind, "serial": slip.serial or "?"}
    return {
        ShipmentKind.REPLACEMENT: _("Replacement device %(serial)s for %(device)s (%(kind)s)"),
        ShipmentKind.INBOUND: _("Device %(device)s (%(kind)s) returned for repair"),
        ShipmentKind.RETURN: _("Repaired device %(device)s (%(kind)s)"),
    }[slip.kind] % params


def _facts(slip: PackingSlip, _: Gettext) -> list[str]:
    number = repair_number(slip.repair_id)
    facts = [_("Repair no.: %(number)s") % {"number": number}]
    if slip.rma_ticket is not None:
        facts.append(_("RMA: ticket %(ticket)s") % {"ticket": slip.rma_ticket})
    facts.append(_("Shipment no.: %(number)s") % {"number": slip.shipment_id})
    if slip.kind is ShipmentKind.REPLACEMENT:
        facts.append(_("Replacement serial: %(serial)s") % {"serial": slip.serial or "?"})
        facts.append(_("Replaces device: %(device)s") % {"device": slip.device_id})
    else:
        facts.append(_("Device serial: %(device)s") % {"device": slip.device_id})
    facts += [
        _("Installation: %(name)s") % {"name": slip.installation},
        _("Carrier: %(carrier)s") % {"carrier": slip.carrier},
        _("Tracking no.: %(tracking)s") % {"tracking": slip.tracking},
        _("Date: %(date)s") % {"date": f"{datetime.fromtimestamp(slip.created_at, UTC):%Y-%m-%d}"},
    ]
    return facts


def _text(value: str) -> str:
    """Latin-1 only (the PDF core fonts); anything else becomes its closest or '?'."""
    folded = unicodedata.normalize("NFKD", value)
    return folded.encode("latin-1", "replace").decode("latin-1")


def slip_filename(slip: PackingSlip) -> str:
    return f"packing-slip-{repair_number(slip.repair_id)}-{slip.shipment_id}.pdf"


def render_slip(slip: PackingSlip, _: Gettext) -> bytes:
    """The slip as PDF bytes, its words in ``_``'s language."""
    number = repair_number(slip.repair_id)
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime.fromtimestamp(slip.created_at, UTC))
    pdf.set_title(_text(_("Packing slip %(number)s") % {"number": number}))
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(width, 10, _text(_title(slip.kind, _)), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 10)
    for fact in _facts(slip, _):
        pdf.cell(width, 6, _text(fact), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    top = pdf.get_y()
    for i, (label, lines) in enumerate(
        ((_("Sender"), slip.sender), (_("Recipient"), slip.addressee))
    ):
        x = pdf.l_margin + i * width / 2
        pdf.set_xy(x, top)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(width / 2 - 4, 6, _text(label), new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 10)
        for line in lines or (_("(no address given)"),):
            pdf.set_x(x)
            pdf.cell(width / 2 - 4, 5, _text(line), new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_xy(pdf.l_margin, max(pdf.get_y(), top + 40) + 6)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(width, 6, _text(_("Contents")), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(width, 6, _text(f"1 x {_contents(slip, _)}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(
        width,
        5,
        _text(
            _("Put this slip in the parcel and quote %(number)s in every message about it.")
            % {"number": number}
        ),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    return bytes(pdf.output())
