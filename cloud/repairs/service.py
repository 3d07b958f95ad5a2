"""Repairs: the service around the pure rules of :mod:`cloud.repairs.rules`.

Each step is one transaction: load the repair (locked), ask the rules with ``now``, store
the new status with a timeline entry and an audit row, and queue the mail to the
installation's contacts (each in their language) in the same transaction
(:mod:`cloud.repairs.journal`). Money goes only through billing and lives in
:mod:`cloud.repairs.payments` (accepting and paying a quote, cancelling).

Scope: staff see every repair; an owner or partner only their installations' (another
customer's repair answers 404 like one that does not exist).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.billing.orders import Billing
from cloud.database import Store
from cloud.devices.access import ensure_device_access
from cloud.devices.tables import DeviceRow, InstallationRow
from cloud.errors import (
    N_,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from cloud.repairs import queries
from cloud.repairs.access import UnknownRepair, is_staff, load_repair
from cloud.repairs.journal import Gettext, Journal
from cloud.repairs.payments import RepairPayments
from cloud.repairs.rules import (
    Path,
    ShipmentKind,
    ShipmentStatus,
    Status,
    Step,
    cancel_shipment,
    check_quote,
    check_replacement_serial,
    check_reship,
    initial_status,
    next_step,
    path_of,
    shipment_step,
    warranty,
)
from cloud.repairs.slip import PackingSlip, render_slip, slip_filename
from cloud.repairs.tables import RepairRow, ShipmentRow
from cloud.repairs.views import (
    EventView,
    RepairView,
    ShipmentView,
    SlipPdf,
    repair_view,
    shipment_audit,
    snapshot,
)
from cloud.settings import CloudSettings
from cloud.tickets.service import UnknownTicket
from cloud.tickets.tables import RmaApprovalRow, TicketDeviceRow, TicketRow
from common.clock import Clock

__all__ = [
    "EventView",
    "RepairOpen",
    "RepairService",
    "RepairView",
    "ShipmentView",
    "SlipPdf",
    "UnknownRepair",
    "UnknownShipment",
]

_log = logging.getLogger(__name__)


class UnknownShipment(NotFound):
    """No shipment with this id on this repair."""


class RepairOpen(Conflict):
    """The device has a repair that is not closed or cancelled: one at a time."""


def _money(cents: int, currency: str) -> str:
    return f"{cents / 100:.2f} {currency}"


class RepairService:
    def __init__(
        self,
        store: Store,
        billing: Billing,
        *,
        clock: Clock,
        settings: CloudSettings,
        translations: Callable[[str | None], Gettext] | None = None,
    ) -> None:
        """``translations``: the gettext of a language (a mail goes in its reader's)."""
        self._store = store
        self._billing = billing
        self._clock = clock
        self._settings = settings
        self._journal = Journal(settings, translations)
        self.payments = RepairPayments(store, billing, self._journal, clock=clock)

    # reading ---------------------------------------------------------------------------
    def get(self, principal: Principal, repair_id: int) -> RepairView:
        with self._store.transaction() as tx:
            return repair_view(
                tx,
                load_repair(tx, principal, repair_id),
                principal,
                currency=self._billing.currency,
            )

    def list(
        self,
        principal: Principal,
        *,
        status: Status | None = None,
        device_id: str | None = None,
        ticket_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RepairView]:
        """The repairs the principal may see, newest first."""
        with self._store.transaction() as tx:
            rows = queries.repairs(
                tx,
                principal,
                status=status,
                device_id=device_id,
                ticket_id=ticket_id,
                limit=limit,
                offset=offset,
            )
            return [
                repair_view(tx, row, principal, currency=self._billing.currency) for row in rows
            ]

    def slip(self, principal: Principal, repair_id: int, shipment_id: int) -> SlipPdf:
        """The packing slip of one of the repair's shipments. Raises UnknownRepair/Shipment."""
        with self._store.transaction() as tx:
            row = load_repair(tx, principal, repair_id)
            shipment = self._shipment(tx, row, shipment_id)
            device = tx.get(DeviceRow, row.device_id)
            installation = tx.get(InstallationRow, row.installation_id)
            _ = self._journal.customer_gettext(tx, row)
            centre = [self._settings.invoice_seller_name, _("Repair centre")] + [
                line for line in self._settings.invoice_seller_address.split("\n") if line
            ]
            customer = [line for line in row.ship_to.splitlines() if line.strip()]
            inbound = ShipmentKind(shipment.kind) is ShipmentKind.INBOUND
            slip = PackingSlip(
                repair_id=row.id,
                shipment_id=shipment.id,
                kind=ShipmentKind(shipment.kind),
                device_id=row.device_id,
                device_kind=str(device.kind.value) if device is not None else "device",
                installation=(
                    f"{installation.name} ({installation.id})"
                    if installation is not None
                    else row.installation_id
                ),
                carrier=shipment.carrier,
                tracking=shipment.tracking,
                sender=customer if inbound else centre,
                addressee=centre if inbound else customer,
                created_at=shipment.created_at,
                rma_ticket=None if row.rma_id is None else row.ticket_id,
                serial=shipment.serial,
            )
        return SlipPdf(filename=slip_filename(slip), pdf=render_slip(slip, _))

    # writing ---------------------------------------------------------------------------
    def request(
        self,
        principal: Principal,
        *,
        device_id: str,
        ticket_id: int | None,
        problem: str,
        ship_to: str,
    ) -> RepairView:
        """Request a repair of a device, from a ticket it is attached to or directly.

        The warranty (the device's registration date + ``repair_warranty_months``) fixes the
        path; an approved RMA of the device on that ticket makes an in-warranty repair a
        replacement approved already.

        Raises:
            UnknownDevice: out of scope. UnknownTicket (404): the ticket is not the caller's.
            InvalidRequest: the device is not attached to the ticket.
            RepairOpen: the device has an open repair.
            Forbidden: a blacklisted customer.
        """
        now = self._clock()
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)
            device = tx.get(DeviceRow, device_id)
            assert device is not None
            rma: RmaApprovalRow | None = None
            if ticket_id is not None:
                ticket = tx.get(TicketRow, ticket_id)
                if ticket is None or ticket.installation_id not in (None, device.installation_id):
                    raise UnknownTicket(f"no ticket {ticket_id}")
                if tx.get(TicketDeviceRow, (ticket_id, device_id)) is None:
                    raise InvalidRequest(
                        N_("device %(device)s is not attached to ticket %(ticket)s: attach it"),
                        device=device_id,
                        ticket=ticket_id,
                    )
                rma = tx.scalars(
                    select(RmaApprovalRow).where(
                        RmaApprovalRow.ticket_id == ticket_id,
                        RmaApprovalRow.device_id == device_id,
                    )
                ).one_or_none()
            if queries.open_repair(tx, device_id) is not None:
                raise RepairOpen(
                    N_("device %(device)s has an open repair: follow that one"), device=device_id
                )
            term = warranty(
                installed_at=device.created_at,
                term_months=self._settings.repair_warranty_months,
                now=now,
            )
            row = RepairRow(
                device_id=device_id,
                installation_id=device.installation_id,
                ticket_id=ticket_id,
                rma_id=None if rma is None else rma.id,
                path=path_of(in_warranty=term.in_warranty),
                status=initial_status(in_warranty=term.in_warranty, rma_approved=rma is not None),
                installed_at=term.installed_at,
                warranty_ends_at=term.ends_at,
                problem=problem,
                ship_to=ship_to,
                requested_by=principal.actor,
                created_at=now,
                updated_at=now,
            )
            tx.add(row)
            tx.flush()
            note = "" if rma is None else f"RMA approved on ticket {ticket_id}"
            self._journal.record(
                tx, row, principal, step="request", before=None, now=now, note=note
            )
            tx.flush()
            _log.info("repair %d of %s requested (%s)", row.id, device_id, row.path)
            return repair_view(tx, row, principal, currency=self._billing.currency)

    def step(
        self, principal: Principal, repair_id: int, step: Step, *, note: str = ""
    ) -> RepairView:
        """Take a step that moves no money and ships nothing (approve, decline, receive,
        mark repaired, close).

        Raises:
            UnknownRepair, Forbidden, InvalidTransition.
            InvalidRequest: a step with its own route (quote, pay, ship, cancel).
        """
        if step in (Step.QUOTE, Step.PAY, Step.SHIP_REPLACEMENT, Step.SHIP_RETURN, Step.CANCEL):
            raise InvalidRequest(
                N_("%(step)s has its own route: quote, accept, shipments or cancel"),
                step=step.value,
            )
        now = self._clock()
        with self._store.transaction() as tx:
            row = load_repair(tx, principal, repair_id, lock=True)
            before = snapshot(row)
            row.status = next_step(
                Path(row.path), Status(row.status), step, staff=is_staff(principal)
            )
            self._journal.record(
                tx, row, principal, step=step.value, before=before, now=now, note=note
            )
            tx.flush()
            return repair_view(tx, row, principal, currency=self._billing.currency)

    def quote(
        self, principal: Principal, repair_id: int, *, amount_cents: int, text: str
    ) -> RepairView:
        """Quote an out-of-warranty repair. Raises UnknownRepair, Forbidden,
        InvalidTransition, InvalidRequest (the amount)."""
        check_quote(amount_cents)
        now = self._clock()
        with self._store.transaction() as tx:
            row = load_repair(tx, principal, repair_id, lock=True)
            before = snapshot(row)
            row.status = next_step(
                Path(row.path), Status(row.status), Step.QUOTE, staff=is_staff(principal)
            )
            row.quote_cents, row.quote_text = amount_cents, text
            quoted = _money(amount_cents, self._billing.currency)
            self._journal.record(
                tx,
                row,
                principal,
                step="quote",
                before=before,
                now=now,
                note=f"{quoted}: {text}",
                facts={"quote": quoted},
            )
            tx.flush()
            return repair_view(tx, row, principal, currency=self._billing.currency)

    def _shipment(self, session: Session, row: RepairRow, shipment_id: int) -> ShipmentRow:
        shipment = session.get(ShipmentRow, shipment_id)
        if shipment is None or shipment.repair_id != row.id:
            raise UnknownShipment(f"no shipment {shipment_id} on repair {row.id}")
        return shipment

    def ship(
        self,
        principal: Principal,
        repair_id: int,
        *,
        kind: ShipmentKind,
        carrier: str,
        tracking: str,
        serial: str | None = None,
    ) -> RepairView:
        """Record a shipment: the replacement (with its ``serial``) or the repaired device
        going out (staff), or the old device coming in (staff or the customer, while it is
        awaited).

        Raises: UnknownRepair, Forbidden, InvalidTransition, InvalidRequest (the serial).
        """
        now = self._clock()
        with self._store.transaction() as tx:
            row = load_repair(tx, principal, repair_id, lock=True)
            before = snapshot(row)
            staff = is_staff(principal) or kind is ShipmentKind.INBOUND
            row.status = shipment_step(Path(row.path), Status(row.status), kind, staff=staff)
            check_replacement_serial(kind, serial, device_id=row.device_id)
            self._add_shipment(
                tx,
                row,
                principal,
                ShipmentRow(kind=kind, carrier=carrier, tracking=tracking, serial=serial),
                step=f"ship_{kind.value}",
                before=before,
                now=now,
            )
            return repair_view(tx, row, principal, currency=self._billing.currency)

    def reship(
        self,
        principal: Principal,
        repair_id: int,
        shipment_id: int,
        *,
        carrier: str,
        tracking: str,
        serial: str | None = None,
    ) -> RepairView:
        """A lost shipment is sent again: a new one replaces it (staff); a lost replacement
        with another device, whose ``serial`` it names. Raises UnknownRepair,
        UnknownShipment, Forbidden, InvalidTransition, InvalidRequest (the serial)."""
        now = self._clock()
        with self._store.transaction() as tx:
            row = load_repair(tx, principal, repair_id, lock=True)
            self._staff_only(principal)
            lost = self._shipment(tx, row, shipment_id)
            check_reship(Status(row.status), ShipmentStatus(lost.status))
            check_replacement_serial(ShipmentKind(lost.kind), serial, device_id=row.device_id)
            lost.status, lost.ended_at = ShipmentStatus.RESHIPPED, now
            self._add_shipment(
                tx,
                row,
                principal,
                ShipmentRow(
                    kind=lost.kind,
                    carrier=carrier,
                    tracking=tracking,
                    serial=serial,
                    replaces_id=lost.id,
                ),
                step="reship",
                before=snapshot(row),
                now=now,
                replaces=f" (replaces {lost.carrier} {lost.tracking})",
            )
            return repair_view(tx, row, principal, currency=self._billing.currency)

    def _add_shipment(
        self,
        session: Session,
        row: RepairRow,
        principal: Principal,
        shipment: ShipmentRow,
        *,
        step: str,
        before: dict[str, Any],
        now: int,
        replaces: str = "",
    ) -> None:
        """Store a new active parcel of the repair (``shipment``: its kind, carrier,
        tracking, serial and the lost one it replaces) with its timeline entry, audit row
        (with the parcel) and mail."""
        shipment.repair_id, shipment.status = row.id, ShipmentStatus.ACTIVE
        shipment.created_by, shipment.created_at = principal.actor, now
        session.add(shipment)
        session.flush()
        serial = "" if shipment.serial is None else f", serial {shipment.serial}"
        self._journal.record(
            session,
            row,
            principal,
            step=step,
            before=before,
            now=now,
            note=f"{shipment.carrier} {shipment.tracking}{serial}{replaces}",
            facts={
                "carrier": shipment.carrier,
                "tracking": shipment.tracking,
                "shipment": ShipmentKind(shipment.kind),
                "serial": shipment.serial,
            },
            audited={"shipment": shipment_audit(shipment)},
        )
        session.flush()

    def cancel_shipment(self, principal: Principal, repair_id: int, shipment_id: int) -> RepairView:
        """Cancel a shipment (staff); the status goes back if it rested on it.
        Raises UnknownRepair, UnknownShipment, Forbidden, InvalidTransition."""
        now = self._clock()
        with self._store.transaction() as tx:
            row = load_repair(tx, principal, repair_id, lock=True)
            self._staff_only(principal)
            shipment = self._shipment(tx, row, shipment_id)
            before = snapshot(row)
            row.status = cancel_shipment(
                Status(row.status), ShipmentKind(shipment.kind), ShipmentStatus(shipment.status)
            )
            shipment.status, shipment.ended_at = ShipmentStatus.CANCELLED, now
            self._journal.record(
                tx,
                row,
                principal,
                step="cancel_shipment",
                before=before,
                now=now,
                note=f"{shipment.carrier} {shipment.tracking}",
            )
            tx.flush()
            return repair_view(tx, row, principal, currency=self._billing.currency)

    @staticmethod
    def _staff_only(principal: Principal) -> None:
        if not is_staff(principal):
            raise Forbidden(N_("the repair centre manages shipments; ask support"))

    # money (cloud.repairs.payments) ---------------------------------------------------
    async def accept(
        self, principal: Principal, repair_id: int, *, card_token: str | None
    ) -> RepairView:
        """See :meth:`cloud.repairs.payments.RepairPayments.accept`."""
        return await self.payments.accept(principal, repair_id, card_token=card_token)

    async def cancel(self, principal: Principal, repair_id: int, *, reason: str) -> RepairView:
        """See :meth:`cloud.repairs.payments.RepairPayments.cancel`."""
        return await self.payments.cancel(principal, repair_id, reason=reason)
