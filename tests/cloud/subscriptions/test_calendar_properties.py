"""Properties of the term calendar (subscriptions.rules.calendar) over any UTC moment 1970-2200.

The hand-picked month ends of test_lifecycle.py are examples; these say the
rule for every start second and every term sold (1-60 months, 1-10 years),
checked against an independent count of calendar months, not against
``add_months`` itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cloud.subscriptions.rules.calendar import add_months, month_start, term_end

_FIRST = 0  # 1970-01-01T00:00:00Z
_LAST = int(datetime(2201, 1, 1, tzinfo=UTC).timestamp()) - 1  # 2200-12-31T23:59:59Z
_LEAP_DAY = int(datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp())
_NEW_YEARS_EVE = int(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())

moments = st.integers(min_value=_FIRST, max_value=_LAST)
terms = st.one_of(
    st.integers(min_value=1, max_value=60),  # months
    st.integers(min_value=1, max_value=10).map(lambda years: 12 * years),
)
month_starts = moments.map(month_start)


def _utc(at: int) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _month_index(at: int) -> int:
    """Calendar months since year 0, counted by hand (not through the module under test)."""
    d = _utc(at)
    return d.year * 12 + d.month - 1


@given(at=moments, months=terms)
@example(at=_FIRST, months=1)
@example(at=_LAST, months=120)
@example(at=_LEAP_DAY, months=12)
@example(at=_NEW_YEARS_EVE, months=1)
def test_a_term_ends_at_midnight_utc_on_a_first_strictly_after_its_start(
    at: int, months: int
) -> None:
    end = term_end(at, months)
    d = _utc(end)
    assert (d.day, d.hour, d.minute, d.second, d.microsecond) == (1, 0, 0, 0, 0)
    assert end > at


@given(at=moments, months=terms)
@example(at=_LEAP_DAY, months=12)
@example(at=_NEW_YEARS_EVE, months=60)
def test_a_term_is_the_rest_of_the_month_bought_in_plus_exactly_its_months(
    at: int, months: int
) -> None:
    end = term_end(at, months)
    # the first month after the one bought in, then ``months`` more
    assert _month_index(end) == _month_index(at) + 1 + months
    # and so the last day of the term is the last day of a month, inside it
    last_day = _utc(end - 1)
    assert _month_index(end - 1) == _month_index(at) + months
    assert (last_day.hour, last_day.minute, last_day.second) == (23, 59, 59)
    # never fewer days than the term's months at 28 days, never more than one
    # extra month at 31
    assert months * 28 * 86_400 < end - at <= (months + 1) * 31 * 86_400


@given(a=moments, b=moments, months=terms)
def test_a_later_start_never_ends_earlier(a: int, b: int, months: int) -> None:
    early, late = sorted((a, b))
    assert term_end(early, months) <= term_end(late, months)


@given(at=moments, months=terms)
def test_every_second_of_one_month_buys_the_same_end(at: int, months: int) -> None:
    first = month_start(at)
    assert term_end(first, months) == term_end(at, months)
    assert term_end(add_months(first, 1) - 1, months) == term_end(at, months)


@given(at=moments, first=terms, then=terms)
@example(at=_LEAP_DAY, first=12, then=48)
def test_a_term_of_n_renewed_for_m_ends_as_a_term_of_n_plus_m(
    at: int, first: int, then: int
) -> None:
    assert add_months(term_end(at, first), then) == term_end(at, first + then)


@given(start=month_starts, n=st.integers(-120, 120), m=st.integers(-120, 120))
def test_adding_months_composes_and_undoes(start: int, n: int, m: int) -> None:
    assert add_months(add_months(start, n), m) == add_months(start, n + m)
    assert add_months(add_months(start, n), -n) == start
    assert _month_index(add_months(start, n)) == _month_index(start) + n


@given(at=moments)
def test_adding_months_to_anything_but_a_month_start_is_refused(at: int) -> None:
    if at == month_start(at):
        assert add_months(at, 0) == at
        return
    with pytest.raises(ValueError, match="month starts only"):
        add_months(at, 1)
