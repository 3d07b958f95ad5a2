"""What a device is entitled to, and the claims of its next token.

Pure: grants, the last issued version and ``now`` go in, a feature map or a
:class:`protocol.token.Claims` comes out. The adapter signs and stores it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud.errors import InvalidGrant
from protocol.token import AUDIENCE, Claims, Feature

__all__ = [
    "ISSUER",
    "MAX_FEATURES",
    "RESERVED_PARAMS",
    "Grant",
    "GrantStatus",
    "LastToken",
    "check_grant",
    "entitlements",
    "next_claims",
    "next_version",
]

ISSUER = "entitle"
MAX_FEATURES = 256  # what protocol.token accepts in one token
MAX_FEATURE_NAME = 64
RESERVED_PARAMS = frozenset({"until"})


class GrantStatus(enum.StrEnum):
    """Lifecycle of a service grant row."""

    ACTIVE = "active"
    REVOKED = "revoked"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Grant:
    """One service granted to a whole installation, paid through ``until``."""

    feature: str
    until: int
    params: Mapping[str, Any] = field(default_factory=dict)
    status: GrantStatus = GrantStatus.ACTIVE

    def active_at(self, now: int) -> bool:
        return self.status is GrantStatus.ACTIVE and now < self.until


@dataclass(frozen=True, slots=True)
class LastToken:
    """Where the device's token counter stands: the last issued (epoch, ver)."""

    epoch: int
    ver: int


def check_grant(feature: str, params: Mapping[str, Any]) -> None:
    """Refuse a grant the token format cannot carry.

    Raises:
        InvalidGrant: empty or over-long name, or a reserved parameter name.
    """
    if not 0 < len(feature) <= MAX_FEATURE_NAME:
        raise InvalidGrant(f"feature name must be 1-{MAX_FEATURE_NAME} characters")
    reserved = sorted(RESERVED_PARAMS.intersection(params))
    if reserved:
        raise InvalidGrant(f"parameter names {reserved} are reserved; pass 'until' separately")


def entitlements(grants: Iterable[Grant], *, now: int) -> dict[str, Feature]:
    """The feature map of a token issued at ``now``: active, unexpired grants only.

    Raises:
        InvalidGrant: more features than one token may carry.
    """
    out = {
        g.feature: Feature(until=g.until, params=dict(g.params))
        for g in sorted(grants, key=lambda g: g.feature)
        if g.active_at(now)
    }
    if len(out) > MAX_FEATURES:
        raise InvalidGrant(f"{len(out)} active features, a token carries at most {MAX_FEATURES}")
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
        ent=entitlements(grants, now=now),
        iss=ISSUER,
        aud=AUDIENCE,
        inst=installation_id,
        epoch=epoch,
    )
