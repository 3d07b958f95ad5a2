"""Pure rules: entitlement maps, token versions and epochs, the controller limit, refresh."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.devices.rules import (
    MAX_DEVICES,
    Grant,
    GrantStatus,
    LastToken,
    TokenState,
    check_capacity,
    check_grant,
    entitlements,
    next_claims,
    next_version,
    plan_refresh,
)
from cloud.errors import InstallationFull, InvalidGrant
from protocol import cbor
from protocol.token import Feature, parse_claims

NOW = 1_800_000_000


def _claims(last: LastToken | None, *, epoch: int = 0, grants: list[Grant] | None = None):
    return next_claims(
        device_id="gw-1",
        installation_id="inst_a",
        grants=grants or [],
        last=last,
        epoch=epoch,
        now=NOW,
        ttl_s=3600,
        cti=b"\x01" * 16,
    )


def test_entitlements_keep_only_active_unexpired_grants() -> None:
    grants = [
        Grant("remote", NOW + 10, {"tier": "pro"}),
        Grant("voice", NOW),  # ends exactly now: gone
        Grant("app", NOW - 1),
        Grant("video", NOW + 99, {"days": 30}, GrantStatus.REVOKED),
        Grant("counter", NOW + 5, status=GrantStatus.ENDED),
    ]
    assert entitlements(grants, now=NOW) == {"remote": Feature(NOW + 10, {"tier": "pro"})}
    assert entitlements([], now=NOW) == {}


def test_next_claims_fields() -> None:
    grants = [Grant("video_retention", NOW + 100, {"days": 30})]
    claims = _claims(LastToken(epoch=2, ver=7), epoch=2, grants=grants)
    assert (claims.sub, claims.inst) == ("gw-1", "inst_a")
    assert (claims.iss, claims.aud) == ("entitle", "entitle")
    assert (claims.iat, claims.nbf, claims.exp) == (NOW, NOW, NOW + 3600)
    assert (claims.ver, claims.epoch, claims.cti) == (8, 2, b"\x01" * 16)
    assert claims.ent == {"video_retention": Feature(NOW + 100, {"days": 30})}


def test_versions_restart_in_a_new_epoch() -> None:
    assert next_version(None, epoch=0) == 1
    assert next_version(LastToken(epoch=0, ver=41), epoch=0) == 42
    assert next_version(LastToken(epoch=0, ver=41), epoch=1) == 1
    with pytest.raises(ValueError, match="older"):
        _claims(LastToken(epoch=3, ver=1), epoch=2)
    with pytest.raises(ValueError):
        next_claims(
            device_id="d", installation_id="i", grants=[], last=None, epoch=0, now=NOW,
            ttl_s=0, cti=b"x",
        )  # fmt: skip


def test_installation_holds_at_most_ten_controllers() -> None:
    for count in range(MAX_DEVICES):
        check_capacity("inst_a", count)
    with pytest.raises(InstallationFull, match="maximum is 10"):
        check_capacity("inst_a", MAX_DEVICES)


def test_grant_checks() -> None:
    check_grant("video_retention", {"days": 30})
    with pytest.raises(InvalidGrant):
        check_grant("x", {"until": 5})
    with pytest.raises(InvalidGrant):
        check_grant("", {})
    with pytest.raises(InvalidGrant, match="at most 256"):
        entitlements([Grant(f"f{i}", NOW + 1) for i in range(257)], now=NOW)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=24,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=4))
def test_grant_params_are_accepted_only_if_a_device_reads_them_back(params: dict) -> None:
    """check_grant is the device's decoder run ahead: no token a device would refuse."""
    try:
        check_grant("feature", params)
    except InvalidGrant:
        return
    claims = _claims(None, grants=[Grant("feature", NOW + 10, params)])
    read = parse_claims(cbor.encode(claims.to_cbor()))
    assert dict(read.ent["feature"].params) == params


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), min_size=1, max_size=40))
def test_ver_strictly_increases_within_an_epoch_and_restarts_at_one(
    steps: list[tuple[bool, int]],
) -> None:
    last: LastToken | None = None
    epoch = 0
    for bump, _ in steps:
        epoch += int(bump)
        claims = _claims(last, epoch=epoch)
        if last is not None and last.epoch == epoch:
            assert claims.ver == last.ver + 1
        else:
            assert claims.ver == 1
        assert claims.epoch == epoch
        last = LastToken(epoch=claims.epoch, ver=claims.ver)


_grants = st.dictionaries(
    st.text("abcdef_", min_size=1, max_size=8),
    st.tuples(st.integers(NOW - 50, NOW + 50), st.sampled_from(list(GrantStatus))),
    max_size=12,
)


@given(_grants, st.integers(NOW - 60, NOW + 60))
def test_entitlements_match_the_definition(grants: dict, now: int) -> None:
    rows = [Grant(name, until, {"n": until}, status) for name, (until, status) in grants.items()]
    ent = entitlements(rows, now=now)
    expected = {n for n, (u, s) in grants.items() if s is GrantStatus.ACTIVE and now < u}
    assert set(ent) == expected
    for name in ent:
        assert ent[name].until == grants[name][0] and ent[name].params == {"n": grants[name][0]}


def _state(device_id: str = "d", **kw: int) -> TokenState:
    base = dict(epoch=0, exp=NOW + 10 * 86400)
    base.update(kw)
    return TokenState(device_id=device_id, **base)


def test_plan_refresh_reasons() -> None:
    states = [
        _state("fresh"),
        _state("near_expiry", exp=NOW + 3 * 86400 - 1),
        _state("at_the_margin", exp=NOW + 3 * 86400),  # not within: exactly refresh_before_s
        _state("old_epoch", epoch=-1),
        _state("expired", exp=NOW - 1),
    ]
    plan = plan_refresh(states, now=NOW, refresh_before_s=3 * 86400, epoch=0)
    assert plan.reissue == ("expired", "near_expiry", "old_epoch")


@given(
    st.lists(st.tuples(st.integers(-10, 20), st.integers(-1, 0)), max_size=20),
    st.integers(1, 10),
)
def test_plan_refresh_is_idempotent_after_acting(rows: list, before_days: int) -> None:
    day, ttl = 86400, 14 * 86400
    states = [_state(f"d{i}", exp=NOW + e * day, epoch=ep) for i, (e, ep) in enumerate(rows)]
    kw = dict(now=NOW, refresh_before_s=before_days * day, epoch=0)
    plan = plan_refresh(states, **kw)  # type: ignore[arg-type]
    assert plan.reissue == tuple(
        sorted(s.device_id for s in states if s.epoch != 0 or s.exp - NOW < before_days * day)
    )
    acted = []
    for s in states:
        if s.device_id in plan.reissue:  # a new token of the current epoch lives a full ttl
            acted.append(_state(s.device_id, exp=NOW + ttl))
        else:
            acted.append(s)
    again = plan_refresh(acted, **kw)  # type: ignore[arg-type]
    assert again.reissue == ()
