"""Voids, refunds and the daily retry of failed refunds.

A void cancels a whole charge that has not settled (the order becomes
``Cancel``); a refund returns part or all of a settled charge (the order
stays ``Succeed``, each refund is a transaction of its own, and what is left
to refund is the charge minus refunds done, running or queued). Whether a
charge has settled is asked of the provider first (``lookup``), since the
processor settles on its own schedule.

A refund the provider fails joins the retry queue: retried once a day
(:data:`~cloud.billing.rules.REFUND_RETRY_INTERVAL_S`) for
:data:`~cloud.billing.rules.REFUND_RETRIES` days; when the last retry
fails, the order's notify list is emailed (kind ``refund_failed``) and the
refund is left to a person (it no longer counts against the charge, so a
new refund can be issued). A retry is claimed by pushing its due time out by
:data:`LEASE_S` in the claiming transaction, so two workers never send the
same retry.

After a void, and after a refund that leaves nothing of the charge (done or
queued), the ``on_reversed`` callbacks run (``async callback(order_id)``; the
subscriptions take back what the order bought). A callback that fails is
logged; it must be idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from cloud.billing import notices
from cloud.billing import queries as repo
from cloud.billing.errors import (
    ChargeNotSettled,
    ChargeSettled,
    OrderStateConflict,
    PaymentProviderError,
    RefundTooLarge,
    UnknownOrder,
    VoidFailed,
)
from cloud.billing.payments import PaymentProvider
from cloud.billing.rules import (
    REFUND_RETRIES,
    OrderStatus,
    TxnType,
    choose_reversal,
    next_refund_retry,
    plan_refund,
    plan_void,
)
from cloud.billing.tables import OrderRow, RefundRetryRow, TransactionRow
from cloud.database import Store
from cloud.errors import N_
from cloud.notifications.outbox import enqueue

__all__ = ["LEASE_S", "Refunds", "Reversal", "RetryReport", "mail_reversal"]

_log = logging.getLogger(__name__)

LEASE_S = 3600
_S = OrderStatus
_JOB_ACTOR = "system:refund-retry"


@dataclass(frozen=True, slots=True)
class Reversal:
    """A void or refund as recorded; ``retry_at`` when a failed refund was queued."""

    order_id: int
    transaction_id: int
    type: TxnType
    status: OrderStatus
    amount_cents: int
    retry_at: int | None = None


@dataclass(frozen=True, slots=True)
class RetryReport:
    """One pass of the retry queue (transaction ids)."""

    refunded: tuple[int, ...]
    failed: tuple[int, ...]
    exhausted: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Charged:
    order_id: int
    txn_id: int
    key: str
    charge_id: str


def mail_reversal(
    session: Session, row: OrderRow, txn: TransactionRow, *, now: int, resend: int = 0
) -> None:
    """Queue the mail of a void or refund that went through to the order's notify list,
    once per transaction (``refund:<id>``); ``resend`` (1, 2, ...) queues it again."""
    if not row.notify:
        return
    charge = session.get(TransactionRow, txn.parent_id) if txn.parent_id else None
    notice = notices.refund_made(
        order_number=row.number,
        amount_cents=txn.amount_cents,
        currency=row.currency,
        voided=txn.type == TxnType.VOID,
        card_last4=charge.card_last4 if charge is not None else None,
        at=txn.updated_at,
    )
    key = f"refund:{txn.id}" + (f":resend:{resend}" if resend else "")
    enqueue(session, to=row.notify, now=now, dedupe_key=key, **notice.fields())


class Refunds:
    """Voids and refunds of charged orders; the retry queue of failed refunds."""

    def __init__(
        self,
        store: Store,
        provider: PaymentProvider,
        *,
        provider_name: str,
        notify: Sequence[str] = (),
    ) -> None:
        """``notify``: operator addresses told, besides the order's, when a refund gives up."""
        self.store = store
        self.notify = tuple(notify)
        self.provider = provider
        self.provider_name = provider_name
        self.on_reversed: list[Callable[[int], Awaitable[None]]] = []

    async def run_reversed(self, order_id: int) -> None:
        """Run the on-reversed callbacks of an order that was given back."""
        for callback in self.on_reversed:
            try:
                await callback(order_id)
            except Exception:
                _log.exception("an on-reversed callback failed for order %d", order_id)

    def _fully_refunded(self, order_id: int) -> bool:
        with self.store.transaction() as tx:
            charge = repo.charge_of(tx, order_id)
            if charge is None:
                return False
            return repo.refunded_cents(tx, charge.id) >= charge.amount_cents

    def _charged(self, session: Session, order_id: int) -> tuple[OrderRow, TransactionRow]:
        row = repo.get_order(session, order_id, lock=True)
        if row is None:
            raise UnknownOrder(f"no order {order_id}")
        charge = repo.charge_of(session, order_id)
        if row.status != _S.SUCCEED or charge is None or not charge.provider_charge_id:
            if row.pay_with == "invoice":
                raise OrderStateConflict(
                    N_(
                        "order %(number)s is '%(status)s' and has no card charge to void or "
                        "refund (it was invoiced)"
                    ),
                    number=row.number,
                    status=row.status,
                )
            raise OrderStateConflict(
                N_("order %(number)s is '%(status)s' and has no card charge to void or refund"),
                number=row.number,
                status=row.status,
            )
        return row, charge

    async def _settled(self, order_id: int) -> bool:
        """Ask the provider whether the order's charge settled; remember the answer."""

        def find() -> _Charged:
            with self.store.transaction() as tx:
                row, charge = self._charged(tx, order_id)
                assert charge.provider_charge_id is not None
                return _Charged(
                    row.id, charge.id, charge.idempotency_key, charge.provider_charge_id
                )

        charged = await asyncio.to_thread(find)
        answer = await self.provider.lookup(charged.key)
        settled = answer is not None and answer.settled

        def note() -> None:
            with self.store.transaction() as tx:
                txn = tx.get(TransactionRow, charged.txn_id)
                if txn is not None and txn.settled != settled:
                    txn.settled = settled

        await asyncio.to_thread(note)
        return settled

    async def void(
        self, order_id: int, *, amount_cents: int | None, actor: repo.Actor, now: int
    ) -> Reversal:
        """Void the order's whole unsettled charge; the order becomes ``Cancel``.

        Raises:
            UnknownOrder, OrderStateConflict: no such order, or nothing charged to void.
            PartialVoid: ``amount_cents`` is not the whole charge.
            ChargeSettled: refund instead.
            VoidFailed: the provider failed (nothing changed; try again).
        """
        settled = await self._settled(order_id)

        def start() -> tuple[TransactionRow, str]:
            with self.store.transaction() as tx:
                _, charge = self._charged(tx, order_id)
                plan_void(
                    charge_cents=charge.amount_cents, requested_cents=amount_cents, settled=settled
                )
                if repo.refunded_cents(tx, charge.id):
                    raise OrderStateConflict(
                        N_("the charge is being refunded: it cannot be voided")
                    )
                n = 1 + sum(1 for t in repo.transactions_of(tx, order_id) if t.type == TxnType.VOID)
                txn = repo.add_transaction(
                    tx,
                    order_id=order_id,
                    type=TxnType.VOID,
                    amount_cents=charge.amount_cents,
                    parent_id=charge.id,
                    idempotency_key=f"{charge.idempotency_key}:void:{n}",
                    provider=self.provider_name,
                    now=now,
                )
                assert charge.provider_charge_id is not None
                return txn, charge.provider_charge_id

        txn, charge_id = await asyncio.to_thread(start)
        try:
            await self.provider.void(charge_id)
        except PaymentProviderError as exc:
            await asyncio.to_thread(self._finish, txn.id, _S.FAILED, actor, now, str(exc))
            raise VoidFailed(f"the payment provider did not void the charge: {exc}") from exc
        except ChargeSettled as exc:
            await asyncio.to_thread(self._finish, txn.id, _S.FAILED, actor, now, str(exc))
            raise
        done = await asyncio.to_thread(self._finish, txn.id, _S.SUCCEED, actor, now, None)
        await self.run_reversed(order_id)
        return done

    def _finish(
        self,
        txn_id: int,
        status: OrderStatus,
        actor: repo.Actor,
        now: int,
        error: str | None,
        queue: bool = False,
    ) -> Reversal:
        with self.store.transaction() as tx:
            txn = tx.get(TransactionRow, txn_id)
            assert txn is not None
            row = repo.get_order(tx, txn.order_id, lock=True)
            assert row is not None
            repo.set_txn_status(tx, txn, status, actor=actor, now=now, error=error)
            if txn.type == TxnType.VOID and status == _S.SUCCEED:
                repo.set_order_status(tx, row, _S.CANCEL, actor=actor, now=now)
            if status == _S.SUCCEED:
                mail_reversal(tx, row, txn, now=now)
            retry_at = None
            if queue:
                retry_at = next_refund_retry(retries_done=0, now=now)
                assert retry_at is not None
                repo.add_retry(tx, txn_id=txn.id, next_attempt_at=retry_at, error=error or "failed")
            return Reversal(row.id, txn.id, TxnType(txn.type), status, txn.amount_cents, retry_at)

    async def refund(
        self,
        order_id: int,
        *,
        amount_cents: int | None,
        actor: repo.Actor,
        now: int,
        whole_order: bool = True,
    ) -> Reversal:
        """Give back ``amount_cents`` (default: all that is left) of the order's charge.

        The processor's rule, "tries a void first, then a refund": an unsettled
        charge is voided in full (:func:`~cloud.billing.rules.choose_reversal`);
        when the void finds that the charge settled meanwhile, it is refunded. A
        settled charge is refunded; a provider failure queues the refund for daily
        retries (``retry_at``).
        ``whole_order=False``: the refund of one line (:meth:`Billing.reverse_line
        <cloud.billing.orders.Billing.reverse_line>`), whose own callbacks take back what
        it bought: the on-reversed callbacks do not run even when it uses up the charge.

        Raises:
            UnknownOrder, OrderStateConflict: no such order, or nothing charged to refund.
            PartialVoid: part of an unsettled charge (refund part once it settled).
            RefundTooLarge, BadOrderRequest: more than is left, or not a positive amount.
            VoidFailed: the provider failed the void (nothing changed; try again).
        """
        settled = await self._settled(order_id)
        if not settled:

            def plan() -> None:
                with self.store.transaction() as tx:
                    _, charge = self._charged(tx, order_id)
                    choose_reversal(
                        charge_cents=charge.amount_cents,
                        refunded_cents=repo.refunded_cents(tx, charge.id),
                        requested_cents=amount_cents,
                        settled=False,
                    )

            await asyncio.to_thread(plan)
            try:
                return await self.void(order_id, amount_cents=None, actor=actor, now=now)
            except ChargeSettled:
                _log.info("order %d: the charge settled before the void; refunding it", order_id)
            settled = await self._settled(order_id)

        def start() -> tuple[TransactionRow, str]:
            with self.store.transaction() as tx:
                _, charge = self._charged(tx, order_id)
                amount = plan_refund(
                    charge_cents=charge.amount_cents,
                    refunded_cents=repo.refunded_cents(tx, charge.id),
                    requested_cents=amount_cents,
                    settled=settled,
                )
                n = 1 + sum(
                    1 for t in repo.transactions_of(tx, order_id) if t.type == TxnType.REFUND
                )
                txn = repo.add_transaction(
                    tx,
                    order_id=order_id,
                    type=TxnType.REFUND,
                    amount_cents=amount,
                    parent_id=charge.id,
                    idempotency_key=f"{charge.idempotency_key}:refund:{n}",
                    provider=self.provider_name,
                    now=now,
                )
                assert charge.provider_charge_id is not None
                return txn, charge.provider_charge_id

        txn, charge_id = await asyncio.to_thread(start)
        try:
            await self.provider.refund(charge_id, amount_cents=txn.amount_cents)
        except (ChargeNotSettled, RefundTooLarge) as exc:  # the provider disagrees: not retried
            await asyncio.to_thread(self._finish, txn.id, _S.FAILED, actor, now, str(exc))
            raise
        except PaymentProviderError as exc:
            _log.warning("refund %d failed, queued for retry: %s", txn.id, exc)
            done = await asyncio.to_thread(
                self._finish, txn.id, _S.FAILED, actor, now, str(exc), True
            )
        else:
            done = await asyncio.to_thread(self._finish, txn.id, _S.SUCCEED, actor, now, None)
        if whole_order and await asyncio.to_thread(self._fully_refunded, order_id):
            await self.run_reversed(order_id)
        return done

    # the retry queue ------------------------------------------------------------
    async def retry_due(self, *, now: int) -> RetryReport:
        """Retry every failed refund due at ``now``; email the notify list after the last one."""

        def claim() -> list[tuple[int, int, str, int]]:
            with self.store.transaction() as tx:
                out = []
                for retry, txn in repo.claim_due_retries(tx, now=now, lease_s=LEASE_S):
                    charge = tx.get(TransactionRow, txn.parent_id)
                    assert charge is not None and charge.provider_charge_id is not None
                    out.append((retry.id, txn.id, charge.provider_charge_id, txn.amount_cents))
                return out

        refunded, failed, exhausted = [], [], []
        for retry_id, txn_id, charge_id, amount in await asyncio.to_thread(claim):
            error = None
            try:
                await self.provider.refund(charge_id, amount_cents=amount)
            except PaymentProviderError as exc:
                error = str(exc) or type(exc).__name__
            gave_up = await asyncio.to_thread(self._after_retry, retry_id, error, now)
            if error is None:
                refunded.append(txn_id)
            elif gave_up:
                exhausted.append(txn_id)
            else:
                failed.append(txn_id)
        return RetryReport(tuple(refunded), tuple(failed), tuple(exhausted))

    def _after_retry(self, retry_id: int, error: str | None, now: int) -> bool:
        with self.store.transaction() as tx:
            retry = tx.get(RefundRetryRow, retry_id, with_for_update=True)
            assert retry is not None
            txn = tx.get(TransactionRow, retry.transaction_id)
            assert txn is not None
            retry.attempts += 1
            if error is None:
                retry.resolved_at, retry.next_attempt_at = now, None
                repo.set_txn_status(tx, txn, _S.SUCCEED, actor=_JOB_ACTOR, now=now)
                order = repo.get_order(tx, txn.order_id)
                assert order is not None
                mail_reversal(tx, order, txn, now=now)
                return False
            retry.last_error = error[:1000]
            retry.next_attempt_at = next_refund_retry(retries_done=retry.attempts, now=now)
            repo.set_txn_status(tx, txn, _S.FAILED, actor=_JOB_ACTOR, now=now, error=error)
            if retry.next_attempt_at is not None:
                return False
            retry.exhausted_at = now
            row = repo.get_order(tx, txn.order_id)
            assert row is not None
            self._mail_failure(tx, row, txn, error=error, now=now)
            return True

    def _mail_failure(
        self, session: Session, row: OrderRow, txn: TransactionRow, *, error: str, now: int
    ) -> None:
        to = list(dict.fromkeys([*row.notify, *self.notify]))
        if not to:
            _log.error(
                "refund %d of order %s gave up and nobody is on its notify list", txn.id, row.number
            )
            return
        amount = f"{txn.amount_cents / 100:.2f} {row.currency}"
        enqueue(
            session,
            kind="refund_failed",
            to=to,
            subject=f"Refund of {amount} for order {row.number} failed",
            body=(
                f"The refund of {amount} for order {row.number} (installation "
                f"{row.installation_id}) failed {1 + REFUND_RETRIES} times, the last time with: "
                f"{error}\n\nIt will not be retried again. Please refund the customer by hand "
                "or issue the refund again once the payment provider works."
            ),
            now=now,
            dedupe_key=f"refund_failed:{txn.id}",
        )
