"""Which current tokens need a new issue or a new publish, decided at ``now``.

A token is re-issued when it is close to ``exp``, carries a feature whose
``until`` has passed (so the device sees the service end), or belongs to an
older key-set epoch. A current token that was never confirmed published is
published again once it is older than a grace period (a publish may still be
in flight). The runner in :mod:`cloud.jobs` re-checks under a row lock, so
running the job twice, or in every worker, issues each token once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["RefreshPlan", "TokenState", "plan_refresh", "reissue_reason"]


@dataclass(frozen=True, slots=True)
class TokenState:
    """What the refresh decision needs to know about a device's current token."""

    device_id: str
    epoch: int
    iat: int
    exp: int
    min_until: int | None  # earliest ``until`` among its features, None if no feature
    published: bool


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    """Devices to re-issue for, and devices whose current token to publish again."""

    reissue: tuple[str, ...]
    republish: tuple[str, ...]


def reissue_reason(state: TokenState, *, now: int, refresh_before_s: int, epoch: int) -> str | None:
    """Why this token must be replaced at ``now``, or None if it is still good."""
    if state.epoch != epoch:
        return f"key-set epoch {state.epoch} is not the current {epoch}"
    if state.exp - now < refresh_before_s:
        return f"expires at {state.exp}, within {refresh_before_s}s"
    if state.min_until is not None and state.min_until <= now:
        return f"a feature ended at {state.min_until}"
    return None


def plan_refresh(
    states: Iterable[TokenState],
    *,
    now: int,
    refresh_before_s: int,
    epoch: int,
    republish_after_s: int = 30,
) -> RefreshPlan:
    """Split current tokens into those to re-issue and those to publish again."""
    reissue: list[str] = []
    republish: list[str] = []
    for state in states:
        if reissue_reason(state, now=now, refresh_before_s=refresh_before_s, epoch=epoch):
            reissue.append(state.device_id)
        elif not state.published and now - state.iat >= republish_after_s:
            republish.append(state.device_id)
    return RefreshPlan(reissue=tuple(sorted(reissue)), republish=tuple(sorted(republish)))
