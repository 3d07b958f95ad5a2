"""The agent's pure trust state machine, driven by the repository simulator."""

from __future__ import annotations

import pytest

from agent.verifier import Outcome, accept_keyset, accept_token, provision, restore
from protocol.errors import (
    BadSignature,
    Expired,
    Rollback,
    ThresholdNotMet,
    UnknownKey,
    VersionNotNext,
    WrongSubject,
)
from simulators import TokenRepositorySimulator

NOW = 1_800_000_000
DAY = 86400


@pytest.fixture
def repo() -> TokenRepositorySimulator:
    return TokenRepositorySimulator()


@pytest.fixture
def state(repo):
    return provision("dev-a", repo.root_keyset)


def test_grant_allows_and_revoke_denies(repo, state):
    state, outcome = accept_token(
        state, repo.token("dev-a", {"remote": NOW + DAY}, now=NOW), local_now=NOW
    )
    assert outcome is Outcome.ACCEPTED
    assert state.feature("remote", local_now=NOW)[0] is True
    state, _ = accept_token(state, repo.token("dev-a", {}, now=NOW + 1), local_now=NOW + 1)
    allowed, why = state.feature("remote", local_now=NOW + 1)
    assert allowed is False and "not in token" in why


def test_feature_stops_at_until_second(repo, state):
    state, _ = accept_token(
        state, repo.token("dev-a", {"remote": NOW + 10}, now=NOW), local_now=NOW
    )
    assert state.feature("remote", local_now=NOW + 9)[0] is True
    assert state.feature("remote", local_now=NOW + 10)[0] is False
    assert state.next_change(local_now=NOW) == NOW + 10


def test_token_expiry_stops_every_feature_and_marks_stale(repo, state):
    token = repo.token("dev-a", {"remote": NOW + 100 * DAY}, now=NOW, ttl=DAY)
    state, _ = accept_token(state, token, local_now=NOW)
    assert not state.stale(local_now=NOW + DAY - 1)
    allowed, why = state.feature("remote", local_now=NOW + DAY)
    assert allowed is False and "stale" in why
    assert state.stale(local_now=NOW + DAY)


def test_replayed_older_token_is_rolled_back(repo, state):
    old = repo.token("dev-a", {"remote": NOW + DAY}, now=NOW)
    new = repo.token("dev-a", {}, now=NOW + 1)
    state, _ = accept_token(state, old, local_now=NOW)
    state, _ = accept_token(state, new, local_now=NOW + 1)
    with pytest.raises(Rollback):
        accept_token(state, old, local_now=NOW + 2)
    assert state.feature("remote", local_now=NOW + 2)[0] is False


def test_same_token_again_is_a_no_op_but_same_ver_other_bytes_is_not(repo, state):
    token = repo.token("dev-a", {"remote": NOW + DAY}, now=NOW)
    state, _ = accept_token(state, token, local_now=NOW)
    again, outcome = accept_token(state, token, local_now=NOW + 5)
    assert outcome is Outcome.UNCHANGED and again is state
    forged = repo.token("dev-a", {"remote": NOW + 99 * DAY}, now=NOW, ver=state.ver)
    with pytest.raises(Rollback):
        accept_token(state, forged, local_now=NOW)


def test_token_of_another_device_is_refused(repo, state):
    with pytest.raises(WrongSubject):
        accept_token(state, repo.token("dev-b", {"remote": NOW + DAY}, now=NOW), local_now=NOW)


def test_unknown_and_forged_keys_are_refused(repo, state):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(UnknownKey):
        accept_token(
            state, repo.token("dev-a", {"x": NOW + 9}, now=NOW, key=stranger), local_now=NOW
        )
    token = bytearray(repo.token("dev-a", {"x": NOW + 9}, now=NOW))
    token[-1] ^= 1
    with pytest.raises(BadSignature):
        accept_token(state, bytes(token), local_now=NOW)


def test_clock_set_back_uses_high_water_mark(repo, state):
    state, _ = accept_token(
        state, repo.token("dev-a", {"remote": NOW + DAY}, now=NOW, ttl=2 * DAY), local_now=NOW
    )
    view = state.time(NOW - DAY)
    assert view.now == NOW and view.setback_s == DAY and view.clock_tampered
    # a day back does not bring the feature back once it has lapsed
    later = state.observe_clock(NOW + DAY + 1)
    assert later.feature("remote", local_now=NOW)[0] is False
    assert later.time(NOW).setback_s == DAY + 1


def test_small_setback_within_skew_is_not_tampering(repo, state):
    state = state.observe_clock(NOW)
    assert state.time(NOW - 60).setback_s == 0


def test_expired_token_is_refused_at_trusted_time(repo, state):
    state = state.observe_clock(NOW + 20 * DAY)
    token = repo.token("dev-a", {"remote": NOW + 30 * DAY}, now=NOW, ttl=14 * DAY)
    with pytest.raises(Expired):
        accept_token(state, token, local_now=NOW)  # local clock set back: still expired


def test_rotation_accepted_and_new_key_tokens_verify(repo, state):
    old_token = repo.token("dev-a", {"remote": NOW + DAY}, now=NOW)
    state, _ = accept_token(state, old_token, local_now=NOW)
    rotated = repo.rotate(new_root=True)
    state, outcome = accept_keyset(state, rotated)
    assert outcome is Outcome.ACCEPTED and state.keyset.version == 2
    assert state.token is None  # the old token key is no longer trusted
    state, _ = accept_token(
        state, repo.token("dev-a", {"remote": NOW + DAY}, now=NOW), local_now=NOW
    )
    assert state.feature("remote", local_now=NOW)[0] is True
    with pytest.raises(UnknownKey):
        accept_token(state, old_token, local_now=NOW)


def test_rotation_signed_only_by_new_keys_is_refused(repo, state):
    from protocol.keyset import sign_keyset

    properly_signed = repo.rotate(new_root=True)  # old roots + new roots
    only_new = sign_keyset(repo.keyset, repo.root_keys)  # the same key set, new roots only
    with pytest.raises(ThresholdNotMet):
        accept_keyset(state, only_new)
    assert accept_keyset(state, properly_signed)[1] is Outcome.ACCEPTED


def test_rotation_skipping_a_version_is_refused(repo, state):
    with pytest.raises(VersionNotNext):
        accept_keyset(state, repo.rotate(version=3))


def test_new_epoch_resets_the_counter(repo, state):
    for i in range(5):
        state, _ = accept_token(state, repo.token("dev-a", {}, now=NOW + i), local_now=NOW + i)
    assert state.ver == 5
    state, _ = accept_keyset(state, repo.rotate(new_epoch=True))
    assert state.ver == 0 and state.keyset.epoch == 1
    state, _ = accept_token(
        state, repo.token("dev-a", {"a": NOW + DAY}, now=NOW + 9), local_now=NOW + 9
    )
    assert state.ver == 1


def test_restore_rechecks_the_stored_token(repo, state):
    token = repo.token("dev-a", {"remote": NOW + DAY}, now=NOW)
    state, _ = accept_token(state, token, local_now=NOW)
    again = restore(
        device_id="dev-a",
        keyset_raw=state.keyset_raw,
        token=state.token,
        ver=state.ver,
        high_water=state.high_water,
    )
    assert again.claims == state.claims
    tampered = bytearray(token)
    tampered[-2] ^= 0x40
    dropped = restore(
        device_id="dev-a",
        keyset_raw=state.keyset_raw,
        token=bytes(tampered),
        ver=state.ver,
        high_water=state.high_water,
    )
    assert dropped.token is None and dropped.ver == state.ver
