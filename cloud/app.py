"""The FastAPI application factory.

Nothing is built at import time: :func:`create_app` takes the settings and
optional adapters; the lifespan migrates the database, loads (or creates)
the issuer keys, and runs the MQTT bridge and the refresh job as named tasks
of one TaskGroup, cancelled and awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from cloud.api.deps import CloudState
from cloud.api.errors import validation_error
from cloud.api.routes import api_router, health
from cloud.bridge import MqttBridge
from cloud.issuing import IssuingService
from cloud.jobs import Job, JobRunner, RefreshJob
from cloud.ports import BrokerAccounts, Clock, EntitlementPublisher, system_clock
from cloud.signer import Signer
from cloud.store import Store
from entitle.config import Settings

__all__ = ["create_app"]

_log = logging.getLogger(__name__)


class _UnmanagedAccounts:
    """No broker accounts adapter: device logins must be created some other way."""

    def set_password(self, username: str, password: str) -> None:
        _log.warning("no broker accounts adapter: create a broker login for %s yourself", username)

    def remove(self, username: str) -> None:
        _log.warning("no broker accounts adapter: remove the broker login of %s yourself", username)


def _default_accounts(settings: Settings) -> BrokerAccounts:
    """Mosquitto's password file in ``data_dir/broker`` (``entitle broker run``), if any."""
    broker_dir = settings.data_dir / "broker"
    if (broker_dir / "passwd").exists():
        from entitle.broker import MosquittoAccounts

        return MosquittoAccounts(broker_dir)
    _log.warning(
        "no broker directory at %s: device credentials will not reach a broker "
        "(start one with 'entitle broker run' or pass accounts= to create_app)",
        broker_dir,
    )
    return _UnmanagedAccounts()


def create_app(
    settings: Settings,
    *,
    publisher: EntitlementPublisher | None = None,
    accounts: BrokerAccounts | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the cloud app.

    Args:
        settings: effective configuration (database URL, keys dir, broker, TTLs).
        publisher: where tokens go; default the MQTT bridge to ``settings.broker``.
        accounts: broker accounts of devices; default ``entitle.broker.MosquittoAccounts``
            on ``data_dir/broker`` when that broker directory exists, else none (logged).
        clock: epoch seconds; default the system clock.
    """
    now = clock or system_clock
    if settings.refresh_before_s >= settings.token_ttl_s:
        raise ValueError(
            f"refresh_before_s ({settings.refresh_before_s}) must be below token_ttl_s "
            f"({settings.token_ttl_s}), or every token is re-issued on every pass"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        device_accounts = accounts if accounts is not None else _default_accounts(settings)
        store = await asyncio.to_thread(Store.open, settings.effective_database_url)
        try:
            signer = await asyncio.to_thread(Signer.load_or_create, settings.keys_dir)
            bridge = None
            sink = publisher
            if sink is None:
                bridge = MqttBridge.from_settings(settings, keyset_message=signer.keyset_message)
                sink = bridge
            service = IssuingService(
                store, signer, sink, device_accounts, ttl_s=settings.token_ttl_s, clock=now
            )
            job = RefreshJob(
                service,
                store,
                refresh_before_s=settings.refresh_before_s,
                interval_s=settings.refresh_interval_s,
                clock=now,
            )
            jobs: list[Job] = [job]  # every background job; each is idempotent across workers
            runner = JobRunner(jobs)
            app.state.cloud = CloudState(
                settings=settings,
                store=store,
                signer=signer,
                service=service,
                publisher=sink,
                bridge=bridge,
                refresh_job=job,
                clock=now,
                jobs=runner,
            )
            async with asyncio.TaskGroup() as tasks:
                running = []
                if bridge is not None:
                    running.append(tasks.create_task(bridge.run(), name="mqtt-bridge"))
                else:
                    await service.publish_keyset()  # the bridge does this on every connect
                running.append(tasks.create_task(runner.run(), name="jobs"))
                _log.info("cloud started: key set v%d", signer.keyset.version)
                try:
                    yield
                finally:
                    for task in running:
                        task.cancel()
            _log.info("cloud stopped")
        finally:
            await asyncio.to_thread(store.close)

    app = FastAPI(
        title="Entitle cloud",
        version="1",
        summary="Installations, devices, service grants and signed entitlement tokens",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(api_router)
    app.include_router(health.router, include_in_schema=False)  # /healthz for load balancers
    return app
