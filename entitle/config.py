"""Every process's settings at once, for ``entitle config show``.

Each process loads only its own (:class:`agent.settings.AgentSettings`,
:class:`cloud.settings.CloudSettings`, :class:`broker.settings.BrokerSettings`);
the command that shows the configuration of a machine shows them all, each
variable once, and refuses each invalid one once. The agent's are read without
pydantic (:mod:`common.config`), the cloud's and the broker's with it: both say
a shared variable's problem in the same words, so it is named once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from agent.settings import AgentSettings
from broker.settings import BrokerSettings
from cloud.settings import CloudSettings
from common.config import ConfigError

__all__ = ["AllSettings", "ServerSettings"]


class ServerSettings(CloudSettings, BrokerSettings):
    """The union of the cloud's and the broker's settings (pydantic-settings)."""


@dataclass(frozen=True, slots=True)
class AllSettings:
    """The cloud's, the broker's and the agent's settings, loaded side by side."""

    server: ServerSettings
    agent: AgentSettings

    @classmethod
    def field_names(cls) -> set[str]:
        return set(ServerSettings.model_fields) | set(AgentSettings.field_names())

    @classmethod
    def load(cls) -> Self:
        """Both, or one :class:`ConfigError` holding each problem once.

        Raises:
            ConfigError: any setting of any process is invalid.
        """
        problems: list[str] = []
        server = agent = None
        try:
            server = ServerSettings.load()
        except ConfigError as exc:
            problems += exc.problems
        try:
            agent = AgentSettings.load()
        except ConfigError as exc:
            problems += exc.problems
        if server is None or agent is None:
            raise ConfigError(list(dict.fromkeys(problems)))
        return cls(server=server, agent=agent)

    def redacted(self) -> dict[str, Any]:
        """Every setting once, secrets redacted, sorted by name."""
        merged = {**self.agent.redacted(), **self.server.redacted()}
        return dict(sorted(merged.items()))
