"""Tables of the cloud database (SQLAlchemy 2 typed models).

Times are integer epoch seconds (UTC). Every schema change gets an Alembic
revision in ``cloud/migrations/versions``; a test checks they agree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.database import Base
from cloud.database import enum_column as _enum
from cloud.devices.rules import DeviceKind, GrantStatus, TokenState
from protocol.topics import DEVICE_ID_MAX_LEN

__all__ = [
    "DeviceRow",
    "GrantRow",
    "InstallationRow",
    "IntegratorRow",
    "OutboxRow",
    "OwnerRow",
    "ResignRow",
    "TokenRow",
]


class InstallationRow(Base):
    """Controllers sharing one configuration; grants apply to all of them."""

    __tablename__ = "installations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)


class DeviceRow(Base):
    """A device and the hash of its broker password (never the password)."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN), primary_key=True)
    installation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT"), index=True
    )
    kind: Mapped[DeviceKind] = mapped_column(_enum(DeviceKind, "device_kind"))
    mqtt_password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)


class GrantRow(Base):
    """One service granted to an installation (or one of its devices or users); upserted and
    ended, never deleted.

    A manual grant and a future subscription lifecycle drive the same row:
    ``source`` says who set it, ``status`` whether it still counts.
    """

    __tablename__ = "service_grants"
    __table_args__ = (UniqueConstraint("installation_id", "feature", "scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    installation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT")
    )
    feature: Mapped[str] = mapped_column(String(64))
    # "" for every device of the installation; "device:<id>" for that device only (it wins
    # over an installation-wide grant of the same feature); "user:<ref>" for one user
    scope: Mapped[str] = mapped_column(String(160), server_default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    valid_until: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(32))
    status: Mapped[GrantStatus] = mapped_column(_enum(GrantStatus, "grant_status"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger)


class TokenRow(Base):
    """Every token issued; the one with the highest id per device is current.

    ``ver`` restarts at 1 in a new key-set epoch, hence unique per
    (device, epoch, ver). ``published_at`` marks a confirmed publish (the
    outbox holds the unconfirmed ones); ``min_until`` (earliest feature end)
    is written with each token, though no decision reads it now.
    """

    __tablename__ = "issued_tokens"
    __table_args__ = (
        UniqueConstraint("device_id", "epoch", "ver"),
        Index("ix_issued_tokens_device_id_id", "device_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE")
    )
    ver: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int] = mapped_column(Integer)
    cti: Mapped[bytes] = mapped_column(LargeBinary(64))
    iat: Mapped[int] = mapped_column(BigInteger)
    exp: Mapped[int] = mapped_column(BigInteger)
    min_until: Mapped[int | None] = mapped_column(BigInteger)
    token: Mapped[bytes] = mapped_column(LargeBinary)
    claims: Mapped[dict[str, Any]] = mapped_column(JSON)
    published_at: Mapped[int | None] = mapped_column(BigInteger)

    def refresh_state(self) -> TokenState:
        """What :func:`cloud.devices.rules.plan_refresh` needs to know about this token."""
        return TokenState(device_id=self.device_id, epoch=self.epoch, exp=self.exp)


class ResignRow(Base):
    """A device whose token must be signed again: one row per device however often queued.

    Jobs put devices here (one ``INSERT ... ON CONFLICT`` per batch) instead of
    signing inside their own transaction; :meth:`IssuingService.drain_resign
    <cloud.devices.issuing.IssuingService.drain_resign>` drains it.
    """

    __tablename__ = "token_resign_queue"
    __table_args__ = (Index("ix_token_resign_queue_queued_at", "queued_at", "device_id"),)

    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    queued_at: Mapped[int] = mapped_column(BigInteger)


class OutboxRow(Base):
    """A stored token not yet handed to the broker (deleted once published).

    Written in the transaction that stores the token, so a crash between the
    commit and the publish leaves the row: the next drain publishes it.
    """

    __tablename__ = "entitlement_outbox"

    token_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("issued_tokens.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger, index=True)


class OwnerRow(Base):
    """The one owner of an installation."""

    __tablename__ = "installation_owners"

    installation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger)


class IntegratorRow(Base):
    """A partner company working on an installation (one of possibly several)."""

    __tablename__ = "installation_integrators"

    installation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT"), primary_key=True
    )
    company_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("companies.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger)
