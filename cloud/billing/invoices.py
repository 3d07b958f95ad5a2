"""Invoices as PDF (fpdf2): the values an invoice shows, and :func:`render_invoice`.

Pure: the same :class:`Invoice` always gives the same bytes (the PDF's
creation date is the invoice date, not the clock), so a re-sent invoice is
byte-identical. Amounts are integer cents in one currency; line amounts are
gross, and the VAT they include is shown at ``vat_percent`` (0: no VAT line),
so the invoice total is always what the order charged.

The built-in PDF fonts cover Latin-1 only; other characters are
transliterated (``Łódź`` → ``Lodz``) or replaced by ``?`` rather than
making the invoice fail.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts import users
from cloud.billing import queries as orders
from cloud.billing.errors import UnknownOrder
from cloud.billing.rules import OrderKind, OrderStatus, PayWith, line_installation
from cloud.devices.tables import InstallationRow
from cloud.errors import N_, Conflict, NotFound
from cloud.settings import CloudSettings

__all__ = [
    "PAYMENT_TERMS_DAYS",
    "Invoice",
    "InvoiceLine",
    "Party",
    "company_party",
    "format_date",
    "format_money",
    "NoInvoice",
    "invoice_filename",
    "invoice_for_order",
    "invoice_lines",
    "render_invoice",
    "seller_from_settings",
    "vat_included",
]

_ZERO_DECIMAL = frozenset({"JPY", "KRW", "ISK", "CLP", "VND"})
MAX_LINES = 200
OTHER_LINES_CODE = "OTHER"  # the one line standing for the lines a reader may not see
PAYMENT_TERMS_DAYS = 30  # an invoiced order is due this many days after the order date


class NoInvoice(Conflict):
    """The order has no invoice (yet): it is neither paid nor invoiced."""


@dataclass(frozen=True, slots=True)
class Party:
    """Seller or buyer: name, postal address lines, VAT id."""

    name: str
    address: tuple[str, ...] = ()
    vat_id: str | None = None
    email: str | None = None
    tax_label: str = "VAT id"  # what ``vat_id`` is: "VAT id" (EU) or "GSTIN" (India)


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One product line: the service code, what it is, the months it covers, its amount
    (``quantity`` × ``unit_cents``)."""

    product_code: str
    description: str
    months: int
    amount_cents: int
    quantity: int = 1
    unit_cents: int | None = None  # None: the amount (one unit)

    @property
    def unit(self) -> int:
        return self.amount_cents if self.unit_cents is None else self.unit_cents


class _OrderLineLike(Protocol):
    @property
    def product_code(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def months(self) -> int: ...
    @property
    def amount_cents(self) -> int: ...
    @property
    def quantity(self) -> int: ...


def invoice_lines(lines: Sequence[_OrderLineLike]) -> tuple[InvoiceLine, ...]:
    """Invoice lines from order lines (``OrderLine`` or ``OrderLineRow``: the same fields)."""
    return tuple(
        InvoiceLine(
            line.product_code,
            line.description,
            line.months,
            line.amount_cents,
            quantity=line.quantity,
            unit_cents=getattr(line, "unit_cents", None),
        )
        for line in lines
    )


@dataclass(frozen=True, slots=True)
class Invoice:
    """Everything printed on one invoice.

    ``paid_at`` (card payments) prints "Paid on …"; otherwise ``due_at``
    prints "Payment due by …" (invoiced customers).
    """

    number: str
    order_number: str
    issued_at: int
    seller: Party
    buyer: Party
    lines: tuple[InvoiceLine, ...]
    currency: str
    vat_percent: Decimal = Decimal(0)
    paid_at: int | None = None
    due_at: int | None = None
    installation: str | None = None  # the installations the order is for, as printed
    installations: int = 1  # how many: "Installation" or "Installations"
    notes: tuple[str, ...] = field(default=())
    card_last4: str | None = None  # paid by card: the receipt names the card
    kind: OrderKind | None = None  # what the order was (purchase, renewal, repair, ...)

    def __post_init__(self) -> None:
        if not self.lines or len(self.lines) > MAX_LINES:
            raise ValueError(f"an invoice has 1 to {MAX_LINES} lines")
        if len(self.currency) != 3 or not self.currency.isalpha():
            raise ValueError(f"currency {self.currency!r} is not an ISO 4217 code")
        if not Decimal(0) <= self.vat_percent < Decimal(100):
            raise ValueError("vat_percent must be in [0, 100)")

    @property
    def total_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)


def format_money(cents: int, currency: str) -> str:
    """``EUR 1,234.50``: the ISO code, thousands separators, the currency's decimals."""
    code = currency.upper()
    sign = "-" if cents < 0 else ""
    if code in _ZERO_DECIMAL:
        return f"{code} {sign}{abs(cents):,}"
    units, rest = divmod(abs(cents), 100)
    return f"{code} {sign}{units:,}.{rest:02d}"


def format_date(epoch_s: int) -> str:
    """The UTC calendar date of ``epoch_s``, ISO style (``2026-01-31``)."""
    return datetime.fromtimestamp(epoch_s, UTC).date().isoformat()


def vat_included(gross_cents: int, vat_percent: Decimal) -> int:
    """The VAT inside a gross amount, rounded half up to the cent."""
    if vat_percent == 0:
        return 0
    net = Decimal(gross_cents) * 100 / (100 + vat_percent)
    return gross_cents - int(net.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def invoice_filename(invoice: Invoice) -> str:
    """``invoice-<number>.pdf`` with only safe characters."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in invoice.number)
    return f"invoice-{safe}.pdf"


def seller_from_settings(settings: CloudSettings) -> Party:
    """The seller of ``ENTITLE_INVOICE_SELLER_*``."""
    address = tuple(
        line.strip()
        # a literal "\\n" too: an environment variable holds one line
        for line in settings.invoice_seller_address.replace("\\n", "\n").splitlines()
        if line.strip()
    )
    return Party(
        name=settings.invoice_seller_name, address=address, vat_id=settings.invoice_seller_vat_id
    )


def _text(value: str) -> str:
    """Latin-1 text for the built-in fonts: accents dropped where needed, else ``?``."""
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        pass
    out = []
    for char in value:
        if ord(char) < 256:
            out.append(char)
            continue
        base = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
        out.append(base or {"Ł": "L", "ł": "l", "€": "EUR", "–": "-", "—": "-"}.get(char, "?"))
    return "".join(out)


def _party(pdf: FPDF, title: str, party: Party, *, x: float, y: float, width: float) -> float:
    pdf.set_xy(x, y)
    pdf.set_font("Helvetica", "B", 9)
    pdf.cell(width, 5, _text(title), new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 10)
    lines = [party.name, *party.address]
    if party.vat_id:
        lines.append(f"{party.tax_label}: {party.vat_id}")
    if party.email:
        lines.append(party.email)
    for line in lines:
        pdf.set_x(x)
        pdf.cell(width, 5, _text(line), new_x=XPos.LEFT, new_y=YPos.NEXT)
    return pdf.get_y()


def render_invoice(invoice: Invoice) -> bytes:
    """The invoice as a one-or-more-page A4 PDF."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime.fromtimestamp(invoice.issued_at, UTC))
    pdf.set_title(_text(f"Invoice {invoice.number}"))
    pdf.set_author(_text(invoice.seller.name))
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(width / 2, 10, "INVOICE", new_x=XPos.RIGHT, new_y=YPos.TOP)
    pdf.set_font("Helvetica", "", 10)
    facts = [
        f"Invoice no.: {invoice.number}",
        f"Order no.: {invoice.order_number}",
        # the invoice is English: the kind's value, capitalised ("Purchase", "Renewal", ...)
        *([f"Order type: {invoice.kind.value.capitalize()}"] if invoice.kind is not None else []),
        f"Date: {format_date(invoice.issued_at)}",
        f"Currency: {invoice.currency.upper()}",
    ]
    top = pdf.get_y()
    for i, fact in enumerate(facts):
        pdf.set_xy(pdf.l_margin + width / 2, top + 5 * i)
        pdf.cell(width / 2, 5, _text(fact), align=Align.R)
    y = top + 5 * len(facts) + 6
    left = _party(pdf, "From", invoice.seller, x=pdf.l_margin, y=y, width=width / 2 - 4)
    right = _party(pdf, "Bill to", invoice.buyer, x=pdf.l_margin + width / 2, y=y, width=width / 2)
    pdf.set_xy(pdf.l_margin, max(left, right) + 6)
    if invoice.installation:
        label = "Installations" if invoice.installations > 1 else "Installation"
        pdf.multi_cell(
            width, 5, _text(f"{label}: {invoice.installation}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        pdf.ln(3)

    pdf.set_font("Helvetica", "", 9)
    with pdf.table(
        col_widths=(26, 58, 14, 12, 28, 30),
        text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
        first_row_as_headings=True,
    ) as table:
        table.row(["Product", "Description", "Months", "Qty", "Unit price", "Amount"])
        for line in invoice.lines:
            table.row(
                [
                    _text(line.product_code),
                    _text(line.description),
                    str(line.months),
                    str(line.quantity),
                    format_money(line.unit, invoice.currency),
                    format_money(line.amount_cents, invoice.currency),
                ]
            )

    pdf.ln(4)
    total = invoice.total_cents
    vat = vat_included(total, invoice.vat_percent)
    totals = []
    if vat:
        totals.append(("Net amount", format_money(total - vat, invoice.currency)))
        totals.append(
            (f"VAT {invoice.vat_percent.normalize()}%", format_money(vat, invoice.currency))
        )
    totals.append(("Total", format_money(total, invoice.currency)))
    for label, amount in totals:
        pdf.set_font("Helvetica", "B" if label == "Total" else "", 10)
        pdf.cell(width - 40, 6, label, align=Align.R)
        pdf.cell(40, 6, amount, align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 9)
    if not vat:
        pdf.cell(width, 5, "No VAT charged.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    if invoice.paid_at is not None and invoice.card_last4:
        status = (
            f"Paid by card ending {invoice.card_last4} on {format_date(invoice.paid_at)}. "
            "Thank you."
        )
    elif invoice.paid_at is not None:
        status = f"Paid on {format_date(invoice.paid_at)}. Thank you."
    elif invoice.due_at is not None:
        status = f"Payment due by {format_date(invoice.due_at)}."
    else:
        status = "Payment due on receipt."
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(width, 6, status, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 9)
    for note in invoice.notes:
        pdf.multi_cell(width, 5, _text(note), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


def invoice_for_order(
    session: Session,
    order_id: int,
    *,
    settings: CloudSettings,
    seen: frozenset[str] | None = None,
) -> Invoice:
    """The invoice of a paid (card) or invoiced order, from the stored order.

    The invoice number is the order number: one order, one invoice. The heading names
    every installation the order is for.

    ``seen``: the installations the reader may see (None: all, as mailed to the
    purchaser). The lines of the others are folded into one line saying how many
    there are and what they amount to, so the total is still the order's.

    Raises:
        UnknownOrder: no such order.
        NoInvoice: the order is not paid or invoiced (processing, failed, cancelled, ...).
    """
    row = orders.get_order(session, order_id)
    if row is None:
        raise UnknownOrder(f"no order {order_id}")
    if row.status is not OrderStatus.SUCCEED:
        raise NoInvoice(
            N_("order %(number)s is '%(status)s': an invoice exists once it is paid or invoiced"),
            number=row.number,
            status=row.status.value,
        )
    paid_at = due_at = None
    card_last4 = None
    if row.pay_with is PayWith.CARD:
        charge = orders.charge_of(session, row.id)
        paid_at = charge.updated_at if charge is not None else row.updated_at
        card_last4 = charge.card_last4 if charge is not None else None
    else:
        due_at = row.created_at + PAYMENT_TERMS_DAYS * 86_400
    installation = session.get(InstallationRow, row.installation_id)
    every = orders.lines_of(session, row.id)
    shown = [
        line
        for line in every
        if seen is None or line_installation(line.installation_id, row.installation_id) in seen
    ]
    lines = invoice_lines(shown)
    if len(shown) < len(every):
        hidden = len(every) - len(shown)
        lines += (
            InvoiceLine(
                OTHER_LINES_CODE,
                f"{hidden} more line{'s' if hidden > 1 else ''} for installations you cannot see",
                0,
                sum(line.amount_cents for line in every) - sum(line.amount_cents for line in shown),
            ),
        )
    places = orders.order_installations(session, [row])[row.id]
    return Invoice(
        number=row.number,
        order_number=row.number,
        issued_at=row.created_at,
        seller=seller_from_settings(settings),
        buyer=_buyer(session, row.buyer_user_id, installation),
        lines=lines,
        currency=row.currency,
        vat_percent=settings.invoice_vat_percent,
        paid_at=paid_at,
        due_at=due_at,
        installation=_installations(session, places, seen=seen),
        installations=len(places),
        card_last4=card_last4,
        kind=OrderKind(row.kind),
    )


def _installations(session: Session, places: Sequence[str], *, seen: frozenset[str] | None) -> str:
    """The invoice heading's installations: each by name and id, those out of sight counted."""
    query = select(InstallationRow.id, InstallationRow.name).where(InstallationRow.id.in_(places))
    names = {place: name for place, name in session.execute(query)}
    shown = [p for p in places if seen is None or p in seen]
    text = ", ".join(f"{names[p]} ({p})" if p in names else p for p in shown)
    if len(shown) < len(places):
        others = len(places) - len(shown)
        text += f" and {others} other installation{'s' if others > 1 else ''}"
    return text


def _buyer(session: Session, user_id: int | None, installation: InstallationRow | None) -> Party:
    if user_id is None:  # a renewal placed by the system for an installation
        return Party(installation.name if installation is not None else "Installation owner")
    try:
        user = users.user(session, user_id)
    except NotFound:
        return Party(f"Customer #{user_id}")
    if user.company_id is None:
        return Party(user.name, email=user.email)
    company = users.company(session, user.company_id)
    return company_party(company, attention=user.name, email=user.email)


class _CompanyLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def postcode(self) -> str | None: ...
    @property
    def city(self) -> str | None: ...
    @property
    def country(self) -> str | None: ...
    @property
    def vat_number(self) -> str | None: ...
    @property
    def gst_number(self) -> str | None: ...


def company_party(company: _CompanyLike, *, attention: str | None, email: str | None) -> Party:
    """A company as an invoice's buyer: its address lines, postcode and city, country, and
    its VAT number (EU) or GSTIN (India)."""
    lines = [f"Attn: {attention}"] if attention else []
    lines += [line.strip() for line in (company.address or "").splitlines() if line.strip()]
    place = " ".join(part for part in (company.postcode, company.city) if part)
    if place:
        lines.append(place)
    if company.country:
        lines.append(company.country)
    if company.gst_number:
        return Party(company.name, tuple(lines), company.gst_number, email, tax_label="GSTIN")
    return Party(company.name, tuple(lines), company.vat_number, email)
