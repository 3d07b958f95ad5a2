"""HTTP bodies of installations, devices, grants, tokens and keys (pydantic: the edge)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from cloud.devices.issuing import Issued
from cloud.devices.rules import DeviceKind, GrantStatus
from cloud.devices.rules.entitlements import RESERVED_PARAMS
from cloud.http.inputs import BY_VALUE, StrictBody
from cloud.http.schemas import ID_PATTERN, NAME_PATTERN
from protocol.topics import DEVICE_ID_PATTERN, DEVICE_ID_REGEX

__all__ = [
    "FEATURE_PATTERN",
    "DeviceCreate",
    "DeviceCredentialsOut",
    "DeviceOut",
    "EntitlementOut",
    "GrantCreate",
    "GrantOut",
    "GrantResult",
    "InstallationCreate",
    "InstallationDetail",
    "InstallationOut",
    "KeysetOut",
    "RotateRequest",
    "RotateResult",
    "TokenSummary",
    "TokenVersion",
    "token_versions",
]

# feature names: nothing a topic, a log line or PostgreSQL text (no NUL) chokes on
FEATURE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
MAX_PARAMS_JSON = 2048
_MAX_EPOCH_S = 2**53  # JSON-safe and far beyond any subscription


class InstallationCreate(StrictBody):
    # no control characters: they have no place in a name, and PostgreSQL refuses NUL
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


class InstallationOut(BaseModel):
    id: str
    name: str
    created_at: int


class TokenSummary(BaseModel):
    ver: int
    epoch: int
    iat: int
    exp: int
    published: bool


class DeviceOut(BaseModel):
    device_id: str
    installation_id: str
    kind: DeviceKind
    created_at: int
    token: TokenSummary | None


class GrantOut(BaseModel):
    feature: str
    scope: str = Field(
        default="", description='"" every device; "device:<id>" one device; "user:<ref>" one user'
    )
    until: int
    params: dict[str, Any]
    source: str
    status: GrantStatus
    updated_at: int
    ended_at: int | None


class InstallationDetail(InstallationOut):
    devices: list[DeviceOut]
    grants: list[GrantOut]


class DeviceCreate(StrictBody):
    installation_id: str = Field(pattern=ID_PATTERN)
    kind: Annotated[DeviceKind, BY_VALUE]
    device_id: str | None = Field(
        default=None, pattern=DEVICE_ID_PATTERN, description=f"{DEVICE_ID_REGEX}; random if absent"
    )


class DeviceCredentialsOut(BaseModel):
    """Returned once, at registration: the password is not stored and cannot be shown again."""

    device_id: str
    mqtt_username: str
    mqtt_password: str
    broker_url: str


class GrantCreate(StrictBody):
    feature: str = Field(pattern=FEATURE_PATTERN)
    until: int = Field(ge=0, le=_MAX_EPOCH_S, description="paid through, epoch s")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            f"feature parameters (JSON, at most {MAX_PARAMS_JSON} bytes): integers within "
            "64 bits, no NaN or Infinity, nested only as deep as devices decode; 422 if "
            "not, or if the installation's features together would not fit in one token"
        ),
    )

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_PARAMS.intersection(value))
        if reserved:
            raise ValueError(f"parameter names {reserved} are reserved; pass 'until' separately")
        if len(json.dumps(value, separators=(",", ":"))) > MAX_PARAMS_JSON:
            raise ValueError(f"params must encode to at most {MAX_PARAMS_JSON} bytes of JSON")
        return value


class TokenVersion(BaseModel):
    device_id: str
    ver: int
    epoch: int
    exp: int
    published: bool


def token_versions(issued: Iterable[Issued]) -> list[TokenVersion]:
    """What a change did to each device's token, for a response body."""
    return [
        TokenVersion(
            device_id=i.device_id, ver=i.ver, epoch=i.epoch, exp=i.exp, published=i.published
        )
        for i in issued
    ]


class GrantResult(BaseModel):
    installation_id: str
    feature: str
    tokens: list[TokenVersion]


class KeysetOut(BaseModel):
    version: int
    epoch: int
    keyset_b64: str


class RotateRequest(StrictBody):
    new_root: bool = Field(default=False, description="replace the root keys too")
    new_epoch: bool = Field(default=False, description="restart token versions (key theft)")


class RotateResult(KeysetOut):
    tokens: list[TokenVersion]


class EntitlementOut(BaseModel):
    device_id: str
    token_b64: str
    claims: dict[str, Any]
