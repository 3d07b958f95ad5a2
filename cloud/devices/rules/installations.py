"""Installation rules: how many controllers share one configuration."""

from __future__ import annotations

import enum

from cloud.errors import N_, InstallationFull

__all__ = ["MAX_DEVICES", "DeviceKind", "check_capacity"]

MAX_DEVICES = 10  # controllers sharing one configuration file, per the vendors' manuals


class DeviceKind(enum.StrEnum):
    """The device kinds that run the agent."""

    GATEWAY = "gateway"
    CAMERA = "camera"
    COUNTER = "counter"


def check_capacity(installation_id: str, device_count: int) -> None:
    """Allow one more device in an installation that has ``device_count``.

    Raises:
        InstallationFull: the installation already has :data:`MAX_DEVICES`.
    """
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
