"""The re-sign skip rule against its definition: skip iff the device would do the same.

A device allows feature ``f`` at ``t`` iff ``t < exp`` and ``t < until(f)``; a
queued device is skipped exactly when the current token and the new feature
map allow the same features with the same parameters at every second of
``[now, exp)`` (checked here by brute force over a small time range).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cloud.devices.rules import TokenState, resign_reason
from protocol.token import Feature

NOW = 100
FEATURES = ("a", "b", "c")

_maps = st.dictionaries(
    st.sampled_from(FEATURES), st.tuples(st.integers(80, 140), st.integers(0, 1)), max_size=3
)


def _state(exp: int, epoch: int = 0) -> TokenState:
    return TokenState(device_id="d", epoch=epoch, exp=exp)


def _allowed(ent: dict[str, tuple[int, int]], t: int) -> dict[str, int]:
    return {name: p for name, (until, p) in ent.items() if t < until}


@given(current=_maps, new=_maps, exp=st.integers(NOW + 1, 150))
def test_skipped_exactly_when_the_device_would_do_the_same(
    current: dict[str, tuple[int, int]], new: dict[str, tuple[int, int]], exp: int
) -> None:
    reason = resign_reason(
        _state(exp),
        {name: {"until": until, "p": p} for name, (until, p) in current.items()},
        {name: Feature(until, {"p": p}) for name, (until, p) in new.items()},
        now=NOW,
        refresh_before_s=0,
        epoch=0,
    )
    same = all(_allowed(current, t) == _allowed(new, t) for t in range(NOW, exp))
    assert (reason is None) is same, reason


def test_an_expiry_the_token_already_carries_is_skipped() -> None:
    ended = {"remote_access": {"until": NOW, "tier": 1}}
    assert resign_reason(_state(NOW + 50), ended, {}, now=NOW, refresh_before_s=10, epoch=0) is None


def test_always_signed_without_a_token_in_an_old_epoch_or_near_expiry() -> None:
    kw = dict(now=NOW, refresh_before_s=10, epoch=1)
    assert resign_reason(None, {}, {}, **kw) == "no token yet"  # type: ignore[arg-type]
    assert resign_reason(_state(NOW + 50, epoch=0), {}, {}, **kw) is not None  # type: ignore[arg-type]
    assert resign_reason(_state(NOW + 5, epoch=1), {}, {}, **kw) is not None  # type: ignore[arg-type]
    assert resign_reason(_state(NOW + 50, epoch=1), {}, {}, **kw) is None  # type: ignore[arg-type]
