"""Orders as the API uses them: history and detail, invoices, checkout, cancel and reversals.

One :class:`OrderService` per app (built in :func:`cloud.app.create_app`)
over :class:`~cloud.billing.orders.Billing`. Every method first checks that
the caller may see the order (write: change it): an order of an installation
out of the caller's scope is :class:`~cloud.billing.errors.UnknownOrder`,
like one that does not exist. Errors are the error tree's; the app's one
handler answers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from cloud.accounts import users
from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import STAFF_ROLES, Permission, allowed
from cloud.accounts.schemas import ContactOut
from cloud.accounts.users import Contact, user, user_contact
from cloud.billing import credit
from cloud.billing import queries as repo
from cloud.billing.errors import NothingToResend, PaymentProviderError, UnknownOrder
from cloud.billing.invoices import Invoice, invoice_filename, invoice_for_order, render_invoice
from cloud.billing.orders import Billing, OrderResult
from cloud.billing.refunds import Reversal, mail_reversal
from cloud.billing.rules import (
    OrderKind,
    OrderStatus,
    PayWith,
    TxnType,
    hidden_filter,
    line_installation,
)
from cloud.billing.schemas import (
    BilledToOut,
    CreditEntryOut,
    CreditOut,
    CustomerActivityOut,
    CustomerInstallationOut,
    LineOut,
    LineReversalOut,
    OrderDetail,
    OrderHistoryOut,
    OrderOut,
    OrderResultOut,
    OrderSummaryOut,
    ResendOut,
    RetryOut,
    ReversalOptionOut,
    ReversalOut,
    TransactionOut,
    WhyNot,
)
from cloud.billing.tables import OrderLineRow, OrderRow, RefundRetryRow, TransactionRow
from cloud.database import Store
from cloud.devices import memberships
from cloud.devices.access import ensure_installation_access, visible_installation_ids
from cloud.errors import N_, Forbidden, UnknownInstallation, UnknownUser, UpstreamFailed
from cloud.settings import CloudSettings
from common.clock import Clock

__all__ = ["ORDER_SORTS", "InvoicePdf", "OrderFilter", "OrderService"]

ORDER_SORTS = repo.ORDER_SORTS  # what OrderFilter.sort may be


@dataclass(frozen=True, slots=True)
class InvoicePdf:
    filename: str
    pdf: bytes


# the order history's search, sort and page: the query's own filter, passed through
OrderFilter = repo.OrderQuery


def _contact_out(contact: Contact) -> ContactOut:
    return ContactOut(
        user_id=contact.user_id,
        email=contact.email,
        name=contact.name,
        company_id=contact.company_id,
        phone=contact.phone,
    )


def _billed_to(session: Session, installation_id: str) -> BilledToOut | None:
    """Who is billed for an installation nobody is authorised for: its latest purchaser."""
    order = repo.latest_purchase(session, installation_id)
    if order is None or order.buyer_user_id is None:
        return None
    try:
        contact = user_contact(session, order.buyer_user_id)
    except UnknownUser:
        return None
    company = None
    if contact.company_id is not None:
        company = users.company(session, contact.company_id).name
    return BilledToOut(
        contact=_contact_out(contact), company_name=company, order_number=order.number
    )


@dataclass(frozen=True, slots=True)
class _Scoped:
    """An order as one caller sees it: every installation it is for, and those they may see."""

    row: OrderRow
    places: tuple[str, ...]  # every installation of the order, in line order
    seen: frozenset[str]  # those the caller may see (never empty)

    @property
    def whole(self) -> bool:
        return self.seen.issuperset(self.places)


def _scopes(
    session: Session,
    principal: Principal,
    rows: Sequence[OrderRow],
    spans: dict[int, tuple[str, ...]] | None = None,
) -> dict[int, _Scoped]:
    """Each order (by id) as ``principal`` sees it (``spans``: each order's installations,
    when read already)."""
    spans = repo.order_installations(session, rows) if spans is None else spans
    visible = visible_installation_ids(session, principal)
    seen = repo.visible_among(
        session, sorted({p for s in spans.values() for p in s}), visible=visible
    )
    return {
        row.id: _Scoped(row, spans[row.id], frozenset(p for p in spans[row.id] if p in seen))
        for row in rows
    }


def _total(lines: Sequence[OrderLineRow] | Sequence[LineOut]) -> int:
    return sum(line.amount_cents for line in lines)


def _order_out(scope: _Scoped) -> OrderOut:
    row = scope.row
    return OrderOut(
        id=row.id,
        number=row.number,
        type=row.kind,
        installation_id=row.installation_id,
        buyer_user_id=row.buyer_user_id,
        status=row.status,
        pay_with=row.pay_with,
        amount_cents=row.amount_cents,
        currency=row.currency,
        created_at=row.created_at,
        updated_at=row.updated_at,
        hidden_at=row.hidden_at,
        installation_ids=[p for p in scope.places if p in scope.seen],
        other_installations=sum(1 for p in scope.places if p not in scope.seen),
    )


def _summary_out(scope: _Scoped, more: repo.OrderSummary) -> OrderSummaryOut:
    return OrderSummaryOut(
        **_order_out(scope).model_dump(),
        customer_name=more.customer_name,
        customer_email=more.customer_email,
        installation_name=more.installation_name,
        installation_names=[name or p for p, name in more.installations if p in scope.seen],
        services=list(dict.fromkeys(code for p, code in more.services if p in scope.seen)),
        last_error=more.last_error,
    )


def _txn_out(row: TransactionRow, retry: RefundRetryRow | None) -> TransactionOut:
    return TransactionOut(
        id=row.id,
        type=row.type,
        status=row.status,
        amount_cents=row.amount_cents,
        parent_id=row.parent_id,
        provider=row.provider,
        provider_charge_id=row.provider_charge_id,
        settled=row.settled,
        card_last4=row.card_last4,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        retry=None
        if retry is None
        else RetryOut(
            attempts=retry.attempts,
            next_attempt_at=retry.next_attempt_at,
            last_error=retry.last_error,
            exhausted_at=retry.exhausted_at,
            resolved_at=retry.resolved_at,
        ),
    )


def _result_out(result: OrderResult) -> OrderResultOut:
    return OrderResultOut(
        order_id=result.order_id,
        number=result.number,
        status=result.status,
        amount_cents=result.amount_cents,
    )


def _reversal_out(result: Reversal) -> ReversalOut:
    return ReversalOut(
        order_id=result.order_id,
        transaction_id=result.transaction_id,
        type=result.type,
        status=result.status,
        amount_cents=result.amount_cents,
        retry_at=result.retry_at,
    )


def _is_staff(principal: Principal) -> bool:
    return principal.role in STAFF_ROLES


def _order_in_scope(
    session: Session, principal: Principal, order_id: int, *, write: bool
) -> _Scoped:
    """The order if ``principal`` may see any of its installations (``write``: change every
    one of them: money actions and hiding act on the whole order, so a caller who sees only
    part of it does not take them).

    Raises:
        UnknownOrder: no such order, or none of its installations in scope.
        Forbidden: ``write`` on an order that is also for installations out of scope.
        Forbidden, Blacklisted: as :func:`~cloud.devices.access.ensure_installation_access`.
    """
    row = repo.get_order(session, order_id)
    if row is None:
        raise UnknownOrder(f"no order {order_id}")
    scope = _scopes(session, principal, [row])[row.id]
    if not scope.seen:
        raise UnknownOrder(f"no order {order_id}")
    if write and not scope.whole:
        raise Forbidden(
            N_(
                "order %(number)s is also for installations you do not manage: only its "
                "purchaser, their partner for every installation of it, or billing staff "
                "change it"
            ),
            number=row.number,
        )
    # the role's own rules besides the scope: support only reads, a blacklisted customer looks
    place = row.installation_id if row.installation_id in scope.seen else min(scope.seen)
    try:
        ensure_installation_access(session, principal, place, write=write)
    except UnknownInstallation:
        raise UnknownOrder(f"no order {order_id}") from None
    return scope


@asynccontextmanager
async def _provider_edge() -> AsyncIterator[None]:
    """The payment provider's failures, as the error tree's (502 at the HTTP edge)."""
    try:
        yield
    except PaymentProviderError as exc:
        raise UpstreamFailed(f"payment provider: {exc}") from exc


class OrderService:
    """Orders scoped to the caller; payments and reversals through :class:`Billing`."""

    def __init__(
        self, store: Store, billing: Billing, *, clock: Clock, settings: CloudSettings
    ) -> None:
        self._store = store
        self._billing = billing
        self._clock = clock
        self._settings = settings

    def _scoped(self, principal: Principal, order_id: int, *, write: bool) -> OrderDetail:
        """The order if ``principal`` may see it (``write``: change it); else UnknownOrder."""
        with self._store.transaction() as tx:
            scope = _order_in_scope(tx, principal, order_id, write=write)
            row = scope.row
            txns = repo.transactions_of(tx, order_id)
            retries = repo.retries_of(tx, [t.id for t in txns])
            every = repo.lines_of(tx, order_id)
            lines = [
                LineOut(
                    product_code=line.product_code,
                    description=line.description,
                    months=line.months,
                    quantity=line.quantity,
                    unit_cents=line.unit_cents,
                    amount_cents=line.amount_cents,
                    id=line.id,
                    installation_id=line.installation_id,
                    reversed_at=line.reversed_at,
                )
                for line in every
                if line_installation(line.installation_id, row.installation_id) in scope.seen
            ]
            return OrderDetail(
                **_order_out(scope).model_dump(),
                notify=list(row.notify),
                lines=lines,
                hidden_lines=len(every) - len(lines),
                hidden_cents=_total(every) - _total(lines),
                transactions=[_txn_out(t, retries.get(t.id)) for t in txns],
            )

    def search(
        self,
        principal: Principal,
        *,
        kind: OrderKind | None,
        status: OrderStatus | None,
        number: str | None,
        installation_id: str | None,
        limit: int,
        offset: int,
        customer: str | None = None,
        customer_user_id: int | None = None,
        customer_company_id: int | None = None,
        show_hidden: bool = False,
    ) -> list[OrderOut]:
        """The order history, newest first; partners and owners see their installations' only,
        without the orders they hid (``show_hidden``: only those).

        Raises:
            UnknownInstallation: ``installation_id`` unknown or not one of the caller's.
        """
        query = repo.OrderQuery(
            kind=kind,
            status=status,
            number=number,
            installation_id=installation_id,
            limit=limit,
            offset=offset,
            customer=customer,
            customer_user_id=customer_user_id,
            customer_company_id=customer_company_id,
            hidden=hidden_filter(staff=_is_staff(principal), show_hidden=show_hidden),
        )
        with self._store.transaction() as tx:
            if installation_id is not None:
                ensure_installation_access(tx, principal, installation_id, write=False)
            visible = visible_installation_ids(tx, principal)
            rows = repo.search_orders(tx, query, visible=visible)
            scopes = _scopes(tx, principal, rows)
            return [_order_out(scopes[r.id]) for r in rows]

    def customer_activity(
        self,
        principal: Principal,
        *,
        user_id: int | None = None,
        company_id: int | None = None,
        installation_id: str | None = None,
        installation_search: str | None = None,
        order_limit: int = 10,
    ) -> CustomerActivityOut:
        """The customer profile's installations, their authorised contacts and latest orders.

        The installations a user owns and a company integrates (give both for a
        partner user and its company), the one ``installation_id``, or those found by
        ``installation_search`` (an id, or part of a name; at most 50); only those
        ``principal`` may see. Contacts are never vendor staff (``staff_email_domains``).

        Raises:
            UnknownInstallation: ``installation_id`` unknown or not one of the caller's.
        """
        with self._store.transaction() as tx:
            if installation_id is not None:
                ensure_installation_access(tx, principal, installation_id, write=False)
            visible = visible_installation_ids(tx, principal)
            rows = repo.installations_of_account(
                tx,
                user_id=user_id,
                company_id=company_id,
                installation_id=installation_id,
                search=installation_search,
                visible=visible,
                limit=50,
            )
            installations = []
            for row in rows:
                members = memberships.members(tx, row.id)
                contacts = memberships.authorised_contacts(
                    tx, row.id, staff_domains=self._settings.staff_email_domains
                )
                installations.append(
                    CustomerInstallationOut(
                        id=row.id,
                        name=row.name,
                        owner_user_id=members.owner_user_id,
                        integrator_company_ids=list(members.integrator_company_ids),
                        contacts=[_contact_out(c) for c in contacts],
                        billed_to=None if contacts else _billed_to(tx, row.id),
                    )
                )
        ids = tuple(i.id for i in installations)
        orders = self.history(principal, OrderFilter(installation_ids=ids, limit=order_limit))
        return CustomerActivityOut(
            installations=installations, orders=orders.items, orders_total=orders.total
        )

    def history(
        self, principal: Principal, which: OrderFilter, *, service_codes: bool = False
    ) -> OrderHistoryOut:
        """A page of the order history with buyers and services, and the total.

        ``service_codes``: also the product codes on every order the caller may
        see (the history page's service filter); else ``services`` is empty.

        A customer's history leaves out the orders they hid unless ``which.hidden``
        asks for them (True); staff see every order.

        Raises:
            UnknownInstallation: ``which.installation_id`` unknown or not one of the caller's.
        """
        which = replace(
            which, hidden=hidden_filter(staff=_is_staff(principal), show_hidden=bool(which.hidden))
        )
        with self._store.transaction() as tx:
            if which.installation_id is not None:
                ensure_installation_access(tx, principal, which.installation_id, write=False)
            visible = visible_installation_ids(tx, principal)
            rows = repo.search_orders(tx, which, visible=visible)
            more = repo.order_summaries(tx, rows)
            spans = {r.id: tuple(p for p, _ in more[r.id].installations) for r in rows}
            scopes = _scopes(tx, principal, rows, spans)
            return OrderHistoryOut(
                items=[_summary_out(scopes[r.id], more[r.id]) for r in rows],
                total=repo.count_orders(tx, which, visible=visible),
                services=repo.service_codes(tx, visible=visible) if service_codes else [],
            )

    def summary(self, principal: Principal, order_id: int) -> OrderSummaryOut:
        """The order's row of the history (buyer, installation name, services, last error).

        Raises:
            UnknownOrder: no such order, or not one of the caller's.
        """
        with self._store.transaction() as tx:
            scope = _order_in_scope(tx, principal, order_id, write=False)
            return _summary_out(scope, repo.order_summaries(tx, [scope.row])[order_id])

    async def reversal_option(self, principal: Principal, order_id: int) -> ReversalOptionOut:
        """Whether the order's card charge would be voided (unsettled) or refunded (settled) now.

        Asks the payment provider whether the charge settled, and changes nothing.

        Raises:
            UnknownOrder: no such order, or not one of the caller's.
        """

        def load() -> tuple[OrderRow, str | None, int, int]:
            with self._store.transaction() as tx:
                row = _order_in_scope(tx, principal, order_id, write=False).row
                charge = repo.charge_of(tx, order_id)
                if charge is None or not charge.provider_charge_id:
                    return row, None, 0, 0
                refunded = repo.refunded_cents(tx, charge.id)
                return row, charge.idempotency_key, charge.amount_cents, refunded

        row, key, charged, refunded = await asyncio.to_thread(load)
        left = charged - refunded

        def none(why: WhyNot, settled: bool | None = None) -> ReversalOptionOut:
            return ReversalOptionOut(
                action=None,
                settled=settled,
                charge_cents=charged,
                refunded_cents=refunded,
                left_cents=left,
                why_not=why,
            )

        if row.status is not OrderStatus.SUCCEED:
            return none("not_paid")
        if row.pay_with is PayWith.INVOICE or key is None:
            return none("invoiced")
        try:
            answer = await self._billing.provider.lookup(key)
        except PaymentProviderError:
            return none("provider_down")
        settled = answer is not None and answer.settled
        if settled and left <= 0:
            return none("refunded", settled)
        if not settled and refunded > 0:
            return none("refund_running", settled)
        return ReversalOptionOut(
            action="refund" if settled else "void",
            settled=settled,
            charge_cents=charged,
            refunded_cents=refunded,
            left_cents=left,
        )

    def detail(self, principal: Principal, order_id: int) -> OrderDetail:
        """One order with its lines and transactions (charges, voids, refunds, retries)."""
        return self._scoped(principal, order_id, write=False)

    async def invoice_pdf(self, principal: Principal, order_id: int) -> InvoicePdf:
        """The invoice of a paid or invoiced order, rendered as a PDF.

        Raises:
            UnknownOrder: no such order, or not one of the caller's.
            Conflict: the order is not paid or invoiced yet.
        """

        def load() -> Invoice:
            with self._store.transaction() as tx:
                scope = _order_in_scope(tx, principal, order_id, write=False)
                seen = None if scope.whole else scope.seen
                return invoice_for_order(tx, order_id, settings=self._settings, seen=seen)

        invoice = await asyncio.to_thread(load)
        pdf = await asyncio.to_thread(render_invoice, invoice)
        return InvoicePdf(filename=invoice_filename(invoice), pdf=pdf)

    def set_hidden(self, principal: Principal, order_id: int, *, hidden: bool) -> OrderOut:
        """Hide the order from the customer's own history, or show it again (audited).

        Only the customer (owner, partner) does it: staff, the books and the audit
        log always see every order.

        Raises:
            UnknownOrder: no such order, or not one of the caller's.
            Forbidden: staff.
        """
        if _is_staff(principal):
            raise Forbidden(
                N_(
                    "only the customer hides an order from their own history; "
                    "staff always see every order"
                )
            )
        with self._store.transaction() as tx:
            scope = _order_in_scope(tx, principal, order_id, write=True)
            repo.set_hidden(tx, scope.row, hidden=hidden, actor=principal, now=self._clock())
            return _order_out(scope)

    def resend(self, principal: Principal, order_id: int, *, mail: str) -> ResendOut:
        """Queue the order's invoice, or the mail of its latest void or refund, again to the
        order's notify list (audited). Staff only: a customer downloads the invoice.

        Raises:
            UnknownOrder: no such order.
            Forbidden: not staff.
            NoInvoice: an invoice of an order not paid or invoiced.
            NothingToResend: no notify address, or no void or refund done.
        """
        if not _is_staff(principal):
            raise Forbidden(N_("only staff resend an order's mails; download the invoice instead"))
        now = self._clock()
        with self._store.transaction() as tx:
            row = _order_in_scope(tx, principal, order_id, write=False).row
            if not row.notify:
                raise NothingToResend(
                    N_("order %(number)s has nobody to send mail to"), number=row.number
                )
            count = repo.resends_of(tx, row.id, mail=mail) + 1
            if mail == "invoice":
                invoice_for_order(tx, row.id, settings=self._settings)  # NoInvoice if none
                self._billing.mail_invoice(tx, row, now=now, resend=count)
            else:
                done = [
                    t
                    for t in repo.transactions_of(tx, row.id)
                    if t.type in (TxnType.VOID, TxnType.REFUND) and t.status is OrderStatus.SUCCEED
                ]
                if not done:
                    raise NothingToResend(
                        N_("order %(number)s has no void or refund to tell about"),
                        number=row.number,
                    )
                mail_reversal(tx, row, done[-1], now=now, resend=count)
            repo.record_resend(tx, row, mail=mail, count=count, actor=principal, now=now)
            return ResendOut(order_id=row.id, mail=mail, to=list(row.notify), resend=count)

    async def _check(self, principal: Principal, order_id: int) -> None:
        await asyncio.to_thread(self._scoped, principal, order_id, write=True)

    async def pay(self, principal: Principal, order_id: int, *, card_token: str) -> OrderResultOut:
        """Checkout: charge a card for an order in ``Processing`` (or ``Failed``, again)."""
        await self._check(principal, order_id)
        async with _provider_edge():
            result = await self._billing.pay(
                order_id, card_token=card_token, actor=principal, now=self._clock()
            )
        return _result_out(result)

    async def cancel(self, principal: Principal, order_id: int) -> OrderResultOut:
        """Cancel an order nobody paid; it becomes ``Cancel``."""
        await self._check(principal, order_id)
        async with _provider_edge():
            result = await self._billing.cancel(order_id, actor=principal, now=self._clock())
        return _result_out(result)

    async def void(
        self, principal: Principal, order_id: int, *, amount_cents: int | None
    ) -> ReversalOut:
        """Void the order's whole unsettled charge (no partial void)."""
        await self._check(principal, order_id)
        async with _provider_edge():
            result = await self._billing.refunds.void(
                order_id, amount_cents=amount_cents, actor=principal, now=self._clock()
            )
        return _reversal_out(result)

    async def refund(
        self, principal: Principal, order_id: int, *, amount_cents: int | None
    ) -> ReversalOut:
        """Refund part or all (default) of a settled charge; a provider failure is retried."""
        await self._check(principal, order_id)
        async with _provider_edge():
            result = await self._billing.refunds.refund(
                order_id, amount_cents=amount_cents, actor=principal, now=self._clock()
            )
        return _reversal_out(result)

    async def reverse_line(
        self, principal: Principal, order_id: int, line_id: int
    ) -> LineReversalOut:
        """Give back one line of a paid order (refund its amount, or credit its invoice line);
        what that line bought is taken back, the other lines stay."""
        await self._check(principal, order_id)
        async with _provider_edge():
            result = await self._billing.reverse_line(
                order_id, line_id, actor=principal, now=self._clock()
            )
        refund = None if result.refund is None else _reversal_out(result.refund)
        return LineReversalOut(
            order_id=result.order_id,
            line_id=result.line_id,
            amount_cents=result.amount_cents,
            refund=refund,
            credited_cents=result.credited_cents,
        )

    # credit -------------------------------------------------------------------------
    def credit_of(self, principal: Principal, user_id: int) -> CreditOut:
        """A purchaser's credit balance and ledger: their own, or anyone's for staff who may
        look up accounts; anyone else's is a 404."""
        if principal.user_id != user_id and not allowed(principal.role, Permission.ACCOUNTS_READ):
            raise UnknownUser(f"no user with id {user_id}")
        with self._store.transaction() as tx:
            user(tx, user_id)
            return _credit_out(tx, user_id, self._billing.currency)

    def grant_credit(
        self, principal: Principal, user_id: int, *, amount_cents: int, reason: str
    ) -> CreditOut:
        """Grant a purchaser credit (billing staff); audited. Renewal orders use it first."""
        with self._store.transaction() as tx:
            credit.grant(
                tx,
                user_id,
                amount_cents=amount_cents,
                reason=reason,
                actor=principal.actor,
                now=self._clock(),
            )
            return _credit_out(tx, user_id, self._billing.currency)


def _credit_out(session: Session, user_id: int, currency: str) -> CreditOut:
    return CreditOut(
        user_id=user_id,
        balance_cents=credit.balance(session, user_id),
        currency=currency,
        entries=[
            CreditEntryOut(
                amount_cents=e.amount_cents,
                entry=e.entry,  # type: ignore[arg-type]
                reason=e.reason,
                order_id=e.order_id,
                actor=e.actor,
                created_at=e.created_at,
            )
            for e in credit.entries(session, user_id)
        ],
    )
