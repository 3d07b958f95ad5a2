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


def _int(claims: Mapping[Any, Any], label: Any, name: str, *, required: bool) -> int | None:
    value = claims.get(label)
    if value is None:
        if required:
            raise BadClaims(f"required claim {name!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadClaims(f"claim {name!r} must be a non-negative integer")
    return value


def _text(claims: Mapping[Any, Any], label: Any, name: str, *, required: bool) -> str | None:
    value = claims.get(label)
    if value is None:
        if required:
            raise BadClaims(f"required claim {name!r} is missing")
        return None
    if not isinstance(value, str):
        raise BadClaims(f"claim {name!r} must be text")
    return value


def _features(raw: Any) -> dict[str, Feature]:
    if not isinstance(raw, dict):
        raise BadClaims("claim 'ent' must be a map of feature name to map")
    if len(raw) > _MAX_FEATURES:
        raise BadClaims(f"claim 'ent' has more than {_MAX_FEATURES} features")
    out: dict[str, Feature] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_FEATURE_NAME:
            raise BadClaims("feature names must be text of 1-64 characters")
        if not isinstance(spec, dict) or not all(isinstance(k, str) for k in spec):
            raise BadClaims(f"feature {name!r} must be a map with text keys")
        until = spec.get("until")
        if isinstance(until, bool) or not isinstance(until, int) or until < 0:
            raise BadClaims(f"feature {name!r} needs a non-negative integer 'until'")
        params = {k: v for k, v in spec.items() if k != "until"}
        out[name] = Feature(until=until, params=params)
    return out


def parse_claims(payload: bytes) -> Claims:
    """Decode and type-check a claims set (no time or subject checks)."""
    raw = cbor.decode(payload, max_size=MAX_TOKEN_BYTES)
    if not isinstance(raw, dict):
        raise BadClaims("the payload must be a CWT claims map")
    crit = raw.get("crit", [])
    if not isinstance(crit, list):
        raise BadClaims("claim 'crit' must be an array")
    # isinstance first: an array or map label is unhashable, `in` would raise TypeError
    unknown = [c for c in crit if not isinstance(c, str) or c not in _KNOWN_PRIVATE]
    if unknown:
        raise BadClaims(f"critical claims not understood: {unknown!r}")
    cti = raw.get(CTI)
    if not isinstance(cti, bytes) or not 0 < len(cti) <= 64:
        raise BadClaims("required claim 'cti' must be 1-64 bytes")
    if "ent" not in raw:
        raise BadClaims("required claim 'ent' is missing")
    sub = _text(raw, SUB, "sub", required=True)
    iat = _int(raw, IAT, "iat", required=True)
    exp = _int(raw, EXP, "exp", required=True)
    ver = _int(raw, "ver", "ver", required=True)
    assert sub is not None and iat is not None and exp is not None and ver is not None
    return Claims(
        sub=sub,
        iat=iat,
        exp=exp,
        cti=cti,
        ver=ver,
        ent=_features(raw["ent"]),
        nbf=_int(raw, NBF, "nbf", required=False),
        iss=_text(raw, ISS, "iss", required=False),
        aud=_text(raw, AUD, "aud", required=False),
        inst=_text(raw, "inst", "inst", required=False),
        epoch=_int(raw, "epoch", "epoch", required=False) or 0,
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
        raise Expired(f"token expired at {claims.exp}, now is {now}")
    not_before = claims.nbf if claims.nbf is not None else claims.iat
    if now < not_before - skew:
        raise NotYetValid(f"token valid from {not_before}, now is {now} (skew {skew}s)")
    return claims


def feature_allowed(claims: Claims | None, feature: str, *, now: int) -> tuple[bool, str]:
    """Whether ``feature`` is allowed at ``now`` under ``claims``, and why."""
    if claims is None:
        return False, "no entitlement token accepted yet"
    if now >= claims.exp:
        return False, f"token ver {claims.ver} expired at {claims.exp} (stale: no fresh token)"
    spec = claims.ent.get(feature)
    if spec is None:
        return False, f"feature not in token ver {claims.ver}"
    if now >= spec.until:
        return False, f"paid through {spec.until}, now is {now}"
    return True, f"paid through {spec.until} (token ver {claims.ver}, fresh until {claims.exp})"
