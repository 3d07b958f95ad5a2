"""The agent's settings: how this device reaches the broker, where it keeps its state.

Only the agent's own fields (``ENTITLE_DEVICE_ID``, ``ENTITLE_ROOT_KEYSET_FILE``, …)
on the common base (:class:`common.settings.BrokerClientSettings`): loading them
imports nothing of the cloud's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from common.settings import BrokerClientSettings
from protocol.topics import DEVICE_ID_PATTERN

__all__ = ["AgentSettings"]


class AgentSettings(BrokerClientSettings):
    """Effective configuration of ``entitle agent run`` and ``entitle agent check``."""

    # the id names the store's folder and the MQTT topics: the one device-id rule, so
    # that "../x" or "a/b" never becomes a path or a topic level
    device_id: str | None = Field(
        default=None, pattern=DEVICE_ID_PATTERN, description="this device's id"
    )
    agent_data_dir: Path | None = Field(default=None, description="default data_dir/agent-<id>")
    root_keyset_file: Path | None = Field(default=None, description="provisioned root key set")
    installation_id: str | None = Field(
        default=None, description="bind the device to this installation at provisioning"
    )
    api_socket: Path | None = Field(default=None, description="local query API Unix socket")
    clock_skew_s: int = 300
    serial_port: str | None = Field(default=None, description="firmware serial port (tty)")
    firmware_kind: Literal["gateway", "camera", "counter"] | None = Field(
        default=None, description="device kind; without serial_port: in-process emulator"
    )
    recordings_dir: Path | None = Field(default=None, description="camera recordings to prune")
    health_interval_s: float = Field(default=60.0, gt=0, description="health report interval")

    def agent_dir(self) -> Path:
        """The agent's store: ``agent_data_dir``, else ``data_dir/agent-<device_id>``.

        Raises:
            ValueError: neither ``agent_data_dir`` nor ``device_id`` is set.
        """
        if self.agent_data_dir is not None:
            return self.agent_data_dir
        if not self.device_id:
            raise ValueError("set ENTITLE_DEVICE_ID (or agent_data_dir) for the agent")
        return self.data_dir / f"agent-{self.device_id}"
