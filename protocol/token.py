"""Entitlement tokens: a CWT claims set inside a COSE_Sign1.

Claims (RFC 8392 labels): iss 1, sub 2 (device id), aud 3, exp 4, nbf 5,
iat 6, cti 7; private text keys: ``ver`` (strictly increasing per device),
``epoch`` (key-set counter epoch, default 0), ``inst`` (installation id),
``ent`` (feature -> {"until": epoch s, params...}), ``crit`` (private claims
that must be understood).

:func:`issue_token` is the cloud's side; :func:`verify_token` is the pure
check a device runs with its trusted keys, its id, ``now`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import cbor
from protocol.cose import decode_sign1, encode_sign1, verify_sign1
from protocol.errors import BadClaims, Expired, NotYetValid, WrongAudience, WrongSubject

__all__ = [
    "AUDIENCE",
    "DEFAULT_SKEW_S",
    "MAX_TOKEN_BYTES",
    "Claims",
    "Feature",
    "feature_allowed",
    "issue_token",
    "parse_claims",
    "verify_token",
    "when",
]

MAX_TOKEN_BYTES = 64 * 1024
DEFAULT_SKEW_S = 300
AUDIENCE = "entitle"
ISS, SUB, AUD, EXP, NBF, IAT, CTI = 1, 2, 3, 4, 5, 6, 7
_KNOWN_PRIVATE = frozenset({"ver", "epoch", "inst", "ent", "crit"})
_MAX_FEATURES = 256
_MAX_FEATURE_NAME = 64


@dataclass(frozen=True, slots=True)
class Feature:
    """One entitled feature: paid through ``until``, with its parameters."""

    until: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_cbor(self) -> dict[str, Any]:
        return {**self.params, "until": self.until}


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of one entitlement token."""

    sub: str
    iat: int
    exp: int
    cti: bytes
    ver: int
    ent: Mapping[str, Feature]
    nbf: int | None = None
    iss: str | None = None
    aud: str | None = None
    inst: str | None = None
    epoch: int = 0

    def to_cbor(self) -> dict[Any, Any]:
        out: dict[Any, Any] = {
            SUB: self.sub,
            IAT: self.iat,
            EXP: self.exp,
            CTI: self.cti,
            "ver": self.ver,
            "ent": {name: f.to_cbor() for name, f in self.ent.items()},
        }
        if self.epoch:
            out["epoch"] = self.epoch
        for label, value in ((NBF, self.nbf), (ISS, self.iss), (AUD, self.aud)):
            if value is not None:
                out[label] = value
        if self.inst is not None:
            out["inst"] = self.inst
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly view for APIs and `entitle token inspect`."""
        return {
            "iss": self.iss,
            "sub": self.sub,
            "aud": self.aud,
            "iat": self.iat,
            "nbf": self.nbf,
            "exp": self.exp,
            "cti": self.cti.hex(),
            "ver": self.ver,
            "epoch": self.epoch,
            "inst": self.inst,
            "ent": {name: dict(f.to_cbor()) for name, f in self.ent.items()},
        }


def issue_token(claims: Claims, private: Ed25519PrivateKey, *, kid: bytes) -> bytes:
    """Encode and sign ``claims`` into COSE_Sign1 bytes."""
    return encode_sign1(cbor.encode(claims.to_cbor()), private, kid=kid)


_UINT, _TEXT = "a non-negative integer", "text"


def _claim_error(value: Any, name: str, kind: str) -> BadClaims:
    if value is None:
        return BadClaims(f"required claim {name!r} is missing")
    return BadClaims(f"claim {name!r} must be {kind}")


def _features(raw: Any) -> dict[str, Feature]:
    if not isinstance(raw, dict):
        raise BadClaims("claim 'ent' must be a map of feature name to map")
    if len(raw) > _MAX_FEATURES:
        raise BadClaims(f"claim 'ent' has more than {_MAX_FEATURES} features")
    out: dict[str, Feature] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_FEATURE_NAME:
            raise BadClaims("feature names must be text of 1-64 characters")
        if not isinstance(spec, dict):
            raise BadClaims(f"feature {name!r} must be a map with text keys")
        params = spec.copy()
        until = params.pop("until", None)
        # "until" is text: the remaining keys decide whether all keys are text
        if params and not all(isinstance(k, str) for k in params):
            raise BadClaims(f"feature {name!r} must be a map with text keys")
        if type(until) is not int or until < 0:
            raise BadClaims(f"feature {name!r} needs a non-negative integer 'until'")
        out[name] = Feature(until, params)
    return out


def parse_claims(payload: bytes) -> Claims:
    """Decode and type-check a claims set (no time or subject checks)."""
    raw = cbor.decode(payload, max_size=MAX_TOKEN_BYTES)
    if not isinstance(raw, dict):
        raise BadClaims("the payload must be a CWT claims map")
    if "crit" in raw:
        crit = raw["crit"]
        if not isinstance(crit, list):
            raise BadClaims("claim 'crit' must be an array")
        # isinstance first: an array or map label is unhashable, `in` would raise TypeError
        unknown = [c for c in crit if not isinstance(c, str) or c not in _KNOWN_PRIVATE]
        if unknown:
            raise BadClaims(f"critical claims not understood: {unknown!r}")
    get = raw.get
    cti = get(CTI)
    if not isinstance(cti, bytes) or not 0 < len(cti) <= 64:
        raise BadClaims("required claim 'cti' must be 1-64 bytes")
    if "ent" not in raw:
        raise BadClaims("required claim 'ent' is missing")
    # Checked inline, in this order: a helper call per claim costs more than its check.
    # type() not isinstance() for integers: bool is an int subclass, never a valid claim.
    sub, iat, exp, ver = get(SUB), get(IAT), get(EXP), get("ver")
    if not isinstance(sub, str):
        raise _claim_error(sub, "sub", _TEXT)
    if type(iat) is not int or iat < 0:
        raise _claim_error(iat, "iat", _UINT)
    if type(exp) is not int or exp < 0:
        raise _claim_error(exp, "exp", _UINT)
    if type(ver) is not int or ver < 0:
        raise _claim_error(ver, "ver", _UINT)
    ent = _features(raw["ent"])
    # Optional claims: absent and null both mean "not given".
    nbf, iss, aud, inst, epoch = get(NBF), get(ISS), get(AUD), get("inst"), get("epoch")
    if nbf is not None and (type(nbf) is not int or nbf < 0):
        raise _claim_error(nbf, "nbf", _UINT)
    if iss is not None and not isinstance(iss, str):
        raise _claim_error(iss, "iss", _TEXT)
    if aud is not None and not isinstance(aud, str):
        raise _claim_error(aud, "aud", _TEXT)
    if inst is not None and not isinstance(inst, str):
        raise _claim_error(inst, "inst", _TEXT)
    if epoch is None:
        epoch = 0
    elif type(epoch) is not int or epoch < 0:
        raise _claim_error(epoch, "epoch", _UINT)
    return Claims(
        sub=sub,
        iat=iat,
        exp=exp,
        cti=cti,
        ver=ver,
        ent=ent,
        nbf=nbf,
        iss=iss,
        aud=aud,
        inst=inst,
        epoch=epoch,
    )


def verify_token(
    data: bytes,
    *,
    key_for: Callable[[bytes], Ed25519PublicKey],
    device_id: str,
    now: int,
    skew: int = DEFAULT_SKEW_S,
) -> Claims:
    """Verify a token for ``device_id`` at ``now``; anti-rollback is the caller's.

    Raises:
        DecodeError: size, CBOR or COSE structure.
        TokenError: algorithm, key, signature, claims, subject, audience, time.
    """
    msg = decode_sign1(data, max_size=MAX_TOKEN_BYTES)
    claims = parse_claims(verify_sign1(msg, key_for))
    if claims.sub != device_id:
        raise WrongSubject(f"token is for device {claims.sub!r}, not {device_id!r}")
    if claims.aud is not None and claims.aud != AUDIENCE:
        raise WrongAudience(f"audience {claims.aud!r} is not {AUDIENCE!r}")
    if now >= claims.exp:
        raise Expired(f"token expired at {when(claims.exp)}, now is {when(now)}")
    # iat counts too: an accepted iat raises the device's trusted time, so a token
    # "issued" in the future must not be able to drag that clock forward
    not_before = claims.iat if claims.nbf is None else max(claims.nbf, claims.iat)
    if now < not_before - skew:
        raise NotYetValid(f"token valid from {when(not_before)}, now is {when(now)} (skew {skew}s)")
    return claims


def feature_allowed(claims: Claims | None, feature: str, *, now: int) -> tuple[bool, str]:
    """Whether ``feature`` is allowed at ``now`` under ``claims``, and why."""
    if claims is None:
        return False, "no entitlement token accepted yet"
    if now >= claims.exp:
        return (
            False,
            f"token ver {claims.ver} expired at {when(claims.exp)} (stale: no fresh token)",
        )
    spec = claims.ent.get(feature)
    if spec is None:
        return False, f"feature not in token ver {claims.ver}"
    if now >= spec.until:
        return False, f"paid through {when(spec.until)}, now is {when(now)}"
    return (
        True,
        f"paid through {when(spec.until)} (token ver {claims.ver}, fresh until {when(claims.exp)})",
    )


def when(at: int) -> str:
    """Epoch second ``at`` as ISO 8601 UTC (``2027-01-31T00:00:00Z``), for people to read.

    Any non-negative integer is a valid ``until``; one past year 9999 is shown as it is.
    """
    try:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"epoch second {at}"
