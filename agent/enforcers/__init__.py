"""Enforcers: the parts of the device that follow the agent's decisions.

:class:`FirmwareEnforcer` pushes the entitled features to the firmware
(SET_FEATURES) on every change and whenever the firmware link comes back;
:class:`RetentionPruner` deletes recordings older than the entitled video
retention. Both are driven by :class:`agent.runtime.Agent` (``apply`` on a
change of decisions, ``run`` as a named background task) and neither lets a
failure stop the agent.
"""

from agent.enforcers.entitled import entitled_features
from agent.enforcers.firmware import FirmwareEnforcer
from agent.enforcers.retention import RetentionPruner

__all__ = ["FirmwareEnforcer", "RetentionPruner", "entitled_features"]
