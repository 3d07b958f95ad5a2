"""The device's one place that says yes: a pure trust state machine.

Modelled on python-tuf's ``TrustedMetadataSet``: every input is bytes plus
the local clock reading, every output a new immutable :class:`TrustState`
(or a typed :class:`~protocol.errors.UntrustedDataError`, leaving the old
state untouched). No I/O and no clock reads here; the agent persists a
returned state atomically before it uses it.

Rules (DESIGN.md "Entitlement token", "Security requirements"):

* a token is accepted only if it verifies under a *token* key of the trusted
  key set, names this device (and its installation, when the device knows
  it), is fresh at trusted time, carries the key set's counter epoch, and
  its ``ver`` is newer than the last accepted one (the same ``ver`` with
  identical bytes is a no-op);
* trusted time never goes backwards: it is the high-water mark of local
  clock readings and accepted ``iat``s; a clock set back further than the
  skew is reported and the high-water mark is used instead. An ``iat``
  raises the mark by at most the skew past the local clock, so a stolen
  token key cannot ratchet trusted time forward token by token (a key-set
  rotation could not undo that);
* a key-set rotation is applied all-or-nothing; a higher epoch resets the
  ``ver`` counter (recovery from a stolen token key), and the current token
  is dropped unless it still verifies under the new key set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from protocol.cose import decode_sign1, verify_sign1
from protocol.errors import Rollback, UntrustedDataError, WrongInstallation
from protocol.keyset import KeySet, apply_rotations, decode_keyset_message, trust_root
from protocol.token import (
    DEFAULT_SKEW_S,
    MAX_TOKEN_BYTES,
    Claims,
    feature_allowed,
    parse_claims,
    verify_token,
)

__all__ = [
    "Outcome",
    "TimeView",
    "TrustState",
    "accept_keyset",
    "accept_token",
    "provision",
    "restore",
]


class Outcome(Enum):
    """What an accepted input did."""

    ACCEPTED = "accepted"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class TimeView:
    """Trusted time at one local clock reading."""

    now: int
    local: int
    setback_s: int  # > 0 when the local clock is behind trusted time beyond the skew

    @property
    def clock_tampered(self) -> bool:
        return self.setback_s > 0


@dataclass(frozen=True, slots=True)
class TrustState:
    """Everything a device trusts; persisted as a whole, replaced as a whole."""

    device_id: str
    keyset: KeySet
    keyset_raw: bytes
    token: bytes | None = None
    claims: Claims | None = None
    ver: int = 0
    high_water: int = 0
    skew: int = DEFAULT_SKEW_S
    installation_id: str | None = None  # None: tokens of any installation (sub still binds)

    # --- time -----------------------------------------------------------
    def time(self, local_now: int) -> TimeView:
        """Trusted time: never before the high-water mark."""
        behind = self.high_water - local_now
        return TimeView(
            now=max(local_now, self.high_water),
            local=local_now,
            setback_s=behind if behind > self.skew else 0,
        )

    def observe_clock(self, local_now: int) -> TrustState:
        """Raise the high-water mark to a newer local clock reading."""
        if local_now <= self.high_water:
            return self
        return replace(self, high_water=local_now)

    # --- decisions ------------------------------------------------------
    def feature(self, name: str, *, local_now: int) -> tuple[bool, str]:
        """Whether ``name`` is allowed now, and why (for logs and the CLI)."""
        return feature_allowed(self.claims, name, now=self.time(local_now).now)

    def features(self, *, local_now: int) -> dict[str, tuple[bool, str]]:
        """Every feature the current token names, each with its decision."""
        if self.claims is None:
            return {}
        return {name: self.feature(name, local_now=local_now) for name in self.claims.ent}

    def stale(self, *, local_now: int) -> bool:
        """No fresh token: none accepted, or the accepted one has expired."""
        return self.claims is None or self.time(local_now).now >= self.claims.exp

    def next_change(self, *, local_now: int) -> int | None:
        """The next instant at which some decision flips without any message."""
        if self.claims is None:
            return None
        now = self.time(local_now).now
        moments = [self.claims.exp, *(f.until for f in self.claims.ent.values())]
        future = [m for m in moments if m > now]
        return min(future) if future else None


def provision(
    device_id: str,
    keyset_raw: bytes,
    *,
    skew: int = DEFAULT_SKEW_S,
    installation_id: str | None = None,
) -> TrustState:
    """The first state of a device: a root key set that meets its own threshold."""
    return TrustState(
        device_id=device_id,
        keyset=trust_root(keyset_raw),
        keyset_raw=keyset_raw,
        skew=skew,
        installation_id=installation_id,
    )


def accept_token(state: TrustState, data: bytes, *, local_now: int) -> tuple[TrustState, Outcome]:
    """Verify ``data`` as this device's next token.

    Raises:
        UntrustedDataError: any rejection; ``state`` stays the trusted one.
    """
    if data == state.token:
        return state, Outcome.UNCHANGED
    now = state.time(local_now).now
    claims = verify_token(
        data,
        key_for=state.keyset.token_key,
        device_id=state.device_id,
        now=now,
        skew=state.skew,
    )
    if state.installation_id is not None and claims.inst != state.installation_id:
        raise WrongInstallation(
            f"token is for installation {claims.inst!r}, not {state.installation_id!r}"
        )
    if claims.epoch != state.keyset.epoch:
        raise Rollback(
            f"token counter epoch {claims.epoch} is not the key set's epoch {state.keyset.epoch}"
        )
    if claims.ver <= state.ver:
        what = "the same ver with different bytes" if claims.ver == state.ver else "an older ver"
        raise Rollback(f"token ver {claims.ver} is {what} (last accepted ver {state.ver})")
    new = replace(
        state,
        token=data,
        claims=claims,
        ver=claims.ver,
        high_water=max(state.high_water, local_now, min(claims.iat, local_now + state.skew)),
    )
    return new, Outcome.ACCEPTED


def accept_keyset(state: TrustState, data: bytes) -> tuple[TrustState, Outcome]:
    """Apply a key-set message (one signed key set or a chain of them).

    Raises:
        UntrustedDataError: the chain does not verify; nothing is applied.
    """
    chain = decode_keyset_message(data)
    new_keyset = apply_rotations(state.keyset, chain)
    if new_keyset.version == state.keyset.version:
        return state, Outcome.UNCHANGED
    ver = 0 if new_keyset.epoch != state.keyset.epoch else state.ver
    token, claims = state.token, state.claims
    if token is not None and not _still_trusted(token, new_keyset):
        token, claims = None, None
    new = replace(
        state,
        keyset=new_keyset,
        keyset_raw=chain[-1],
        ver=ver,
        token=token,
        claims=claims,
    )
    return new, Outcome.ACCEPTED


def restore(
    *,
    device_id: str,
    keyset_raw: bytes,
    token: bytes | None,
    ver: int,
    high_water: int,
    skew: int = DEFAULT_SKEW_S,
    installation_id: str | None = None,
) -> TrustState:
    """Rebuild a state from the store, re-checking what the store claims.

    The key set was accepted before: it must still parse and meet its own
    threshold. The token must still verify under it and name this device
    (and ``installation_id``, when given); time is not checked: an expired
    token is kept and simply allows nothing.
    """
    keyset = trust_root(keyset_raw)
    claims = None
    if token is not None:
        if _still_trusted(token, keyset):
            claims = parse_claims(decode_sign1(token, max_size=MAX_TOKEN_BYTES).payload)
            if claims.sub != device_id or (
                installation_id is not None and claims.inst != installation_id
            ):
                token, claims = None, None
        else:
            token = None
    return TrustState(
        device_id=device_id,
        keyset=keyset,
        keyset_raw=keyset_raw,
        token=token,
        claims=claims,
        ver=ver,
        high_water=high_water,
        skew=skew,
        installation_id=installation_id,
    )


def _still_trusted(token: bytes, keyset: KeySet) -> bool:
    try:
        msg = decode_sign1(token, max_size=MAX_TOKEN_BYTES)
        verify_sign1(msg, keyset.token_key)
        return parse_claims(msg.payload).epoch == keyset.epoch
    except UntrustedDataError:
        return False
