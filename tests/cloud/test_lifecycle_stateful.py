"""A hypothesis state machine over subscription events and time steps, with invariants.

Invariants: exactly one purchaser (always one of the users who bought or
reactivated); the end never moves backwards; after a tick nothing is active at
or after its end; each effect key (charge idempotency key, notice dedupe key)
is issued for one meaning only, and replaying an event or a tick at the same
moment issues no new effect; the devices' grant always equals the paid end.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cloud.domain.catalogue import CATALOGUE
from cloud.domain.lifecycle import (
    Activate,
    Charge,
    ChargeFailed,
    ChargeSucceeded,
    Deactivate,
    EndService,
    GrantService,
    Notify,
    Reactivate,
    Renew,
    Status,
    Tick,
    Transition,
    add_months,
    apply,
    purchase,
)
from cloud.errors import BadTerm, InvalidTransition

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

    def _take(self, t: Transition) -> None:
        before = self.sub
        if before is not None:
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
        self._take(apply(self.sub, Activate(), now=self.now))

    @rule(ok=st.booleans(), twice=st.booleans())
    @precondition(lambda self: bool(self.outstanding))
    def charge_answered(self, ok: bool, twice: bool) -> None:
        charge = self.outstanding.pop(0)
        event = (
            ChargeSucceeded(end=charge.end, attempt=charge.attempt)
            if ok
            else ChargeFailed(end=charge.end, attempt=charge.attempt)
        )
        self._take(apply(self.sub, event, now=self.now))
        if twice:  # a duplicate delivery
            dup = apply(self.sub, event, now=self.now)
            assert dup.effects == () and dup.state == self.sub

    @rule(months=st.integers(-2, 64), who=st.sampled_from(USERS))
    @precondition(lambda self: self.sub is not None)
    def renew(self, months: int, who: int) -> None:
        try:
            self._take(apply(self.sub, Renew(months=months, by=who), now=self.now))
        except BadTerm:
            assert not 1 <= months <= 60 or add_months(self.sub.end, months) <= self.now
        except InvalidTransition:
            assert self.sub.status is Status.PENDING

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
