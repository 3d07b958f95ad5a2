"""Subscription lifecycle: ``apply(subscription, event, now=...) -> Transition``. Pure.

Time rule (stated once, used everywhere): calendar arithmetic is in **UTC**,
and a term ends at the **first second of a calendar month**, 00:00:00 UTC.
That end is exclusive — devices allow a feature while ``now < end`` (the
token's ``until``) — so the last day paid for is the last day of the month
before. A purchase made at any moment of a month runs to the end of that
month plus the term: bought on 31 Jan 2026 for a year, it ends at
2027-02-01T00:00:00Z (the service covers 31 Jan 2027). Because every end is
the first of a month, "plus N months" never meets a 29th-31st: no clamping.

Auto-renewal of a term ending at ``end``:

* notice at ``end - 2 months``, to the purchaser, once per ``end``;
* charge at ``end - 1 month``, to the purchaser, for ``term_months``;
* a declined charge notifies the purchaser and is retried every
  :data:`RETRY_INTERVAL_S` (3 days) while the retry time is before ``end``;
* still unpaid at ``end``: expired, the grant ends, devices stop;
* the renewal paid late (a succeeded charge for that ``end``, or a manual
  renewal) covers the same period from the old ``end`` on, and the
  subscription is active again: ``end`` never moves backwards, unless a
  payment is reversed (below).

A charge in flight is remembered (``charging``); a tick re-emits it only
after :data:`CHARGE_LEASE_S`, with the same idempotency key, so a worker that
died mid-charge is recovered and two workers never charge twice.
Deactivating stops the next renewal only; reactivating makes the
reactivating user the purchaser with nothing due now (if a charge was already
tried for this end, the next attempt goes to the new purchaser on the charge
day, or at the next tick after it). Attempt numbers, and so charge keys, are
never reused for one end, even across a change of purchaser.

Money rule: every payment that succeeds is either applied to the term or
refunded — never kept silently. A payment event (:class:`Activate`,
:class:`ChargeSucceeded`, :class:`RenewalPaid`) names the end it pays beyond;
the rule applies it, or emits :class:`RefundPayment` when it can no longer
deliver it:

* a second payment for an end that was paid already (A's charge in flight, A
  deactivates, B reactivates and both charges succeed; or a manual renewal
  while the automatic charge is in flight) is refunded, not added as a further
  term: exactly one purchaser buys exactly one term per end, and nobody asked
  for the second one;
* a payment whose term would already be over when it arrives is refunded;
* a checkout paid after it was cancelled (or paid twice) is refunded.

The adapter delivers each order's payment to the rule once (it records the
outcome on the order's link), so a duplicate delivery never reaches it.

Reversals: cancelling a purchase's unpaid checkout (:class:`Abandon`; the job
does it :data:`ABANDON_AFTER_S` after an unpaid checkout was placed) ends the
not-yet-activated subscription, so the service can be bought again. Voiding or
refunding in full the payment that was applied (:class:`PaymentReversed`)
takes back what it bought: a reversed purchase ends the subscription (grant
ended, devices stop); a reversed renewal moves the end back by its months
(expired, if that end has passed) and stops automatic renewal, so the
disputed term is not charged again at once (the purchaser renews or
reactivates). A partial refund is a goodwill gesture and changes nothing. An
ended subscription that was never paid reads "cancelled" and is bought again
(renew and reactivate refuse it).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cloud.errors import N_, BadTerm, InvalidTransition
from cloud.subscriptions.rules.calendar import DAY_S, add_months, iso, month_start, term_end
from cloud.subscriptions.rules.catalogue import Product, term_price

__all__ = [
    "ABANDON_AFTER_S",
    "CHARGE_LEASE_S",
    "MAX_RENEWAL_MONTHS",
    "MAX_START_AHEAD_S",
    "RETRY_INTERVAL_S",
    "Abandon",
    "Activate",
    "ChangePlan",
    "Charge",
    "ChargeFailed",
    "ChargeSucceeded",
    "Deactivate",
    "EndService",
    "Event",
    "GrantService",
    "NextRenewal",
    "Notify",
    "PaymentReversed",
    "PlanChangeReversed",
    "Reactivate",
    "RefundPayment",
    "RenewalPaid",
    "Renew",
    "Status",
    "Subscription",
    "Tick",
    "Transition",
    "add_months",
    "apply",
    "charge_in_flight",
    "due_at",
    "month_start",
    "next_renewal",
    "purchase",
    "renewal_quote",
    "status_kind",
    "status_text",
    "term_end",
]

MAX_RENEWAL_MONTHS = 60
NOTICE_MONTHS = 2
CHARGE_MONTHS = 1
RETRY_INTERVAL_S = 3 * DAY_S
CHARGE_LEASE_S = 15 * 60  # a charge unanswered this long is re-sent (same idempotency key)
MAX_START_AHEAD_S = 366 * DAY_S
ABANDON_AFTER_S = DAY_S  # an unpaid checkout is cancelled this long after it was placed


# state ----------------------------------------------------------------------
class Status(enum.StrEnum):
    PENDING = "pending"  # not yet activated: awaiting checkout payment or its start date
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One service of one installation; exactly one purchaser (a user id)."""

    id: str
    installation_id: str
    product: Product
    purchaser: int
    status: Status
    term_months: int  # the renewal period
    start: int  # when it takes (took) effect
    end: int  # exclusive; service allowed while now < end
    auto_renew: bool = True
    awaiting_payment: bool = False  # no paid purchase: waits for checkout (or was cancelled)
    notice_for: int | None = None  # the end whose renewal notice went out
    attempts: int = 0  # renewal charges tried for the current end
    charging: int | None = None  # the attempt whose outcome is awaited
    charge_sent_at: int | None = None
    next_retry_at: int | None = None
    # renewal charges ever sent, never reset: part of each charge's idempotency key, so a
    # key is never reused even when the end moves back (a reversed renewal) and a new
    # purchaser is charged for the same end and attempt
    charges_sent: int = 0
    # what it covers: "" the whole installation, "device:<id>" one device, "user:<ref>" one
    # user (:func:`cloud.subscriptions.rules.plans.scope_key`); the grants carry it on
    scope: str = ""


# events ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: send notices and charges that are due, expire at the end."""


@dataclass(frozen=True, slots=True)
class Activate:
    """The checkout of a card purchase was paid: the term starts now."""


@dataclass(frozen=True, slots=True)
class ChargeSucceeded:
    """The renewal charge for the term ending at ``end`` was paid (maybe late)."""

    end: int
    attempt: int


@dataclass(frozen=True, slots=True)
class ChargeFailed:
    """The renewal charge ``attempt`` for the term ending at ``end`` was declined."""

    end: int
    attempt: int
    reason: str = "declined"


@dataclass(frozen=True, slots=True)
class Renew:
    """A paid renewal of ``months`` months (1-60); after expiry, the late payment."""

    months: int
    by: int


@dataclass(frozen=True, slots=True)
class RenewalPaid:
    """The payment of a manual renewal of ``months`` beyond ``end`` arrived (maybe late)."""

    end: int
    months: int


@dataclass(frozen=True, slots=True)
class Abandon:
    """The purchase's unpaid checkout was cancelled (by the buyer, or left unpaid too long)."""


@dataclass(frozen=True, slots=True)
class PaymentReversed:
    """The applied payment of a purchase, or of a renewal of ``months`` beyond ``end``,
    was voided or refunded in full; ``attempt`` is the renewal charge's (-1: manual);
    ``ref`` names the payment (its order), so each reversal is told once."""

    purchase: bool
    end: int = 0
    months: int = 0
    attempt: int = -1
    ref: str = ""


@dataclass(frozen=True, slots=True)
class Deactivate:
    """No further renewals; the service runs to its end."""

    by: int


@dataclass(frozen=True, slots=True)
class Reactivate:
    """Renew again, billed to ``by`` from now on (nothing due now)."""

    by: int


@dataclass(frozen=True, slots=True)
class ChangePlan:
    """Move to the plan ``to`` for the rest of the term ending at ``end`` (an upgrade's
    prorated difference was paid, or a downgrade's refunded); ``ref`` names the change."""

    to: Product
    end: int
    ref: str = ""
    cents: int = 0  # the prorated difference: > 0 was charged, < 0 refunded


@dataclass(frozen=True, slots=True)
class PlanChangeReversed:
    """The payment of an upgrade from ``back_to`` to ``bought`` was voided or refunded in
    full: back to ``back_to`` if the subscription is still on ``bought``."""

    back_to: Product
    bought: Product
    ref: str = ""


Event = (
    Tick
    | Activate
    | ChargeSucceeded
    | ChargeFailed
    | Renew
    | RenewalPaid
    | Deactivate
    | Reactivate
    | Abandon
    | PaymentReversed
    | ChangePlan
    | PlanChangeReversed
)


# effects --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GrantService:
    """Devices of the installation may use ``feature`` until ``until``."""

    feature: str
    params: Mapping[str, Any]
    until: int


@dataclass(frozen=True, slots=True)
class EndService:
    """The installation's grant of ``feature`` ends now."""

    feature: str


@dataclass(frozen=True, slots=True)
class Notify:
    """A message to a user; ``dedupe_key`` makes sending it idempotent."""

    kind: str
    to_user: int
    subject: str
    body: str
    dedupe_key: str


@dataclass(frozen=True, slots=True)
class Charge:
    """Charge the purchaser for a renewal; ``idempotency_key`` names exactly one order."""

    idempotency_key: str
    buyer: int
    months: int
    amount_cents: int
    end: int
    attempt: int


@dataclass(frozen=True, slots=True)
class RefundPayment:
    """Give back the payment being applied: it cannot be delivered (``reason`` says why)."""

    reason: str


Effect = GrantService | EndService | Notify | Charge | RefundPayment


@dataclass(frozen=True, slots=True)
class Transition:
    """The state after an event and what must happen because of it."""

    state: Subscription
    effects: tuple[Effect, ...] = ()
    due_now_cents: int = 0


# rules ----------------------------------------------------------------------
def purchase(
    *,
    sub_id: str,
    installation_id: str,
    product: Product,
    purchaser: int,
    term_months: int,
    now: int,
    paid: bool,
    start: int | None = None,
) -> Transition:
    """A new subscription; active now if paid and starting now, else not yet activated.

    Raises:
        BadTerm: a term the product does not offer, a start before today (UTC)
            or more than a year ahead.
    """
    if term_months not in product.term_cents:
        offered = ", ".join(str(m) for m in product.terms)
        raise BadTerm(
            N_("%(code)s is sold for %(offered)s months, not %(months)s"),
            code=product.code,
            offered=offered,
            months=term_months,
        )
    begins = now if start is None else start
    today = now - now % DAY_S
    if begins < today:
        raise BadTerm(
            N_("the start %(start)s is in the past: start today or later"), start=iso(begins)
        )
    if begins > now + MAX_START_AHEAD_S:
        raise BadTerm(N_("the start is more than a year ahead"))
    begins = max(begins, now)
    sub = Subscription(
        id=sub_id,
        installation_id=installation_id,
        product=product,
        purchaser=purchaser,
        status=Status.PENDING,
        term_months=term_months,
        start=begins,
        end=term_end(begins, term_months),
        awaiting_payment=not paid,
    )
    return _tick(sub, now=now) if paid else Transition(sub)


def apply(sub: Subscription, event: Event, *, now: int) -> Transition:
    """The subscription after ``event`` at ``now``.

    Raises:
        InvalidTransition: the event is not allowed in the subscription's state.
        BadTerm: a renewal outside 1-60 months, or a late payment that ends in the past.
    """
    match event:
        case Tick():
            return _tick(sub, now=now)
        case Activate():
            return _activate(sub, now=now)
        case ChargeSucceeded(end=end):
            return _paid(sub, end=end, months=sub.term_months, now=now, strict=False)
        case RenewalPaid(end=end, months=months):
            return _paid(sub, end=end, months=months, now=now, strict=False)
        case ChargeFailed():
            return _declined(sub, event, now=now)
        case Renew(months=months):
            if not 1 <= months <= MAX_RENEWAL_MONTHS:
                raise BadTerm(
                    N_("renew by 1 to %(most)s months at once, not %(months)s"),
                    most=MAX_RENEWAL_MONTHS,
                    months=months,
                )
            if sub.status is Status.PENDING:
                raise InvalidTransition(
                    N_("the subscription is not activated yet: nothing to renew")
                )
            if _cancelled(sub):
                raise InvalidTransition(
                    N_("the subscription was cancelled before it was paid: purchase it again")
                )
            return _paid(sub, end=sub.end, months=months, now=now, strict=True)
        case Deactivate():
            if sub.status is Status.EXPIRED:
                raise InvalidTransition(N_("the subscription has expired: nothing to deactivate"))
            if not sub.auto_renew:
                return Transition(sub)
            # an abandoned charge keeps its attempt number: a key is never reused for another
            attempts = sub.attempts if sub.charging is None else max(sub.attempts, sub.charging + 1)
            return Transition(
                replace(sub, auto_renew=False, charging=None, attempts=attempts, next_retry_at=None)
            )
        case Reactivate(by=by):
            return _reactivate(sub, by=by, now=now)
        case Abandon():
            if sub.status is not Status.PENDING or not sub.awaiting_payment:
                return Transition(sub)  # paid meanwhile, or ended already
            return Transition(replace(sub, status=Status.EXPIRED))
        case PaymentReversed():
            return _reversed(sub, event, now=now)
        case ChangePlan():
            return _change_plan(sub, event, now=now)
        case PlanChangeReversed(back_to=back_to, bought=bought):
            if sub.product.code != bought.code or _cancelled(sub):
                return Transition(sub)  # changed again since, or ended: nothing to take back
            after = replace(sub, product=back_to)
            effects: list[Effect] = [_grant(after)] if sub.status is Status.ACTIVE else []
            effects.append(
                Notify(
                    kind="payment_reversed",
                    to_user=sub.purchaser,
                    subject=f"{bought.name}: a payment was returned",
                    body=f"The change of installation {sub.installation_id} to {bought.name} "
                    f"was taken back because its payment was returned: it is on "
                    f"{back_to.name} again.",
                    dedupe_key=f"payment_reversed:{sub.id}:{event.ref}",
                )
            )
            return Transition(after, tuple(effects))
    raise TypeError(f"not a subscription event: {event!r}")


def _change_plan(sub: Subscription, event: ChangePlan, *, now: int) -> Transition:
    """The paid (or refunded) plan change takes effect, if the term it was quoted for is
    still the one running; else the payment cannot be delivered and is refunded."""
    if (
        sub.status is not Status.ACTIVE
        or sub.awaiting_payment
        or event.end != sub.end
        or now >= sub.end
        or event.to.feature != sub.product.feature
    ):
        return _refund(sub, f"the plan change to {event.to.name} no longer applies")
    if sub.product.code == event.to.code:
        return _refund(sub, f"the subscription is on {event.to.name} already")
    after = replace(sub, product=event.to)
    where = sub.installation_id
    if sub.scope.startswith("device:"):
        where = f"{where}, device {sub.scope.removeprefix('device:')}"
    money = (
        f"{event.cents / 100:.2f} was charged for the days left"
        if event.cents > 0
        else f"{-event.cents / 100:.2f} is refunded for the days left"
        if event.cents < 0
        else "nothing was due"
    )
    notice = Notify(
        kind="plan_changed",
        to_user=sub.purchaser,
        subject=f"Your plan is now {event.to.name}",
        body=f"{sub.product.name} of installation {where} is now {event.to.name} until "
        f"{iso(sub.end)}: {money}. Renewals are billed at the new plan's price "
        f"({term_price(event.to, sub.term_months) / 100:.2f} for {sub.term_months} months). "
        "The device follows with its next token.",
        dedupe_key=f"plan_changed:{sub.id}:{event.ref}",
    )
    return Transition(after, (_grant(after), notice))


def _grant(sub: Subscription) -> GrantService:
    return GrantService(feature=sub.product.feature, params=sub.product.params, until=sub.end)


def _cancelled(sub: Subscription) -> bool:
    """Ended without a paid purchase (checkout cancelled, or the purchase reversed)."""
    return sub.status is Status.EXPIRED and sub.awaiting_payment


def _refund(sub: Subscription, reason: str) -> Transition:
    return Transition(sub, (RefundPayment(reason),))


def _activate(sub: Subscription, *, now: int) -> Transition:
    if sub.status is not Status.PENDING or not sub.awaiting_payment:
        why = "cancelled" if _cancelled(sub) else "paid already"
        return _refund(sub, f"the purchase of {sub.product.name} was {why}")
    start = max(sub.start, now)
    ready = replace(sub, awaiting_payment=False, start=start, end=term_end(start, sub.term_months))
    return _tick(ready, now=now)


def _tick(sub: Subscription, *, now: int) -> Transition:
    effects: list[Effect] = []
    if sub.status is Status.PENDING:
        if sub.awaiting_payment or now < sub.start:
            return Transition(sub)
        sub = replace(sub, status=Status.ACTIVE)
        effects.append(_grant(sub))
    if sub.status is not Status.ACTIVE:
        return Transition(sub)
    if now >= sub.end:
        expired = replace(sub, status=Status.EXPIRED, charging=None, next_retry_at=None)
        effects.append(EndService(sub.product.feature))
        effects.append(
            Notify(
                kind="expired",
                to_user=sub.purchaser,
                subject=f"{sub.product.name} has expired",
                body=f"{sub.product.name} of installation {sub.installation_id} ended at "
                f"{iso(sub.end)}. Pay the renewal to switch it on again.",
                dedupe_key=f"expired:{sub.id}:{sub.end}",
            )
        )
        return Transition(expired, tuple(effects))
    if sub.auto_renew:
        sub = _notice_if_due(sub, now=now, effects=effects)
        sub = _charge_if_due(sub, now=now, effects=effects)
    return Transition(sub, tuple(effects))


def _notice_if_due(sub: Subscription, *, now: int, effects: list[Effect]) -> Subscription:
    if sub.notice_for == sub.end or now < add_months(sub.end, -NOTICE_MONTHS):
        return sub
    amount = term_price(sub.product, sub.term_months)
    effects.append(
        Notify(
            kind="renewal_notice",
            to_user=sub.purchaser,
            subject=f"{sub.product.name} renews on {iso(sub.end)}",
            body=f"{sub.product.name} of installation {sub.installation_id} renews for "
            f"{sub.term_months} months on {iso(sub.end)}; {amount / 100:.2f} will be "
            f"charged on {iso(add_months(sub.end, -CHARGE_MONTHS))}.",
            dedupe_key=f"renewal_notice:{sub.id}:{sub.end}",
        )
    )
    return replace(sub, notice_for=sub.end)


def _charge(sub: Subscription, *, attempt: int, serial: int) -> Charge:
    # serial -1: a charge sent before keys carried the serial keeps its old key
    suffix = f":{serial}" if serial >= 0 else ""
    return Charge(
        idempotency_key=f"renewal:{sub.id}:{sub.end}:{attempt}{suffix}",
        buyer=sub.purchaser,
        months=sub.term_months,
        amount_cents=term_price(sub.product, sub.term_months),
        end=sub.end,
        attempt=attempt,
    )


def charge_in_flight(sub: Subscription) -> Charge | None:
    """The renewal charge ``sub`` awaits the answer of (the one a tick sent), or None.

    Its key is the one the tick's :class:`Charge` carried, so whoever places the charge
    later (the renewal job gathering a purchaser's month) places that very charge.
    """
    if sub.charging is None:
        return None
    return _charge(sub, attempt=sub.charging, serial=sub.charges_sent - 1)


def _charge_if_due(sub: Subscription, *, now: int, effects: list[Effect]) -> Subscription:
    if sub.charging is not None:
        if sub.charge_sent_at is not None and now < sub.charge_sent_at + CHARGE_LEASE_S:
            return sub  # another worker (or this one) is waiting for the answer
        attempt, serial = sub.charging, sub.charges_sent - 1  # the charge in flight
    elif now < add_months(sub.end, -CHARGE_MONTHS):
        return sub
    elif sub.attempts == 0 or (sub.next_retry_at is not None and now >= sub.next_retry_at):
        attempt, serial = sub.attempts, sub.charges_sent
    else:
        return sub
    effects.append(_charge(sub, attempt=attempt, serial=serial))
    return replace(
        sub,
        charging=attempt,
        charge_sent_at=now,
        next_retry_at=None,
        charges_sent=max(sub.charges_sent, serial + 1),
    )


def _paid(sub: Subscription, *, end: int, months: int, now: int, strict: bool) -> Transition:
    """Money received for the term after ``end``: extend from ``end``, or refund it.

    ``strict`` (a renewal asked for now, not yet paid) raises instead of refunding.
    """
    if sub.status is Status.PENDING or _cancelled(sub):
        return _refund(sub, f"{sub.product.name} is not activated: nothing to renew")
    if end != sub.end:
        return _refund(sub, f"the term after {iso(end)} was paid already")
    new_end = add_months(sub.end, months)
    if new_end <= now:
        if strict:
            raise BadTerm(
                N_(
                    "paying %(months)s months from %(start)s ends at %(end)s, "
                    "which has passed: renew more months"
                ),
                months=months,
                start=iso(sub.end),
                end=iso(new_end),
            )
        return _refund(sub, f"the term it paid for ended at {iso(new_end)}, before it arrived")
    renewed = replace(
        sub,
        status=Status.ACTIVE,
        end=new_end,
        attempts=0,
        charging=None,
        charge_sent_at=None,
        next_retry_at=None,
    )
    return Transition(renewed, (_grant(renewed),))


def _reversed(sub: Subscription, event: PaymentReversed, *, now: int) -> Transition:
    """Take back what a voided or refunded payment bought (see the module docstring)."""
    if _cancelled(sub):
        return Transition(sub)  # ended without a paid purchase already: nothing bought is left
    effects: list[Effect] = []
    if event.purchase:
        after = replace(
            sub, status=Status.EXPIRED, awaiting_payment=True, charging=None, next_retry_at=None
        )
        what = f"{sub.product.name} of installation {sub.installation_id} was cancelled"
    else:
        end = add_months(sub.end, -event.months)
        attempts = max(sub.attempts, event.attempt + 1) if end == event.end else sub.attempts
        after = replace(
            sub,
            end=end,
            auto_renew=False,
            attempts=attempts,
            charging=None,
            charge_sent_at=None,
            next_retry_at=None,
        )
        if after.status is Status.ACTIVE and now >= end:
            after = replace(after, status=Status.EXPIRED)
        what = (
            f"The renewal of {sub.product.name} of installation {sub.installation_id} was "
            f"reversed: it is paid through {iso(end)} and no longer renews on its own"
        )
    if sub.status is Status.ACTIVE:
        effects.append(
            _grant(after) if after.status is Status.ACTIVE else EndService(sub.product.feature)
        )
    effects.append(
        Notify(
            kind="payment_reversed",
            to_user=sub.purchaser,
            subject=f"{sub.product.name}: a payment was returned",
            body=f"{what}, because its payment was returned.",
            dedupe_key=f"payment_reversed:{sub.id}:{event.ref}",
        )
    )
    return Transition(after, tuple(effects))


def _declined(sub: Subscription, event: ChargeFailed, *, now: int) -> Transition:
    if sub.status is not Status.ACTIVE or event.end != sub.end or sub.charging != event.attempt:
        return Transition(sub)  # a duplicate or stale answer
    retry = now + RETRY_INTERVAL_S
    failed = replace(
        sub,
        attempts=max(sub.attempts, event.attempt + 1),
        charging=None,
        charge_sent_at=None,
        next_retry_at=retry if retry < sub.end and sub.auto_renew else None,
    )
    when = (
        f"We will try again on {iso(retry)}."
        if failed.next_retry_at is not None
        else "No further attempt will be made before it ends."
    )
    notice = Notify(
        kind="charge_failed",
        to_user=sub.purchaser,
        subject=f"Payment for {sub.product.name} failed",
        body=f"The renewal charge for {sub.product.name} of installation "
        f"{sub.installation_id} was {event.reason}. {when} The service stops at "
        f"{iso(sub.end)} unless paid.",
        dedupe_key=f"charge_failed:{sub.id}:{sub.end}:{event.attempt}",
    )
    return Transition(failed, (notice,))


def _reactivate(sub: Subscription, *, by: int, now: int) -> Transition:
    if _cancelled(sub):
        raise InvalidTransition(
            N_("the subscription was cancelled before it was paid: purchase it again")
        )
    if sub.status is Status.EXPIRED:
        raise InvalidTransition(
            N_("the subscription has expired: pay the renewal or purchase it again")
        )
    if sub.auto_renew:
        if by == sub.purchaser:
            return Transition(sub)
        raise InvalidTransition(
            N_(
                "the subscription renews already, billed to its purchaser: "
                "it must be deactivated before another user reactivates it"
            )
        )
    # Nothing is due now. If a charge was already tried for this end, the next attempt
    # (a new number, a new key) goes to the new purchaser on the charge day, or at the
    # next tick when that day has passed.
    retry = max(add_months(sub.end, -CHARGE_MONTHS), now) if sub.attempts else None
    return Transition(
        replace(sub, auto_renew=True, purchaser=by, charging=None, next_retry_at=retry),
        due_now_cents=0,
    )


def due_at(sub: Subscription) -> int | None:
    """The earliest moment a :class:`Tick` would change ``sub`` (for the job's index)."""
    if sub.status is Status.EXPIRED:
        return None
    if sub.status is Status.PENDING:
        return None if sub.awaiting_payment else sub.start
    times = [sub.end]
    if sub.auto_renew:
        if sub.notice_for != sub.end:
            times.append(add_months(sub.end, -NOTICE_MONTHS))
        if sub.charging is not None:
            times.append((sub.charge_sent_at or 0) + CHARGE_LEASE_S)
        elif sub.attempts == 0:
            times.append(add_months(sub.end, -CHARGE_MONTHS))
        elif sub.next_retry_at is not None:
            times.append(sub.next_retry_at)
    return min(times)


def status_text(sub: Subscription) -> str:
    """'not yet activated', 'active, renews at DATE', 'active, expires at DATE', 'expired',
    'cancelled' (ended before it was paid)."""
    if sub.status is Status.PENDING:
        return "not yet activated"
    if _cancelled(sub):
        return "cancelled"
    if sub.status is Status.EXPIRED:
        return "expired"
    verb = "renews" if sub.auto_renew else "expires"
    return f"active, {verb} at {iso(sub.end)}"


def status_kind(sub: Subscription) -> str:
    """The status as one word a page translates: 'pending', 'cancelled', 'expired',
    'renews' (active, auto-renewing) or 'expires' (active, runs to its end)."""
    if sub.status is Status.PENDING:
        return "pending"
    if _cancelled(sub):
        return "cancelled"
    if sub.status is Status.EXPIRED:
        return "expired"
    return "renews" if sub.auto_renew else "expires"


@dataclass(frozen=True, slots=True)
class NextRenewal:
    """A renewal and its price: charged at ``charge_at`` (a manual one: now), for
    ``months`` months, ``amount_cents``, after which the service runs until ``until``."""

    charge_at: int
    months: int
    amount_cents: int
    until: int


def next_renewal(sub: Subscription, *, now: int) -> NextRenewal | None:
    """The renewal automatic renewal would charge next (None: it does not renew).

    The charge day is a month before the end; when that day has passed (a
    reactivation late in the term) the charge goes out at once.
    """
    if sub.status is not Status.ACTIVE or not sub.auto_renew:
        return None
    return NextRenewal(
        charge_at=max(add_months(sub.end, -CHARGE_MONTHS), now),
        months=sub.term_months,
        amount_cents=term_price(sub.product, sub.term_months),
        until=add_months(sub.end, sub.term_months),
    )


def renewal_quote(sub: Subscription, months: int, *, now: int) -> NextRenewal:
    """What renewing ``sub`` by ``months`` now costs and until when it then runs.

    Raises:
        BadTerm, InvalidTransition: as :func:`apply` refuses the :class:`Renew`.
    """
    after = apply(sub, Renew(months=months, by=sub.purchaser), now=now).state
    return NextRenewal(
        charge_at=now,
        months=months,
        amount_cents=term_price(sub.product, months),
        until=after.end,
    )
