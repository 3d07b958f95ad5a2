"""The broker process's errors, all :class:`~protocol.errors.TransportError`::

BrokerError                 the broker could not be configured, started or stopped
├── MosquittoNotFound       no ``mosquitto`` executable
└── DynsecPluginNotFound    Mosquitto without its dynamic-security plugin
"""

from __future__ import annotations

from protocol.errors import TransportError

__all__ = ["BrokerError", "DynsecPluginNotFound", "MosquittoNotFound"]


class BrokerError(TransportError):
    """The broker could not be configured, started or stopped."""


class MosquittoNotFound(BrokerError):
    """No ``mosquitto`` executable on this machine."""


class DynsecPluginNotFound(BrokerError):
    """Mosquitto is there but its dynamic-security plugin is not (Mosquitto < 2.0)."""
