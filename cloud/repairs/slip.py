"""The packing slip of a shipment: a one-page A4 PDF (fpdf2, as billing's invoices).

It names the repair, the device, which way the parcel goes, carrier and tracking number,
sender and addressee, and what is in the parcel; English, like the invoices.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from cloud.repairs.notices import repair_number
from cloud.repairs.rules import ShipmentKind

__all__ = ["PackingSlip", "render_slip", "slip_filename"]


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
    rma: str | None = None  # "ticket 12" when the repair comes from an approved RMA


_CONTENTS = {
    ShipmentKind.REPLACEMENT: "Replacement device for {device} ({kind})",
    ShipmentKind.INBOUND: "Device {device} ({kind}) returned for repair",
    ShipmentKind.RETURN: "Repaired device {device} ({kind})",
}
_TITLE = {
    ShipmentKind.REPLACEMENT: "PACKING SLIP - REPLACEMENT",
    ShipmentKind.INBOUND: "PACKING SLIP - RETURN TO REPAIR CENTRE",
    ShipmentKind.RETURN: "PACKING SLIP - REPAIRED DEVICE",
}


def _text(value: str) -> str:
    """Latin-1 only (the PDF core fonts); anything else becomes its closest or '?'."""
    folded = unicodedata.normalize("NFKD", value)
    return folded.encode("latin-1", "replace").decode("latin-1")


def slip_filename(slip: PackingSlip) -> str:
    return f"packing-slip-{repair_number(slip.repair_id)}-{slip.shipment_id}.pdf"


def render_slip(slip: PackingSlip) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime.fromtimestamp(slip.created_at, UTC))
    pdf.set_title(_text(f"Packing slip {repair_number(slip.repair_id)}"))
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(width, 10, _TITLE[slip.kind], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 10)
    facts = [
        f"Repair no.: {repair_number(slip.repair_id)}",
        f"Shipment no.: {slip.shipment_id}",
        f"Device serial: {slip.device_id}",
        f"Installation: {slip.installation}",
        f"Carrier: {slip.carrier}",
        f"Tracking no.: {slip.tracking}",
        f"Date: {datetime.fromtimestamp(slip.created_at, UTC):%Y-%m-%d}",
    ]
    if slip.rma:
        facts.insert(1, f"RMA: {slip.rma}")
    for fact in facts:
        pdf.cell(width, 6, _text(fact), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    top = pdf.get_y()
    for i, (label, lines) in enumerate((("From", slip.sender), ("To", slip.addressee))):
        x = pdf.l_margin + i * width / 2
        pdf.set_xy(x, top)
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(width / 2 - 4, 6, label, new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 10)
        for line in lines or ("(no address given)",):
            pdf.set_x(x)
            pdf.cell(width / 2 - 4, 5, _text(line), new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_xy(pdf.l_margin, max(pdf.get_y(), top + 40) + 6)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(width, 6, "Contents", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 10)
    line = _CONTENTS[slip.kind].format(device=slip.device_id, kind=slip.device_kind)
    pdf.cell(width, 6, _text(f"1 x {line}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(
        width,
        5,
        _text(
            f"Put this slip in the parcel and quote {repair_number(slip.repair_id)} "
            "in every message about it."
        ),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    return bytes(pdf.output())
