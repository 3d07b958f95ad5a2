"""The pure rules of plans and purchase preconditions: proration to the day and its
rounding, plan-change eligibility, scopes, the per-user limit, semantic version
comparison and the connected window; and which grants one device's token carries."""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cloud.devices.rules import Grant, for_device
from cloud.errors import InvalidRequest, SubscriptionExists
from cloud.subscriptions.errors import (
    FirmwareTooOld,
    NotConnected,
    PlanChangeRefused,
    UserLimitReached,
)
from cloud.subscriptions.rules.catalogue import product
from cloud.subscriptions.rules.lifecycle import Status, purchase
from cloud.subscriptions.rules.plans import (
    check_user_limit,
    check_users_to_add,
    plan_change_quote,
    prorate,
    scope_key,
)
from cloud.subscriptions.rules.preconditions import (
    DeviceReport,
    check_preconditions,
    parse_version,
)

DAY = 86_400
PLUS = product("TSF16110")  # needs Prosoft 3.7.3
CAMERA = product("VR-720P-07D")


def ts(y: int, m: int, d: int, h: int = 0) -> int:
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp())


def _active(code: str = "VR-720P-07D", *, at: int = ts(2026, 1, 31, 12)):
    return purchase(
        sub_id="s",
        installation_id="i",
        product=product(code),
        purchaser=1,
        term_months=12,
        now=at,
        paid=True,
    ).state


# proration ---------------------------------------------------------------------------
def test_day_100_from_720p_7d_to_4k_30d_is_9584_cents() -> None:
    sub = _active()
    q = plan_change_quote(sub, product("VR-4K-30D"), now=ts(2026, 5, 12, 9))
    assert (q.days_left, q.difference_cents, q.direction) == (265, 9584, "upgrade")
    back = plan_change_quote(
        replace(sub, product=product("VR-4K-30D")), CAMERA, now=ts(2026, 5, 12, 9)
    )
    assert back.difference_cents == -9584  # the same cents back, rounded the same way


@given(st.integers(-(10**7), 10**7), st.integers(0, 3660))
@example(13_200, 265)  # 9583.56 -> 9584
@example(1, 182)  # 0.4986 -> 0
@example(1, 183)  # 0.5013 -> 1
@example(-73, 5)  # -1.0 exactly
@example(-365, 1)  # -1 exactly, no rounding
def test_prorate_rounds_half_away_from_zero(yearly: int, days: int) -> None:
    exact = Fraction(yearly * days, 365)
    got = prorate(yearly, days)
    assert abs(got - exact) <= Fraction(1, 2)
    if abs(got - exact) == Fraction(1, 2):
        assert abs(got) > abs(exact)
    assert prorate(-yearly, days) == -got


def test_a_change_counts_today_as_left() -> None:
    sub = _active()
    late = plan_change_quote(sub, product("VR-4K-30D"), now=ts(2026, 5, 12, 23))
    early = plan_change_quote(sub, product("VR-4K-30D"), now=ts(2026, 5, 12, 0))
    assert late.days_left == early.days_left == 265


@pytest.mark.parametrize(
    ("to", "change", "match"),
    [
        ("VR-720P-07D", {}, "already"),
        ("TSF16100", {}, "another service"),
        ("VR-4K-30D", {"status": Status.EXPIRED}, "only an active"),
        ("VR-4K-30D", {"awaiting_payment": True}, "only an active"),
    ],
)
def test_plan_changes_refused(to: str, change: dict, match: str) -> None:
    sub = replace(_active(), **change)
    with pytest.raises(PlanChangeRefused, match=match):
        plan_change_quote(sub, product(to), now=ts(2026, 5, 12))


def test_no_change_on_the_last_day() -> None:
    sub = _active()
    with pytest.raises(PlanChangeRefused, match="ends today"):
        plan_change_quote(sub, product("VR-4K-30D"), now=sub.end)


# scopes and the per-user limit ------------------------------------------------------
def test_scopes() -> None:
    assert scope_key(CAMERA, device_id="cam-1", device_kind="camera", user_ref=None) == (
        "device:cam-1"
    )
    assert scope_key(CAMERA, device_id=None, device_kind=None, user_ref=None) == ""
    office = product("AKV-OFFICE-USER")
    assert scope_key(office, device_id=None, device_kind=None, user_ref="Sales") == "user:Sales"
    for item, kwargs, match in (
        (CAMERA, {"device_id": "gw-1", "device_kind": "gateway", "user_ref": None}, "camera"),
        (PLUS, {"device_id": "cam-1", "device_kind": "camera", "user_ref": None}, "whole"),
        (office, {"device_id": None, "device_kind": None, "user_ref": None}, "per user"),
        (PLUS, {"device_id": None, "device_kind": None, "user_ref": "x"}, "not bought per"),
        (office, {"device_id": None, "device_kind": None, "user_ref": "a\nb"}, "printable"),
        (office, {"device_id": "c", "device_kind": "camera", "user_ref": "x"}, "not both"),
    ):
        with pytest.raises(InvalidRequest, match=match):
            scope_key(item, **kwargs)


def test_at_most_60_office_users() -> None:
    office = product("AKV-OFFICE-USER")
    check_user_limit(office, installation_id="i", users=59)
    with pytest.raises(UserLimitReached, match="maximum is 60"):
        check_user_limit(office, installation_id="i", users=60)
    check_user_limit(CAMERA, installation_id="i", users=10_000)  # no limit


def test_adding_several_office_users_fits_under_60_or_none_is_added() -> None:
    office = product("AKV-OFFICE-USER")
    check_user_limit(office, installation_id="i", users=57, adding=3)
    with pytest.raises(UserLimitReached, match="add at most 3 more, not 4"):
        check_user_limit(office, installation_id="i", users=57, adding=4)
    with pytest.raises(UserLimitReached, match="add at most 0 more, not 2"):
        check_user_limit(office, installation_id="i", users=60, adding=2)


def test_users_to_add_are_refused_together() -> None:
    office = product("AKV-OFFICE-USER")
    live = {"user:Sales"}
    add = functools.partial(check_users_to_add, office, installation_id="i", live=live)
    add(user_refs=["Hr", "Reception"])  # accepted: no error (the scopes: scope_key's test)
    add(user_refs=["Hr"], live={"Hr", "user:Hr-2"})  # a live scope is the user's, prefixed
    for refs, error, match in (
        ([], InvalidRequest, "at least one"),
        (["Hr", "Hr"], InvalidRequest, "Hr is named more than once"),
        (["Hr", "a\nb"], InvalidRequest, "printable"),
        (["Hr", "Sales"], SubscriptionExists, "Sales has Intercom office user already"),
    ):
        with pytest.raises(error, match=match):
            add(user_refs=refs)
    check_users_to_add(  # up to the maximum
        office,
        installation_id="i",
        user_refs=["Hr", "Reception"],
        live={f"user:u{i}" for i in range(58)},
    )
    with pytest.raises(UserLimitReached, match="add at most 1 more, not 2"):
        check_users_to_add(
            office,
            installation_id="i",
            user_refs=["Hr", "Reception"],
            live={f"user:u{i}" for i in range(59)},
        )
    with pytest.raises(InvalidRequest, match="not bought per user"):
        check_users_to_add(CAMERA, installation_id="i", user_refs=["Hr"], live=set())


# preconditions ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("3.7.3", (3, 7, 3, 0)),
        ("Prosoft 3.8", (3, 8, 0, 0)),
        ("v3.7.10-rc1", (3, 7, 10, 0)),
        ("4", (4, 0, 0, 0)),
        ("no digits", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert parse_version(text) == version


def _gw(fw: str | None, seen: int | None, kind: str = "gateway") -> DeviceReport:
    return DeviceReport(device_id=f"{kind}-{fw}", kind=kind, last_seen=seen, firmware=fw)


def test_preconditions() -> None:
    now, window = 10 * DAY, DAY

    def check(*reports: DeviceReport) -> None:
        check_preconditions(PLUS, installation_id="i", reports=reports, now=now, window_s=window)

    check(_gw("3.7.3", now))  # exactly the minimum
    check(_gw("3.7.10", now - window))  # a version above, at the edge of the window
    check(_gw("3.6.0", now), _gw("3.9.1", now))  # the newest controller counts
    with pytest.raises(NotConnected, match="not connected"):
        check()
    with pytest.raises(NotConnected):
        check(_gw("3.9.0", now - window - 1))
    with pytest.raises(FirmwareTooOld, match=r"3\.7\.3 or higher.*3\.7\.2"):
        check(_gw("3.7.2", now))
    with pytest.raises(FirmwareTooOld, match="no firmware version"):
        check(_gw(None, now), _gw("9.9.9", now, kind="camera"))  # a camera is no controller
    # a product without a minimum needs the installation connected, by any device...
    for silent in ((), (_gw(None, None),), (_gw("9.0.0", now - window - 1),)):
        with pytest.raises(NotConnected, match="not connected"):
            check_preconditions(
                CAMERA, installation_id="i", reports=silent, now=now, window_s=window
            )
    check_preconditions(
        CAMERA,
        installation_id="i",
        reports=(_gw(None, now, kind="camera"),),
        now=now,
        window_s=window,
    )
    # ...and whatever firmware its controller runs
    check_preconditions(
        CAMERA, installation_id="i", reports=(_gw("0.1", now - window),), now=now, window_s=window
    )


# one device's token -------------------------------------------------------------------
def test_for_device_puts_a_device_plan_in_that_device_only() -> None:
    now = 100
    wide = Grant("remote_access", 1_000)
    everyone = Grant("video_retention", 1_000, {"days": 7})
    mine = Grant("video_retention", 1_000, {"days": 30}, scope="device:cam-a")
    lapsed = Grant("video_retention", 50, {"days": 90}, scope="device:cam-b")
    users = [
        Grant("office_user", 1_000, scope="user:u1"),
        Grant("office_user", 2_000, scope="user:u2"),
        Grant("office_user", 10, scope="user:old"),
    ]
    grants = [wide, everyone, mine, lapsed, *users]
    by_feature = {g.feature: g for g in for_device(grants, "cam-a", now=now)}
    assert by_feature["video_retention"].params == {"days": 30}
    assert by_feature["remote_access"] == wide
    assert by_feature["office_user"].params == {"users": {"u1": 1_000, "u2": 2_000}}
    assert by_feature["office_user"].until == 2_000
    # cam-b's own plan lapsed: the installation-wide one applies again
    assert {g.feature: g for g in for_device(grants, "cam-b", now=now)}["video_retention"] == (
        everyone
    )
    assert {g.feature: g for g in for_device([mine], "gw-1", now=now)} == {}
