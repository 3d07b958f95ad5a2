"""Remote commands from the cloud: run them on the firmware, answer on ``cmd/res``.

Every message on the device's ``cmd`` topic gets exactly one answer carrying
its correlation id (``"unknown"`` when the id itself is unreadable): the
firmware's result, or an error with a typed reason. Malformed commands,
unknown commands and firmware failures are counted by reason for the next
health report and never raised: nothing a command carries can stop the
agent. Commands run one at a time from a bounded queue, off the MQTT
message loop, so a slow self-test never delays an entitlement. A command
that finds the queue full is answered at once with the error ``busy`` (send
it again later); those answers wait in a second bounded queue, and only a
flood past both bounds goes unanswered (counted as ``busy_unanswered``).
``resend_health`` needs no firmware: it re-queues kept health reports in the
outbox (the cloud's gap repair) and answers how many, and which seqs are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.health import Publisher
from protocol.commands import (
    BadCommand,
    Command,
    CommandResult,
    error_result,
    ok_result,
    parse_command,
    result_to_json,
)
from protocol.errors import EntitleError
from protocol.topics import device_topic

__all__ = ["UNKNOWN_ID", "CommandHandler", "FirmwareCommands"]

log = logging.getLogger(__name__)
UNKNOWN_ID = "unknown"


class FirmwareCommands(Protocol):
    """The part of :class:`agent.firmware.FirmwareClient` commands use."""

    async def self_test(self) -> dict[str, Any]: ...

    async def get_log(self, *, max_bytes: int = 4096) -> str: ...

    async def reboot(self) -> None: ...


class CommandHandler:
    """Parses, runs and answers commands; ``errors`` counts failures by reason."""

    def __init__(
        self,
        *,
        device_id: str,
        firmware: FirmwareCommands | None,
        publisher: Publisher | None,
        queue_size: int = 16,
        busy_queue_size: int = 64,
        publish_timeout_s: float = 10.0,
        on_reboot: Callable[[], None] | None = None,
        resend_health: Callable[[int, int], Mapping[str, Any]] | None = None,
    ) -> None:
        """``resend_health(from_seq, to_seq)`` re-queues kept health reports (None: no outbox)."""
        self.device_id = device_id
        self.firmware = firmware
        self.publisher = publisher
        self.publish_timeout_s = publish_timeout_s
        self.on_reboot = on_reboot
        self.resend_health = resend_health
        self.errors: dict[str, int] = {}
        self.handled = 0
        self.answered = 0
        self.topic = device_topic(device_id, "cmd/res")
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self._refusals: asyncio.Queue[CommandResult] = asyncio.Queue(busy_queue_size)

    def _count(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def submit(self, payload: bytes) -> None:
        """Queue a received command; when the queue is full it is refused as ``busy``."""
        try:
            self._queue.put_nowait(bytes(payload))
        except asyncio.QueueFull:
            self._refuse_busy(payload)

    def _refuse_busy(self, payload: bytes) -> None:
        self._count("busy")
        try:
            command_id = parse_command(payload).id
        except BadCommand as exc:
            command_id = exc.command_id or UNKNOWN_ID
        queued = self._queue.qsize()
        log.warning("command %s refused: %d commands already queued", command_id, queued)
        result = error_result(
            command_id,
            device_id=self.device_id,
            reason="busy",
            detail=f"{queued} commands already queued on the device; send it again later",
        )
        try:
            self._refusals.put_nowait(result)
        except asyncio.QueueFull:
            self._count("busy_unanswered")

    async def _run(self, command: Command) -> dict[str, Any]:
        if command.cmd == "resend_health":
            if self.resend_health is None:
                raise _NoOutbox("this device keeps no health outbox: nothing to resend")
            return dict(
                self.resend_health(int(command.args["from_seq"]), int(command.args["to_seq"]))
            )
        firmware = self.firmware
        if firmware is None:
            raise _NoFirmware("no firmware link is configured on this device")
        if command.cmd == "self_test":
            return dict(await firmware.self_test())
        if command.cmd == "fetch_log":
            text = await firmware.get_log(max_bytes=int(command.args.get("max_bytes", 4096)))
            return {"log": text, "chars": len(text)}
        await firmware.reboot()
        if self.on_reboot is not None:
            self.on_reboot()
        return {"rebooting": True}

    async def handle(self, payload: bytes) -> CommandResult:
        """One command in, its result out; never raises (except cancellation)."""
        self.handled += 1
        command_id = UNKNOWN_ID
        try:
            command = parse_command(payload)
            command_id = command.id
            result = ok_result(
                command_id, device_id=self.device_id, result=await self._run(command)
            )
            result_to_json(result)  # a result too large to send is an error result instead
            return result
        except BadCommand as exc:
            reason, detail = exc.reason, str(exc)
            command_id = exc.command_id or command_id
        except EntitleError as exc:  # firmware unavailable, timeout, error reply, ...
            reason, detail = exc.reason, str(exc)
        except Exception as exc:  # a bug or a foreign error must not stop the agent
            log.exception("command %s failed", command_id)
            reason, detail = "internal", f"{type(exc).__name__}: {exc}"
        self._count(reason)
        log.info("command %s refused: %s (%s)", command_id, reason, detail)
        return error_result(command_id, device_id=self.device_id, reason=reason, detail=detail)

    async def answer(self, result: CommandResult) -> bool:
        """Publish ``result`` on ``cmd/res``; False (and counted) if it could not be sent."""
        if self.publisher is None:
            return False
        try:
            await self.publisher.publish(
                self.topic, result_to_json(result), timeout_s=self.publish_timeout_s
            )
        except EntitleError as exc:
            self._count("result_not_sent")
            log.warning("result of command %s not sent: %s", result.id, exc)
            return False
        self.answered += 1
        return True

    async def run(self) -> None:
        """Handle queued commands one at a time, and answer refusals, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._answer_refusals(), name="commands-busy")
            tasks.create_task(self._work(), name="commands-work")

    async def _work(self) -> None:
        while True:
            payload = await self._queue.get()
            await self.answer(await self.handle(payload))

    async def _answer_refusals(self) -> None:
        """Busy answers go out beside a running command, not after it."""
        while True:
            await self.answer(await self._refusals.get())


class _NoFirmware(EntitleError):
    """A command needs the firmware but this agent has no firmware link."""


class _NoOutbox(EntitleError):
    """``resend_health`` on an agent that does not report health."""
