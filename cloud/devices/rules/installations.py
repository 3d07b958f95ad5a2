"""Installation rules: how many controllers share one configuration, and how many other
devices (cameras, counters) an installation may hold."""

from __future__ import annotations

import enum

from cloud.errors import N_, InstallationFull

__all__ = ["MAX_DEVICES", "MAX_OTHER_DEVICES", "DeviceKind", "check_capacity"]

MAX_DEVICES = 10  # controllers sharing one configuration file, per the vendors' manuals
# cameras and counters are not controllers: a site may have many more of them (the limit
# is a sanity bound on one installation's token re-issue, not a vendor rule)
MAX_OTHER_DEVICES = 500


class DeviceKind(enum.StrEnum):
    """The device kinds that run the agent."""

    GATEWAY = "gateway"
    CAMERA = "camera"
    COUNTER = "counter"


def check_capacity(
    installation_id: str, device_count: int, *, kind: DeviceKind = DeviceKind.GATEWAY
) -> None:
    """Allow one more device of ``kind`` in an installation that has ``device_count`` of
    that class (controllers: gateways; others: cameras and counters together).

    Raises:
        InstallationFull: the installation already has :data:`MAX_DEVICES` controllers,
            or :data:`MAX_OTHER_DEVICES` cameras and counters.
    """
    if kind is not DeviceKind.GATEWAY:
        if device_count >= MAX_OTHER_DEVICES:
            raise InstallationFull(
                N_(
                    "installation %(installation)s already has %(count)d cameras and "
                    "counters, the maximum is %(maximum)d: create another installation"
                ),
                installation=installation_id,
                count=device_count,
                maximum=MAX_OTHER_DEVICES,
            )
        return
    if device_count >= MAX_DEVICES:
        raise InstallationFull(
            N_(
                "installation %(installation)s already has %(count)d controllers, "
                "the maximum is %(maximum)d: remove one or create another installation"
            ),
            installation=installation_id,
            count=device_count,
            maximum=MAX_DEVICES,
        )
