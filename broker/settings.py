"""The broker process's settings: where its configuration, logins and certificates live."""

from __future__ import annotations

from pathlib import Path

from common.settings import EntitleSettings

__all__ = ["BrokerSettings"]


class BrokerSettings(EntitleSettings):
    """Effective configuration of ``entitle broker run`` and ``entitle broker certs``."""

    @property
    def broker_dir(self) -> Path:
        """Mosquitto's configuration, dynamic-security file, persistence and logs."""
        return self.data_dir / "broker"

    @property
    def pki_dir(self) -> Path:
        """The local certificate authority and the certificates it issued."""
        return self.data_dir / "pki"
