"""Every process's settings at once, for ``entitle config show``.

Each process loads only its own (:class:`agent.settings.AgentSettings`,
:class:`cloud.settings.CloudSettings`, :class:`broker.settings.BrokerSettings`);
the command that shows the configuration of a machine shows them all, each
variable once, and refuses each invalid one once.
"""

from __future__ import annotations

from agent.settings import AgentSettings
from broker.settings import BrokerSettings
from cloud.settings import CloudSettings

__all__ = ["AllSettings"]


class AllSettings(CloudSettings, AgentSettings, BrokerSettings):
    """The union of the cloud's, the agent's and the broker's settings."""
