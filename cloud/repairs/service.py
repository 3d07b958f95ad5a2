"""Repairs: the service around the pure rules of :mod:`cloud.repairs.rules`.

Each step is one transaction: load the repair (locked), ask the rules with ``now``, store
the new status with a timeline entry and an audit row, and queue the mail to the
installation's contacts (each in their language) in the same transaction. Money goes
only through billing: accepting a quote places a card order (or an invoiced one for a
partner that pays by invoice) whose on-paid callback (:meth:`RepairService.on_paid`)
moves the repair to ``paid``; cancelling a paid repair withdraws the order (void or
refund) *before* the repair is cancelled, so a failed refund cancels nothing.

Scope: staff see every repair; an owner or partner only their installations' (another
customer's repair answers 404 like one that does not exist).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import STAFF_ROLES, Permission, allowed
from cloud.billing import queries as billing_repo
from cloud.billing.errors import PaymentProviderError
from cloud.billing.orders import Billing
from cloud.billing.rules import OrderKind, OrderLine, OrderStatus
from cloud.billing.tables import OrderRow
from cloud.database import Store
from cloud.devices.access import ensure_device_access, ensure_installation_access
from cloud.devices.tables import DeviceRow, InstallationRow
from cloud.errors import (
    N_,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PaymentDeclined,
    UpstreamFailed,
)
from cloud.repairs import queries
from cloud.repairs.journal import Gettext, Journal
from cloud.repairs.notices import repair_number
from cloud.repairs.rules import (
    Path,
    ShipmentKind,
    ShipmentStatus,
    Status,
    Step,
    cancel_shipment,
    check_quote,
    check_reship,
    initial_status,
    next_step,
    path_of,
    refund_on_cancel,
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
    snapshot,
)
from cloud.settings import CloudSettings
from cloud.subscriptions.payer import payment_method
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
_ACTOR = "system:repairs"
REPAIR_PRODUCT = "REPAIR"


class UnknownRepair(NotFound):
    """No repair with this id (or not one the principal may see)."""


class UnknownShipment(NotFound):
    """No shipment with this id on this repair."""


class RepairOpen(Conflict):
    """The device has a repair that is not closed or cancelled: one at a time."""


def _is_staff(principal: Principal) -> bool:
    return principal.role in STAFF_ROLES


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
        self._withdrawing: set[int] = set()  # orders this service is giving back now
        billing.on_paid(self.on_paid)
        billing.on_reversed(self.on_reversed)

    # reading ---------------------------------------------------------------------------
    def _load(
        self, session: Session, principal: Principal, repair_id: int, *, lock: bool = False
    ) -> RepairRow:
        row = session.get(RepairRow, repair_id, with_for_update=lock)
        missing = UnknownRepair(f"no repair {repair_id}")
        if row is None:
            raise missing
        if not _is_staff(principal):
            try:
                ensure_installation_access(session, principal, row.installation_id, write=False)
            except NotFound:
                raise missing from None
        return row

    def get(self, principal: Principal, repair_id: int) -> RepairView:
        with self._store.transaction() as tx:
            return repair_view(
                tx, self._load(tx, principal, repair_id), principal, currency=self._billing.currency
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
            row = self._load(tx, principal, repair_id)
            shipment = self._shipment(tx, row, shipment_id)
            device = tx.get(DeviceRow, row.device_id)
            installation = tx.get(InstallationRow, row.installation_id)
            centre = [self._settings.invoice_seller_name, "Repair centre"] + [
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
                rma=None
                if row.ticket_id is None or row.rma_id is None
                else f"ticket {row.ticket_id}",
            )
        return SlipPdf(filename=slip_filename(slip), pdf=render_slip(slip))

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

        The warranty (the device's install date + ``repair_warranty_months``) fixes the
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
            row = self._load(tx, principal, repair_id, lock=True)
            before = snapshot(row)
            row.status = next_step(
                Path(row.path), Status(row.status), step, staff=_is_staff(principal)
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
            row = self._load(tx, principal, repair_id, lock=True)
            before = snapshot(row)
            row.status = next_step(
                Path(row.path), Status(row.status), Step.QUOTE, staff=_is_staff(principal)
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

    async def accept(
        self, principal: Principal, repair_id: int, *, card_token: str | None
    ) -> RepairView:
        """The customer accepts the quote and pays it through billing: a card order charged
        now (again after a declined card), or an invoiced order for a partner that pays by
        invoice. The repair becomes ``paid`` when billing says the order is paid.

        Raises:
            UnknownRepair, Forbidden (staff never pay), InvalidTransition (not quoted).
            InvalidRequest: a card payment without a card token; no user to pay.
            PaymentDeclined: the card was declined (the repair stays quoted; pay again).
            UpstreamFailed: the payment provider failed.
        """
        now = self._clock()

        def prepare_order() -> tuple[RepairRow, str]:
            with self._store.transaction() as tx:
                row = self._load(tx, principal, repair_id, lock=True)
                next_step(Path(row.path), Status(row.status), Step.PAY, staff=_is_staff(principal))
                if principal.user_id is None:
                    raise InvalidRequest(
                        N_("a quote is accepted by a user: sign in or use their key")
                    )
                ensure_installation_access(tx, principal, row.installation_id, write=True)
                how = payment_method(tx, principal.user_id, None)
                if how == "card" and card_token is None:
                    raise InvalidRequest(N_("pay the quote with a card: give card_token"))
                return row, how

        row, how = await asyncio.to_thread(prepare_order)
        assert row.quote_cents is not None and principal.user_id is not None

        def link(session: Session, order: OrderRow) -> None:
            found = session.get(RepairRow, repair_id, with_for_update=True)
            assert found is not None
            found.order_id = order.id

        try:
            if row.order_id is None:
                result = await self._billing.place_order(
                    kind=OrderKind.PURCHASE,
                    buyer=principal.user_id,
                    installation_id=row.installation_id,
                    lines=[
                        OrderLine(
                            product_code=REPAIR_PRODUCT,
                            description=f"Repair {repair_number(row.id)} of {row.device_id}",
                            months=0,
                            amount_cents=row.quote_cents,
                        )
                    ],
                    pay_with=how,
                    card_token=card_token if how == "card" else None,
                    idempotency_key=f"repair:{row.id}:quote",
                    now=now,
                    prepare=link,
                )
                order_id, status = result.order_id, result.status
                if status is OrderStatus.SUCCEED:
                    await self._billing.run_callbacks(order_id, now=now)
            else:
                assert card_token is not None
                paid = await self._billing.pay(
                    row.order_id, card_token=card_token, actor=principal, now=now
                )
                order_id, status = paid.order_id, paid.status
        except PaymentProviderError as exc:
            raise UpstreamFailed(f"payment provider: {exc}") from exc
        if status is OrderStatus.FAILED:
            raise PaymentDeclined(
                N_("the card was declined: the repair is not paid; pay again with another card")
            )
        _log.info("repair %d: order %d is %s", repair_id, order_id, status.value)
        return self.get(principal, repair_id)

    async def on_paid(self, order_id: int) -> None:
        """Billing's on-paid callback: a repair's quote is paid (idempotent; others ignored)."""
        now = self._clock()

        def work() -> None:
            with self._store.transaction() as tx:
                row = tx.scalars(
                    select(RepairRow).where(RepairRow.order_id == order_id).with_for_update()
                ).one_or_none()
                if row is None or Status(row.status) is not Status.QUOTED:
                    return
                before = snapshot(row)
                row.status = next_step(Path(row.path), Status.QUOTED, Step.PAY, staff=False)
                self._journal.record(tx, row, _ACTOR, step="pay", before=before, now=now)

        await asyncio.to_thread(work)

    async def on_reversed(self, order_id: int) -> None:
        """Billing's on-reversed callback: a paid repair whose order was voided or refunded
        in full elsewhere (the orders API) is cancelled, so no unpaid repair goes on
        (idempotent; an order :meth:`cancel` gives back itself is left to it)."""
        if order_id in self._withdrawing:
            return
        now = self._clock()

        def work() -> None:
            with self._store.transaction() as tx:
                row = tx.scalars(
                    select(RepairRow).where(RepairRow.order_id == order_id).with_for_update()
                ).one_or_none()
                if row is None or Status(row.status) is not Status.PAID:
                    return
                before = snapshot(row)
                row.status = next_step(Path(row.path), Status.PAID, Step.CANCEL, staff=True)
                self._journal.record(
                    tx,
                    row,
                    _ACTOR,
                    step="cancel",
                    before=before,
                    now=now,
                    note="the payment was given back",
                    facts={"refunded": True},
                )

        await asyncio.to_thread(work)

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
    ) -> RepairView:
        """Record a shipment: the replacement or the repaired device going out (staff), or the
        old device coming in (staff or the customer, while it is awaited).

        Raises: UnknownRepair, Forbidden, InvalidTransition.
        """
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, repair_id, lock=True)
            before = snapshot(row)
            staff = _is_staff(principal) or kind is ShipmentKind.INBOUND
            row.status = shipment_step(Path(row.path), Status(row.status), kind, staff=staff)
            tx.add(
                ShipmentRow(
                    repair_id=row.id,
                    kind=kind,
                    status=ShipmentStatus.ACTIVE,
                    carrier=carrier,
                    tracking=tracking,
                    created_by=principal.actor,
                    created_at=now,
                )
            )
            self._journal.record(
                tx,
                row,
                principal,
                step=f"ship_{kind.value}",
                before=before,
                now=now,
                note=f"{carrier} {tracking}",
                facts={"carrier": carrier, "tracking": tracking, "shipment": kind},
            )
            tx.flush()
            return repair_view(tx, row, principal, currency=self._billing.currency)

    def reship(
        self, principal: Principal, repair_id: int, shipment_id: int, *, carrier: str, tracking: str
    ) -> RepairView:
        """A lost shipment is sent again: a new one replaces it (staff). Raises UnknownRepair,
        UnknownShipment, Forbidden, InvalidTransition."""
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, repair_id, lock=True)
            self._staff_only(principal)
            lost = self._shipment(tx, row, shipment_id)
            check_reship(Status(row.status), ShipmentStatus(lost.status))
            lost.status, lost.ended_at = ShipmentStatus.RESHIPPED, now
            tx.add(
                ShipmentRow(
                    repair_id=row.id,
                    kind=lost.kind,
                    status=ShipmentStatus.ACTIVE,
                    carrier=carrier,
                    tracking=tracking,
                    replaces_id=lost.id,
                    created_by=principal.actor,
                    created_at=now,
                )
            )
            self._journal.record(
                tx,
                row,
                principal,
                step="reship",
                before=snapshot(row),
                now=now,
                note=f"{carrier} {tracking} (replaces {lost.carrier} {lost.tracking})",
                facts={"carrier": carrier, "tracking": tracking, "shipment": lost.kind},
            )
            tx.flush()
            return repair_view(tx, row, principal, currency=self._billing.currency)

    def cancel_shipment(self, principal: Principal, repair_id: int, shipment_id: int) -> RepairView:
        """Cancel a shipment (staff); the status goes back if it rested on it.
        Raises UnknownRepair, UnknownShipment, Forbidden, InvalidTransition."""
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, repair_id, lock=True)
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
        if not _is_staff(principal):
            raise Forbidden(N_("the repair centre manages shipments; ask support"))

    async def cancel(self, principal: Principal, repair_id: int, *, reason: str) -> RepairView:
        """Cancel the repair where the rules allow; a paid one is given back through billing
        first (void or refund; needs the ``refunds`` permission), an unpaid order is
        cancelled with it.

        Raises:
            UnknownRepair, Forbidden, InvalidTransition.
            UpstreamFailed: the provider failed to give the money back (nothing cancelled).
        """
        now = self._clock()

        def check() -> RepairRow:
            with self._store.transaction() as tx:
                row = self._load(tx, principal, repair_id)
                next_step(
                    Path(row.path), Status(row.status), Step.CANCEL, staff=_is_staff(principal)
                )
                if refund_on_cancel(Status(row.status)) and not allowed(
                    principal.role, Permission.REFUNDS
                ):
                    raise Forbidden(
                        N_(
                            "the repair is paid: an administrator cancels it "
                            "and refunds the payment"
                        )
                    )
                return row

        row = await asyncio.to_thread(check)
        refunded = False
        if refund_on_cancel(Status(row.status)) and row.order_id is not None:
            try:
                self._withdrawing.add(row.order_id)
                await self._billing.withdraw(row.order_id, actor=principal, now=now)
            except PaymentProviderError as exc:
                raise UpstreamFailed(f"payment provider: {exc}") from exc
            finally:
                self._withdrawing.discard(row.order_id)
            refunded = True

        def work() -> RepairView:
            with self._store.transaction() as tx:
                row = self._load(tx, principal, repair_id, lock=True)
                before = snapshot(row)
                status = Status(row.status)
                row.status = next_step(
                    Path(row.path), status, Step.CANCEL, staff=_is_staff(principal)
                )
                if status is Status.QUOTED and row.order_id is not None:
                    order = billing_repo.get_order(tx, row.order_id)
                    if order is not None and OrderStatus(order.status) in (
                        OrderStatus.PROCESSING,
                        OrderStatus.FAILED,
                    ):
                        Billing.cancel_unpaid(tx, row.order_id, actor=principal, now=now)
                self._journal.record(
                    tx,
                    row,
                    principal,
                    step="cancel",
                    before=before,
                    now=now,
                    note=reason,
                    facts={"refunded": refunded},
                )
                tx.flush()
                return repair_view(tx, row, principal, currency=self._billing.currency)

        return await asyncio.to_thread(work)
