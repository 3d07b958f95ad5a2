"""Subscription lifecycle rules (pure): month ends, notices, charges, retries, expiry, transfer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloud.errors import BadTerm, InvalidTransition
from cloud.subscriptions.rules.catalogue import CATALOGUE, product
from cloud.subscriptions.rules.lifecycle import (
    CHARGE_LEASE_S,
    MAX_RENEWAL_MONTHS,
    RETRY_INTERVAL_S,
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
    Subscription,
    Tick,
    add_months,
    apply,
    due_at,
    month_start,
    purchase,
    status_text,
    term_end,
)

REMOTE = product("TSF16100")
A, B = 101, 202  # two system integrators (user ids)


def ts(y: int, m: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, m, d, h, mi, s, tzinfo=UTC).timestamp())


def bought(at: int, *, months: int = 12, paid: bool = True, who: int = A) -> Subscription:
    return purchase(
        sub_id="s1",
        installation_id="inst",
        product=REMOTE,
        purchaser=who,
        term_months=months,
        now=at,
        paid=paid,
    ).state


# time rule --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bought_at", "end"),
    [
        (ts(2026, 1, 31, 23, 59, 59), ts(2027, 2, 1)),  # the last second of a 31st
        (ts(2026, 1, 1), ts(2027, 2, 1)),  # the first second of the month
        (ts(2026, 2, 28, 12), ts(2027, 3, 1)),  # February, non-leap
        (ts(2028, 2, 29, 8), ts(2029, 3, 1)),  # leap day: no 29 Feb 2029 needed
        (ts(2027, 2, 28), ts(2028, 3, 1)),  # ends right after a leap February
        (ts(2026, 12, 31, 23), ts(2028, 1, 1)),  # year end
        (ts(2026, 4, 30), ts(2027, 5, 1)),  # a 30-day month
    ],
)
def test_purchase_runs_to_the_end_of_the_month_plus_a_year_utc(bought_at: int, end: int) -> None:
    sub = bought(bought_at)
    assert sub.status is Status.ACTIVE and sub.end == end
    assert term_end(bought_at, 12) == end
    # the end is 00:00:00 UTC on the 1st: the last day paid for is the day before
    assert datetime.fromtimestamp(end, UTC).strftime("%d %H:%M:%S") == "01 00:00:00"
    assert (
        status_text(sub)
        == f"active, renews at {datetime.fromtimestamp(end, UTC):%Y-%m-%d}T00:00:00Z"
    )


def test_time_zone_is_utc_not_local() -> None:
    # 31 Jan 23:30 in UTC is already 1 Feb in Berlin: the UTC month counts
    assert term_end(ts(2026, 1, 31, 23, 30), 12) == ts(2027, 2, 1)
    # 1 Feb 00:30 UTC is 31 Jan in New York: still February
    assert term_end(ts(2026, 2, 1, 0, 30), 12) == ts(2027, 3, 1)


def test_month_arithmetic_on_month_starts_only() -> None:
    assert add_months(ts(2026, 11, 1), 3) == ts(2027, 2, 1)
    assert add_months(ts(2026, 3, 1), -2) == ts(2026, 1, 1)
    assert add_months(ts(2026, 1, 1), -1) == ts(2025, 12, 1)
    assert month_start(ts(2028, 2, 29, 23, 59, 59)) == ts(2028, 2, 1)
    with pytest.raises(ValueError):
        add_months(ts(2026, 1, 31), 1)


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_product_purchase_for_each_offered_term(code: str) -> None:
    item = CATALOGUE[code]
    for months in item.terms:
        t = purchase(
            sub_id="x",
            installation_id="i",
            product=item,
            purchaser=A,
            term_months=months,
            now=ts(2026, 5, 17),
            paid=True,
        )
        assert t.state.end == add_months(ts(2026, 6, 1), months)
        grant = GrantService(item.feature, item.params, t.state.end)
        if months > 1:
            assert t.effects == (grant,)
        else:  # a one-month term (office users, by the month) is inside the notice period
            assert t.effects[0] == grant
            assert [e.kind for e in t.effects[1:]] == ["renewal_notice"]  # type: ignore[union-attr]


def test_unoffered_term_and_past_or_far_start_are_refused() -> None:
    now = ts(2026, 5, 17, 12)
    with pytest.raises(BadTerm, match="12 months"):
        purchase(
            sub_id="x",
            installation_id="i",
            product=REMOTE,
            purchaser=A,
            term_months=7,
            now=now,
            paid=True,
        )
    with pytest.raises(BadTerm, match="in the past"):
        purchase(
            sub_id="x",
            installation_id="i",
            product=REMOTE,
            purchaser=A,
            term_months=12,
            now=now,
            paid=True,
            start=ts(2026, 5, 16, 23),
        )
    with pytest.raises(BadTerm, match="year ahead"):
        purchase(
            sub_id="x",
            installation_id="i",
            product=REMOTE,
            purchaser=A,
            term_months=12,
            now=now,
            paid=True,
            start=ts(2027, 6, 1),
        )
    # earlier today is today: accepted, starting now
    t = purchase(
        sub_id="x",
        installation_id="i",
        product=REMOTE,
        purchaser=A,
        term_months=12,
        now=now,
        paid=True,
        start=ts(2026, 5, 17),
    )
    assert t.state.status is Status.ACTIVE and t.state.start == now


def test_future_start_is_not_yet_activated_until_its_day() -> None:
    now = ts(2026, 5, 17)
    t = purchase(
        sub_id="x",
        installation_id="i",
        product=REMOTE,
        purchaser=A,
        term_months=12,
        now=now,
        paid=True,
        start=ts(2026, 7, 3),
    )
    assert status_text(t.state) == "not yet activated" and t.effects == ()
    assert due_at(t.state) == ts(2026, 7, 3)
    assert apply(t.state, Tick(), now=ts(2026, 7, 2)).effects == ()
    on = apply(t.state, Tick(), now=ts(2026, 7, 3))
    assert on.state.status is Status.ACTIVE and on.state.end == ts(2027, 8, 1)
    assert isinstance(on.effects[0], GrantService)


def test_card_purchase_takes_effect_only_after_checkout() -> None:
    sub = bought(ts(2026, 1, 10), paid=False)
    assert sub.status is Status.PENDING and sub.awaiting_payment
    assert due_at(sub) is None
    assert apply(sub, Tick(), now=ts(2026, 3, 1)).effects == ()  # time alone does nothing
    paid = apply(sub, Activate(), now=ts(2026, 2, 3))  # paid in February: runs from then
    assert paid.state.status is Status.ACTIVE and paid.state.end == ts(2027, 3, 1)
    assert paid.effects == (GrantService("remote_access", {}, ts(2027, 3, 1)),)
    twice = apply(paid.state, Activate(), now=ts(2026, 2, 4))  # paid twice: refunded
    assert twice.state == paid.state and [type(e) for e in twice.effects] == [RefundPayment]


# renewal cycle ------------------------------------------------------------------
def _run(sub: Subscription, *times: int) -> tuple[Subscription, list]:
    effects = []
    for t in times:
        step = apply(sub, Tick(), now=t)
        sub = step.state
        effects += step.effects
    return sub, effects


def test_notice_two_months_before_then_charge_one_month_before_then_renewal() -> None:
    sub = bought(ts(2026, 1, 31))  # ends 2027-02-01
    assert due_at(sub) == ts(2026, 12, 1)
    sub, effects = _run(sub, ts(2026, 11, 30, 23, 59, 59))
    assert effects == []
    sub, effects = _run(sub, ts(2026, 12, 1), ts(2026, 12, 2))
    assert [e.kind for e in effects] == ["renewal_notice"]  # once, not every tick
    assert (
        effects[0].to_user == A and effects[0].dedupe_key == f"renewal_notice:s1:{ts(2027, 2, 1)}"
    )
    sub, effects = _run(sub, ts(2026, 12, 31, 23, 59, 59))
    assert effects == []
    sub, effects = _run(sub, ts(2027, 1, 1), ts(2027, 1, 1, 0, 1))
    [charge] = effects
    assert isinstance(charge, Charge)
    assert (charge.buyer, charge.months, charge.amount_cents) == (A, 12, 6000)
    assert charge.idempotency_key == f"renewal:s1:{ts(2027, 2, 1)}:0:0"
    renewed = apply(sub, ChargeSucceeded(end=charge.end, attempt=0), now=ts(2027, 1, 1, 0, 2))
    assert renewed.state.end == ts(2028, 2, 1)
    assert renewed.effects == (GrantService("remote_access", {}, ts(2028, 2, 1)),)
    # a second payment for the same end is not a further term: it is refunded
    again = apply(renewed.state, ChargeSucceeded(end=charge.end, attempt=0), now=ts(2027, 1, 2))
    assert again.state == renewed.state
    assert [type(e) for e in again.effects] == [RefundPayment]


def test_declined_charge_notifies_retries_every_3_days_then_expires_and_late_payment_restores() -> (
    None
):
    sub = bought(ts(2026, 1, 31))
    end = ts(2027, 2, 1)
    sub, _ = _run(sub, ts(2026, 12, 1))
    attempts, notices = 0, 0
    now = ts(2027, 1, 1)
    while True:
        step = apply(sub, Tick(), now=now)
        sub = step.state
        for effect in step.effects:
            if isinstance(effect, Charge):
                attempts += 1
                declined = apply(sub, ChargeFailed(end=end, attempt=effect.attempt), now=now)
                sub = declined.state
                assert [n.kind for n in declined.effects] == ["charge_failed"]
                notices += 1
        if sub.status is Status.EXPIRED:
            break
        now += 86_400
    # charges on Jan 1, 4, 7, ... 31: every 3 days while before the end
    assert attempts == 11 and notices == 11
    assert now == end and step.effects[0] == EndService("remote_access")
    assert status_text(sub) == "expired"
    late = apply(sub, ChargeSucceeded(end=end, attempt=10), now=ts(2027, 2, 10))
    assert late.state.status is Status.ACTIVE and late.state.end == ts(2028, 2, 1)
    assert late.effects == (GrantService("remote_access", {}, ts(2028, 2, 1)),)


def test_an_unanswered_charge_is_resent_with_the_same_key_after_the_lease_only() -> None:
    sub, effects = _run(bought(ts(2026, 1, 31)), ts(2027, 1, 1))
    effects = [e for e in effects if isinstance(e, Charge)]
    assert apply(sub, Tick(), now=ts(2027, 1, 1) + CHARGE_LEASE_S - 1).effects == ()
    resent = apply(sub, Tick(), now=ts(2027, 1, 1) + CHARGE_LEASE_S)
    assert [e.idempotency_key for e in resent.effects] == [effects[0].idempotency_key]


def test_renewal_by_months_and_the_60_month_cap() -> None:
    sub = bought(ts(2026, 1, 31))
    t = apply(sub, Renew(months=MAX_RENEWAL_MONTHS, by=A), now=ts(2026, 3, 1))
    assert t.state.end == add_months(ts(2027, 2, 1), 60)
    for months in (0, -1, MAX_RENEWAL_MONTHS + 1, 1000):
        with pytest.raises(BadTerm, match="1 to 60"):
            apply(sub, Renew(months=months, by=A), now=ts(2026, 3, 1))


def test_late_payment_that_ends_in_the_past_is_refused() -> None:
    sub, _ = _run(bought(ts(2026, 1, 31)), ts(2027, 2, 1))
    assert sub.status is Status.EXPIRED
    with pytest.raises(BadTerm, match="has passed"):
        apply(sub, Renew(months=1, by=A), now=ts(2027, 3, 2))
    back = apply(sub, Renew(months=2, by=A), now=ts(2027, 3, 2))
    assert back.state.status is Status.ACTIVE and back.state.end == ts(2027, 4, 1)


def test_deactivate_runs_to_the_end_without_notice_or_charge() -> None:
    sub = apply(bought(ts(2026, 1, 31)), Deactivate(by=A), now=ts(2026, 6, 1)).state
    assert status_text(sub) == "active, expires at 2027-02-01T00:00:00Z"
    sub, effects = _run(sub, ts(2026, 12, 1), ts(2027, 1, 1), ts(2027, 1, 31, 23, 59, 59))
    assert effects == [] and sub.status is Status.ACTIVE
    sub, effects = _run(sub, ts(2027, 2, 1))
    assert sub.status is Status.EXPIRED and EndService("remote_access") in effects
    with pytest.raises(InvalidTransition):
        apply(sub, Reactivate(by=B), now=ts(2027, 2, 2))


def test_manual_worked_example_purchaser_moves_from_si_a_to_si_b() -> None:
    sub = bought(ts(2026, 3, 10), who=A)  # SI A buys: ends 2027-04-01
    sub = apply(sub, Deactivate(by=A), now=ts(2026, 5, 1)).state  # A deactivates
    with pytest.raises(InvalidTransition):
        apply(apply(sub, Reactivate(by=A), now=ts(2026, 5, 2)).state, Reactivate(by=B), now=0)
    t = apply(sub, Reactivate(by=B), now=ts(2026, 6, 1))  # SI B reactivates
    assert t.state.purchaser == B and t.due_now_cents == 0 and t.effects == ()
    assert t.state.end == sub.end  # nothing bought now
    sub, effects = _run(t.state, ts(2027, 2, 1), ts(2027, 3, 1))
    assert [
        (type(e).__name__, e.to_user if isinstance(e, Notify) else e.buyer) for e in effects
    ] == [
        ("Notify", B),
        ("Charge", B),
    ]


def test_reactivate_by_the_purchaser_while_renewing_is_a_no_op() -> None:
    sub = bought(ts(2026, 3, 10))
    assert apply(sub, Reactivate(by=A), now=ts(2026, 4, 1)).state == sub


def test_retries_stop_at_the_end_and_after_deactivation() -> None:
    sub, effects = _run(bought(ts(2026, 1, 31)), ts(2027, 1, 30))
    [charge] = [e for e in effects if isinstance(e, Charge)]
    failed = apply(sub, ChargeFailed(end=charge.end, attempt=0), now=ts(2027, 1, 30))
    assert failed.state.next_retry_at is None  # Jan 30 + 3 days is after the end
    assert "No further attempt" in failed.effects[0].body
    sub, effects = _run(bought(ts(2026, 1, 31)), ts(2027, 1, 1))
    failed = apply(sub, ChargeFailed(end=ts(2027, 2, 1), attempt=0), now=ts(2027, 1, 1)).state
    assert failed.next_retry_at == ts(2027, 1, 1) + RETRY_INTERVAL_S
    off = apply(failed, Deactivate(by=A), now=ts(2027, 1, 2)).state
    assert off.next_retry_at is None and due_at(off) == ts(2027, 2, 1)


def test_a_charge_abandoned_by_deactivation_never_shares_its_key_with_the_next_purchaser() -> None:
    """Found by the state machine: A's charge is in flight, A deactivates, B reactivates."""
    sub, effects = _run(bought(ts(2026, 1, 31), who=A), ts(2027, 1, 1))
    [to_a] = [e for e in effects if isinstance(e, Charge)]
    sub = apply(sub, Deactivate(by=A), now=ts(2027, 1, 2)).state
    t = apply(sub, Reactivate(by=B), now=ts(2027, 1, 3))
    assert t.due_now_cents == 0 and t.effects == ()
    [to_b] = apply(t.state, Tick(), now=ts(2027, 1, 3)).effects
    assert isinstance(to_b, Charge) and to_b.buyer == B
    assert to_b.idempotency_key != to_a.idempotency_key and to_b.attempt == 1
    # A's charge, answered late, still pays the renewal (money received is never lost)
    late = apply(t.state, ChargeSucceeded(end=to_a.end, attempt=0), now=ts(2027, 1, 4))
    assert late.state.end == ts(2028, 2, 1)
    assert late.effects == (GrantService("remote_access", {}, ts(2028, 2, 1)),)
    # B's charge succeeds too: the same term paid twice, so B's payment is refunded
    second = apply(late.state, ChargeSucceeded(end=to_b.end, attempt=1), now=ts(2027, 1, 5))
    assert second.state == late.state
    [refund] = second.effects
    assert isinstance(refund, RefundPayment) and "paid already" in refund.reason


# money: every payment is applied or refunded -------------------------------------
def test_a_manual_renewal_while_the_automatic_charge_is_in_flight_refunds_the_charge() -> None:
    sub, effects = _run(bought(ts(2026, 1, 31)), ts(2027, 1, 1))
    [charge] = [e for e in effects if isinstance(e, Charge)]
    manual = apply(sub, RenewalPaid(end=sub.end, months=12), now=ts(2027, 1, 2))
    assert manual.state.end == ts(2028, 2, 1) and manual.state.charging is None
    late = apply(manual.state, ChargeSucceeded(end=charge.end, attempt=0), now=ts(2027, 1, 3))
    assert late.state == manual.state and [type(e) for e in late.effects] == [RefundPayment]
    # the other order: the automatic charge first, the manual payment refunded
    auto = apply(sub, ChargeSucceeded(end=charge.end, attempt=0), now=ts(2027, 1, 2))
    extra = apply(auto.state, RenewalPaid(end=charge.end, months=12), now=ts(2027, 1, 3))
    assert extra.state == auto.state and [type(e) for e in extra.effects] == [RefundPayment]


def test_a_charge_reconciled_after_expiry_renews_or_is_refunded_when_its_term_is_over() -> None:
    sub, effects = _run(bought(ts(2026, 1, 31), months=12), ts(2027, 1, 1))
    [charge] = [e for e in effects if isinstance(e, Charge)]
    expired, _ = _run(sub, ts(2027, 2, 1))  # the answer was lost; expiry clears `charging`
    assert expired.status is Status.EXPIRED and expired.charging is None
    on = apply(expired, ChargeSucceeded(end=charge.end, attempt=0), now=ts(2027, 2, 3))
    assert on.state.status is Status.ACTIVE and on.state.end == ts(2028, 2, 1)
    over = apply(expired, ChargeSucceeded(end=charge.end, attempt=0), now=ts(2028, 2, 1))
    assert over.state == expired and [type(e) for e in over.effects] == [RefundPayment]


def test_a_cancelled_checkout_ends_the_subscription_and_a_late_payment_is_refunded() -> None:
    sub = bought(ts(2026, 1, 10), paid=False)
    gone = apply(sub, Abandon(), now=ts(2026, 1, 11))
    assert gone.state.status is Status.EXPIRED and status_text(gone.state) == "cancelled"
    assert gone.effects == () and due_at(gone.state) is None
    for event in (Renew(months=12, by=A), Reactivate(by=A)):
        with pytest.raises(InvalidTransition, match="purchase it again"):
            apply(gone.state, event, now=ts(2026, 1, 12))
    paid = apply(gone.state, Activate(), now=ts(2026, 1, 12))  # reconciled after the cancel
    assert paid.state == gone.state and [type(e) for e in paid.effects] == [RefundPayment]
    assert apply(bought(ts(2026, 1, 10)), Abandon(), now=ts(2026, 1, 11)).effects == ()


def test_a_reversed_purchase_ends_the_service() -> None:
    sub = bought(ts(2026, 1, 31))
    t = apply(sub, PaymentReversed(purchase=True), now=ts(2026, 2, 10))
    assert t.state.status is Status.EXPIRED and status_text(t.state) == "cancelled"
    assert t.effects[0] == EndService("remote_access")
    assert [e.kind for e in t.effects if isinstance(e, Notify)] == ["payment_reversed"]
    assert apply(t.state, PaymentReversed(purchase=True), now=ts(2026, 2, 11)).effects == ()
    with pytest.raises(InvalidTransition):
        apply(t.state, Renew(months=12, by=A), now=ts(2026, 2, 11))


def test_a_reversed_renewal_moves_the_end_back_and_stops_renewing() -> None:
    sub, effects = _run(bought(ts(2026, 1, 31)), ts(2027, 1, 1))
    [charge] = [e for e in effects if isinstance(e, Charge)]
    paid = apply(sub, ChargeSucceeded(end=charge.end, attempt=0), now=ts(2027, 1, 1)).state
    back = apply(paid, PaymentReversed(False, charge.end, 12, 0), now=ts(2027, 1, 5))
    assert back.state.end == charge.end and back.state.status is Status.ACTIVE
    assert not back.state.auto_renew and back.state.attempts == 1  # the key is never reused
    assert back.effects[0] == GrantService("remote_access", {}, charge.end)
    assert apply(back.state, Tick(), now=ts(2027, 1, 6)).effects == ()  # not charged again
    on = apply(back.state, Reactivate(by=A), now=ts(2027, 1, 6)).state
    [again] = apply(on, Tick(), now=ts(2027, 1, 6)).effects
    assert isinstance(again, Charge) and again.attempt == 1
    # reversed after the old end has passed: expired at once
    late = apply(paid, PaymentReversed(False, charge.end, 12, 0), now=ts(2027, 3, 1))
    assert late.state.status is Status.EXPIRED and late.effects[0] == EndService("remote_access")
