"""Plans: what one subscription covers (its scope), plan changes and their prorated price.
Pure: the subscription, the products and ``now`` are arguments.

Proration rule (stated once, shown on the quote): a plan is valued by the day at
its yearly price over 365 days (``monthly_cents * 12 / 365``); a change made on
any moment of a UTC day counts that day as left, so ``days_left`` is the whole
UTC days from the start of today to the subscription's end. The difference is
``(new yearly - old yearly) * days_left / 365`` cents, rounded half away from
zero to a whole cent: positive is charged (an upgrade: the new plan takes effect
when paid), negative is refunded (a downgrade: the new plan takes effect at once).
Either way the term's end, its renewal date and its purchaser stay as they were;
the renewal after the change is billed at the new plan's price.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cloud.errors import N_, InvalidRequest, SubscriptionExists
from cloud.subscriptions.errors import PlanChangeRefused, UserLimitReached
from cloud.subscriptions.rules.calendar import DAY_S
from cloud.subscriptions.rules.catalogue import Product, Scope
from cloud.subscriptions.rules.lifecycle import Status, Subscription

__all__ = [
    "YEAR_DAYS",
    "PlanChangeQuote",
    "check_user_limit",
    "check_users_to_add",
    "plan_change_quote",
    "prorate",
    "scope_key",
]

YEAR_DAYS = 365
_USER_REF_MAX = 64


def scope_key(
    item: Product, *, device_id: str | None, device_kind: str | None, user_ref: str | None
) -> str:
    """The ``scope`` a subscription of ``item`` gets: ``""`` (the installation),
    ``device:<id>`` or ``user:<ref>``.

    A per-device product may also be bought for the whole installation (no device:
    every device carries it, a device's own plan wins on that device).

    Raises:
        InvalidRequest: a device for a product that is not per device, a device of a
            kind the product is not for, a user for a product that is not per user,
            a per-user product without a user, or a bad user reference.
    """
    if device_id is not None and user_ref is not None:
        raise InvalidRequest(N_("name a device or a user, not both"))
    if device_id is not None:
        if item.scope is not Scope.DEVICE:
            raise InvalidRequest(
                N_("%(product)s covers the whole installation: buy it without a device"),
                product=item.code,
            )
        if device_kind not in item.device_kinds:
            raise InvalidRequest(
                N_("%(product)s is for %(kinds)s, device %(device)s is a %(kind)s"),
                product=item.code,
                kinds=", ".join(item.device_kinds),
                device=device_id,
                kind=str(device_kind),
            )
        return f"device:{device_id}"
    if item.scope is Scope.USER:
        if user_ref is None:
            raise InvalidRequest(
                N_("%(product)s is bought per user: name the user or department (user_ref)"),
                product=item.code,
            )
        if not 0 < len(user_ref) <= _USER_REF_MAX or not user_ref.isprintable():
            raise InvalidRequest(
                N_("a user reference has 1-%(most)d printable characters"), most=_USER_REF_MAX
            )
        return f"user:{user_ref}"
    if user_ref is not None:
        raise InvalidRequest(
            N_("%(product)s is not bought per user: buy it without a user"), product=item.code
        )
    return ""


def check_user_limit(item: Product, *, installation_id: str, users: int, adding: int = 1) -> None:
    """Allow ``adding`` more users of ``item`` in an installation that has ``users`` live ones.

    Raises:
        UserLimitReached: that would be more than the product's maximum.
    """
    most = item.max_per_installation
    if most is None or users + adding <= most:
        return
    if adding == 1:
        raise UserLimitReached(
            N_(
                "installation %(installation)s has %(count)d users of %(product)s, the "
                "maximum is %(maximum)d: end one before adding another"
            ),
            installation=installation_id,
            count=users,
            product=item.name,
            maximum=most,
        )
    raise UserLimitReached(
        N_(
            "installation %(installation)s has %(count)d users of %(product)s, the maximum "
            "is %(maximum)d: add at most %(room)d more, not %(adding)d"
        ),
        installation=installation_id,
        count=users,
        product=item.name,
        maximum=most,
        room=max(0, most - users),
        adding=adding,
    )


def check_users_to_add(
    item: Product, *, installation_id: str, user_refs: Sequence[str], live: Collection[str]
) -> None:
    """Whether every one of ``user_refs`` may be added, at once, to an installation whose
    users of ``item`` not expired have the scopes ``live``.

    Raises:
        InvalidRequest: not a per-user product, no name, a bad name, or a name twice.
        SubscriptionExists: one of them has the product already.
        UserLimitReached: they would be more than the product's maximum.
    """
    if item.scope is not Scope.USER:
        raise InvalidRequest(
            N_("%(product)s is not bought per user: buy it without a user"), product=item.code
        )
    if not user_refs:
        raise InvalidRequest(N_("Name at least one user or department to add."))
    scopes = [scope_key(item, device_id=None, device_kind=None, user_ref=r) for r in user_refs]
    twice = sorted(ref for ref, n in Counter(user_refs).items() if n > 1)
    if twice:
        raise InvalidRequest(
            N_("%(users)s is named more than once: name each user once"), users=", ".join(twice)
        )
    for ref, scope in zip(user_refs, scopes, strict=True):
        if scope in live:
            raise SubscriptionExists(
                N_("%(user)s has %(product)s already: keep or end it in the list"),
                user=ref,
                product=item.name,
            )
    check_user_limit(item, installation_id=installation_id, users=len(live), adding=len(scopes))


def prorate(yearly_difference_cents: int, days_left: int) -> int:
    """``yearly_difference_cents * days_left / 365``, rounded half away from zero."""
    sign = -1 if yearly_difference_cents < 0 else 1
    scaled = abs(yearly_difference_cents) * days_left
    return sign * ((2 * scaled + YEAR_DAYS) // (2 * YEAR_DAYS))


@dataclass(frozen=True, slots=True)
class PlanChangeQuote:
    """What changing a subscription from one plan to another costs today."""

    subscription_id: str
    from_product: Product
    to_product: Product
    days_left: int
    ends_at: int
    difference_cents: int  # > 0 charged now, < 0 refunded, 0 nothing moves

    @property
    def old_daily_cents(self) -> float:
        return self.from_product.monthly_cents * 12 / YEAR_DAYS

    @property
    def new_daily_cents(self) -> float:
        return self.to_product.monthly_cents * 12 / YEAR_DAYS

    @property
    def direction(self) -> str:
        """``upgrade``, ``downgrade`` or ``same-price``."""
        if self.difference_cents > 0:
            return "upgrade"
        return "downgrade" if self.difference_cents < 0 else "same-price"


def plan_change_quote(sub: Subscription, to: Product, *, now: int) -> PlanChangeQuote:
    """The price of moving ``sub`` to ``to`` today (see the module's proration rule).

    Raises:
        PlanChangeRefused: not active, already on that plan, a plan of another service,
            or no whole day left of the term.
    """
    if to.code == sub.product.code:
        raise PlanChangeRefused(N_("the subscription is on %(product)s already"), product=to.code)
    if to.feature != sub.product.feature:
        raise PlanChangeRefused(
            N_("%(to)s is another service than %(product)s: buy it instead of changing the plan"),
            to=to.code,
            product=sub.product.code,
        )
    if sub.status is not Status.ACTIVE or sub.awaiting_payment:
        raise PlanChangeRefused(
            N_("only an active, paid subscription changes plan: renew or buy it first")
        )
    today = now - now % DAY_S
    days_left = (sub.end - today) // DAY_S
    if days_left <= 0:
        raise PlanChangeRefused(N_("the term ends today: change the plan at the renewal"))
    yearly = (to.monthly_cents - sub.product.monthly_cents) * 12
    return PlanChangeQuote(
        subscription_id=sub.id,
        from_product=sub.product,
        to_product=to,
        days_left=days_left,
        ends_at=sub.end,
        difference_cents=prorate(yearly, days_left),
    )
