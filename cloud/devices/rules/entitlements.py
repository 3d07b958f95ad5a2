"""What a device is entitled to, and the claims of its next token.

Pure: grants, the last issued version and ``now`` go in, a feature map or a
:class:`protocol.token.Claims` comes out. The adapter signs and stores it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud.errors import N_, InvalidGrant
from protocol import cbor
from protocol.errors import UntrustedDataError
from protocol.token import AUDIENCE, MAX_TOKEN_BYTES, Claims, Feature, parse_claims

__all__ = [
    "ISSUER",
    "MAX_ENT_BYTES",
    "MAX_FEATURES",
    "RESERVED_PARAMS",
    "Grant",
    "GrantStatus",
    "LastToken",
    "check_grant",
    "entitlements",
    "for_device",
    "next_claims",
    "next_version",
]

ISSUER = "entitle"
MAX_FEATURES = 256  # what protocol.token accepts in one token
MAX_FEATURE_NAME = 64
RESERVED_PARAMS = frozenset({"until"})
# what a token may spend on its features: the rest of MAX_TOKEN_BYTES is left for the
# other claims (ids of at most 64 characters), the COSE header and the signature
MAX_ENT_BYTES = MAX_TOKEN_BYTES - 1024
# far deeper than a device decodes (protocol.cbor.MAX_DEPTH), shallow enough for the
# CBOR encoder's recursion; the exact limit is the device's, checked by decoding
_MAX_PARAM_NESTING = 64


class GrantStatus(enum.StrEnum):
    """Lifecycle of a service grant row."""

    ACTIVE = "active"
    REVOKED = "revoked"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Grant:
    """One service granted to an installation, paid through ``until``.

    ``scope``: ``""`` for every device of the installation, ``device:<id>`` for that
    device only, ``user:<ref>`` for one (office) user of the installation.
    """

    feature: str
    until: int
    params: Mapping[str, Any] = field(default_factory=dict)
    status: GrantStatus = GrantStatus.ACTIVE
    scope: str = ""

    def active_at(self, now: int) -> bool:
        return self.status is GrantStatus.ACTIVE and now < self.until


@dataclass(frozen=True, slots=True)
class LastToken:
    """Where the device's token counter stands: the last issued (epoch, ver)."""

    epoch: int
    ver: int


def _nesting_and_finite(value: Any) -> tuple[int, bool]:
    """How deeply ``value`` nests containers, and whether all its numbers are finite."""
    deepest, finite = 0, True
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= _MAX_PARAM_NESTING:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            finite = False
    return deepest, finite


def check_grant(feature: str, params: Mapping[str, Any]) -> None:
    """Refuse a grant the token format cannot carry, or devices could not read.

    Raises:
        InvalidGrant: empty or over-long name, a reserved parameter name, NaN or
            infinite numbers (not JSON), or parameters a device's decoder refuses
            (integers beyond 64 bits, nesting deeper than it reads).
    """
    if not 0 < len(feature) <= MAX_FEATURE_NAME:
        raise InvalidGrant(
            N_("feature name must be 1-%(maximum)d characters"), maximum=MAX_FEATURE_NAME
        )
    reserved = sorted(RESERVED_PARAMS.intersection(params))
    if reserved:
        raise InvalidGrant(
            N_("parameter names %(names)s are reserved; pass 'until' separately"),
            names=str(reserved),
        )
    nesting, finite = _nesting_and_finite(dict(params))
    if not finite:
        raise InvalidGrant(N_("parameters must be JSON numbers: NaN and Infinity are not"))
    if nesting > _MAX_PARAM_NESTING:
        raise InvalidGrant(
            N_("parameters nest over %(levels)d levels: devices read far fewer"),
            levels=_MAX_PARAM_NESTING,
        )
    # the same decoder a device runs, on a token carrying only this feature
    probe = Claims(
        sub="probe", iat=0, exp=1, cti=b"\0", ver=1, ent={feature: Feature(0, dict(params))}
    )
    try:
        encoded = cbor.encode(probe.to_cbor())
    except UnicodeEncodeError as exc:  # a lone surrogate: valid JSON, not valid text
        raise InvalidGrant(N_("parameters must be valid Unicode text")) from exc
    try:
        parse_claims(encoded)
    except UntrustedDataError as exc:
        raise InvalidGrant(
            N_(
                "devices could not read a token with these parameters (%(detail)s): keep "
                "integers within 64 bits and nesting shallow"
            ),
            detail=str(exc),
        ) from exc


def for_device(grants: Iterable[Grant], device_id: str, *, now: int) -> list[Grant]:
    """The grants one device's token carries, as installation-wide grants (scope ``""``).

    Installation-wide grants go to every device; a ``device:<id>`` grant only to that
    device, where it wins over an installation-wide grant of the same feature (a
    camera's own retention plan beats the installation's); the active per-user grants
    of one feature fold into one feature whose ``users`` parameter maps each user
    reference to its ``until`` (the feature's ``until`` is the latest of them).
    """
    mine = f"device:{device_id}"
    wide: dict[str, Grant] = {}
    own: dict[str, Grant] = {}
    users: dict[str, dict[str, int]] = {}
    for g in grants:
        if g.scope == "":
            wide[g.feature] = g
        elif g.scope == mine:
            own[g.feature] = g
        elif g.scope.startswith("user:") and g.active_at(now):
            users.setdefault(g.feature, {})[g.scope.removeprefix("user:")] = g.until
    out = {**wide, **{f: g for f, g in own.items() if g.active_at(now)}}
    for feature, who in users.items():
        out.setdefault(
            feature,
            Grant(
                feature=feature,
                until=max(who.values()),
                params={"users": dict(sorted(who.items()))},
            ),
        )
    return list(out.values())


def entitlements(grants: Iterable[Grant], *, now: int) -> dict[str, Feature]:
    """The feature map of a token issued at ``now``: active, unexpired grants only.

    Raises:
        InvalidGrant: more features, or more bytes of them, than one token may carry.
    """
    out = {
        g.feature: Feature(until=g.until, params=dict(g.params))
        for g in sorted(grants, key=lambda g: g.feature)
        if g.active_at(now)
    }
    if len(out) > MAX_FEATURES:
        raise InvalidGrant(
            N_("%(count)d active features, a token carries at most %(maximum)d"),
            count=len(out),
            maximum=MAX_FEATURES,
        )
    size = len(cbor.encode({name: f.to_cbor() for name, f in out.items()}))
    if size > MAX_ENT_BYTES:
        raise InvalidGrant(
            N_("the active features encode to %(size)d bytes, a token carries at most %(maximum)d"),
            size=size,
            maximum=MAX_ENT_BYTES,
        )
    return out


def next_version(last: LastToken | None, *, epoch: int) -> int:
    """``ver`` of the next token: last + 1 within an epoch, 1 in a new epoch."""
    if last is None or last.epoch != epoch:
        return 1
    return last.ver + 1


def next_claims(
    *,
    device_id: str,
    installation_id: str,
    grants: Iterable[Grant],
    last: LastToken | None,
    epoch: int,
    now: int,
    ttl_s: int,
    cti: bytes,
) -> Claims:
    """Claims of the device's next token, valid from ``now`` for ``ttl_s`` seconds."""
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    if last is not None and epoch < last.epoch:
        raise ValueError(f"key-set epoch {epoch} is older than the last token's {last.epoch}")
    if not 0 < len(cti) <= 64:
        raise ValueError("cti must be 1-64 bytes")
    return Claims(
        sub=device_id,
        iat=now,
        nbf=now,
        exp=now + ttl_s,
        cti=cti,
        ver=next_version(last, epoch=epoch),
        ent=entitlements(for_device(grants, device_id, now=now), now=now),
        iss=ISSUER,
        aud=AUDIENCE,
        inst=installation_id,
        epoch=epoch,
    )
