"""The cloud's settings: HTTP, database, jobs, e-mail, invoices and payments.

Only the cloud's own fields, on the common base
(:class:`common.settings.BrokerClientSettings`) that also says how to reach the
broker. Built in the app factory or the CLI command, never at import time.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from common.settings import BrokerClientSettings, without_password

__all__ = ["CloudSettings"]


class CloudSettings(BrokerClientSettings):
    """Effective configuration of ``entitle cloud serve`` and the cloud's commands."""

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite file in data_dir"
    )
    # the broker engine (docs/nats.md): device logins go to Mosquitto's dynamic-security
    # plugin, or to the NATS cluster's logins bucket over nats_url
    broker_engine: Literal["mosquitto", "nats"] = Field(
        default="mosquitto", description="mosquitto (one node) or nats (a cluster, MQTT 3.1.1)"
    )
    nats_url: str | None = Field(
        default=None,
        description="with broker_engine nats: the nodes' NATS URLs, comma-separated "
        "(nats://host:4222,nats://host2:4222), logged in to with the broker URL's login",
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    http_max_body_bytes: int = Field(
        default=1 << 20, ge=1, description="larger request bodies get 413, unread"
    )
    token_ttl_s: int = 14 * 86400
    refresh_before_s: int = 3 * 86400
    refresh_interval_s: float = 60.0
    # how often each worker drains the token re-sign queue the renewal sweep fills
    resign_interval_s: float = 1.0
    # health ingest, commands, tickets (cloud.health, cloud.tickets.service)
    health_batch_size: int = Field(default=200, ge=1, le=1000)
    health_flush_delay_s: float = Field(default=0.05, gt=0)
    # NATS: how long a pulled report may stay unacked before JetStream hands it to another
    # worker (a worker killed mid-batch); above the slowest batch commit
    health_ack_wait_s: float = Field(default=30.0, ge=1)
    # N workers (entitle cloud serve --workers N): each its own consumer session, jobs in any
    mqtt_client_id: str | None = Field(
        default=None,
        description="the health consumer's MQTT client id, i.e. its persistent session on "
        "the broker (default: the broker login); one per worker",
    )
    run_jobs: bool = Field(
        default=True, description="run the background jobs here (false: API and ingest only)"
    )
    ingest_health: bool = Field(
        default=True,
        description="take a share of the health stream here (false: the job runner, "
        "`entitle cloud jobs`, which publishes but consumes nothing)",
    )
    health_retention_s: int = Field(default=30 * 86400, description="raw reports kept")
    health_hourly_retention_s: int = Field(default=730 * 86400, description="hourly aggregates")
    health_retention_interval_s: float = 3600.0
    health_verdict_interval_s: float = Field(
        default=10.0, gt=0, description="verdict job interval (the fleet overview's verdicts)"
    )
    # gap repair (cloud.health.gaps): ask devices again for reports the broker lost
    health_gap_interval_s: float = Field(default=30.0, gt=0, description="gap job interval")
    health_gap_grace_s: int = Field(default=10, ge=0, description="in-flight reports, not gaps")
    health_gap_backoff_s: int = Field(default=300, ge=0, description="before asking again")
    health_gap_window_s: int = Field(default=3600, gt=0, description="how far back to look")
    command_timeout_s: int = 300
    tickets_interval_s: float = 300.0
    # tickets' attachments (cloud.tickets.storage, the acceptance cloud.tickets.rules.files):
    # the files live outside the database, named by their SHA-256
    tickets_attachments_dir: Path | None = Field(
        default=None,
        description="where ticket attachments are stored; default data_dir/attachments",
    )
    tickets_attachment_limits: dict[Literal["image", "text", "video", "pdf"], int] = Field(
        default={"image": 10 << 20, "text": 5 << 20, "video": 50 << 20, "pdf": 10 << 20},
        description="bytes allowed per attachment type (image, text log, video, pdf); 0 refuses it",
    )
    tickets_orphan_grace_s: int = Field(
        default=3600,
        ge=60,
        description="attachment files no row names (and unfinished uploads) older than this "
        "are removed by the tickets job; younger ones may be uploads in flight",
    )
    tickets_support_email: str | None = Field(
        default=None,
        description="where customers' ticket messages are mailed when no one is responsible",
    )
    repair_warranty_months: int = Field(
        default=24, ge=0, le=240, description="warranty from a device's registration date (repairs)"
    )
    # accounts: dashboard login sessions; vendor staff are not customers' contacts
    session_ttl_s: int = Field(default=12 * 3600, description="a login lasts at most this long")
    session_idle_s: int = Field(default=30 * 60, description="a login ends after this idle time")
    staff_email_domains: list[str] = Field(
        default=["entitle.example"], description="e-mail domains of vendor staff"
    )
    password_reset_ttl_s: int = Field(
        default=3600, ge=300, le=7 * 86400, description="a forgotten-password link works this long"
    )
    web_assets_dir: Path = Field(
        default_factory=lambda: Path(__file__).resolve().parents[1] / "node_modules",
        description="node_modules holding the dashboard's front-end libraries (npm ci)",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="the dashboard's address as its users reach it, for links in e-mails; "
        "default http://http_host:http_port",
    )

    # e-mail (notification outbox); no smtp_host: mails stay queued (logged at startup)
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (587), tls (implicit, 465) or none"
    )
    smtp_username: str | None = None
    smtp_password_file: Path | None = Field(default=None, description="file holding the password")
    smtp_ca_file: Path | None = Field(default=None, description="CA bundle; default system CAs")
    smtp_sender: str = "Entitle <no-reply@entitle.invalid>"
    smtp_timeout_s: float = 30.0
    outbox_interval_s: float = 30.0
    # invoices (cloud.billing.invoices): the seller printed on every invoice
    invoice_seller_name: str = "Entitle"
    invoice_seller_address: str = Field(default="", description="lines separated by '\\n'")
    invoice_seller_vat_id: str | None = None
    invoice_vat_percent: Decimal = Field(default=Decimal(0), description="VAT in the prices")
    purchase_connected_window_s: int = Field(
        default=7 * 86400,
        gt=0,
        description="a service is sold only to an installation one of whose devices reported "
        "health within this many seconds",
    )
    test_clock: bool = Field(
        default=False,
        description="a settable cloud clock and POST /api/v1/test-clock/advance (demos, tests)",
    )
    # orders and payments (cloud.billing); "sandbox" is a test double that moves no money
    payment_provider: Literal["sandbox"] = Field(
        default="sandbox", description="card processor; only the sandbox test double for now"
    )
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
    billing_notify: list[str] = Field(
        default=[], description="e-mails told about failed refunds, besides each buyer"
    )

    @model_validator(mode="after")
    def _nats_needs(self) -> CloudSettings:
        if self.broker_engine == "nats":
            if self.mqtt_protocol != 4:
                raise ValueError("ENTITLE_BROKER_ENGINE=nats needs ENTITLE_MQTT_PROTOCOL=4")
            if not self.nats_url:
                raise ValueError("ENTITLE_BROKER_ENGINE=nats needs ENTITLE_NATS_URL")
        return self

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` as a list (no credentials: the broker URL's login is used)."""
        return [url.strip() for url in (self.nats_url or "").split(",") if url.strip()]

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cloud.db'}"

    @property
    def effective_public_url(self) -> str:
        """Where links in e-mails point: ``public_url``, else this server's own address."""
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def attachments_dir(self) -> Path:
        """Where ticket attachments are stored (``tickets_attachments_dir`` or under data_dir)."""
        return self.tickets_attachments_dir or self.data_dir / "attachments"

    @property
    def keys_dir(self) -> Path:
        """The issuer's signing keys (mode 0600)."""
        return self.data_dir / "keys"

    def redacted(self) -> dict[str, Any]:
        shown = super().redacted()
        if self.database_url is not None:
            shown["database_url"] = without_password(self.database_url)
        shown["effective_database_url"] = without_password(self.effective_database_url)
        return shown
