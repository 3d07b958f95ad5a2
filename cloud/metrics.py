"""``GET /metrics``: this worker's figures for Prometheus (prometheus-client's text format).

Each worker process has its own registry (one per app, never the library's
global one) and answers for itself; Prometheus scrapes every worker and sums.
Most figures are read at scrape time from what already counts them (the health
ingest, its MQTT receiver, the job runner) or from the database (backlogs,
connected devices; a missing table reads as no series, so a worker on an
older schema still answers). The batch latency is a histogram observed after
each committed batch. Names (README "Metrics"):

    entitle_health_ingest_received_total          messages received (redeliveries too)
    entitle_health_ingest_stored_total            reports stored (each once)
    entitle_health_ingest_duplicates_total        reports already stored (redeliveries)
    entitle_health_ingest_rejected_total{reason}  messages refused, by reason
    entitle_health_ingest_pending                 received, not yet committed (nor acked)
    entitle_health_ingest_cpu_seconds_total{stage}  receive / parse / store
    entitle_health_ingest_batch_seconds           commit latency of a batch (histogram)
    entitle_mqtt_connected                        1 when publishing and receiving
    entitle_job_runs_total{job,outcome}           job passes run here: ok / failed
    entitle_job_backlog{queue}                    rows waiting: entitlement_outbox,
                                                  notifications, device_commands
    entitle_token_resign_queue                    devices waiting for a re-signed token
    entitle_devices_connected                     devices whose last status is online

Serve it only where the monitoring network reaches (it needs no login, like
``/api/v1/healthz``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["CloudMetrics", "metrics_endpoint"]

# table -> the rows still waiting in it (the SQL is ours, no input)
_BACKLOGS = {
    "entitlement_outbox": "SELECT count(*) FROM entitlement_outbox",
    "notifications": "SELECT count(*) FROM notifications WHERE status = 'queued'",
    "device_commands": "SELECT count(*) FROM device_commands WHERE status = 'pending'",
}
_RESIGN = "SELECT count(*) FROM token_resign_queue"
_ONLINE = "SELECT count(*) FROM device_health_state WHERE online"
_DB_CACHE_S = 5.0  # scrapes of several Prometheus servers read the database once


class _Collector(Collector):
    def __init__(self, cloud: Any) -> None:
        self._cloud = cloud
        self._db: dict[str, int] = {}
        self._db_at = -_DB_CACHE_S

    def refresh_database(self) -> None:
        """Count the backlogs (blocking: call it in a thread before a scrape)."""
        now = time.monotonic()
        if now - self._db_at < _DB_CACHE_S:
            return
        found: dict[str, int] = {}
        store = self._cloud.store
        try:
            with store.engine.connect() as connection:
                tables = set(inspect(connection).get_table_names())
                queries = {name: sql for name, sql in _BACKLOGS.items() if name in tables}
                if "token_resign_queue" in tables:
                    queries["token_resign_queue"] = _RESIGN
                if "device_health_state" in tables:
                    queries["devices_connected"] = _ONLINE
                for name, sql in queries.items():
                    found[name] = int(connection.execute(text(sql)).scalar_one())
        except SQLAlchemyError:
            found = {}  # the database is down: no backlog series this scrape
        self._db, self._db_at = found, now

    def collect(self) -> Iterator[Metric]:
        cloud = self._cloud
        ingest = cloud.health_ingest
        if ingest is not None:
            totals = ingest.totals
            yield _counter("health_ingest_received", "messages received", ingest.received)
            yield _counter("health_ingest_stored", "reports stored", totals.stored)
            yield _counter("health_ingest_duplicates", "reports already stored", totals.duplicates)
            rejected = CounterMetricFamily(
                "entitle_health_ingest_rejected", "messages refused", labels=["reason"]
            )
            for reason, count in sorted(totals.rejected.items()):
                rejected.add_metric([reason], count)
            yield rejected
            yield GaugeMetricFamily(
                "entitle_health_ingest_pending", "received, not committed", value=ingest.pending
            )
            cpu = CounterMetricFamily(
                "entitle_health_ingest_cpu_seconds", "CPU per ingest stage", labels=["stage"]
            )
            receiver = cloud.bridge.receiver if cloud.bridge is not None else None
            receive = receiver.cpu_s if receiver is not None else ingest.cpu.receive
            for stage, seconds in (
                ("receive", receive),
                ("parse", ingest.cpu.parse),
                ("store", ingest.cpu.store),
            ):
                cpu.add_metric([stage], seconds)
            yield cpu
        if cloud.bridge is not None:
            yield GaugeMetricFamily(
                "entitle_mqtt_connected",
                "publishing and receiving",
                value=int(cloud.bridge.connected),
            )
        runs = CounterMetricFamily(
            "entitle_job_runs", "job passes run here", labels=["job", "outcome"]
        )
        for (job, outcome), count in sorted(cloud.jobs.passes.items()):
            runs.add_metric([job, outcome], count)
        yield runs
        db = self._db
        backlog = GaugeMetricFamily("entitle_job_backlog", "rows waiting", labels=["queue"])
        for queue in _BACKLOGS:
            if queue in db:
                backlog.add_metric([queue], db[queue])
        yield backlog
        if "token_resign_queue" in db:
            yield GaugeMetricFamily(
                "entitle_token_resign_queue",
                "devices waiting for a re-signed token",
                value=db["token_resign_queue"],
            )
        if "devices_connected" in db:
            yield GaugeMetricFamily(
                "entitle_devices_connected", "last status online", value=db["devices_connected"]
            )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"entitle_{name}", documentation, value=value)


class CloudMetrics:
    """One worker's registry: the collector above and the batch-latency histogram."""

    def __init__(self, cloud: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _Collector(cloud)
        self.registry.register(self._collector)
        self.batch_seconds = Histogram(
            "entitle_health_ingest_batch_seconds",
            "commit latency of one health batch",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        if cloud.health_ingest is not None:
            cloud.health_ingest.on_batch.append(
                lambda size, seconds: self.batch_seconds.observe(seconds)
            )

    async def render(self) -> bytes:
        await asyncio.to_thread(self._collector.refresh_database)
        return generate_latest(self.registry)


async def metrics_endpoint(request: Request) -> Response:
    """The Prometheus text exposition of this worker."""
    metrics: CloudMetrics = request.app.state.metrics
    return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)
