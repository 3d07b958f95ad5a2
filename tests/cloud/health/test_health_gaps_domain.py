"""The pure gap finder: what to ask a device to send again."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.health.rules.gaps import Asked, SeqRange, Stored, find_gaps

NOW = 10_000


def _stored(seqs, *, at=NOW - 100, dropped=None):
    dropped = dropped or {}
    return [Stored(seq=s, received_at=at, dropped=dropped.get(s, 0)) for s in seqs]


def _find(stored, **kw):
    return find_gaps(stored, now=NOW, grace_s=10, backoff_s=60, **kw)


def test_inner_gaps_are_found_lowest_first():
    assert _find(_stored([1, 2, 5, 6, 9])) == [SeqRange(3, 4), SeqRange(7, 8)]
    assert _find(_stored([4, 5, 6])) == []  # nothing below the window's first seq is asked


def test_a_gap_inside_the_grace_period_is_not_asked_yet():
    stored = [*_stored([1, 2]), Stored(seq=5, received_at=NOW - 5)]
    assert _find(stored) == []
    assert find_gaps(stored, now=NOW + 5, grace_s=10, backoff_s=60) == [SeqRange(3, 4)]


def test_a_gap_declared_whole_is_not_asked_a_gap_declared_in_part_is_asked_whole():
    # 3..6 missing, reports 8 and 9 declare three drops: which three is not known (dropped
    # below reports lost after a reconnect, or above reports lost before the outage)
    stored = _stored([1, 2, 7, 8, 9], dropped={8: 1, 9: 2})
    assert _find(stored) == [SeqRange(3, 6)]
    assert _find(_stored([1, 2, 7], dropped={7: 4})) == []
    # drops are counted against the nearest gaps below first: 5 covers 4, 3 is asked
    assert _find(_stored([1, 3, 5], dropped={5: 1})) == [SeqRange(2, 2)]


def test_asked_within_the_backoff_and_unrecoverable_are_not_asked_again():
    stored = _stored([1, 10])
    assert _find(stored, asked=[Asked(2, 5, NOW - 30)]) == [SeqRange(6, 9)]
    assert _find(stored, asked=[Asked(2, 5, NOW - 61)]) == [SeqRange(2, 9)]
    assert _find(stored, unrecoverable=[(2, 3), (8, 8)]) == [SeqRange(4, 7), SeqRange(9, 9)]


def test_long_gaps_are_split_and_bounded():
    got = find_gaps(_stored([1, 2502]), now=NOW, grace_s=0, backoff_s=0, max_range=1000)
    assert got == [SeqRange(2, 1001), SeqRange(1002, 2001), SeqRange(2002, 2501)]
    assert len(find_gaps(_stored([1, 10**9]), now=NOW, grace_s=0, backoff_s=0)) == 10


@given(
    present=st.sets(st.integers(1, 200), min_size=1, max_size=120),
    unrecoverable=st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)), max_size=5),
    asked=st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20), st.booleans()), max_size=5),
)
@settings(max_examples=200)
def test_asks_exactly_the_missing_seqs_not_excluded(present, unrecoverable, asked):
    lost = [(a, a + n) for a, n in unrecoverable]
    asks = [Asked(a, a + n, NOW - (1 if recent else 1000)) for a, n, recent in asked]
    got = find_gaps(
        _stored(present),
        now=NOW,
        grace_s=10,
        backoff_s=60,
        asked=asks,
        unrecoverable=lost,
        max_range=7,
        max_ranges=10_000,
    )
    asked_seqs = [s for r in got for s in range(r.first, r.last + 1)]
    assert asked_seqs == sorted(set(asked_seqs))  # in order, never twice
    assert all(1 <= len(r) <= 7 for r in got)
    excluded = {s for a, b in lost for s in range(a, b + 1)}
    excluded |= {s for a in asks if a.asked_at > NOW - 60 for s in range(a.first, a.last + 1)}
    missing = set(range(min(present), max(present) + 1)) - present
    assert set(asked_seqs) == missing - excluded


@given(
    st.sets(st.integers(1, 100), min_size=2),
    st.dictionaries(st.integers(1, 100), st.integers(0, 5)),
)
def test_declared_drops_only_spare_gaps_they_cover_whole(present, drops):
    dropped = {s: d for s, d in drops.items() if s in present}
    got = _find(_stored(present, dropped=dropped), max_ranges=10_000)
    missing = max(present) - min(present) + 1 - len(present)
    asked = sum(len(r) for r in got)
    assert max(0, missing - sum(dropped.values())) <= asked <= missing
    # every asked range is a whole gap: both its neighbours are stored
    assert all(r.first - 1 in present and r.last + 1 in present for r in got)
