"""Pure cloud rules: entitlements and token versions, installation limits, refresh.

No I/O, no clocks: ``now`` and every input are parameters.
"""

from cloud.devices.rules.entitlements import (
    Grant,
    GrantStatus,
    LastToken,
    check_grant,
    entitlements,
    for_device,
    next_claims,
    next_version,
)
from cloud.devices.rules.installations import (
    MAX_DEVICES,
    MAX_OTHER_DEVICES,
    DeviceKind,
    check_capacity,
)
from cloud.devices.rules.refresh import (
    RefreshPlan,
    TokenState,
    plan_refresh,
    reissue_reason,
    resign_reason,
)
from cloud.errors import InstallationFull

__all__ = [
    "MAX_DEVICES",
    "MAX_OTHER_DEVICES",
    "DeviceKind",
    "Grant",
    "GrantStatus",
    "InstallationFull",
    "LastToken",
    "RefreshPlan",
    "TokenState",
    "check_capacity",
    "check_grant",
    "entitlements",
    "for_device",
    "next_claims",
    "next_version",
    "plan_refresh",
    "reissue_reason",
    "resign_reason",
]
