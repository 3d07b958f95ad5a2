"""A hypothesis state machine over subscription events and time steps, with invariants.

Invariants: exactly one purchaser (always one of the users who bought or
reactivated); the end never moves backwards unless a payment is reversed;
after a tick nothing is active at or after its end; each effect key (charge
idempotency key, notice dedupe key) is issued for one meaning only, and
replaying a declined answer or a tick at the same moment issues no new
effect; the devices' grant always equals the paid end; every payment that
succeeds is either applied to the term or refunded, never both, never neither.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cloud.errors import BadTerm, InvalidTransition
from cloud.subscriptions.rules.catalogue import CATALOGUE
from cloud.subscriptions.rules.lifecycle import (
    Abandon,
    Activate,
    Charge,
    ChargeFailed,
    ChargeSucceeded,
    Deactivate,
    EndService,
    GrantService,
    Notify,
    PaymentReversed,
    Reactivate,
    RefundPayment,
    Renew,
    RenewalPaid,
    Status,
    Tick,
    Transition,
    add_months,
    apply,
    purchase,
)

USERS = (1, 2, 3)
START = int(datetime(2026, 1, 31, 15, tzinfo=UTC).timestamp())
HOUR = 3600


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.sub = None
        self.charges: dict[str, Charge] = {}  # idempotency key -> the one charge it names
        self.outstanding: list[Charge] = []  # sent, not yet answered
        self.notices: dict[str, Notify] = {}
        self.granted_until: int | None = None  # what the devices were last told
        self.buyers: set[int] = set()
        self.payments = self.applied = self.refunded = 0
        self.applied_terms: list[PaymentReversed] = []  # what a reversal would take back

    def _pay(self, t: Transition, *, reversal: PaymentReversed) -> None:
        """A succeeded payment: applied to the term, or refunded (exactly one of the two)."""
        before = self.sub
        refunds = [e for e in t.effects if isinstance(e, RefundPayment)]
        self.payments += 1
        if refunds:
            assert len(refunds) == 1 and t.state == before, "refunded but also applied"
            self.refunded += 1
        else:
            assert before is not None and t.state != before, "a payment kept, nothing delivered"
            assert t.state.end > before.end or before.awaiting_payment, "paid, not extended"
            self.applied += 1
            self.applied_terms.append(reversal)
        self._take(t)

    def _take(self, t: Transition, *, reversed_: bool = False) -> None:
        before = self.sub
        if before is not None and not reversed_:
            assert t.state.end >= before.end, "the end moved backwards"
        for effect in t.effects:
            if isinstance(effect, Charge):
                seen = self.charges.setdefault(effect.idempotency_key, effect)
                assert seen == effect, "one key, two different charges"
                self.outstanding.append(effect)
            elif isinstance(effect, Notify):
                seen_notice = self.notices.setdefault(effect.dedupe_key, effect)
                assert seen_notice.kind == effect.kind and seen_notice.to_user == effect.to_user
            elif isinstance(effect, GrantService):
                self.granted_until = effect.until
            elif isinstance(effect, EndService):
                self.granted_until = None
        self.sub = t.state

    @rule(
        code=st.sampled_from(sorted(CATALOGUE)),
        who=st.sampled_from(USERS),
        paid=st.sampled_from([True, True, True, False]),
        ahead_days=st.sampled_from([0, 0, 0, 1, 40]),
    )
    @precondition(lambda self: self.sub is None)
    def buy(self, code: str, who: int, paid: bool, ahead_days: int) -> None:
        item = CATALOGUE[code]
        self.buyers.add(who)
        self._take(
            purchase(
                sub_id="s",
                installation_id="i",
                product=item,
                purchaser=who,
                term_months=item.terms[0],
                now=self.now,
                paid=paid,
                start=self.now + ahead_days * 86_400,
            )
        )

    @rule(hours=st.integers(1, 24 * 40))
    def time_passes(self, hours: int) -> None:
        self.now += hours * HOUR

    @rule(
        point=st.sampled_from(["notice", "charge", "retry", "end"]),
        hours=st.sampled_from([0, 1, 24, 72]),
    )
    @precondition(lambda self: self.sub is not None)
    def jump_near(self, point: str, hours: int) -> None:
        """Time runs to a moment where the rules act (never backwards), then ticks."""
        sub = self.sub
        at = (
            {
                "notice": add_months(sub.end, -2),
                "charge": add_months(sub.end, -1),
                "retry": sub.next_retry_at or sub.end,
                "end": sub.end,
            }[point]
            + hours * HOUR
            - HOUR
        )
        self.now = max(self.now, at)
        self.tick()

    @rule()
    @precondition(lambda self: self.sub is not None)
    def tick(self) -> None:
        self._take(apply(self.sub, Tick(), now=self.now))
        if self.sub.status is Status.ACTIVE:
            assert self.now < self.sub.end, "active at or after its end"
        # the same tick again: nothing more to do
        again = apply(self.sub, Tick(), now=self.now)
        assert again.effects == () and again.state == self.sub

    @rule()
    @precondition(lambda self: self.sub is not None)
    def checkout_paid(self) -> None:
        self._pay(apply(self.sub, Activate(), now=self.now), reversal=PaymentReversed(True))

    @rule()
    @precondition(lambda self: self.sub is not None)
    def checkout_cancelled(self) -> None:
        self._take(apply(self.sub, Abandon(), now=self.now))

    @rule(ok=st.booleans(), twice=st.booleans())
    @precondition(lambda self: bool(self.outstanding))
    def charge_answered(self, ok: bool, twice: bool) -> None:
        charge = self.outstanding.pop(0)
        if ok:  # each order's payment reaches the rule once (the adapter records it)
            paid = ChargeSucceeded(end=charge.end, attempt=charge.attempt)
            back = PaymentReversed(False, charge.end, charge.months, charge.attempt)
            self._pay(apply(self.sub, paid, now=self.now), reversal=back)
            return
        event = ChargeFailed(end=charge.end, attempt=charge.attempt)
        self._take(apply(self.sub, event, now=self.now))
        if twice:  # a duplicate delivery of the decline
            dup = apply(self.sub, event, now=self.now)
            assert dup.effects == () and dup.state == self.sub

    @rule(months=st.sampled_from([1, 12, 60]), stale=st.booleans())
    @precondition(lambda self: self.sub is not None)
    def manual_renewal_paid(self, months: int, stale: bool) -> None:
        """A manual renewal's payment arrives; ``stale``: placed before the last renewal."""
        end = self.sub.end if not stale or not self.applied_terms else self.applied_terms[-1].end
        t = apply(self.sub, RenewalPaid(end=end, months=months), now=self.now)
        self._pay(t, reversal=PaymentReversed(False, end, months))

    @rule()
    @precondition(lambda self: bool(self.applied_terms))
    def last_payment_reversed(self) -> None:
        """A cs_admin voids or refunds the payment applied last."""
        event = self.applied_terms.pop()
        event = replace(event, ref=f"order-{self.payments}-{len(self.applied_terms)}")
        before = self.sub
        t = apply(before, event, now=self.now)
        self._take(t, reversed_=True)
        if before.status is Status.EXPIRED and before.awaiting_payment:
            assert t.state == before
        elif event.purchase:
            assert self.sub.status is Status.EXPIRED and self.sub.awaiting_payment
        else:
            assert self.sub.end == add_months(before.end, -event.months)
            assert not self.sub.auto_renew
        if self.sub.status is not Status.ACTIVE:
            self.granted_until = None if before.status is Status.ACTIVE else self.granted_until

    @rule(months=st.integers(-2, 64), who=st.sampled_from(USERS))
    @precondition(lambda self: self.sub is not None)
    def renew(self, months: int, who: int) -> None:
        try:
            t = apply(self.sub, Renew(months=months, by=who), now=self.now)
        except BadTerm:
            assert not 1 <= months <= 60 or add_months(self.sub.end, months) <= self.now
        except InvalidTransition:
            assert self.sub.status is Status.PENDING or self.sub.awaiting_payment
        else:
            self._pay(t, reversal=PaymentReversed(False, self.sub.end, months))

    @rule(who=st.sampled_from(USERS))
    @precondition(lambda self: self.sub is not None)
    def deactivate(self, who: int) -> None:
        try:
            self._take(apply(self.sub, Deactivate(by=who), now=self.now))
        except InvalidTransition:
            assert self.sub.status is Status.EXPIRED
        else:
            assert not self.sub.auto_renew

    @rule(who=st.sampled_from(USERS))
    @precondition(lambda self: self.sub is not None)
    def reactivate(self, who: int) -> None:
        before = self.sub
        try:
            t = apply(self.sub, Reactivate(by=who), now=self.now)
        except InvalidTransition:
            assert before.status is Status.EXPIRED or (
                before.auto_renew and before.purchaser != who
            )
            return
        assert t.due_now_cents == 0 and not any(isinstance(e, Charge) for e in t.effects)
        self.buyers.add(who)
        self._take(t)
        assert self.sub.purchaser == who and self.sub.auto_renew

    @invariant()
    def one_purchaser_who_bought_or_reactivated(self) -> None:
        if self.sub is not None:
            assert isinstance(self.sub.purchaser, int) and self.sub.purchaser in self.buyers

    @invariant()
    def devices_are_told_the_paid_end(self) -> None:
        if self.sub is None or self.granted_until is None:
            return
        if self.sub.status is Status.ACTIVE:
            assert self.granted_until == self.sub.end
        else:  # expired and very-late-paid ends are recorded without a grant
            assert self.granted_until <= self.sub.end

    @invariant()
    def every_succeeded_payment_is_applied_or_refunded(self) -> None:
        assert self.payments == self.applied + self.refunded

    @invariant()
    def charges_go_to_the_purchaser_of_their_time(self) -> None:
        for charge in self.outstanding:
            assert charge.buyer in self.buyers and charge.amount_cents > 0


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_reversed_renewal_and_a_new_purchaser_never_reuse_a_charge_key() -> None:
    """Found by the machine above: a charge was declined for the end E; a manual
    renewal moved the end on and was refunded (the end back at E, its attempt count
    lost); a new purchaser reactivated, and the next charge for E, attempt 0, reused
    the first one's key, so the provider would have answered with purchaser 2's
    charge instead of charging purchaser 1."""
    state = Lifecycle()
    state.buy(ahead_days=0, code="TSF12125", paid=True, who=2)
    state.jump_near(hours=0, point="retry")
    state.manual_renewal_paid(months=1, stale=False)
    state.last_payment_reversed()
    state.reactivate(who=1)
    state.jump_near(hours=0, point="notice")  # asserts one key, one charge
    keys = list(state.charges)
    assert len(keys) == len(set(keys)) >= 2
    assert {c.buyer for c in state.charges.values()} == {1, 2}
    state.teardown()
