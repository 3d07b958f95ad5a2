"""The verifier and a real SQLite store under random interleavings of honest and hostile input.

The cloud (a :class:`TokenRepositorySimulator`) issues tokens and rotates keys;
an attacker delivers forged tokens and key sets; the local clock jumps both
ways; the agent restarts. The model is the newest token the device accepted
from the honest cloud; after every step the device must allow nothing that
token denies, its counter and trusted time must not go back, and a restart
must give back exactly the state it saved.

Profiles (``ci``, the derandomized default, and the soak run ``long``) are registered
once for the suite in ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent.store import Store
from agent.verifier import Outcome, TrustState, accept_keyset, accept_token, provision
from protocol.cose import decode_sign1
from protocol.errors import (
    BadKey,
    BadSignature,
    Expired,
    KeySetError,
    NotYetValid,
    Rollback,
    ThresholdNotMet,
    TooManyRotations,
    UnknownKey,
    UntrustedDataError,
    VersionNotNext,
    WrongSubject,
)
from protocol.keys import key_id, public_bytes
from protocol.keyset import MAX_ROTATIONS
from protocol.token import DEFAULT_SKEW_S, MAX_TOKEN_BYTES, Claims, parse_claims
from simulators import TokenRepositorySimulator
from tests.protocol.cose_forge import load_vector

DEV = "dev-s"
T0 = 1_800_000_000
DAY = 86400
SKEW = DEFAULT_SKEW_S
FEATURES = ("remote", "voice", "app", "video")
SMALL_ORDER = [
    bytes.fromhex(k["x_hex"]) for k in load_vector("ed25519-small-order-keys.json")["keys"]
]
STRANGER = Ed25519PrivateKey.generate()

TOKEN_FORGERIES = (
    "stranger_key",
    "stranger_key_our_kid",
    "wrong_sub",
    "bit_flip",
    "replay",
    "old_ver",
    "wrong_epoch",
    "from_the_future",
    "expired",
)
KEYSET_FORGERIES = (
    "skip_version",
    "duplicate_signatures",
    "stranger_signers",
    "small_order_key",
    "chain_too_long",
    "threshold_zero",
)
EXPECTED: dict[str, type[UntrustedDataError]] = {
    "stranger_key": UnknownKey,
    "stranger_key_our_kid": BadSignature,
    "wrong_sub": WrongSubject,
    "bit_flip": UntrustedDataError,
    "replay": UntrustedDataError,  # Rollback, or UnknownKey / epoch Rollback after a rotation
    "old_ver": Rollback,
    "wrong_epoch": Rollback,
    "from_the_future": NotYetValid,
    "expired": Expired,
    "skip_version": VersionNotNext,
    "duplicate_signatures": ThresholdNotMet,
    "stranger_signers": ThresholdNotMet,
    "small_order_key": BadKey,
    "chain_too_long": TooManyRotations,
    "threshold_zero": KeySetError,
}

features = st.dictionaries(st.sampled_from(FEATURES), st.integers(-10 * DAY, 90 * DAY))


def _claims(token: bytes) -> Claims:
    return parse_claims(decode_sign1(token, max_size=MAX_TOKEN_BYTES).payload)


class TrustChainMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="entitle-stateful-"))
        self.repo = TokenRepositorySimulator(root_count=2, threshold=2)
        self.local = T0
        self.store = Store(self.dir / "agent.db")
        self.state = provision(DEV, self.repo.root_keyset).observe_clock(self.local)
        self.store.save(self.state)
        self.model_token: bytes | None = None  # newest honest token the device accepted
        self.model: Claims | None = None
        self.delivered: list[bytes] = []
        self.last_trusted = self.trusted()
        self.last_counter = (self.state.keyset.epoch, self.state.ver)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers ----------------------------------------------------------
    def trusted(self) -> int:
        return self.state.time(self.local).now

    def commit(self, new: TrustState) -> None:
        self.store.save(new)
        self.state = new

    def refused(self, data: bytes, error: type[UntrustedDataError], *, keyset: bool) -> None:
        before = self.state
        try:
            if keyset:
                accept_keyset(self.state, data)
            else:
                accept_token(self.state, data, local_now=self.local)
        except error:
            assert self.state is before
            return
        raise AssertionError(f"forgery accepted (expected {error.__name__})")

    # --- the honest cloud -------------------------------------------------
    @rule(
        ent=features,
        ttl=st.integers(1, 30 * DAY),
        iat_offset=st.integers(-3600, SKEW),
        deliver=st.booleans(),
    )
    def issue_token(self, ent: dict[str, int], ttl: int, iat_offset: int, deliver: bool) -> None:
        now = self.trusted()
        iat = now + iat_offset
        ttl = max(ttl, now - iat + 1)  # fresh at the device's trusted time
        token = self.repo.token(DEV, {f: now + d for f, d in ent.items()}, now=iat, ttl=ttl)
        if not deliver:  # withheld (lost, or an attacker freezing the device)
            return
        new, outcome = accept_token(self.state, token, local_now=self.local)
        assert outcome is Outcome.ACCEPTED
        self.commit(new)
        self.model_token, self.model = token, _claims(token)
        self.delivered.append(token)

    @rule(
        count=st.integers(1, MAX_ROTATIONS),
        new_root=st.booleans(),
        new_token_key=st.booleans(),
        new_epoch=st.booleans(),
    )
    def rotate(self, count: int, new_root: bool, new_token_key: bool, new_epoch: bool) -> None:
        epoch_before = self.state.keyset.epoch
        chain = [
            self.repo.rotate(new_root=new_root, new_token_key=new_token_key, new_epoch=new_epoch)
            for _ in range(count)
        ]
        message = chain[0] if count == 1 else cbor2.dumps(chain)
        new, outcome = accept_keyset(self.state, message)
        assert outcome is Outcome.ACCEPTED
        if new_token_key or new_epoch:  # the accepted token's key or epoch is gone
            assert new.token is None and new.claims is None
            self.model_token = self.model = None
        else:
            assert new.token == self.state.token
        if new_epoch:
            assert new.ver == 0 and new.keyset.epoch == epoch_before + count
        else:
            assert new.ver == self.state.ver
        self.commit(new)

    @rule(back=st.integers(1, MAX_ROTATIONS))
    def replay_old_keyset(self, back: int) -> None:
        history = self.repo.keyset_history
        old = history[max(0, len(history) - 1 - back)]
        new, outcome = accept_keyset(self.state, old)
        assert outcome is Outcome.UNCHANGED and new is self.state

    # --- the attacker -----------------------------------------------------
    @rule(kind=st.sampled_from(TOKEN_FORGERIES), data=st.data())
    def deliver_forged_token(self, kind: str, data: st.DataObject) -> None:
        now = self.trusted()
        repo, ent = self.repo, {f: now + 90 * DAY for f in FEATURES}
        if kind == "stranger_key":
            forged = repo.token(DEV, ent, now=now, ver=self.state.ver + 1, key=STRANGER)
        elif kind == "stranger_key_our_kid":
            kid = key_id(public_bytes(repo.token_key))
            forged = repo.token(DEV, ent, now=now, ver=self.state.ver + 1, key=STRANGER, kid=kid)
        elif kind == "wrong_sub":
            forged = repo.token("dev-other", ent, now=now)
        elif kind == "bit_flip":
            honest = repo.token(DEV, ent, now=now)  # issued but never delivered intact
            bit = data.draw(st.integers(0, len(honest) * 8 - 1), label="bit")
            flipped = bytearray(honest)
            flipped[bit // 8] ^= 1 << (bit % 8)
            forged = bytes(flipped)
        elif kind == "replay":
            older = [t for t in self.delivered if t != self.state.token]
            if not older:
                return
            forged = data.draw(st.sampled_from(older), label="replayed")
        elif kind == "old_ver":
            back = data.draw(st.integers(0, self.state.ver), label="ver back")
            forged = repo.token(DEV, ent, now=now, ver=self.state.ver - back)
        elif kind == "wrong_epoch":
            others = [e for e in (repo.epoch - 1, repo.epoch + 1) if e >= 0]
            epoch = data.draw(st.sampled_from(others), label="epoch")
            forged = repo.token(DEV, ent, now=now, ver=self.state.ver + 1, epoch=epoch)
        elif kind == "from_the_future":
            ahead = data.draw(st.integers(SKEW + 1, 365 * DAY), label="ahead")
            forged = repo.token(DEV, ent, now=now + ahead, ver=self.state.ver + 1)
        else:  # expired
            age = data.draw(st.integers(0, 30 * DAY), label="age")
            forged = repo.token(DEV, ent, now=now - age - DAY, ttl=DAY, ver=self.state.ver + 1)
        self.refused(forged, EXPECTED[kind], keyset=False)

    @rule(kind=st.sampled_from(KEYSET_FORGERIES), small=st.sampled_from(SMALL_ORDER))
    def deliver_forged_rotation(self, kind: str, small: bytes) -> None:
        repo, first = self.repo, self.repo.root_keys[0]
        if kind == "skip_version":
            forged = repo.forged_rotation(version=repo.version + 2)
        elif kind == "duplicate_signatures":
            forged = repo.forged_rotation(signers=[first, first, first])
        elif kind == "stranger_signers":
            forged = repo.forged_rotation(signers=[STRANGER, Ed25519PrivateKey.generate()])
        elif kind == "small_order_key":
            forged = repo.forged_rotation(extra_token=[small])
        elif kind == "chain_too_long":
            forged = cbor2.dumps([repo.forged_rotation()] * (MAX_ROTATIONS + 1))
        else:  # threshold_zero
            forged = repo.forged_rotation(threshold=0)
        self.refused(forged, EXPECTED[kind], keyset=True)

    # --- the device's surroundings ---------------------------------------
    @rule(delta=st.integers(-60 * DAY, 60 * DAY))
    def jump_clock(self, delta: int) -> None:
        self.local = max(0, self.local + delta)
        self.commit(self.state.observe_clock(self.local))  # as the runtime's re-evaluation

    @rule()
    def restart(self) -> None:
        before = self.state
        self.store.close()
        self.store = Store(self.dir / "agent.db")
        loaded = self.store.load(device_id=DEV, skew=SKEW)
        assert loaded is not None
        assert loaded == before
        assert (loaded.token, loaded.ver, loaded.high_water) == (
            before.token,
            before.ver,
            before.high_water,
        )
        assert loaded.keyset.version == before.keyset.version
        self.state = loaded

    @rule()
    def withhold_until_expiry(self) -> None:
        """The freeze: no new token arrives and the local clock passes exp."""
        if self.model is None:
            return
        self.local = max(self.local, self.model.exp)
        self.commit(self.state.observe_clock(self.local))
        assert self.state.stale(local_now=self.local)

    # --- invariants -------------------------------------------------------
    @invariant()
    def holds_exactly_the_newest_honest_token(self) -> None:
        assert self.state.token == self.model_token
        assert self.state.keyset == self.repo.keyset

    @invariant()
    def never_allows_what_the_newest_token_denies(self) -> None:
        now = self.trusted()
        for name in FEATURES:
            allowed, why = self.state.feature(name, local_now=self.local)
            if allowed:
                m = self.model
                assert m is not None and now < m.exp, why
                assert name in m.ent and now < m.ent[name].until, why

    @invariant()
    def counter_and_trusted_time_never_go_back(self) -> None:
        epoch, ver = self.state.keyset.epoch, self.state.ver
        last_epoch, last_ver = self.last_counter
        assert epoch >= last_epoch
        if epoch == last_epoch:
            assert ver >= last_ver
        self.last_counter = (epoch, ver)
        now = self.trusted()
        assert now >= self.last_trusted
        self.last_trusted = now


TestTrustChain = TrustChainMachine.TestCase
# CI-sized under the suite's "ci" profile (tests/conftest.py; it would run 100 x 50
# steps) and hypothesis' "default"; the soak profile "long" sets its own numbers.
if settings.get_current_profile_name() in {"default", "ci"}:
    TestTrustChain.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
