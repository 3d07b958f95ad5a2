"""The agent's settings: how this device reaches the broker, where it keeps its state.

Only the agent's own fields (``ENTITLE_DEVICE_ID``, ``ENTITLE_ROOT_KEYSET_FILE``, …)
on the common base (:class:`common.config.BrokerClient`), read by the standard
library alone: loading them imports nothing of the cloud's and no pydantic (the
agent's memory budget, ``bench/bench_agent_rss.py``, has no room for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.config import BrokerClient, setting
from protocol.topics import DEVICE_ID_PATTERN

__all__ = ["AgentSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings(BrokerClient):
    """Effective configuration of ``entitle-agent run`` and ``entitle-agent check``."""

    # the id names the store's folder and the MQTT topics: the one device-id rule, so
    # that "../x" or "a/b" never becomes a path or a topic level
    device_id: str | None = setting(None, pattern=DEVICE_ID_PATTERN, description="this device's id")
    agent_data_dir: Path | None = setting(None, description="default data_dir/agent-<id>")
    root_keyset_file: Path | None = setting(None, description="provisioned root key set")
    installation_id: str | None = setting(
        None, description="bind the device to this installation at provisioning"
    )
    api_socket: Path | None = setting(None, description="local query API Unix socket")
    clock_skew_s: int = 300
    serial_port: str | None = setting(None, description="firmware serial port (tty)")
    firmware_kind: Literal["gateway", "camera", "counter"] | None = setting(
        None, description="device kind; without serial_port: in-process emulator"
    )
    recordings_dir: Path | None = setting(None, description="camera recordings to prune")
    health_interval_s: float = setting(60.0, gt=0, description="health report interval")

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
