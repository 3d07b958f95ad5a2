"""Remote commands: store a row, publish it on the device's ``cmd`` topic, time it out.

The row's id is the correlation id the device echoes on ``cmd/res``; the
ingest settles the row from the result (:func:`cloud.health.queries.answer_command`,
only if the answering device is the command's device). :class:`CommandTimeoutJob`
marks commands nobody answered in time.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select

from cloud.database import Store
from cloud.devices.tables import DeviceRow
from cloud.errors import Conflict, NotFound, UnknownDevice
from cloud.health import queries as repo
from cloud.health.tables import CommandRow, CommandStatus
from common.clock import Clock
from protocol.commands import Command, command_to_json, parse_command
from protocol.errors import TransportError

__all__ = [
    "CommandPublisher",
    "CommandsUnavailable",
    "CommandService",
    "CommandTimeoutJob",
    "CommandView",
    "UnknownCommand",
]

_log = logging.getLogger(__name__)


class UnknownCommand(NotFound):
    """No command with this id."""


class CommandsUnavailable(Conflict):
    """This cloud has no route to devices (no MQTT bridge): commands cannot be sent."""


@runtime_checkable
class CommandPublisher(Protocol):
    """Where commands go: the MQTT bridge (QoS 1, not retained)."""

    async def publish_command(self, device_id: str, payload: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandView:
    id: str
    device_id: str
    cmd: str
    args: dict[str, Any]
    status: str
    ok: bool | None
    result: dict[str, Any] | None
    requested_by: str
    created_at: int
    timeout_at: int
    answered_at: int | None

    @classmethod
    def of(cls, row: CommandRow) -> CommandView:
        return cls(
            id=row.id,
            device_id=row.device_id,
            cmd=row.cmd,
            args=dict(row.args),
            status=CommandStatus(row.status).value,
            ok=row.ok,
            result=None if row.result is None else dict(row.result),
            requested_by=row.requested_by,
            created_at=row.created_at,
            timeout_at=row.timeout_at,
            answered_at=row.answered_at,
        )


class CommandService:
    """Send commands to devices and read their outcome."""

    def __init__(
        self, store: Store, publisher: CommandPublisher, *, clock: Clock, timeout_s: int
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._timeout_s = timeout_s

    async def send(
        self, *, device_id: str, cmd: str, args: dict[str, Any], requested_by: str
    ) -> CommandView:
        """Store the command pending, then publish it.

        Raises:
            BadCommand: arguments the device would refuse.
            UnknownDevice: no such device.
            TransportError: the broker did not take it (the row is marked timed out).
            CommandsUnavailable: no route to devices at all (likewise).
        """
        command = Command(id=f"c-{secrets.token_hex(12)}", cmd=cmd, args=args)  # type: ignore[arg-type]
        payload = command_to_json(command)
        parse_command(payload)  # the device's own check, here: BadCommand (e.g. bad args)
        now = self._clock()

        def add() -> CommandView:
            with self._store.transaction() as tx:
                if tx.get(DeviceRow, device_id) is None:
                    raise UnknownDevice(f"no device {device_id}")
                row = CommandRow(
                    id=command.id,
                    device_id=device_id,
                    cmd=cmd,
                    args=dict(args),
                    status=CommandStatus.PENDING,
                    requested_by=requested_by,
                    created_at=now,
                    timeout_at=now + self._timeout_s,
                )
                tx.add(row)
                tx.flush()
                return CommandView.of(row)

        view = await asyncio.to_thread(add)
        try:
            await self._publisher.publish_command(device_id, payload)
        except (TransportError, CommandsUnavailable):
            await asyncio.to_thread(self._fail, command.id)
            raise
        _log.info("command %s %s sent to %s", command.id, cmd, device_id)
        return view

    def _fail(self, command_id: str) -> None:
        with self._store.transaction() as tx:
            row = tx.get(CommandRow, command_id, with_for_update=True)
            if row is not None and row.status == CommandStatus.PENDING:
                row.status = CommandStatus.TIMED_OUT
                row.result = {"reason": "not_sent", "detail": "the broker did not take it"}

    def get(self, command_id: str) -> CommandView:
        """Raises UnknownCommand."""
        with self._store.transaction() as tx:
            row = tx.get(CommandRow, command_id)
            if row is None:
                raise UnknownCommand(f"no command {command_id}")
            return CommandView.of(row)

    def list_for(self, device_id: str, *, limit: int = 50) -> list[CommandView]:
        with self._store.transaction() as tx:
            rows = tx.scalars(
                select(CommandRow)
                .where(CommandRow.device_id == device_id)
                .order_by(CommandRow.created_at.desc(), CommandRow.id)
                .limit(limit)
            ).all()
            return [CommandView.of(row) for row in rows]


class CommandTimeoutJob:
    """Marks pending commands past their deadline ``timed_out`` (a conditional UPDATE)."""

    name = "command-timeouts"

    def __init__(self, store: Store, *, clock: Clock, interval_s: float = 15.0) -> None:
        self._store = store
        self._clock = clock
        self.interval_s = interval_s

    async def run_once(self) -> int:
        now = self._clock()

        def work() -> int:
            with self._store.transaction() as tx:
                return repo.time_out_commands(tx, now=now)

        return await asyncio.to_thread(work)
