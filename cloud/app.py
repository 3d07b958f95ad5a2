"""The FastAPI application factory.

Nothing is built at import time: :func:`create_app` takes the settings and
optional adapters; the lifespan migrates the database, loads (or creates)
the issuer keys, and runs the MQTT bridge and the refresh job as named tasks
of one TaskGroup, cancelled and awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud import probe
from cloud import schema as _schema  # noqa: F401  every table, before the first query
from cloud.accounts.service import AccountService
from cloud.billing.jobs import PaymentReconcileJob, RefundRetryJob
from cloud.billing.orders import Billing
from cloud.billing.service import OrderService
from cloud.bridge import MqttBridge
from cloud.database import Store
from cloud.devices.issuing import IssuingService
from cloud.devices.jobs import RefreshJob, ResignJob
from cloud.devices.service import DeviceService, InstallationService
from cloud.devices.signer import Signer
from cloud.errors import N_
from cloud.health.commands import (
    CommandPublisher,
    CommandService,
    CommandsUnavailable,
    CommandTimeoutJob,
)
from cloud.health.connectivity import installation_reports
from cloud.health.gaps import HealthGapJob
from cloud.health.ingest import NATS_SUBSCRIPTIONS, SUBSCRIPTIONS, HealthIngest
from cloud.health.jetstream import JetStreamHealth
from cloud.health.retention import HealthRetentionJob
from cloud.health.service import HealthService
from cloud.health.verdicts import VerdictJob
from cloud.http.body_limit import BodyLimit
from cloud.http.errors import entitle_error, not_found_or_http_error, validation_error
from cloud.http.inputs import RULES
from cloud.jobs import Job, JobRunner
from cloud.metrics import CloudMetrics, metrics_endpoint
from cloud.notifications.mailer import SmtpMailer
from cloud.notifications.outbox import enqueue as enqueue_mail
from cloud.notifications.sender import OutboxSender
from cloud.notifications.service import NotificationService
from cloud.ports import BrokerAccounts, EntitlementPublisher
from cloud.repairs.service import RepairService
from cloud.router import api_router, page_router
from cloud.settings import CloudSettings
from cloud.subscriptions.jobs import RenewalJob
from cloud.subscriptions.service import SubscriptionService
from cloud.testclock import TestClock
from cloud.tickets.jobs import TicketJob
from cloud.tickets.routes import ATTACHMENT_UPLOAD, upload_limit
from cloud.tickets.service import TicketService
from cloud.tickets.storage import AttachmentStore
from cloud.web.assets import mount_static
from cloud.web.i18n import negotiate
from cloud.web.security import SecurityHeaders
from cloud.web.templates import Pages
from common.clock import Clock, system_clock
from common.dynsec import DynsecAccounts
from common.natsaccounts import NatsAccounts
from common.settings import parse_broker_url
from protocol.errors import EntitleError

__all__ = ["CloudState", "create_app"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CloudState:
    """Everything the lifespan built, hung on ``app.state.cloud``.

    Routes reach it through :mod:`cloud.http.deps` (store, settings, clock,
    bridge) and each slice's own ``provided(Service)`` alias.
    """

    settings: CloudSettings
    store: Store
    signer: Signer
    service: IssuingService
    publisher: EntitlementPublisher
    bridge: MqttBridge | None
    refresh_job: RefreshJob
    clock: Clock
    jobs: JobRunner
    health_ingest: HealthIngest | None = None  # the health stream consumer (cloud.health)
    commands: CommandService | None = None  # remote commands to devices
    tickets: TicketService | None = None  # support tickets and RMA
    outbox: OutboxSender | None = None  # None without ENTITLE_SMTP_HOST
    billing: Billing | None = None  # orders and payments (cloud.billing)
    subscriptions: SubscriptionService | None = None  # cloud.subscriptions
    # what the routes call, one service per slice (cloud.<slice>.service)
    accounts: AccountService | None = None
    installations: InstallationService | None = None
    devices: DeviceService | None = None
    orders: OrderService | None = None
    health: HealthService | None = None
    notifications: NotificationService | None = None
    repairs: RepairService | None = None  # cloud.repairs

    def provided(self, kind: type[_T]) -> _T:
        """The one ``kind`` the lifespan built (:func:`cloud.http.deps.provided`).

        Raises:
            LookupError: it built none (e.g. no outbox sender without SMTP).
        """
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, kind):
                return value
        raise LookupError(f"this cloud runs without a {kind.__name__}")


class _NoCommandRoute:
    """No MQTT bridge (a custom publisher was given): commands cannot reach devices."""

    async def publish_command(self, device_id: str, payload: bytes) -> None:
        raise CommandsUnavailable(
            N_("this cloud runs without an MQTT bridge: no command can reach %(device_id)s"),
            device_id=device_id,
        )


def _command_route(publisher: object) -> CommandPublisher:
    """A custom publisher that can also carry commands (a simulator), else none."""
    if isinstance(publisher, CommandPublisher):
        return publisher
    return _NoCommandRoute()


class _UnmanagedAccounts:
    """No broker accounts adapter: device logins must be created some other way."""

    def set_password(self, username: str, password: str) -> None:
        _log.warning("no broker accounts adapter: create a broker login for %s yourself", username)

    def remove(self, username: str) -> None:
        _log.warning("no broker accounts adapter: remove the broker login of %s yourself", username)


def _default_accounts(settings: CloudSettings, *, real_broker: bool) -> BrokerAccounts:
    """Device logins on the broker the cloud publishes to: Mosquitto's dynamic-security
    plugin or the NATS cluster's logins bucket (``broker_engine``), administered with
    the cloud's own login; none with a custom publisher."""
    if real_broker and settings.broker_engine == "nats":
        broker = settings.broker
        return NatsAccounts(
            settings.nats_servers,
            username=broker.username or "",
            password=broker.password.get_secret_value() if broker.password else None,
        )
    if real_broker:
        return DynsecAccounts.from_settings(settings)
    _log.warning(
        "no broker accounts adapter with a custom publisher: device credentials will "
        "not reach a broker (pass accounts= to create_app)"
    )
    return _UnmanagedAccounts()


def create_app(
    settings: CloudSettings,
    *,
    publisher: EntitlementPublisher | None = None,
    accounts: BrokerAccounts | None = None,
    clock: Clock | None = None,
    command_publisher: CommandPublisher | None = None,
) -> FastAPI:
    """Build the cloud app.

    Args:
        settings: effective configuration (database URL, keys dir, broker, TTLs).
        publisher: where tokens go; default the MQTT bridge to ``settings.broker``.
        accounts: broker accounts of devices; default :class:`common.dynsec.DynsecAccounts`
            with the cloud's broker login when ``publisher`` is the default bridge, else
            none (logged).
        clock: epoch seconds; default the system clock.
        command_publisher: where device commands go; default the MQTT bridge, or
            ``publisher`` when it has ``publish_command`` (else sending answers 409).
    """
    now = clock or (TestClock() if settings.test_clock else system_clock)
    if settings.refresh_before_s >= settings.token_ttl_s:
        raise ValueError(
            f"refresh_before_s ({settings.refresh_before_s}) must be below token_ttl_s "
            f"({settings.token_ttl_s}), or every token is re-issued on every pass"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        device_accounts = (
            accounts
            if accounts is not None
            else _default_accounts(settings, real_broker=publisher is None)
        )
        store = await asyncio.to_thread(Store.open, settings.effective_database_url)

        def gettext_for(lang: str | None) -> Callable[[str], str]:
            """A mail's translator: the reader's language, else the default."""
            return app.state.pages.catalogues[negotiate(lang, None)].gettext

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
            billing = Billing.from_settings(settings, store, clock=now)
            jobs += [RefundRetryJob(billing, clock=now), PaymentReconcileJob(billing, clock=now)]
            subscriptions = SubscriptionService(
                store,
                service,
                billing,
                clock=now,
                reports=installation_reports,
                connected_window_s=settings.purchase_connected_window_s,
            )
            jobs.append(RenewalJob(subscriptions, clock=now))
            # after the renewals: a pass of the job runner signs what the sweep queued
            jobs.append(
                ResignJob(
                    service,
                    refresh_before_s=settings.refresh_before_s,
                    interval_s=settings.resign_interval_s,
                )
            )
            nats = settings.broker_engine == "nats"
            ingest = HealthIngest(
                store,
                clock=now,
                batch_size=settings.health_batch_size,
                flush_delay_s=settings.health_flush_delay_s,
                subscriptions=NATS_SUBSCRIPTIONS if nats else SUBSCRIPTIONS,
                resend_on_connect=nats,
            )
            ingest.on_behind = service.republish  # a device came online with an older token
            # on NATS, reports come from JetStream (one durable consumer); the job runner
            # (`entitle cloud jobs`) takes no share of them
            if bridge is not None and settings.ingest_health:
                bridge.attach(
                    ingest, stream=JetStreamHealth.from_settings(settings) if nats else None
                )
            commands = CommandService(
                store,
                command_publisher or bridge or _command_route(publisher),
                clock=now,
                timeout_s=settings.command_timeout_s,
            )
            attachments = AttachmentStore(
                settings.attachments_dir, limits=settings.tickets_attachment_limits
            )
            tickets = TicketService(
                store,
                clock=now,
                attachments=attachments,
                translations=gettext_for,
                public_url=settings.effective_public_url,
                support_email=settings.tickets_support_email,
            )
            jobs += [
                CommandTimeoutJob(store, clock=now),
                TicketJob(
                    store,
                    clock=now,
                    interval_s=settings.tickets_interval_s,
                    on_closed=tickets.auto_closed,  # mail and audit what it closes
                    attachments=attachments,
                    orphan_grace_s=settings.tickets_orphan_grace_s,
                ),
                HealthRetentionJob(
                    store,
                    clock=now,
                    raw_retention_s=settings.health_retention_s,
                    hourly_retention_s=settings.health_hourly_retention_s,
                    interval_s=settings.health_retention_interval_s,
                ),
                HealthGapJob(
                    store,
                    commands,
                    clock=now,
                    interval_s=settings.health_gap_interval_s,
                    grace_s=settings.health_gap_grace_s,
                    backoff_s=settings.health_gap_backoff_s,
                    window_s=settings.health_gap_window_s,
                ),
                # the verdict kept per device (the fleet overview)
                VerdictJob(store, clock=now, interval_s=settings.health_verdict_interval_s),
            ]
            mailer = SmtpMailer.from_settings(settings)
            outbox = None
            if mailer is None:
                _log.warning("no ENTITLE_SMTP_HOST: e-mail notifications stay queued, unsent")
            else:
                outbox = OutboxSender(
                    store,
                    mailer,
                    sender=settings.smtp_sender,
                    clock=now,
                    interval_s=settings.outbox_interval_s,
                    send_timeout_s=2 * settings.smtp_timeout_s,
                )
                jobs.append(outbox)
            runner = JobRunner(jobs)
            broker = parse_broker_url(settings.broker_url)  # host and port only: no secrets
            scheme = "mqtts" if broker.tls else "mqtt"
            account_service = AccountService(
                store,
                clock=now,
                session_ttl_s=settings.session_ttl_s,
                session_idle_s=settings.session_idle_s,
                mail=enqueue_mail,  # forgotten-password links, through the outbox
                reset_ttl_s=settings.password_reset_ttl_s,
                public_url=settings.effective_public_url,
                translations=gettext_for,
            )
            installation_service = InstallationService(
                store, service, clock=now, staff_email_domains=settings.staff_email_domains
            )
            device_service = DeviceService(
                store, service, broker_url=f"{scheme}://{broker.host}:{broker.port}"
            )
            order_service = OrderService(store, billing, clock=now, settings=settings)
            health_service = HealthService(store, commands, ingest, bridge=bridge, clock=now)
            notification_service = NotificationService(store, clock=now)
            repair_service = RepairService(
                store,
                billing,
                clock=now,
                settings=settings,
                translations=gettext_for,
            )
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
                billing=billing,
                outbox=outbox,
                health_ingest=ingest,
                commands=commands,
                tickets=tickets,
                subscriptions=subscriptions,
                accounts=account_service,
                installations=installation_service,
                devices=device_service,
                orders=order_service,
                health=health_service,
                notifications=notification_service,
                repairs=repair_service,
            )
            app.state.metrics = CloudMetrics(app.state.cloud)  # GET /metrics
            async with asyncio.TaskGroup() as tasks:
                running = []
                if bridge is not None:
                    running.append(tasks.create_task(bridge.run(), name="mqtt-bridge"))
                else:
                    await service.publish_keyset()  # the bridge does this on every connect
                if settings.run_jobs:
                    running.append(tasks.create_task(runner.run(), name="jobs"))
                else:  # another worker runs them (entitle cloud serve --workers N)
                    runner.first_passes_done.set()
                running.append(tasks.create_task(ingest.run(), name="health-ingest"))
                _log.info("cloud started: key set v%d", signer.keyset.version)
                try:
                    yield
                finally:
                    for task in running:
                        task.cancel()
            _log.info("cloud stopped")
        finally:
            await asyncio.to_thread(store.close)
            if accounts is None and isinstance(device_accounts, DynsecAccounts | NatsAccounts):
                await asyncio.to_thread(device_accounts.close)

    app = FastAPI(
        title="Entitle cloud",
        version="1",
        summary="Installations, devices, service grants and signed entitlement tokens",
        description=RULES,
        lifespan=lifespan,
        docs_url=None,  # /docs is ours (cloud.web.docs): Swagger UI from our own assets
        redoc_url=None,
    )
    app.state.pages = Pages()  # templates and languages, for the dashboard (cloud.web)
    app.add_exception_handler(StarletteHTTPException, not_found_or_http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(EntitleError, entitle_error)  # the error tree, as HTTP
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.http_max_body_bytes,
        # ticket attachments (photos, logs, videos; several an upload) have their own,
        # per-type limits
        uploads=(ATTACHMENT_UPLOAD, upload_limit(settings.tickets_attachment_limits)),
    )
    app.add_middleware(SecurityHeaders)  # CSP without inline script, nosniff, no framing
    app.include_router(api_router)
    app.include_router(page_router)
    mount_static(app, settings.web_assets_dir)
    app.include_router(probe.router, include_in_schema=False)  # /healthz for load balancers
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)  # Prometheus
    return app
