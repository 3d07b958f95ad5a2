"""Device health in the cloud: the ingest consumer, its queries, remote commands.

``ingest`` (MQTT -> database, batched, acked after commit), ``repository``
(queries taking a SQLAlchemy session), ``commands`` (send a command, time out
unanswered ones) and ``jobs`` (retention). The rules themselves are pure, in
:mod:`cloud.domain.diagnostics`.
"""

from cloud.health.ingest import SUBSCRIPTIONS, BatchReport, HealthIngest, Incoming

__all__ = ["SUBSCRIPTIONS", "BatchReport", "HealthIngest", "Incoming"]
