"""Gateway (home-automation controller) firmware: CPU temperature, fan, uptime, reboots."""

from __future__ import annotations

from typing import Any

from firmware_stubs.emulator import Emulator

__all__ = ["GatewayEmulator"]


class GatewayEmulator(Emulator):
    """A controller; its services (remote access, voice, app) are just recorded features."""

    kind = "gateway"
    model = "GW-200"

    def kind_health(self) -> dict[str, Any]:
        return {
            "fan_rpm": self.fan_rpm(),
            "load_avg": 2.9 if self.faults.overheating else 0.4,
            "features": sorted(self.features),
        }
