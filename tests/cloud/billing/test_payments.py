"""The sandbox payment provider and the pure order lifecycle rules (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cloud.billing.errors import (
    BadOrderRequest,
    ChargeNotSettled,
    ChargeSettled,
    OrderStateConflict,
    PartialVoid,
    RefundFailed,
    RefundTooLarge,
    UnknownCharge,
)
from cloud.billing.payments import (
    CARD_DECLINED,
    CARD_OK,
    CARD_REFUND_FAILS,
    CARD_TIMEOUT,
    PaymentProvider,
    SandboxPaymentProvider,
)
from cloud.billing.rules import (
    REFUND_RETRIES,
    REFUND_RETRY_INTERVAL_S,
    OrderLine,
    OrderStatus,
    check_lines,
    check_transition,
    next_refund_retry,
    order_number,
    plan_refund,
    plan_void,
)
from tests.cloud.harness import DAY, START, FakeClock

S = OrderStatus


async def _charge(provider: SandboxPaymentProvider, card: str, key: str = "k1", cents: int = 1000):
    return await provider.charge(
        amount_cents=cents, currency="EUR", card_token=card, idempotency_key=key
    )


def test_the_sandbox_is_a_payment_provider() -> None:
    assert isinstance(SandboxPaymentProvider(), PaymentProvider)


@pytest.mark.parametrize(
    ("card", "answer", "booked"),
    [
        (CARD_OK, "succeeded", "succeeded"),
        (CARD_DECLINED, "declined", "declined"),
        (CARD_TIMEOUT, "timed_out", "succeeded"),
        (CARD_REFUND_FAILS, "succeeded", "succeeded"),
        ("4111111111111111", "declined", "declined"),
    ],
)
async def test_test_cards(card: str, answer: str, booked: str) -> None:
    provider = SandboxPaymentProvider()
    charge = await _charge(provider, card)
    assert charge.status == answer and not charge.settled
    [entry] = provider.ledger.values()
    assert entry.status == booked and entry.card_last4 == card[-4:]
    looked_up = await provider.lookup("k1")
    assert looked_up is not None and looked_up.status == booked
    assert await provider.lookup("k2") is None


async def test_a_retried_key_is_not_charged_twice() -> None:
    provider = SandboxPaymentProvider()
    first = await _charge(provider, CARD_OK)
    again = await _charge(provider, CARD_OK)
    assert first == again and provider.charges_made == 1 and len(provider.ledger) == 1
    other = await _charge(provider, CARD_OK, key="k2")
    assert other.charge_id != first.charge_id and provider.charges_made == 2


async def test_void_refund_and_settlement() -> None:
    clock = FakeClock(START)
    provider = SandboxPaymentProvider(clock=clock, settle_after_s=DAY)
    charge = await _charge(provider, CARD_OK)
    with pytest.raises(ChargeNotSettled):
        await provider.refund(charge.charge_id, amount_cents=1)
    clock.advance(DAY)
    with pytest.raises(ChargeSettled):
        await provider.void(charge.charge_id)
    await provider.refund(charge.charge_id, amount_cents=400)
    with pytest.raises(RefundTooLarge):
        await provider.refund(charge.charge_id, amount_cents=601)
    assert provider.ledger[charge.charge_id].refunded_cents == 400
    with pytest.raises(UnknownCharge):
        await provider.void("ch_nope")

    unsettled = await _charge(provider, CARD_OK, key="k2")
    await provider.void(unsettled.charge_id)
    await provider.void(unsettled.charge_id)  # a second void is not an error
    await provider.settle_all()
    assert not provider.ledger[unsettled.charge_id].settled  # voided charges never settle


async def test_refunds_of_the_failing_card_fail_until_fixed() -> None:
    provider = SandboxPaymentProvider()
    charge = await _charge(provider, CARD_REFUND_FAILS)
    await provider.settle_all()
    with pytest.raises(RefundFailed):
        await provider.refund(charge.charge_id, amount_cents=100)
    provider.failing_refund_cards.clear()
    await provider.refund(charge.charge_id, amount_cents=100)
    entry = provider.ledger[charge.charge_id]
    assert (entry.refund_attempts, entry.refunded_cents) == (2, 100)


def test_order_numbers_are_readable_and_unique_per_id() -> None:
    assert order_number(123, now=START) == "EN-2026-000123"
    assert order_number(1_234_567, now=START) == "EN-2026-1234567"


@given(st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_cancelled_is_final_and_only_reconciliation_leaves_time_out(a: S, b: S) -> None:
    try:
        check_transition(a, b)
    except OrderStateConflict:
        return
    assert a is not S.CANCEL
    if a is S.TIME_OUT:
        assert b is S.SYSTEM_PROCESSING
    if b is S.SUCCEED:
        assert a in (S.PROCESSING, S.SYSTEM_PROCESSING)


class OrderMachine(RuleBasedStateMachine):
    """Random walks over the lifecycle: money is charged at most once, never both ways."""

    def __init__(self) -> None:
        super().__init__()
        self.status = S.PROCESSING
        self.charged = 0
        self.history = [S.PROCESSING]

    def _move(self, to: S) -> bool:
        try:
            check_transition(self.status, to)
        except OrderStateConflict:
            return False
        self.status = to
        self.history.append(to)
        return True

    @rule(outcome=st.sampled_from([S.SUCCEED, S.FAILED, S.TIME_OUT]))
    def charge(self, outcome: S) -> None:
        if self._move(outcome) and outcome is S.SUCCEED:
            self.charged += 1

    @rule(outcome=st.sampled_from([S.SUCCEED, S.FAILED]))
    def reconcile(self, outcome: S) -> None:
        if self._move(S.SYSTEM_PROCESSING) and self._move(outcome) and outcome is S.SUCCEED:
            self.charged += 1

    @rule()
    def pay_again(self) -> None:
        self._move(S.PROCESSING)

    @precondition(lambda self: self.status is not S.CANCEL)
    @rule()
    def cancel_or_void(self) -> None:
        self._move(S.CANCEL)

    @invariant()
    def charged_at_most_once(self) -> None:
        assert self.charged <= 1
        if S.SUCCEED in self.history:
            after = self.history[self.history.index(S.SUCCEED) + 1 :]
            assert set(after) <= {S.CANCEL}


TestOrderMachine = OrderMachine.TestCase


@given(
    charge=st.integers(1, 10**6),
    refunded=st.integers(0, 10**6),
    requested=st.none() | st.integers(-10, 10**6 + 10),
)
def test_a_refund_never_exceeds_what_is_left(
    charge: int, refunded: int, requested: int | None
) -> None:
    try:
        amount = plan_refund(
            charge_cents=charge, refunded_cents=refunded, requested_cents=requested, settled=True
        )
    except BadOrderRequest:
        assert requested is not None and requested <= 0 or charge - refunded < (requested or 1)
        return
    assert 0 < amount <= charge - refunded
    assert amount == (charge - refunded if requested is None else requested)


@given(charge=st.integers(1, 10**6), requested=st.none() | st.integers(1, 10**6))
def test_a_void_is_all_or_nothing(charge: int, requested: int | None) -> None:
    if requested not in (None, charge):
        with pytest.raises(PartialVoid):
            plan_void(charge_cents=charge, requested_cents=requested, settled=False)
    else:
        assert plan_void(charge_cents=charge, requested_cents=requested, settled=False) == charge
        with pytest.raises(ChargeSettled):
            plan_void(charge_cents=charge, requested_cents=requested, settled=True)


def test_refund_retries_are_daily_then_stop() -> None:
    times = [next_refund_retry(retries_done=n, now=START) for n in range(REFUND_RETRIES + 2)]
    assert times[:REFUND_RETRIES] == [START + REFUND_RETRY_INTERVAL_S] * REFUND_RETRIES
    assert times[REFUND_RETRIES:] == [None, None] and REFUND_RETRY_INTERVAL_S == DAY


@given(st.lists(st.integers(-5, 10**9), min_size=0, max_size=60))
def test_lines_are_checked_before_anything_is_stored(amounts: list[int]) -> None:
    lines = [OrderLine("TSF16100", "x", 12, a) for a in amounts]
    try:
        total = check_lines(lines)
    except BadOrderRequest:
        assert not lines or len(lines) > 50 or min(amounts) < 0 or sum(amounts) > 10**10
        return
    assert total == sum(amounts) and total >= 0
