"""The texts of the mails a repair's steps send, in the reader's language (pure).

Each step that matters tells the installation's contacts (owner, partners) what happened
and what comes next; :func:`repair_mail` renders one for a reader's ``gettext``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cloud.repairs.rules import ShipmentKind, Status

__all__ = ["RepairFacts", "repair_mail", "repair_number"]

Gettext = Callable[[str], str]


def repair_number(repair_id: int) -> str:
    """How people name a repair: ``R-000042``."""
    return f"R-{repair_id:06d}"


@dataclass(frozen=True, slots=True)
class RepairFacts:
    """What a mail says about a repair after a step."""

    repair_id: int
    device_id: str
    status: Status
    step: str
    link: str
    quote: str | None = None  # the quoted amount, formatted
    carrier: str | None = None
    tracking: str | None = None
    shipment: ShipmentKind | None = None
    serial: str | None = None  # the replacement device's
    refunded: bool = False


def _what(facts: RepairFacts, _: Gettext) -> str:
    params = {"device": facts.device_id, "quote": facts.quote or ""}
    if facts.step in ("reship", "cancel_shipment") or facts.status is Status.REPLACEMENT_SENT:
        return _shipment_text(facts, _)
    texts = {
        Status.REQUESTED: _(
            "We received the repair request for device %(device)s. Support checks it and "
            "tells you the next step."
        ),
        Status.APPROVED: _(
            "The device %(device)s is in warranty: a replacement is approved and will be "
            "shipped to you. Send the old device back with the packing slip."
        ),
        Status.QUOTED: _(
            "The device %(device)s is out of warranty. The repair costs %(quote)s. Accept "
            "and pay the quote on the repair's page, or decline it."
        ),
        Status.PAID: _(
            "Thank you: the repair of %(device)s is paid. Send the device to us with the "
            "packing slip from the repair's page."
        ),
        Status.DECLINED: _("You declined the quote for the repair of %(device)s."),
        Status.RECEIVED: _("We received the device %(device)s."),
        Status.REPAIRED: _("The device %(device)s is repaired; we will ship it back to you."),
        Status.RETURNED: _shipment_text(facts, _),
        Status.CLOSED: _("The repair of %(device)s is closed."),
        Status.CANCELLED: _("The repair of %(device)s is cancelled.")
        + (" " + _("Your payment is given back in full.") if facts.refunded else ""),
    }
    return texts[facts.status] % params


def _shipment_text(facts: RepairFacts, _: Gettext) -> str:
    params = {
        "device": facts.device_id,
        "carrier": facts.carrier or "",
        "tracking": facts.tracking or "",
        "serial": facts.serial or "",
    }
    if facts.step == "cancel_shipment":
        return _("A shipment for the repair of %(device)s is cancelled.") % params
    if facts.step == "reship" and facts.serial:
        return (
            _(
                "The replacement for %(device)s was lost; another one, serial %(serial)s, is "
                "sent: %(carrier)s, tracking number %(tracking)s."
            )
            % params
        )
    if facts.step == "reship":
        return (
            _(
                "A shipment for the repair of %(device)s was lost and is sent again: "
                "%(carrier)s, tracking number %(tracking)s."
            )
            % params
        )
    if facts.shipment is ShipmentKind.REPLACEMENT:
        return (
            _(
                "The replacement for %(device)s, serial %(serial)s, is shipped: %(carrier)s, "
                "tracking number %(tracking)s. Send the old device back with the packing slip."
            )
            % params
        )
    return (
        _(
            "The repaired device %(device)s is shipped back: %(carrier)s, "
            "tracking number %(tracking)s."
        )
        % params
    )


def repair_mail(facts: RepairFacts, _: Gettext) -> tuple[str, str]:
    """Subject and plain-text body of the mail after a step, in ``_``'s language."""
    number = repair_number(facts.repair_id)
    subject = _("Repair %(number)s of %(device)s: %(what)s") % {
        "number": number,
        "device": facts.device_id,
        "what": _status(facts.status, _),
    }
    body = "\n\n".join(
        [
            _("Hello,"),
            _what(facts, _),
            _("Follow the repair here: %(link)s") % {"link": facts.link},
            "-- \n"
            + _("Entitle repairs. This message was sent automatically; replies are not read."),
        ]
    )
    return subject, body + "\n"


def _status(status: Status, _: Gettext) -> str:
    names = {
        Status.REQUESTED: _("requested"),
        Status.APPROVED: _("replacement approved"),
        Status.REPLACEMENT_SENT: _("replacement shipped"),
        Status.QUOTED: _("quote"),
        Status.PAID: _("paid"),
        Status.DECLINED: _("quote declined"),
        Status.RECEIVED: _("device received"),
        Status.REPAIRED: _("repaired"),
        Status.RETURNED: _("shipped back"),
        Status.CLOSED: _("closed"),
        Status.CANCELLED: _("cancelled"),
    }
    return names[status]
