"""Subscriptions service: purchase, renew, deactivate, reactivate, and payments that arrive later.

Every change is one transaction: the subscription row is locked (``FOR
UPDATE``; the row's ``version`` catches a stale write), the pure rule
(:mod:`cloud.subscriptions.rules.lifecycle`) decides, and the new state, its audit entry,
its notifications (outbox, deduplicated) and the installation's service grant
(``source="subscription"``, ``valid_until`` = the paid-through end) commit
together, written by :func:`cloud.subscriptions.effects.write` (the renewal sweep's
writer too). After the commit the installation's devices get new tokens through
the :class:`~cloud.devices.issuing.IssuingService`, so they follow on their own.

Requests are validated before any order: a refused request changes
nothing. Orders go through :class:`cloud.billing.orders.Billing`, and what an
order pays for (its link) is written in the order's own transaction, before
any money moves; the payment is then delivered or refunded by
:mod:`cloud.subscriptions.settlement`, however late it arrives. Money moves
only through orders with idempotency keys.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import Role
from cloud.accounts.users import Contact, user_contact
from cloud.billing.errors import OrderStateConflict
from cloud.billing.orders import Billing, OrderResult
from cloud.billing.rules import OrderLine, OrderStatus
from cloud.billing.tables import OrderRow
from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.access import (
    ensure_installation_access,
    ensure_may_change,
    visible_installation_ids,
)
from cloud.devices.issuing import IssuingService
from cloud.devices.tables import InstallationRow
from cloud.errors import (
    N_,
    Blacklisted,
    Forbidden,
    InvalidRequest,
    PaymentDeclined,
    SubscriptionExists,
    UnknownDevice,
    UnknownSubscription,
)
from cloud.subscriptions import effects
from cloud.subscriptions import queries as rows
from cloud.subscriptions.changes import PlanChanges
from cloud.subscriptions.payer import payment_method, purchaser
from cloud.subscriptions.rules.catalogue import Product, Scope, product, term_price
from cloud.subscriptions.rules.lifecycle import (
    Deactivate,
    Event,
    Notify,
    Reactivate,
    Renew,
    Status,
    Subscription,
    Transition,
    apply,
    next_renewal,
    purchase,
    renewal_quote,
    status_kind,
)
from cloud.subscriptions.rules.plans import check_user_limit, check_users_to_add, scope_key
from cloud.subscriptions.rules.preconditions import (
    DeviceReport,
    check_preconditions,
    is_connected,
)
from cloud.subscriptions.settlement import MANUAL, Settlement
from cloud.subscriptions.tables import Outcome, SubscriptionRow
from cloud.subscriptions.views import (
    ExpiringLine,
    OfficeRoster,
    PurchaseResult,
    Quote,
    SubscriptionLine,
    subscription_view,
)
from common.clock import Clock

__all__ = ["SubscriptionService"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
Reports = Callable[[Session, str], list[DeviceReport]]
"""``reports(session, installation_id)``: each device's last report time and firmware."""
_DECLINED = "subscription.purchase_declined"


class SubscriptionService:
    """Applies subscription events with their orders, audit, notifications and grants."""

    def __init__(
        self,
        store: Store,
        issuing: IssuingService,
        billing: Billing,
        *,
        clock: Clock,
        reports: Reports | None = None,
        connected_window_s: int = 7 * 86_400,
    ) -> None:
        self.store = store
        self.issuing = issuing
        self.billing = billing
        self.clock = clock
        # what health knows of an installation's devices (the app hands it in: health sits
        # above subscriptions); without it, every device counts as never reported
        self.reports: Reports = reports or (lambda _tx, _inst: [])
        self.connected_window_s = connected_window_s
        self.settlement = Settlement(
            store,
            billing,
            clock=clock,
            commit=self.commit,
            reissue=self.reissue,
            notify=self.notify,
        )
        self.plans = PlanChanges(
            store,
            billing,
            clock=clock,
            scoped=self._scoped,
            commit=self.commit,
            reissue=self.reissue,
        )

    async def _in_thread(self, work: Callable[[], _T]) -> _T:
        return await asyncio.to_thread(work)

    # the one place a transition is persisted ---------------------------------------
    def commit(
        self,
        tx: Session,
        row: SubscriptionRow | None,
        before: Subscription | None,
        t: Transition,
        *,
        actor: Principal | str,
        action: str,
        now: int,
        pay: tuple[str, str | None] | None = None,
    ) -> tuple[SubscriptionRow, list[str]]:
        """Save ``t.state`` with its audit entry and effects; returns the row and devices to
        re-issue for. Charges are *not* handled here: the caller places them after commit."""
        row = rows.save(tx, t.state, now=now, row=row, pay=pay)
        changed = effects.write(
            tx, [(row, effects.decision(before, t))], actor=actor, action=action, now=now
        )
        devices = (
            [d.id for d in device_queries.devices_of(tx, t.state.installation_id)]
            if changed
            else []
        )
        return row, devices

    async def reissue(self, device_ids: Sequence[str]) -> None:
        if device_ids:
            await self.issuing.reissue(list(device_ids))

    def apply_event(
        self,
        sub_id: str,
        event: Event,
        *,
        actor: Principal | str,
        action: str,
        now: int,
    ) -> tuple[SubscriptionRow, list[str], Transition]:
        with self.store.transaction() as tx:
            row = rows.subscription_of(tx, sub_id, lock=True)
            if row is None:
                raise UnknownSubscription(f"no subscription {sub_id}")
            before = rows.load(row)
            t = apply(before, event, now=now)
            if t.state == before:
                return row, [], t
            row, devices = self.commit(tx, row, before, t, actor=actor, action=action, now=now)
            return row, devices, t

    def apply_events(
        self,
        events: Sequence[tuple[str, Event]],
        *,
        actor: Principal | str,
        action: str,
        now: int,
    ) -> list[str]:
        """:meth:`apply_event` for several subscriptions (an order's lines) in one
        transaction, their rows locked in id order: all are applied, or none; the devices
        to re-issue for. A subscription that is gone (deleted with its installation) has
        nothing to apply and is skipped."""
        with self.store.transaction() as tx:
            locked = {r.id: r for r in rows.subscriptions_locked(tx, [s for s, _ in events])}
            devices: list[str] = []
            for sub_id, event in events:
                row = locked.get(sub_id)
                if row is None:
                    continue
                before = rows.load(row)
                t = apply(before, event, now=now)
                if t.state == before:
                    continue
                _, changed = self.commit(tx, row, before, t, actor=actor, action=action, now=now)
                devices.extend(changed)
            return devices

    # reads ----------------------------------------------------------------------
    def get(self, principal: Principal, sub_id: str) -> dict[str, Any]:
        with self.store.transaction() as tx:
            return subscription_view(self._scoped(tx, principal, sub_id, write=False))

    def list_for(
        self, principal: Principal, installation_id: str, *, scope: str | None = None
    ) -> list[dict[str, Any]]:
        """The installation's subscriptions; ``scope`` keeps those for the installation
        (``"installation"``), one device each (``"device"``) or one user each (``"user"``)."""
        prefix = {"installation": "", "device": "device:", "user": "user:"}.get(scope or "")
        with self.store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            return [
                subscription_view(r)
                for r in rows.subscriptions_of(tx, installation_id)
                if prefix is None or (r.scope.startswith(prefix) if prefix else r.scope == "")
            ]

    # what the pages show --------------------------------------------------------
    def _line(
        self,
        tx: Session,
        principal: Principal,
        row: SubscriptionRow,
        *,
        now: int,
        contacts: dict[int, Contact] | None = None,
    ) -> SubscriptionLine:
        """``contacts``: purchasers' contacts already read, filled in as read (one query
        per purchaser for a list of lines)."""
        sub = rows.load(row)
        contacts = {} if contacts is None else contacts
        contact = contacts.get(row.purchaser_id)
        if contact is None:
            contact = contacts[row.purchaser_id] = user_contact(tx, row.purchaser_id)
        return SubscriptionLine(
            view=subscription_view(row),
            name=sub.product.name,
            state=status_kind(sub),
            purchaser_name=contact.name,
            purchaser_email=contact.email,
            mine=principal.user_id is not None and principal.user_id == row.purchaser_id,
            next_renewal=next_renewal(sub, now=now),
        )

    def lines(self, principal: Principal, installation_id: str) -> list[SubscriptionLine]:
        """The installation's subscriptions with their purchasers and next renewals."""
        now = self.clock()
        with self.store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            contacts: dict[int, Contact] = {}
            return [
                self._line(tx, principal, r, now=now, contacts=contacts)
                for r in rows.subscriptions_of(tx, installation_id)
            ]

    def installation_lines(
        self, principal: Principal, installation_id: str, product_code: str
    ) -> tuple[list[SubscriptionLine], int]:
        """The installation's subscriptions but its users' (they have a page of their own,
        :meth:`office_users`), and how many users of the per-user ``product_code`` are not
        expired (counted, not read).

        Raises:
            UnknownProduct, UnknownInstallation (out of scope too).
        """
        item = product(product_code)
        now = self.clock()
        with self.store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            contacts: dict[int, Contact] = {}
            found = [
                self._line(tx, principal, r, now=now, contacts=contacts)
                for r in rows.subscriptions_of(tx, installation_id)
                if not r.scope.startswith("user:")
            ]
            users = rows.live_scoped(tx, installation_id, item.feature, prefix="user:")
        return found, users

    def line(self, principal: Principal, sub_id: str) -> SubscriptionLine:
        """One subscription as :meth:`lines` shows it (UnknownSubscription out of scope)."""
        with self.store.transaction() as tx:
            row = self._scoped(tx, principal, sub_id, write=False)
            return self._line(tx, principal, row, now=self.clock())

    def pays_with(self, principal: Principal) -> str | None:
        """How ``principal`` pays what it buys: 'card' (checkout) or 'invoice' (saved
        directly); None for a key acting as no user."""
        if principal.user_id is None:
            return None
        with self.store.transaction() as tx:
            return payment_method(tx, principal.user_id, None)

    def may_change(self, principal: Principal) -> bool:
        """False for a blacklisted customer: they may look but not buy or change anything
        (the page then offers no control; the service refuses all the same)."""
        with self.store.transaction() as tx:
            try:
                ensure_may_change(tx, principal)
            except Blacklisted:
                return False
            return True

    def reactivation_quote(self, principal: Principal, sub_id: str) -> Quote:
        """What reactivating would mean for ``principal``: they become the purchaser,
        nothing is due now, and the next renewal (price, date) is billed to them.

        Raises:
            UnknownSubscription, Forbidden, Blacklisted, InvalidTransition.
        """
        now = self.clock()
        with self.store.transaction() as tx:
            row = self._scoped(tx, principal, sub_id, write=True)
            buyer = purchaser(principal, None, default=row.purchaser_id)
            how = payment_method(tx, buyer, None)
            after = apply(rows.load(row), Reactivate(by=buyer), now=now).state
            renewal = next_renewal(after, now=now)
            assert renewal is not None  # reactivated: active and renewing
            return Quote(self._line(tx, principal, row, now=now), renewal, how)

    def renewal_quote(self, principal: Principal, sub_id: str, months: int) -> Quote:
        """The price of renewing by ``months`` now, the end it leads to, how it is paid.

        Raises:
            UnknownSubscription, Forbidden, Blacklisted, BadTerm, InvalidTransition.
        """
        now = self.clock()
        with self.store.transaction() as tx:
            row = self._scoped(tx, principal, sub_id, write=True)
            buyer = purchaser(principal, None, default=row.purchaser_id)
            how = payment_method(tx, buyer, None)
            quote = renewal_quote(rows.load(row), months, now=now)
            return Quote(self._line(tx, principal, row, now=now), quote, how)

    def expiring(
        self, principal: Principal, *, days: int = 60, limit: int = 50, offset: int = 0
    ) -> tuple[list[ExpiringLine], int]:
        """Active subscriptions of the caller's installations ending in the next ``days``
        days, soonest first; and how many there are."""
        now = self.clock()
        with self.store.transaction() as tx:
            found, total = rows.ending_between(
                tx,
                start=now,
                end=now + days * 86_400,
                within=visible_installation_ids(tx, principal),
                limit=limit,
                offset=offset,
            )
            return [
                ExpiringLine(self._line(tx, principal, r, now=now), name) for r, name in found
            ], total

    # purchase -------------------------------------------------------------------
    async def purchase(
        self,
        principal: Principal,
        *,
        installation_id: str,
        product_code: str,
        term_months: int | None,
        pay_with: str | None,
        card_token: str | None,
        start: int | None,
        purchaser_id: int | None = None,
        device_id: str | None = None,
        user_ref: str | None = None,
    ) -> PurchaseResult:
        """Buy a service for an installation, or for one of its devices or users.

        A per-device plan (a camera's video retention) goes only into that
        device's token; a per-user one (an office user, by the month) counts
        against the product's maximum per installation. Only a connected installation
        can buy, and a product with a minimum firmware only one whose controller reports
        that version or newer
        (:func:`~cloud.subscriptions.rules.preconditions.check_preconditions`).

        The subscription (not yet activated) and the link to its order are
        written with the order, before the card is charged; the payment
        activates it (at once, at checkout, or when a lost answer is
        reconciled). A charge whose answer was lost answers ``Time out`` with
        the subscription waiting for it.

        Raises:
            UnknownProduct, BadTerm, InvalidRequest: refused input (nothing changed).
            UnknownInstallation, Forbidden, Blacklisted: scope and role.
            SubscriptionExists: the installation (device, user) already has this service.
            UnknownDevice: the device is not one of the installation's.
            NotConnected, FirmwareTooOld: the product's preconditions are not met.
            UserLimitReached: the per-user product has its maximum of users.
            PaymentDeclined: the card was declined (nothing bought; the order is cancelled).
        """
        now = self.clock()
        item = product(product_code)
        term = term_months or item.default_term_months
        if device_id is None:  # refuse a missing or misplaced user before any I/O
            scope_key(item, device_id=None, device_kind=None, user_ref=user_ref)
        # the rule first: a bad term or date is refused before any I/O
        purchase(
            sub_id="check",
            installation_id=installation_id,
            product=item,
            purchaser=0,
            term_months=term,
            now=now,
            paid=True,
            start=start,
        )

        def check() -> tuple[str | None, int, str, str]:
            with self.store.transaction() as tx:
                ensure_installation_access(tx, principal, installation_id, write=True)
                scope = self._scope(tx, item, installation_id, device_id, user_ref)
                self.preconditions(tx, item, installation_id, now=now)
                buyer = purchaser(principal, purchaser_id)
                how = payment_method(tx, buyer, pay_with)
                existing = rows.subscription_for_service(
                    tx, installation_id, item.feature, scope=scope
                )
                if existing is not None and existing.status is not Status.EXPIRED:
                    raise _exists(installation_id, item.feature, existing)
                if item.scope is Scope.USER:
                    live = rows.live_scoped(tx, installation_id, item.feature, prefix="user:")
                    check_user_limit(item, installation_id=installation_id, users=live)
                return (None if existing is None else existing.id), buyer, how, scope

        reuse, buyer, how, scope = await self._in_thread(check)
        sub_id = reuse or f"sub_{secrets.token_hex(8)}"
        card = card_token if how == "card" else None
        previous: list[tuple[Subscription, tuple[str, str | None]]] = []

        def prepare(session: Session, order: OrderRow) -> None:
            """In the order's transaction: the pending subscription and what the order pays."""
            # FOR NO KEY UPDATE: the order row already holds a KEY SHARE lock on the
            # installation (its foreign key); FOR UPDATE here would deadlock two buyers
            session.execute(
                select(InstallationRow.id)
                .where(InstallationRow.id == installation_id)
                .with_for_update(key_share=True)
            )
            existing = rows.subscription_for_service(
                session, installation_id, item.feature, lock=True, scope=scope
            )
            if existing is not None and existing.status is not Status.EXPIRED:
                raise _exists(installation_id, item.feature, existing)
            if (None if existing is None else existing.id) != reuse:
                raise SubscriptionExists(
                    N_("installation %(installation)s got %(feature)s at the same moment"),
                    installation=installation_id,
                    feature=item.feature,
                )
            before = None if existing is None else rows.load(existing)
            if existing is not None and before is not None:
                previous.append((before, (existing.pay_with, existing.card_token)))
            t = purchase(
                sub_id=sub_id,
                installation_id=installation_id,
                product=item,
                purchaser=buyer,
                term_months=term,
                now=now,
                paid=False,
                start=start,
            )
            state = replace(t.state, scope=scope)
            rows.save(session, state, now=now, row=existing, pay=(how, card))
            _audit(session, principal, "subscription.purchase", before, state, now=now)
            rows.add_order_link(
                session,
                order_id=order.id,
                subscription_id=sub_id,
                kind="purchase",
                ends_at=state.end,
                attempt=0,
                months=term,
                now=now,
            )

        order = await self.billing.place_order(
            kind="purchase",
            buyer=buyer,
            installation_id=installation_id,
            lines=[OrderLine(item.code, item.name, term, term_price(item, term))],
            pay_with=how,
            card_token=card,
            idempotency_key=f"purchase:{sub_id}:{now}",
            now=now,
            prepare=prepare,
        )
        if order.status is OrderStatus.FAILED:
            await self._in_thread(
                lambda: self._declined(order, sub_id, previous, actor=principal, now=now)
            )
            raise PaymentDeclined(
                N_(
                    "the card was declined (order %(number)s): nothing was bought; try another card"
                ),
                number=order.number,
            )
        if order.status is OrderStatus.SUCCEED:
            await self.billing.run_callbacks(order.order_id, now=now)
        view = await self._in_thread(lambda: self._view(sub_id))
        _log.info("subscription %s: %s bought %s (%s)", sub_id, buyer, item.code, order.status)
        paid = order.status is OrderStatus.SUCCEED
        return PurchaseResult(
            view, order.order_id, str(order.status), order.amount_cents if paid else 0
        )

    async def buy_for_cameras(
        self,
        principal: Principal,
        *,
        installation_id: str,
        product_code: str,
        device_ids: Sequence[str] | None,
        pay_with: str | None,
        card_token: str | None,
    ) -> list[PurchaseResult]:
        """ "Apply desired subscription to all cameras": one per-device plan for each camera
        of the installation (or each listed one), each its own subscription and order.

        Everything is checked before the first order: a listed device that is not a
        camera of the installation, or a camera that has this service already, refuses
        the whole request. A card declined halfway leaves the cameras bought before it.

        Raises:
            as :meth:`purchase`; InvalidRequest: no cameras, or a product that is not per
            device.
        """
        item = product(product_code)
        if item.scope is not Scope.DEVICE:
            raise InvalidRequest(
                N_("%(product)s is not a per-device plan: buy it for the installation"),
                product=item.code,
            )

        def cameras() -> list[str]:
            with self.store.transaction() as tx:
                ensure_installation_access(tx, principal, installation_id, write=True)
                self.preconditions(tx, item, installation_id, now=self.clock())
                found = [
                    d.id
                    for d in device_queries.devices_of(tx, installation_id)
                    if d.kind.value in item.device_kinds
                ]
                chosen = found if device_ids is None else list(dict.fromkeys(device_ids))
                for device_id in chosen:
                    scope = self._scope(tx, item, installation_id, device_id, None)
                    existing = rows.subscription_for_service(
                        tx, installation_id, item.feature, scope=scope
                    )
                    if existing is not None and existing.status is not Status.EXPIRED:
                        raise _exists(installation_id, item.feature, existing)
                if not chosen:
                    raise InvalidRequest(
                        N_("installation %(installation)s has no cameras to buy for"),
                        installation=installation_id,
                    )
                return chosen

        out = []
        for device_id in await self._in_thread(cameras):
            out.append(
                await self.purchase(
                    principal,
                    installation_id=installation_id,
                    product_code=item.code,
                    term_months=None,
                    pay_with=pay_with,
                    card_token=card_token,
                    start=None,
                    device_id=device_id,
                )
            )
        return out

    def office_users(
        self, principal: Principal, installation_id: str, product_code: str
    ) -> OfficeRoster:
        """The installation's users of a per-user product (``user_ref``), each with its
        status, end and next renewal, and how many of the product's maximum are taken.

        Raises:
            UnknownProduct, UnknownInstallation (out of scope too).
        """
        item = product(product_code)
        now = self.clock()
        with self.store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            users = [
                r
                for r in rows.subscriptions_of(tx, installation_id)
                if r.service == item.feature and r.scope.startswith("user:")
            ]
            contacts: dict[int, Contact] = {}
            found = [self._line(tx, principal, r, now=now, contacts=contacts) for r in users]
            # what live_scoped counts, over the rows read: the user scopes not expired
            live = sum(r.status is not Status.EXPIRED for r in users)
        found.sort(key=lambda line: (line.state in ("expired", "cancelled"), line.view["user_ref"]))
        return OfficeRoster(item, found, live, item.max_per_installation or 0)

    def check_new_users(
        self, principal: Principal, installation_id: str, product_code: str, user_refs: list[str]
    ) -> None:
        """Refuse, before any order, adding ``user_refs`` that cannot all be bought: no
        name, a name twice, a user who has the product already, or more than its maximum.

        Raises:
            UnknownProduct, InvalidRequest, UnknownInstallation, Forbidden, Blacklisted,
            SubscriptionExists, UserLimitReached, NotConnected, FirmwareTooOld.
        """
        item = product(product_code)
        with self.store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=True)
            self.preconditions(tx, item, installation_id, now=self.clock())
            live = rows.live_scopes(tx, installation_id, item.feature, prefix="user:")
            check_users_to_add(
                item, installation_id=installation_id, user_refs=user_refs, live=live
            )

    async def buy_for_users(
        self,
        principal: Principal,
        *,
        installation_id: str,
        product_code: str,
        user_refs: list[str],
        pay_with: str | None,
        card_token: str | None,
    ) -> list[PurchaseResult]:
        """Add several office users or departments at once: each its own per-user
        subscription and order, through :meth:`purchase`.

        Everything is checked first (:meth:`check_new_users`): one refused name refuses
        them all before any order. A card declined halfway keeps the users bought before.

        Raises:
            as :meth:`check_new_users` and :meth:`purchase`.
        """
        await self._in_thread(
            lambda: self.check_new_users(principal, installation_id, product_code, user_refs)
        )
        return [
            await self.purchase(
                principal,
                installation_id=installation_id,
                product_code=product_code,
                term_months=None,
                pay_with=pay_with,
                card_token=card_token,
                start=None,
                user_ref=ref,
            )
            for ref in user_refs
        ]

    def _declined(
        self,
        order: OrderResult,
        sub_id: str,
        previous: list[tuple[Subscription, tuple[str, str | None]]],
        *,
        actor: Principal,
        now: int,
    ) -> None:
        """A declined purchase: cancel its order and put the subscription back as it was."""
        with self.store.transaction() as tx:
            try:
                self.billing.cancel_unpaid(tx, order.order_id, actor=actor, now=now)
            except OrderStateConflict:  # being paid by someone at this moment: a checkout now
                return
            link = rows.order_link(tx, order.order_id, lock=True)
            row = rows.subscription_of(tx, sub_id, lock=True)
            if link is None or row is None:
                return
            tx.delete(link)
            pending = rows.load(row)
            if previous:
                before, pay = previous[0]
                rows.save(tx, before, now=now, row=row, pay=pay)
                _audit(tx, actor, "subscription.purchase_declined", pending, before, now=now)
            else:
                tx.delete(row)
                _audit(tx, actor, _DECLINED, pending, None, now=now)

    def _view(self, sub_id: str) -> dict[str, Any]:
        with self.store.transaction() as tx:
            row = rows.subscription_of(tx, sub_id)
            if row is None:
                raise UnknownSubscription(f"no subscription {sub_id}")
            return subscription_view(row)

    # renew, deactivate, reactivate ----------------------------------------------
    async def renew(
        self,
        principal: Principal,
        sub_id: str,
        *,
        months: int,
        pay_with: str | None,
        card_token: str | None,
    ) -> PurchaseResult:
        """Pay ``months`` more now (1-60); after expiry this is the late payment.

        The payment goes through the same rule as every other: applied to the
        end it was asked for, or refunded when that end was paid meanwhile.
        Paid by the purchaser with a card, that card becomes the one on file.

        Raises:
            BadTerm, InvalidTransition, UnknownSubscription, Forbidden, PaymentDeclined.
        """
        now = self.clock()

        def check() -> tuple[Subscription, int, str]:
            with self.store.transaction() as tx:
                row = self._scoped(tx, principal, sub_id, write=True)
                sub = rows.load(row)
                apply(sub, Renew(months=months, by=0), now=now)  # refuses before any order
                buyer = purchaser(principal, None, default=row.purchaser_id)
                return sub, buyer, payment_method(tx, buyer, pay_with or row.pay_with)

        sub, buyer, how = await self._in_thread(check)
        item = sub.product
        card = card_token if how == "card" else None

        def prepare(session: Session, order: OrderRow) -> None:
            rows.add_order_link(
                session,
                order_id=order.id,
                subscription_id=sub.id,
                kind="renewal",
                ends_at=sub.end,
                attempt=MANUAL,
                months=months,
                now=now,
            )

        order = await self.billing.place_order(
            kind="renewal",
            buyer=buyer,
            installation_id=sub.installation_id,
            lines=[OrderLine(item.code, f"{item.name}, renewal", months, term_price(item, months))],
            pay_with=how,
            card_token=card,
            # ``now`` in the key: a renewal asked again after a reversal is a new order
            idempotency_key=f"renew:{sub.id}:{sub.end}:{months}:{now}",
            now=now,
            prepare=prepare,
        )
        if order.status is OrderStatus.FAILED:
            raise PaymentDeclined(
                N_(
                    "the card was declined (order %(number)s): nothing was renewed; "
                    "pay that order with another card, or try another card"
                ),
                number=order.number,
            )
        if order.status is OrderStatus.SUCCEED:
            await self.billing.run_callbacks(order.order_id, now=now)
            if card is not None:
                await self._in_thread(
                    lambda: self._keep_card(order.order_id, buyer, card, actor=principal, now=now)
                )
        view = await self._in_thread(lambda: self._view(sub.id))
        return PurchaseResult(view, order.order_id, str(order.status))

    def _keep_card(
        self, order_id: int, buyer: int, card: str, *, actor: Principal, now: int
    ) -> None:
        """A renewal the purchaser paid by card: that card pays the next renewals."""
        with self.store.transaction() as tx:
            link = rows.order_link(tx, order_id)
            if link is None or link.outcome != Outcome.APPLIED:
                return  # refunded: that card bought nothing here
            row = rows.subscription_of(tx, link.subscription_id, lock=True)
            if row is None or row.purchaser_id != buyer:
                return  # someone else paid once: the purchaser's card stays
            _set_card(tx, row, card, actor=actor, now=now)

    async def set_card(self, principal: Principal, sub_id: str, card_token: str) -> dict[str, Any]:
        """Set the card that pays the subscription's renewals (the purchaser or an admin).

        Raises:
            UnknownSubscription, Forbidden, Blacklisted.
        """
        now = self.clock()

        def work() -> dict[str, Any]:
            with self.store.transaction() as tx:
                row = self._scoped(tx, principal, sub_id, write=True, lock=True)
                admin = principal.role in (Role.ADMIN, Role.CS_ADMIN)
                if not admin and principal.user_id != row.purchaser_id:
                    raise Forbidden(
                        N_(
                            "only the subscription's purchaser (or an admin) may change its "
                            "card; reactivate it to become the purchaser"
                        )
                    )
                _set_card(tx, row, card_token, actor=principal, now=now)
                return subscription_view(row)

        return await self._in_thread(work)

    async def deactivate(self, principal: Principal, sub_id: str) -> dict[str, Any]:
        """No next renewal; the service runs to its end."""
        return await self._simple(
            principal, sub_id, "subscription.deactivate", lambda by: Deactivate(by=by)
        )

    async def reactivate(
        self, principal: Principal, sub_id: str, *, pay_with: str | None, card_token: str | None
    ) -> PurchaseResult:
        """Renew again; the reactivating user becomes the purchaser, with 0 due now."""
        now = self.clock()

        def work() -> tuple[SubscriptionRow, int]:
            with self.store.transaction() as tx:
                row = self._scoped(tx, principal, sub_id, write=True, lock=True)
                buyer = purchaser(principal, None, default=row.purchaser_id)
                how = payment_method(tx, buyer, pay_with)
                before = rows.load(row)
                t = apply(before, Reactivate(by=buyer), now=now)
                if t.state == before:
                    return row, 0
                row, _ = self.commit(
                    tx,
                    row,
                    before,
                    t,
                    actor=principal,
                    action="subscription.reactivate",
                    now=now,
                    pay=(how, card_token if how == "card" else None),
                )
                return row, t.due_now_cents

        row, due = await self._in_thread(work)
        return PurchaseResult(subscription_view(row), due_now_cents=due)

    async def _simple(
        self, principal: Principal, sub_id: str, action: str, make: Callable[[int], Event]
    ) -> dict[str, Any]:
        now = self.clock()

        def work() -> dict[str, Any]:
            with self.store.transaction() as tx:
                row = self._scoped(tx, principal, sub_id, write=True, lock=True)
                before = rows.load(row)
                t = apply(before, make(principal.user_id or 0), now=now)
                if t.state != before:
                    row, _ = self.commit(
                        tx, row, before, t, actor=principal, action=action, now=now
                    )
                return subscription_view(row)

        return await self._in_thread(work)

    def connected(self, installation_id: str) -> bool:
        """Whether the installation may buy now: one of its devices reported within the
        purchase window (:func:`is_connected`)."""
        return not self.unconnected([installation_id])

    def unconnected(self, installation_ids: Sequence[str]) -> set[str]:
        """Those of ``installation_ids`` that nothing can be bought for now: none of their
        devices reported within the purchase window (:func:`is_connected`)."""
        now = self.clock()
        with self.store.transaction() as tx:
            return {
                i
                for i in installation_ids
                if not is_connected(self.reports(tx, i), now=now, window_s=self.connected_window_s)
            }

    def preconditions(self, tx: Session, item: Product, installation_id: str, *, now: int) -> None:
        """Refuse selling ``item`` to an installation that is not connected or whose
        controller's firmware is too old (:func:`check_preconditions`).

        Raises:
            NotConnected, FirmwareTooOld.
        """
        check_preconditions(
            item,
            installation_id=installation_id,
            reports=self.reports(tx, installation_id),
            now=now,
            window_s=self.connected_window_s,
        )

    @staticmethod
    def _scope(
        tx: Session,
        item: Product,
        installation_id: str,
        device_id: str | None,
        user_ref: str | None,
    ) -> str:
        """The scope key of a purchase (the device must be one of the installation's)."""
        kind = None
        if device_id is not None:
            device = device_queries.device(tx, device_id)
            if device is None or device.installation_id != installation_id:
                raise UnknownDevice(
                    N_("installation %(installation)s has no device %(device)s"),
                    installation=installation_id,
                    device=device_id,
                )
            kind = device.kind.value
        return scope_key(item, device_id=device_id, device_kind=kind, user_ref=user_ref)

    def _scoped(
        self, tx: Session, principal: Principal, sub_id: str, *, write: bool, lock: bool = False
    ) -> SubscriptionRow:
        row = rows.subscription_of(tx, sub_id, lock=lock)
        if row is None:
            raise UnknownSubscription(f"no subscription {sub_id}")
        ensure_installation_access(tx, principal, row.installation_id, write=write)
        return row

    def notify(self, session: Session, effect: Notify, *, now: int) -> None:
        """Queue a lifecycle message (deduplicated)."""
        effects.notify(session, [effect], now=now)


def _exists(installation_id: str, feature: str, row: SubscriptionRow) -> SubscriptionExists:
    return SubscriptionExists(
        N_(
            "installation %(installation)s already has %(feature)s "
            "(%(product)s, %(sub)s): renew or reactivate it"
        ),
        installation=installation_id,
        feature=feature,
        product=row.product_code,
        sub=row.id,
    )


def _audit(
    session: Session,
    actor: Principal | str,
    action: str,
    before: Subscription | None,
    after: Subscription | None,
    *,
    now: int,
) -> None:
    subject = after if after is not None else before
    assert subject is not None
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type="subscription",
        object_id=subject.id,
        before=None if before is None else rows.snapshot(before),
        after=None if after is None else rows.snapshot(after),
        now=now,
    )


def _set_card(
    session: Session, row: SubscriptionRow, card: str, *, actor: Principal, now: int
) -> None:
    """Renewals of ``row`` are paid with ``card`` from now on (audited, token not logged)."""
    before = {"pay_with": row.pay_with, "card_last4": (row.card_token or "")[-4:] or None}
    row.pay_with, row.card_token = "card", card
    row.updated_at = now
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="subscription.card",
        object_type="subscription",
        object_id=row.id,
        before=before,
        after={"pay_with": "card", "card_last4": card[-4:]},
        now=now,
    )
