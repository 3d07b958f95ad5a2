"""The billing service: place orders, check out, cancel, reconcile lost answers.

:class:`Billing` persists what :mod:`cloud.billing.rules` decides and
talks to the :class:`~cloud.billing.payments.PaymentProvider`. Database work
runs in a thread (the store is synchronous); no transaction is held open
while the provider is called: the order and its ``Processing`` charge are
committed first, the answer is recorded after.

One idempotency key, one order, one charge: the order's key is unique, and
the provider sees ``order:<id>:charge:<n>`` (unique too), so two workers
placing the same renewal at once make one order and one charge, and a
charge retried after a crash is not charged twice.

``on_paid`` callbacks run when an order becomes ``Succeed`` *after*
:meth:`Billing.place_order` returned (a checkout paid with
``POST /orders/{id}/pay``, or a lost answer reconciled as charged). An order
that succeeds inside ``place_order`` is reported by its
:class:`OrderResult` instead — unless the caller passed ``prepare``: then
what the order pays for was recorded with the order, before any money moved,
and the callbacks deliver it (the caller runs them with :meth:`run_callbacks`;
after a crash the reconcile job does). Callbacks must be idempotent: they are
re-run by the reconcile job until they all return without raising.

``on_reversed`` callbacks run when an order is given back: cancelled unpaid,
its charge voided, or refunded in full (a partial refund is not a reversal).
They must be idempotent too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.users import user_contact
from cloud.billing import credit
from cloud.billing import queries as repo
from cloud.billing.errors import (
    BadOrderRequest,
    ChargeSettled,
    IdempotencyConflict,
    OrderStateConflict,
    UnknownOrder,
    UnknownOrderLine,
)
from cloud.billing.invoices import (
    format_date,
    invoice_filename,
    invoice_for_order,
    render_invoice,
)
from cloud.billing.payments import Charge, PaymentProvider, SandboxPaymentProvider
from cloud.billing.reconcile import ReconcileReport, reconcile
from cloud.billing.refunds import Refunds, Reversal
from cloud.billing.rules import (
    OrderKind,
    OrderLine,
    OrderStatus,
    PayWith,
    TxnType,
    check_lines,
    status_after_charge,
)
from cloud.billing.tables import OrderLineRow, OrderRow, TransactionRow
from cloud.database import Store
from cloud.devices.tables import InstallationRow
from cloud.errors import N_, UnknownInstallation
from cloud.notifications.outbox import enqueue
from cloud.settings import CloudSettings
from common.clock import Clock

__all__ = [
    "Billing",
    "LineReversal",
    "OnLineReversed",
    "OnPaid",
    "OrderLine",
    "OrderResult",
    "OrderStatus",
    "Prepare",
    "ReconcileReport",
]

_log = logging.getLogger(__name__)

OnPaid = Callable[[int], Awaitable[None]]
"""``async callback(order_id)`` run once an order is paid (see the module docstring)."""

OnLineReversed = Callable[[int, int], Awaitable[None]]
"""``async callback(order_id, line_id)`` run once one line of an order was given back."""

LineRefunded = Callable[[Session, int, int], int]
"""``counter(session, order_id, line_id)``: cents of the line another feature already refunded
from the order's charge (a plan downgrade's prorated refund), so giving the line back
refunds only the rest."""

Prepare = Callable[[Session, OrderRow], None]
"""``prepare(session, order)``: record what a new order pays for, in the order's transaction."""

ACTOR = "system:billing"
_MAX_KEY = 128
_MAX_TOKEN = 256
_S = OrderStatus


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What became of an order; ``replayed`` when the idempotency key was seen before."""

    order_id: int
    number: str
    status: OrderStatus
    amount_cents: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class LineReversal:
    """One line given back: refunded from the card (``refund``) or credited on the invoice."""

    order_id: int
    line_id: int
    amount_cents: int
    refund: Reversal | None  # None: credited on the invoice (or nothing to give back)
    credited_cents: int = 0  # given back as the purchaser's credit (what credit had paid)


def _result(row: OrderRow, *, replayed: bool = False) -> OrderResult:
    return OrderResult(
        order_id=row.id,
        number=row.number,
        status=OrderStatus(row.status),
        amount_cents=row.amount_cents,
        replayed=replayed,
    )


def _actor(buyer: Principal | int) -> repo.Actor:
    return buyer if isinstance(buyer, Principal) else f"user:{buyer}"


def _buyer_id(buyer: Principal | int) -> int | None:
    return buyer if isinstance(buyer, int) else buyer.user_id


class Billing:
    """Orders and payments of one cloud (one store, one provider, one currency)."""

    def __init__(
        self,
        store: Store,
        provider: PaymentProvider,
        *,
        currency: str = "EUR",
        provider_name: str = "sandbox",
        notify: Sequence[str] = (),
        invoice_settings: CloudSettings | None = None,
    ) -> None:
        """``notify``: the operator's addresses told when a refund gives up (e.g. finance);
        they are not on any order's notify list, so customers never see them.

        ``invoice_settings``: the seller printed on invoices; without it an
        invoiced order's mail goes out without the PDF (logged).
        """
        if len(currency) != 3 or not currency.isalpha():
            raise ValueError(f"currency must be an ISO 4217 code like EUR, not {currency!r}")
        self.store = store
        self.provider = provider
        self.currency = currency.upper()
        self.provider_name = provider_name
        self.notify = tuple(notify)
        self.invoice_settings = invoice_settings
        self._on_paid: list[OnPaid] = []
        self._on_line_reversed: list[OnLineReversed] = []
        self._line_refunded: list[LineRefunded] = []
        self.refunds = Refunds(store, provider, provider_name=provider_name, notify=self.notify)
        self._on_reversed = self.refunds.on_reversed
        self._on_reversed.append(self._restore_credit)

    @classmethod
    def from_settings(cls, settings: CloudSettings, store: Store, *, clock: Clock) -> Billing:
        """The service with the provider ``settings.payment_provider`` names.

        Only ``"sandbox"`` exists: :class:`SandboxPaymentProvider`, a test double
        that moves no money (a real processor is a new adapter behind
        :class:`PaymentProvider`). Its charges settle after a day of ``clock``.
        """
        if settings.payment_provider != "sandbox":
            raise ValueError(f"unknown payment provider {settings.payment_provider!r}")
        _log.warning("payments go to the sandbox test double: no money moves")
        provider = SandboxPaymentProvider(clock=clock, settle_after_s=86_400)
        return cls(
            store,
            provider,
            currency=settings.currency,
            provider_name=settings.payment_provider,
            notify=settings.billing_notify,
            invoice_settings=settings,
        )

    def on_paid(self, callback: OnPaid) -> OnPaid:
        """Register ``async callback(order_id)``; returns it (usable as a decorator)."""
        self._on_paid.append(callback)
        return callback

    def on_reversed(self, callback: OnPaid) -> OnPaid:
        """Register ``async callback(order_id)`` run when an order is cancelled, voided or
        refunded in full; returns it."""
        self._on_reversed.append(callback)
        return callback

    async def _restore_credit(self, order_id: int) -> None:
        """An order given back (cancelled, voided, refunded in full): the credit it used and
        has not given back comes back; once (dated when the order last changed)."""

        def work() -> None:
            with self.store.transaction() as tx:
                row = repo.get_order(tx, order_id)
                if row is None or row.buyer_user_id is None:
                    return
                credit.restore(
                    tx,
                    order_id,
                    user_id=row.buyer_user_id,
                    at_most=None,
                    key=f"restore:{order_id}",
                    reason=f"order {row.number} was given back",
                    actor=ACTOR,
                    now=row.updated_at,
                )

        await asyncio.to_thread(work)

    def on_line_reversed(self, callback: OnLineReversed) -> OnLineReversed:
        """Register ``async callback(order_id, line_id)`` run when one line of an order was
        given back (:meth:`reverse_line`); returns it."""
        self._on_line_reversed.append(callback)
        return callback

    def line_refunded(self, counter: LineRefunded) -> LineRefunded:
        """Register a :data:`LineRefunded` counter (:meth:`reverse_line` subtracts what it
        counts); returns it."""
        self._line_refunded.append(counter)
        return counter

    # placing ----------------------------------------------------------------
    async def place_order(
        self,
        *,
        kind: OrderKind | str,
        buyer: Principal | int,
        installation_id: str,
        lines: Sequence[OrderLine],
        pay_with: PayWith | str,
        card_token: str | None,
        idempotency_key: str,
        now: int,
        prepare: Prepare | None = None,
        use_credit: bool = False,
    ) -> OrderResult:
        """Place an order once per ``idempotency_key`` and pay it as far as possible now.

        Card with a token: charged now (``Succeed``, ``Failed`` or ``Time out``).
        Card without one: ``Processing`` until checkout (:meth:`pay`). Invoice:
        ``Succeed`` at once and the invoice mailed. A total of 0: ``Succeed``.

        ``prepare`` runs in the transaction that creates the order, before any
        charge (not for a replayed key); what it raises undoes the order. Its
        order's on-paid callbacks stay due until :meth:`run_callbacks` ran them.

        ``use_credit``: the buyer's credit (:mod:`cloud.billing.credit`) pays first, as a
        "Credit applied" line; only what is left is charged or invoiced. Not for an
        order that waits for checkout (a card order without a token).

        Raises:
            BadOrderRequest: bad lines, kind, pay_with, key or token.
            UnknownInstallation: no such installation.
            IdempotencyConflict: the key was used for a different order.
        """
        try:
            kind = OrderKind(kind)
        except ValueError:
            raise BadOrderRequest(
                N_("%(value)s is not a valid OrderKind"), value=repr(kind)
            ) from None
        try:
            pay_with = PayWith(pay_with)
        except ValueError:
            raise BadOrderRequest(
                N_("%(value)s is not a valid PayWith"), value=repr(pay_with)
            ) from None
        total = check_lines(lines)
        if not 0 < len(idempotency_key) <= _MAX_KEY:
            raise BadOrderRequest(N_("an idempotency key has 1-%(most)s characters"), most=_MAX_KEY)
        if card_token is not None and not 0 < len(card_token) <= _MAX_TOKEN:
            raise BadOrderRequest(N_("bad card token"))
        settles_now = pay_with is PayWith.INVOICE or card_token is not None

        def create() -> tuple[OrderRow, TransactionRow | None, bool, int]:
            with self.store.transaction() as tx:
                found = repo.order_by_key(tx, idempotency_key)
                if found is not None:
                    return found, None, True, found.amount_cents + credit.used_on(tx, found.id)
                if tx.get(InstallationRow, installation_id) is None:
                    raise UnknownInstallation(f"no installation {installation_id}")
                buyer_id = _buyer_id(buyer)
                used = 0
                if use_credit and settles_now and buyer_id is not None and total > 0:
                    used = credit.take(tx, buyer_id, total_cents=total, actor=ACTOR, now=now)
                applied = OrderLine(credit.CREDIT_CODE, "Credit applied", 0, -used)
                row = repo.insert_order(
                    tx,
                    kind=kind,
                    installation_id=installation_id,
                    buyer_user_id=buyer_id,
                    pay_with=pay_with,
                    lines=[*lines, applied] if used else lines,
                    amount_cents=total - used,
                    currency=self.currency,
                    idempotency_key=idempotency_key,
                    notify=self._notify_list(tx, buyer_id),
                    actor=_actor(buyer),
                    now=now,
                )
                if used:
                    assert buyer_id is not None
                    credit.record_use(
                        tx, buyer_id, order_id=row.id, amount_cents=used, actor=ACTOR, now=now
                    )
                if prepare is None:  # the caller learns the outcome from the result
                    row.paid_handled_at = now
                else:
                    prepare(tx, row)
                txn = None
                due = row.amount_cents
                if pay_with is PayWith.CARD and card_token is not None and due > 0:
                    txn = self._new_charge(tx, row, now=now)
                elif due == 0 or pay_with is PayWith.INVOICE:
                    repo.set_order_status(tx, row, _S.SUCCEED, actor=_actor(buyer), now=now)
                    if pay_with is PayWith.INVOICE and due > 0:
                        self._mail_invoice(tx, row, now=now)
                return row, txn, False, total

        try:
            row, txn, replayed, gross = await asyncio.to_thread(create)
        except IntegrityError:
            # another worker committed the same key first: theirs is the order
            _log.info("order key placed by another worker at the same moment: replaying it")
            row, gross = await asyncio.to_thread(self._by_key, idempotency_key)
            txn, replayed = None, True
        if replayed:
            self._check_same(
                row, kind=kind, installation_id=installation_id, total=total, gross=gross
            )
            return _result(row, replayed=True)
        if txn is not None:
            assert card_token is not None
            row = await self._charge(row, txn, card_token=card_token, actor=_actor(buyer), now=now)
        return _result(row)

    def _by_key(self, idempotency_key: str) -> tuple[OrderRow, int]:
        """The order of a key and its total before credit."""
        with self.store.transaction() as tx:
            row = repo.order_by_key(tx, idempotency_key)
            if row is None:  # the other insert failed on something else
                raise IdempotencyConflict(N_("the order could not be stored; try again"))
            return row, row.amount_cents + credit.used_on(tx, row.id)

    @staticmethod
    def _check_same(
        row: OrderRow, *, kind: OrderKind, installation_id: str, total: int, gross: int
    ) -> None:
        if (row.kind, row.installation_id, gross) != (kind, installation_id, total):
            raise IdempotencyConflict(
                N_(
                    "idempotency key already used for order %(number)s "
                    "(another installation, kind or amount): use a new key"
                ),
                number=row.number,
            )

    def _notify_list(self, session: Session, buyer_id: int | None) -> list[str]:
        """Who hears about this order: its buyer."""
        if buyer_id is None:
            return []
        email = user_contact(session, buyer_id).email
        return [email] if email else []

    def _mail_invoice(self, session: Session, row: OrderRow, *, now: int) -> None:
        self.mail_invoice(session, row, now=now)

    def mail_invoice(self, session: Session, row: OrderRow, *, now: int, resend: int = 0) -> None:
        """Queue the invoice of a paid or invoiced order to its notify list, PDF attached.

        Once per order (the outbox's ``invoice:<id>``): every way an order gets paid
        (invoiced, a card checkout or renewal charge, reconciliation) calls it, and a
        second call is a no-op; ``resend`` (1, 2, ...) queues it again, once per resend.
        """
        if not row.notify:
            _log.warning("order %s is paid but has nobody to send the invoice to", row.number)
            return
        amount = f"{row.amount_cents / 100:.2f} {row.currency}"
        how = "payable by invoice."
        attachments = []
        if self.invoice_settings is None:
            _log.warning(
                "no invoice settings: the invoice of %s is mailed without its PDF", row.number
            )
        else:
            bill = invoice_for_order(session, row.id, settings=self.invoice_settings)
            attachments.append((invoice_filename(bill), "application/pdf", render_invoice(bill)))
            if bill.paid_at is not None:
                card = f" by card ending {bill.card_last4}" if bill.card_last4 else ""
                how = f"paid{card} on {format_date(bill.paid_at)}. Thank you."
        enqueue(
            session,
            kind="invoice",
            attachments=attachments,
            to=row.notify,
            subject=f"Invoice for order {row.number}",
            body=f"Order {row.number} ({row.kind}) for installation {row.installation_id}: "
            f"{amount}, {how}",
            now=now,
            dedupe_key=f"invoice:{row.id}" + (f":resend:{resend}" if resend else ""),
        )

    def _new_charge(self, session: Session, row: OrderRow, *, now: int) -> TransactionRow:
        attempts = sum(1 for t in repo.transactions_of(session, row.id) if t.type == TxnType.CHARGE)
        return repo.add_transaction(
            session,
            order_id=row.id,
            type=TxnType.CHARGE,
            amount_cents=row.amount_cents,
            idempotency_key=f"order:{row.id}:charge:{attempts + 1}",
            provider=self.provider_name,
            now=now,
        )

    async def _charge(
        self, row: OrderRow, txn: TransactionRow, *, card_token: str, actor: repo.Actor, now: int
    ) -> OrderRow:
        try:
            charge = await self.provider.charge(
                amount_cents=txn.amount_cents,
                currency=row.currency,
                card_token=card_token,
                idempotency_key=txn.idempotency_key,
            )
        except Exception as exc:  # any failure leaves the outcome unknown: reconcile it
            _log.warning("charge of order %s failed: %s", row.number, type(exc).__name__)
            charge = Charge(charge_id="", status="timed_out", settled=False)
        return await asyncio.to_thread(self.record_charge, txn.id, charge, actor, now)

    def record_charge(self, txn_id: int, charge: Charge, actor: repo.Actor, now: int) -> OrderRow:
        """Store the provider's answer to a charge on its transaction and order (sync)."""
        with self.store.transaction() as tx:
            txn = tx.get(TransactionRow, txn_id)
            assert txn is not None
            row = repo.get_order(tx, txn.order_id, lock=True)
            assert row is not None
            if txn.status not in (_S.PROCESSING, _S.SYSTEM_PROCESSING):
                return row  # recorded already (by reconciliation)
            if txn.status == _S.SYSTEM_PROCESSING and charge.status == "timed_out":
                return row  # still unknown: reconciliation owns it
            status = status_after_charge(charge.status)
            repo.set_txn_status(
                tx,
                txn,
                status,
                actor=actor,
                now=now,
                error=charge.decline_reason or ("no answer" if status is _S.TIME_OUT else None),
                charge_id=charge.charge_id,
            )
            txn.settled = charge.settled
            if charge.card_last4 and charge.card_last4.isdigit():
                txn.card_last4 = charge.card_last4[-4:]
            repo.set_order_status(tx, row, status, actor=actor, now=now)
            if status is _S.SUCCEED:  # TTecomm: an invoice after every card payment
                self._mail_invoice(tx, row, now=now)
            if status is _S.FAILED and row.buyer_user_id is not None:
                # not paid: the credit it used goes back (a retry is a new order that uses it)
                credit.restore(
                    tx,
                    row.id,
                    user_id=row.buyer_user_id,
                    at_most=None,
                    key=f"restore:{row.id}",
                    reason=f"order {row.number} was not paid",
                    actor=ACTOR,
                    now=now,
                )
            return row

    # checkout and cancel ------------------------------------------------------
    async def pay(
        self, order_id: int, *, card_token: str, actor: repo.Actor, now: int
    ) -> OrderResult:
        """Check out a card order that is ``Processing`` (or pay again after ``Failed``).

        Raises:
            UnknownOrder, OrderStateConflict (paid, cancelled, invoiced, or being paid).
        """
        if not 0 < len(card_token) <= _MAX_TOKEN:
            raise BadOrderRequest(N_("bad card token"))

        def start() -> tuple[OrderRow, TransactionRow]:
            with self.store.transaction() as tx:
                row = repo.get_order(tx, order_id, lock=True)
                if row is None:
                    raise UnknownOrder(f"no order {order_id}")
                if row.pay_with != PayWith.CARD:
                    raise OrderStateConflict(
                        N_("order %(number)s is paid by invoice"), number=row.number
                    )
                if row.amount_cents == 0:
                    raise OrderStateConflict(
                        N_("order %(number)s has nothing to pay"), number=row.number
                    )
                if row.status == _S.FAILED and credit.used_on(tx, row.id):
                    raise OrderStateConflict(
                        N_(
                            "order %(number)s used credit and was declined: its credit is back "
                            "and the renewal is charged again as a new order"
                        ),
                        number=row.number,
                    )
                charges = [t for t in repo.transactions_of(tx, row.id) if t.type == TxnType.CHARGE]
                if row.status not in (_S.PROCESSING, _S.FAILED) or any(
                    t.status != _S.FAILED for t in charges
                ):
                    raise OrderStateConflict(
                        N_(
                            "order %(number)s is '%(status)s' "
                            "(paid, cancelled or being paid): it cannot be paid now"
                        ),
                        number=row.number,
                        status=row.status,
                    )
                repo.set_order_status(tx, row, _S.PROCESSING, actor=actor, now=now)
                row.paid_handled_at = None
                return row, self._new_charge(tx, row, now=now)

        row, txn = await asyncio.to_thread(start)
        row = await self._charge(row, txn, card_token=card_token, actor=actor, now=now)
        if row.status == _S.SUCCEED:
            await self.run_callbacks(row.id, now=now)
        return _result(row)

    async def cancel(self, order_id: int, *, actor: repo.Actor, now: int) -> OrderResult:
        """Cancel an order nobody has paid (``Processing`` with no charge running, or ``Failed``);
        the on-reversed callbacks run.

        Raises:
            UnknownOrder, OrderStateConflict (paid or being paid: void or refund instead).
        """

        def run() -> OrderRow:
            with self.store.transaction() as tx:
                return self.cancel_unpaid(tx, order_id, actor=actor, now=now)

        row = await asyncio.to_thread(run)
        await self.refunds.run_reversed(order_id)
        return _result(row)

    @staticmethod
    def cancel_unpaid(session: Session, order_id: int, *, actor: repo.Actor, now: int) -> OrderRow:
        """:meth:`cancel` inside the caller's transaction, without the callbacks (sync)."""
        row = repo.get_order(session, order_id, lock=True)
        if row is None:
            raise UnknownOrder(f"no order {order_id}")
        running = any(
            t.type == TxnType.CHARGE and t.status != _S.FAILED
            for t in repo.transactions_of(session, row.id)
        )
        if row.status not in (_S.PROCESSING, _S.FAILED) or running:
            raise OrderStateConflict(
                N_(
                    "order %(number)s is '%(status)s' and cannot be cancelled; "
                    "a paid order is voided or refunded instead"
                ),
                number=row.number,
                status=row.status,
            )
        repo.set_order_status(session, row, _S.CANCEL, actor=actor, now=now)
        return row

    async def withdraw(self, order_id: int, *, actor: repo.Actor, now: int) -> None:
        """Give a paid order back in full: void its charge, or refund it once settled, or
        cancel its invoice (the notify list is told). A failed refund joins the retry queue.

        Raises:
            UnknownOrder, OrderStateConflict: nothing paid to give back.
            PaymentProviderError: the provider failed (nothing changed; try again).
        """

        def invoiced() -> bool:
            with self.store.transaction() as tx:
                row = repo.get_order(tx, order_id, lock=True)
                if row is None:
                    raise UnknownOrder(f"no order {order_id}")
                if row.status != _S.SUCCEED:
                    raise OrderStateConflict(
                        N_("order %(number)s is '%(status)s', not paid"),
                        number=row.number,
                        status=row.status,
                    )
                if row.pay_with == PayWith.CARD and row.amount_cents > 0:
                    return False
                repo.set_order_status(tx, row, _S.CANCEL, actor=actor, now=now)
                if row.pay_with == PayWith.INVOICE and row.amount_cents > 0 and row.notify:
                    enqueue(
                        tx,
                        kind="invoice_cancelled",
                        to=row.notify,
                        subject=f"Invoice for order {row.number} is cancelled",
                        body=f"Order {row.number} for installation {row.installation_id} was "
                        "cancelled: its invoice is void and must not be paid (or is credited).",
                        now=now,
                        dedupe_key=f"invoice_cancelled:{row.id}",
                    )
                return True

        if await asyncio.to_thread(invoiced):
            await self.refunds.run_reversed(order_id)
            return
        try:
            await self.refunds.void(order_id, amount_cents=None, actor=actor, now=now)
        except ChargeSettled:
            await self.refunds.refund(order_id, amount_cents=None, actor=actor, now=now)

    async def reverse_line(
        self, order_id: int, line_id: int, *, actor: repo.Actor, now: int
    ) -> LineReversal:
        """Give back one line of a paid order and nothing else: refund the line's amount from
        the settled card charge, or credit it on the invoice (the notify list is told); the
        on-line-reversed callbacks take back what the line bought. The other lines stay paid.

        Raises:
            UnknownOrder, UnknownOrderLine.
            OrderStateConflict: the order is not paid, or the line was given back already.
            ChargeNotSettled: the card charge has not settled (void the whole order instead,
                or refund the line once it settled).
            PaymentProviderError: the provider failed (nothing changed; try again).
        """

        def claim() -> tuple[int, int]:
            with self.store.transaction() as tx:
                row = repo.get_order(tx, order_id, lock=True)
                if row is None:
                    raise UnknownOrder(f"no order {order_id}")
                line = tx.get(OrderLineRow, line_id)
                if line is None or line.order_id != order_id:
                    raise UnknownOrderLine(
                        N_("order %(number)s has no line %(line)s"), number=row.number, line=line_id
                    )
                if row.status != _S.SUCCEED:
                    raise OrderStateConflict(
                        N_("order %(number)s is '%(status)s', not paid"),
                        number=row.number,
                        status=row.status,
                    )
                if line.reversed_at is not None:
                    raise OrderStateConflict(
                        N_("line %(line)s of order %(number)s was given back already"),
                        line=line_id,
                        number=row.number,
                    )
                if line.product_code == credit.CREDIT_CODE:
                    raise OrderStateConflict(
                        N_("the credit line of order %(number)s is not given back on its own"),
                        number=row.number,
                    )
                line.reversed_at = now
                repo.audit_line_reversed(tx, row, line, actor=actor, now=now)
                by_card = row.pay_with == PayWith.CARD and line.amount_cents > 0
                if not by_card and line.amount_cents > 0 and row.notify:
                    amount = f"{line.amount_cents / 100:.2f} {row.currency}"
                    enqueue(
                        tx,
                        kind="invoice_line_credited",
                        to=row.notify,
                        subject=f"Order {row.number}: {amount} credited",
                        body=f"The line {line.description} ({line.product_code}, installation "
                        f"{line.installation_id}) of order {row.number} was cancelled: its "
                        f"{amount} is credited on your invoice. The other lines stay as billed.",
                        now=now,
                        dedupe_key=f"invoice_line_credited:{row.id}:{line.id}",
                    )
                if not by_card:
                    return 0, 0
                # the card gives back what it paid of the line; the purchaser's credit the rest
                charge = repo.charge_of(tx, row.id)
                left = 0
                if charge is not None and charge.status == _S.SUCCEED:
                    left = charge.amount_cents - repo.refunded_cents(tx, charge.id)
                # the charge's ``left`` holds the other lines' money too: a line gives back
                # at most what is left of it
                done = sum(count(tx, row.id, line_id) for count in self._line_refunded)
                due = max(line.amount_cents - done, 0)
                card_part = min(due, max(left, 0))
                credit_part = due - card_part
                if card_part == 0:
                    credit_part = self._restore_line_credit(tx, row, line_id, credit_part, now)
                return card_part, credit_part

        def unclaim() -> None:
            with self.store.transaction() as tx:
                line = tx.get(OrderLineRow, line_id)
                if line is not None:
                    line.reversed_at = None

        def restore_rest(cents: int) -> int:
            with self.store.transaction() as tx:
                row = repo.get_order(tx, order_id, lock=True)
                assert row is not None
                return self._restore_line_credit(tx, row, line_id, cents, now)

        card_part, credit_part = await asyncio.to_thread(claim)
        refund = None
        if card_part:
            try:
                refund = await self.refunds.refund(
                    order_id, amount_cents=card_part, actor=actor, now=now, whole_order=False
                )
            except BaseException:
                await asyncio.to_thread(unclaim)
                raise
            if credit_part:
                credit_part = await asyncio.to_thread(restore_rest, credit_part)
        for callback in self._on_line_reversed:
            try:
                await callback(order_id, line_id)
            except Exception:
                _log.exception("an on-line-reversed callback failed for order %d", order_id)
        return LineReversal(order_id, line_id, card_part + credit_part, refund, credit_part)

    @staticmethod
    def _restore_line_credit(
        session: Session, row: OrderRow, line_id: int, cents: int, now: int
    ) -> int:
        if not cents or row.buyer_user_id is None:
            return 0
        return credit.restore(
            session,
            row.id,
            user_id=row.buyer_user_id,
            at_most=cents,
            key=f"restore:{row.id}:{line_id}",
            reason=f"a line of order {row.number} was given back",
            actor=ACTOR,
            now=now,
        )

    # callbacks and reconciliation ---------------------------------------------
    async def run_callbacks(self, order_id: int, *, now: int) -> bool:
        """Run every on-paid callback for the order; True (and noted) when all succeeded."""
        for callback in self._on_paid:
            try:
                await callback(order_id)
            except Exception:
                _log.exception("an on-paid callback failed for order %d; retried later", order_id)
                return False

        def done() -> None:
            with self.store.transaction() as tx:
                row = repo.get_order(tx, order_id, lock=True)
                if row is not None and row.paid_handled_at is None:
                    row.paid_handled_at = now

        await asyncio.to_thread(done)
        return True

    async def reconcile(self, *, now: int) -> ReconcileReport:
        """Settle charges whose outcome is unknown; re-run pending on-paid callbacks.

        See :func:`cloud.billing.reconcile.reconcile`.
        """
        return await reconcile(
            self.store,
            self.provider,
            record_charge=self.record_charge,
            run_callbacks=lambda order_id: self.run_callbacks(order_id, now=now),
            now=now,
        )
