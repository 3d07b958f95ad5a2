"""Attacks on the device's trust chain, each played through the verifier and the store.

Every scenario is driven by :class:`TokenRepositorySimulator` (the cloud, or an
attacker holding some of its powers) at fixed ``now`` values; after each refusal
the device's state must be the one it had, and it must still be that state after
the store is closed and reopened (``Store.load`` re-runs ``restore``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.runtime import open_agent
from agent.store import Store, StoreError
from agent.verifier import Outcome, TrustState, accept_keyset, accept_token, provision, restore
from protocol.cose import encode_sign
from protocol.errors import (
    BadKey,
    Expired,
    KeySetError,
    NotYetValid,
    Rollback,
    ThresholdNotMet,
    TooManyRotations,
    UnknownKey,
    UntrustedDataError,
    VersionNotNext,
    WrongInstallation,
    WrongSubject,
)
from protocol.keys import key_id, public_bytes
from protocol.keyset import CONTENT_TYPE, MAX_ROTATIONS
from protocol.token import DEFAULT_SKEW_S
from simulators import TokenRepositorySimulator
from tests.protocol.cose_forge import FORGED_FOR_IDENTITY, IDENTITY, SMALL_ORDER

NOW = 1_800_000_000
DAY = 86400
SKEW = DEFAULT_SKEW_S
DEV = "dev-a"


class Device:
    """A device's trust state and its SQLite store, persisted after every change."""

    def __init__(self, path: Path, state: TrustState) -> None:
        self.path = path
        self.state = state
        self.store = Store(path)
        self.store.save(state)

    def accept(self, data: bytes, *, local_now: int) -> Outcome:
        self.state, outcome = accept_token(self.state, data, local_now=local_now)
        self.store.save(self.state)
        return outcome

    def rotate(self, data: bytes) -> Outcome:
        self.state, outcome = accept_keyset(self.state, data)
        self.store.save(self.state)
        return outcome

    def observe(self, local_now: int) -> None:
        self.state = self.state.observe_clock(local_now)
        self.store.save(self.state)

    def refuse_token(
        self, data: bytes, error: type[UntrustedDataError], *, local_now: int
    ) -> UntrustedDataError:
        before = self.state
        with pytest.raises(error) as caught:
            accept_token(self.state, data, local_now=local_now)
        assert self.state is before
        return caught.value

    def refuse_keyset(self, data: bytes, error: type[UntrustedDataError]) -> None:
        before = self.state
        with pytest.raises(error):
            accept_keyset(self.state, data)
        assert self.state is before

    def restart(self) -> TrustState:
        """Close the store, reopen it, restore: the state must come back as it was."""
        self.store.close()
        self.store = Store(self.path)
        loaded = self.store.load(device_id=self.state.device_id, skew=self.state.skew)
        assert loaded is not None
        if self.state.installation_id is not None:
            # the store keeps no installation id (it is configuration, like the device
            # id): the caller passes it again, and restore re-checks the stored token
            loaded = restore(
                device_id=loaded.device_id,
                keyset_raw=loaded.keyset_raw,
                token=loaded.token,
                ver=loaded.ver,
                high_water=loaded.high_water,
                skew=loaded.skew,
                installation_id=self.state.installation_id,
            )
        assert loaded == self.state
        self.state = loaded
        return loaded


@pytest.fixture
def repo() -> TokenRepositorySimulator:
    return TokenRepositorySimulator()


@pytest.fixture
def device(tmp_path: Path, repo: TokenRepositorySimulator) -> Iterator[Device]:
    dev = Device(tmp_path / "agent.db", provision(DEV, repo.root_keyset))
    yield dev
    dev.store.close()


# --- rollback -------------------------------------------------------------------


def test_rollback_to_an_older_ver_is_refused_also_after_restart(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    older = [repo.token(DEV, {"remote": NOW + 90 * DAY}, now=NOW + i) for i in range(3)]
    newest = repo.token(DEV, {}, now=NOW + 10)  # the revocation: ver 4 grants nothing
    assert device.accept(newest, local_now=NOW + 10) is Outcome.ACCEPTED
    for token in older:
        device.refuse_token(token, Rollback, local_now=NOW + 11)
    device.restart()
    for token in older:
        device.refuse_token(token, Rollback, local_now=NOW + 12)
    same_ver = repo.token(DEV, {"remote": NOW + 90 * DAY}, now=NOW + 10, ver=4)
    device.refuse_token(same_ver, Rollback, local_now=NOW + 12)
    assert device.state.ver == 4 and device.state.token == newest
    assert device.state.feature("remote", local_now=NOW + 12)[0] is False


# --- freeze ---------------------------------------------------------------------


def test_freeze_features_stop_at_token_exp_not_feature_until(
    tmp_path: Path, repo: TokenRepositorySimulator, device: Device
) -> None:
    """The attacker withholds every newer token: the last one lapses at its own exp."""
    until = NOW + 365 * DAY
    exp = NOW + 14 * DAY
    device.accept(repo.token(DEV, {"remote": until}, now=NOW, ttl=14 * DAY), local_now=NOW)
    assert device.state.next_change(local_now=NOW) == exp
    assert device.state.feature("remote", local_now=exp - 1)[0] is True
    assert not device.state.stale(local_now=exp - 1)
    allowed, why = device.state.feature("remote", local_now=exp)
    assert allowed is False and "stale" in why
    assert device.state.stale(local_now=exp)
    device.restart()
    assert device.state.feature("remote", local_now=exp)[0] is False
    device.store.close()

    clock = [float(exp - 1)]
    agent = open_agent(device_id=DEV, data_dir=tmp_path, connection=None, clock=lambda: clock[0])
    try:
        fresh = agent.status_details()
        assert fresh["stale_token"] is False and fresh["token_exp"] == exp
        assert agent.check("remote")[0] is True
        clock[0] = float(exp)
        frozen = agent.status_details()
        assert frozen["stale_token"] is True and frozen["token_ver"] == 1
        assert agent.check("remote")[0] is False
        assert agent.decisions() == {"remote": agent.check("remote")}
    finally:
        agent.store.close()
    device.store = Store(device.path)  # the fixture closes it


# --- mix and match --------------------------------------------------------------


def test_token_of_another_device_is_refused(repo: TokenRepositorySimulator, device: Device) -> None:
    device.accept(repo.token(DEV, {"remote": NOW + DAY}, now=NOW), local_now=NOW)
    other = repo.token("dev-b", {"remote": NOW + 90 * DAY, "voice": NOW + 90 * DAY}, now=NOW + 1)
    device.refuse_token(other, WrongSubject, local_now=NOW + 1)
    device.restart()
    device.refuse_token(other, WrongSubject, local_now=NOW + 2)
    # the other device's counter is not ours: its ver 1 never touched ours
    assert device.state.ver == 1


def test_unbound_device_accepts_another_installations_token_only_if_newer(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    """Without a configured installation, ``sub`` (plus ``ver``) is what binds a token.

    ``inst`` is a claim, but a device provisioned without ``installation_id``
    cannot tell installations apart: a token the cloud signed for this device id
    under another installation (the device was moved, say) is the device's token
    if it is the newest, and refused as a rollback if it is not.
    """
    assert device.state.installation_id is None
    stale_other = repo.token(DEV, {"voice": NOW + DAY}, now=NOW, inst="inst-B")
    device.accept(repo.token(DEV, {"remote": NOW + DAY}, now=NOW, inst="inst-A"), local_now=NOW)
    device.refuse_token(stale_other, Rollback, local_now=NOW)
    newer_other = repo.token(DEV, {"voice": NOW + DAY}, now=NOW + 1, inst="inst-B")
    assert device.accept(newer_other, local_now=NOW + 1) is Outcome.ACCEPTED
    device.restart()
    assert device.state.claims is not None and device.state.claims.inst == "inst-B"


def test_bound_device_refuses_another_installations_token(
    tmp_path: Path, repo: TokenRepositorySimulator
) -> None:
    dev = Device(tmp_path / "agent.db", provision(DEV, repo.root_keyset, installation_id="inst-A"))
    try:
        mine = repo.token(DEV, {"remote": NOW + DAY}, now=NOW, inst="inst-A")
        assert dev.accept(mine, local_now=NOW) is Outcome.ACCEPTED
        theirs = repo.token(DEV, {"remote": NOW + 9 * DAY}, now=NOW + 1, inst="inst-B")
        dev.refuse_token(theirs, WrongInstallation, local_now=NOW + 1)
        nameless = repo.token(DEV, {"remote": NOW + 9 * DAY}, now=NOW + 1, inst=None)
        dev.refuse_token(nameless, WrongInstallation, local_now=NOW + 1)
        dev.restart()
        dev.refuse_token(theirs, WrongInstallation, local_now=NOW + 2)
        assert dev.state.token == mine and dev.state.ver == 1
        # a stored token of another installation is dropped when the device is rebound
        rebound = restore(
            device_id=DEV,
            keyset_raw=dev.state.keyset_raw,
            token=dev.state.token,
            ver=dev.state.ver,
            high_water=dev.state.high_water,
            installation_id="inst-C",
        )
        assert rebound.token is None and rebound.claims is None and rebound.ver == 1
    finally:
        dev.store.close()


# --- stolen token key -----------------------------------------------------------


def test_stolen_token_key_fast_forward_is_recovered_by_new_epoch_rotation(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    device.accept(repo.token(DEV, {"remote": NOW + 30 * DAY}, now=NOW), local_now=NOW)
    stolen = repo.token_key
    everything = {"remote": NOW + 3650 * DAY, "voice": NOW + 3650 * DAY}
    forged = repo.token(DEV, everything, now=NOW + 60, ver=10**6, key=stolen)
    # a valid signature under a trusted key: the device cannot tell, and accepts
    assert device.accept(forged, local_now=NOW + 60) is Outcome.ACCEPTED
    assert device.state.ver == 10**6
    assert device.state.feature("voice", local_now=NOW + 60)[0] is True
    legit = repo.token(DEV, {"remote": NOW + 30 * DAY}, now=NOW + 120)
    device.refuse_token(legit, Rollback, local_now=NOW + 120)
    device.restart()
    device.refuse_token(legit, Rollback, local_now=NOW + 121)

    # recovery: the cloud rotates in a new token key and a new counter epoch
    rotation = repo.rotate(new_token_key=True, new_epoch=True)
    assert device.rotate(rotation) is Outcome.ACCEPTED
    assert device.state.keyset.epoch == 1 and device.state.ver == 0
    assert device.state.token is None  # the attacker's token: its key is no longer trusted
    assert device.state.feature("voice", local_now=NOW + 122)[0] is False
    device.restart()
    fresh = repo.token(DEV, {"remote": NOW + 30 * DAY}, now=NOW + 180)
    assert device.accept(fresh, local_now=NOW + 180) is Outcome.ACCEPTED
    assert device.state.ver == 1
    assert device.state.feature("remote", local_now=NOW + 180)[0] is True
    assert device.state.feature("voice", local_now=NOW + 180)[0] is False

    device.refuse_token(forged, UnknownKey, local_now=NOW + 181)
    forged_new_epoch = repo.token(DEV, everything, now=NOW + 181, ver=10**7, key=stolen, epoch=1)
    device.refuse_token(forged_new_epoch, UnknownKey, local_now=NOW + 181)
    device.restart()
    device.refuse_token(forged_new_epoch, UnknownKey, local_now=NOW + 182)


def test_stolen_token_key_cannot_ratchet_trusted_time_forward(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    """Each forged token's iat sits at the edge of the skew; trusted time must not follow.

    Were every accepted iat taken as trusted time, each token would move the
    next one's "not in the future" bound on by the skew, and a few hundred
    messages would put the device years ahead: every real token Expired, and
    no key-set rotation could bring the clock back.
    """
    stolen = repo.token_key
    local = NOW
    for i in range(1, 50):
        trusted = device.state.time(local).now
        forged = repo.token(
            DEV, {"remote": NOW + DAY}, now=trusted + SKEW, ver=10**6 + i, key=stolen
        )
        device.accept(forged, local_now=local)
        assert device.state.time(local).now <= local + SKEW
        local += 1
    too_far = repo.token(DEV, {}, now=local + 2 * SKEW + 1, ver=10**7, key=stolen)
    device.refuse_token(too_far, NotYetValid, local_now=local)
    device.restart()
    device.rotate(repo.rotate(new_token_key=True, new_epoch=True))
    legit = repo.token(DEV, {"remote": NOW + DAY}, now=local)
    assert device.accept(legit, local_now=local) is Outcome.ACCEPTED


# --- key-set rotation -----------------------------------------------------------


def test_duplicated_signatures_do_not_meet_a_threshold_of_two(tmp_path: Path) -> None:
    repo = TokenRepositorySimulator(root_count=2, threshold=2)
    dev = Device(tmp_path / "agent.db", provision(DEV, repo.root_keyset))
    try:
        first, second = repo.root_keys
        dev.refuse_keyset(repo.forged_rotation(signers=[first, first]), ThresholdNotMet)
        dev.refuse_keyset(repo.forged_rotation(signers=[first] * 8), ThresholdNotMet)
        # one key's signature labelled with the other key's kid
        spoofed = encode_sign(
            cbor2.dumps(repo.keyset.to_cbor() | {"v": 2}, canonical=True),
            [(key_id(public_bytes(k)), first) for k in (first, second)],
            content_type=CONTENT_TYPE,
        )
        dev.refuse_keyset(spoofed, ThresholdNotMet)
        # the same root key listed twice in the key set itself
        dev.refuse_keyset(
            repo.forged_rotation(extra_root=[public_bytes(first)], signers=[first, second]),
            KeySetError,
        )
        dev.restart()
        assert dev.state.keyset.version == 1
        assert dev.rotate(repo.forged_rotation(signers=[first, second])) is Outcome.ACCEPTED
    finally:
        dev.store.close()


def test_rotation_chain_longer_than_the_cap_is_refused_whole(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    message = repo.rotation_chain(MAX_ROTATIONS + 1)
    device.refuse_keyset(message, TooManyRotations)
    device.restart()
    assert device.state.keyset.version == 1
    newest_key_token = repo.token(DEV, {"remote": NOW + DAY}, now=NOW)
    device.refuse_token(newest_key_token, UnknownKey, local_now=NOW)
    # the same key sets in two messages within the cap are applied
    history = repo.keyset_history[1:]
    device.rotate(cbor2.dumps(history[:MAX_ROTATIONS]))
    device.rotate(cbor2.dumps(history[MAX_ROTATIONS:]))
    assert device.state.keyset.version == MAX_ROTATIONS + 2
    assert device.accept(newest_key_token, local_now=NOW) is Outcome.ACCEPTED


def test_rotation_chain_of_exactly_the_cap_is_accepted(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    assert device.rotate(repo.rotation_chain(MAX_ROTATIONS)) is Outcome.ACCEPTED
    assert device.state.keyset.version == 1 + MAX_ROTATIONS
    device.restart()
    token = repo.token(DEV, {"remote": NOW + DAY}, now=NOW)
    assert device.accept(token, local_now=NOW) is Outcome.ACCEPTED


def test_keyset_version_that_skips_a_number_is_refused(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    device.refuse_keyset(repo.forged_rotation(version=3), VersionNotNext)
    v2, _v3, v4 = (repo.rotate() for _ in range(3))
    device.refuse_keyset(cbor2.dumps([v2, v4]), VersionNotNext)  # all or nothing: v2 not kept
    device.refuse_keyset(v4, VersionNotNext)
    device.restart()
    assert device.state.keyset.version == 1
    assert device.rotate(cbor2.dumps(repo.keyset_history[1:])) is Outcome.ACCEPTED
    assert device.state.keyset.version == 4


@pytest.mark.parametrize("role", ["root", "token"])
@pytest.mark.parametrize("raw", SMALL_ORDER)
def test_rotation_bringing_in_a_small_order_key_is_refused(
    repo: TokenRepositorySimulator, device: Device, raw: bytes, role: str
) -> None:
    extra = {"extra_root": [raw]} if role == "root" else {"extra_token": [raw]}
    device.refuse_keyset(repo.forged_rotation(**extra), BadKey)
    device.restart()
    assert raw not in device.state.keyset.token.values()
    assert raw not in device.state.keyset.root.values()


def test_identity_key_forgery_is_refused_after_the_bad_rotation(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    """The identity key would make ``identity || zeros`` verify: the key never gets in."""
    device.refuse_keyset(repo.forged_rotation(extra_token=[IDENTITY]), BadKey)
    honest = cbor2.loads(repo.token(DEV, {"remote": NOW + DAY}, now=NOW, ver=99))
    protected = cbor2.dumps({1: -8, 4: key_id(IDENTITY)})
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, honest.value[2], FORGED_FOR_IDENTITY]))
    device.refuse_token(forged, UnknownKey, local_now=NOW)


@pytest.mark.parametrize("raw", SMALL_ORDER)
def test_store_with_a_small_order_key_is_refused_on_load(
    repo: TokenRepositorySimulator, device: Device, raw: bytes
) -> None:
    tampered = repo.forged_rotation(version=1, extra_token=[raw])
    device.store.close()
    with sqlite3.connect(device.path) as conn:
        conn.execute("UPDATE trust_state SET keyset = ? WHERE id = 1", (tampered,))
    conn.close()
    with Store(device.path) as store, pytest.raises(StoreError, match="bad_key"):
        store.load(device_id=DEV, skew=SKEW)
    device.store = Store(device.path)


def test_store_tampered_with_a_good_extra_key_still_loads(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    """Control for the test above: the same tampering with a sound key is not refused."""
    extra = public_bytes(Ed25519PrivateKey.generate())
    tampered = repo.forged_rotation(version=1, extra_token=[extra])
    device.store.close()
    with sqlite3.connect(device.path) as conn:
        conn.execute("UPDATE trust_state SET keyset = ? WHERE id = 1", (tampered,))
    conn.close()
    with Store(device.path) as store:
        loaded = store.load(device_id=DEV, skew=SKEW)
    assert loaded is not None and extra in loaded.keyset.token.values()
    device.store = Store(device.path)


# --- time -----------------------------------------------------------------------


def test_clock_set_back_uses_the_persisted_high_water_mark(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    exp = NOW + 2 * DAY
    device.accept(repo.token(DEV, {"remote": NOW + 30 * DAY}, now=NOW, ttl=2 * DAY), local_now=NOW)
    device.observe(NOW + 3600)
    back = NOW + 3600 - DAY
    view = device.state.time(back)
    assert view.now == NOW + 3600 and view.setback_s == DAY and view.clock_tampered
    assert device.state.feature("remote", local_now=back)[0] is True
    device.restart()
    assert device.state.high_water == NOW + 3600
    assert device.state.time(back).now == NOW + 3600

    # forward past exp, then back again: the lapse sticks, also across a restart
    device.observe(exp + 5)
    assert device.state.feature("remote", local_now=exp + 5)[0] is False
    assert device.state.feature("remote", local_now=back)[0] is False
    assert device.state.stale(local_now=back)
    device.restart()
    assert device.state.time(back).now == exp + 5
    assert device.state.feature("remote", local_now=back)[0] is False
    # a token that lapsed before the high-water mark is refused at the set-back clock
    old = repo.token(DEV, {"remote": NOW + 30 * DAY}, now=NOW + DAY, ttl=DAY)
    device.refuse_token(old, Expired, local_now=back)


@pytest.mark.parametrize(
    ("iat", "nbf"),
    [(NOW + DAY, NOW + DAY), (NOW + DAY, NOW), (NOW, NOW + DAY), (NOW + SKEW + 1, None)],
    ids=["both", "iat-only", "nbf-only", "iat-just-past-skew"],
)
def test_token_from_the_future_beyond_skew_is_not_yet_valid(
    repo: TokenRepositorySimulator, device: Device, iat: int, nbf: int | None
) -> None:
    token = repo.token(DEV, {"remote": NOW + 30 * DAY}, now=iat, nbf=nbf, ttl=14 * DAY)
    device.refuse_token(token, NotYetValid, local_now=NOW)
    device.restart()
    device.refuse_token(token, NotYetValid, local_now=NOW)
    assert device.state.high_water == 0


def test_token_from_the_future_within_skew_is_accepted(
    repo: TokenRepositorySimulator, device: Device
) -> None:
    token = repo.token(DEV, {"remote": NOW + 30 * DAY}, now=NOW + SKEW)
    assert device.accept(token, local_now=NOW) is Outcome.ACCEPTED
    assert device.state.high_water == NOW + SKEW  # the accepted iat, within the skew
    device.restart()
    assert device.state.feature("remote", local_now=NOW)[0] is True
