"""Which current tokens need a new issue, decided at ``now``.

A token is re-issued when it is close to ``exp`` or belongs to an older
key-set epoch. A feature whose ``until`` has passed is no reason: the device
already refuses it by its own clock (``now < until``), and the next refresh
before ``exp`` drops it from the token (see :func:`resign_reason`). A token
never confirmed published is not decided here: it stays in the outbox, which
the refresh job publishes again. The runner in
:mod:`cloud.jobs` re-checks under a row lock, so running the job twice, or in
every worker, issues each token once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from protocol.token import Feature

__all__ = ["RefreshPlan", "TokenState", "plan_refresh", "reissue_reason", "resign_reason"]


@dataclass(frozen=True, slots=True)
class TokenState:
    """What the refresh decision needs to know about a device's current token."""

    device_id: str
    epoch: int
    exp: int


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    """Devices to re-issue for."""

    reissue: tuple[str, ...]


def reissue_reason(state: TokenState, *, now: int, refresh_before_s: int, epoch: int) -> str | None:
    """Why this token must be replaced at ``now``, or None if it is still good."""
    if state.epoch != epoch:
        return f"key-set epoch {state.epoch} is not the current {epoch}"
    if state.exp - now < refresh_before_s:
        return f"expires at {state.exp}, within {refresh_before_s}s"
    return None


def resign_reason(
    state: TokenState | None,
    current_ent: Mapping[str, Mapping[str, Any]],
    new_ent: Mapping[str, Feature],
    *,
    now: int,
    refresh_before_s: int,
    epoch: int,
) -> str | None:
    """Why a queued device needs a newly signed token at ``now``, or None: skip it.

    A device allows feature ``f`` at time ``t`` iff its token is unexpired
    (``t < exp``) and ``t < until(f)``. So two feature maps behave the same on
    the device over ``[now, exp)`` when, for every feature, ``until`` clipped
    to that window is the same (a feature absent, or lapsed, clips to ``now``)
    and a feature still live keeps its parameters. When the new map (from the
    grants as they are at ``now``) behaves like the current token's, signing
    changes nothing the device does before its token expires: the token's own
    ``until`` already stops an expired service — the common case of an expiry
    sweep, where the ended grant's ``until`` is the term end the token
    carries — and a renewal beyond ``exp`` reaches the device with the
    refresh before ``exp``. The signature is skipped. A device with no
    token, a token of an older key-set epoch or one due for refresh
    (:func:`reissue_reason`) is always signed.

    Args:
        state: the current token, None if the device has none.
        current_ent: the current token's ``ent`` claim (JSON form: params and ``until``).
        new_ent: :func:`~cloud.devices.rules.entitlements` of the grants at ``now``.
    """
    if state is None:
        return "no token yet"
    due = reissue_reason(state, now=now, refresh_before_s=refresh_before_s, epoch=epoch)
    if due is not None:
        return due

    def clipped(until: int | None) -> int:
        return now if until is None else min(max(until, now), state.exp)

    for name in sorted(set(current_ent) | set(new_ent)):
        old = current_ent.get(name)
        old_until = None if old is None else int(old["until"])
        new = new_ent.get(name)
        old_end, new_end = clipped(old_until), clipped(None if new is None else new.until)
        if old_end != new_end:
            return f"{name} is allowed until {new_end}, not {old_end}, before the token expires"
        if new_end > now and old is not None and new is not None:
            old_params = {k: v for k, v in old.items() if k != "until"}
            if old_params != dict(new.params):
                return f"the parameters of {name} changed"
    return None


def plan_refresh(
    states: Iterable[TokenState],
    *,
    now: int,
    refresh_before_s: int,
    epoch: int,
) -> RefreshPlan:
    """The current tokens to re-issue: near expiry or of an older key-set epoch."""
    reissue = [
        state.device_id
        for state in states
        if reissue_reason(state, now=now, refresh_before_s=refresh_before_s, epoch=epoch)
    ]
    return RefreshPlan(reissue=tuple(sorted(reissue)))
