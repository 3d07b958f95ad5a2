"""Remote commands (cloud -> device ``cmd``) and their results (device -> cloud ``cmd/res``).

Command::

    {"v": 1, "id": "<correlation id, [A-Za-z0-9_.:-]{1,64}>",
     "cmd": "self_test" | "fetch_log" | "reboot" | "resend_health", "args": {...}}

    args: self_test {}, reboot {}, fetch_log {"max_bytes": 1..16384 (optional)},
          resend_health {"from_seq": >= 1, "to_seq": from_seq .. from_seq + 999}

``resend_health`` asks the agent to publish its kept health reports in that
seq range again (the cloud's gap repair); its result is
``{"requeued": int, "not_held": [[from, to], ...]}``.

Result, answered with the command's ``id``::

    {"v": 1, "id", "device_id", "ok": true,  "result": {...}}
    {"v": 1, "id", "device_id", "ok": false, "error": {"reason": str, "detail": str}}

Sizes are checked before decoding (command 4 KiB, result 64 KiB). Refusals
raise :class:`BadCommand` with ``reason`` in ``too_large``, ``bad_json``,
``bad_schema``, ``wrong_version``, ``unknown_command`` (commands) or
``wrong_device`` (results) and, when the id itself was readable,
``command_id`` so the device can still answer the right request. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from protocol.errors import BadMessage, TopicError
from protocol.jsonwire import Fields, check_json_value, decode_object
from protocol.topics import check_device_id

__all__ = [
    "COMMANDS",
    "COMMAND_VERSION",
    "MAX_COMMAND_BYTES",
    "MAX_LOG_BYTES",
    "MAX_RESEND_SEQS",
    "MAX_RESULT_BYTES",
    "BadCommand",
    "Command",
    "CommandName",
    "CommandResult",
    "command_to_json",
    "error_result",
    "ok_result",
    "parse_command",
    "parse_command_result",
    "result_to_json",
]

COMMAND_VERSION = 1
MAX_COMMAND_BYTES = 4 * 1024
MAX_RESULT_BYTES = 64 * 1024
MAX_LOG_BYTES = 16 * 1024
MAX_RESEND_SEQS = 1000  # seqs one resend_health may name: bounds the work one command queues
CommandName = Literal["self_test", "fetch_log", "reboot", "resend_health"]
COMMANDS: tuple[CommandName, ...] = ("self_test", "fetch_log", "reboot", "resend_health")
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_RESULT_DEPTH = 6
_MAX_REASON = 64
_MAX_DETAIL = 1024


class BadCommand(BadMessage):
    """A command or result that is refused; ``command_id`` is set when it was readable."""

    def __init__(self, reason: str, detail: str = "", *, command_id: str | None = None) -> None:
        super().__init__(reason, detail)
        self.command_id = command_id


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    cmd: CommandName
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """``ok`` with ``result``, or not ``ok`` with ``error_reason``/``error_detail``."""

    id: str
    device_id: str
    ok: bool
    result: Mapping[str, Any] | None = None
    error_reason: str | None = None
    error_detail: str | None = None


def _error(reason: str, detail: str) -> BadCommand:
    return BadCommand(reason, detail)


def _readable_id(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("id")
    return value if isinstance(value, str) and _ID.fullmatch(value) else None


def _check_version(f: Fields, command_id: str | None) -> None:
    version = f.integer("v", lo=0)
    if version != COMMAND_VERSION:
        raise BadCommand(
            "wrong_version", f"version {version} is not {COMMAND_VERSION}", command_id=command_id
        )


def _id(f: Fields) -> str:
    value: str = f.text("id", max_len=64)
    if not _ID.fullmatch(value):
        raise BadCommand("bad_schema", "id must match [A-Za-z0-9_.:-]{1,64}")
    return value


def _args(cmd: CommandName, args: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cmd == "fetch_log" and args.has("max_bytes"):
        out["max_bytes"] = args.integer("max_bytes", lo=1, hi=MAX_LOG_BYTES)
    elif cmd == "resend_health":
        first = args.integer("from_seq", lo=1)
        out["from_seq"] = first
        out["to_seq"] = args.integer("to_seq", lo=first, hi=first + MAX_RESEND_SEQS - 1)
    args.done()
    return out


def parse_command(data: bytes) -> Command:
    """Decode and validate one command received on the device's ``cmd`` topic.

    Raises:
        BadCommand: too_large, bad_json, bad_schema, wrong_version or unknown_command.
    """
    obj = decode_object(data, max_bytes=MAX_COMMAND_BYTES, error=_error)
    command_id = _readable_id(obj)
    try:
        f = Fields(obj, where="cmd", error=_error)
        _check_version(f, command_id)
        ident = _id(f)
        name = f.text("cmd", max_len=32)
        if name not in COMMANDS:
            raise BadCommand("unknown_command", f"unknown command {name!r}; known: {COMMANDS}")
        args = _args(name, f.nested("args"))
        f.done()
    except BadCommand as exc:
        exc.command_id = command_id
        raise
    return Command(id=ident, cmd=name, args=args)


def command_to_json(command: Command) -> bytes:
    """The command as compact JSON (the cloud's side)."""
    if not _ID.fullmatch(command.id):
        raise BadCommand("bad_schema", "id must match [A-Za-z0-9_.:-]{1,64}")
    body = {"v": COMMAND_VERSION, "id": command.id, "cmd": command.cmd, "args": dict(command.args)}
    return json.dumps(body, separators=(",", ":")).encode()


def parse_command_result(data: bytes, *, topic_device_id: str) -> CommandResult:
    """Decode and validate one result published on ``topic_device_id``'s ``cmd/res``.

    Raises:
        BadCommand: too_large, bad_json, bad_schema, wrong_version or wrong_device.
    """
    obj = decode_object(data, max_bytes=MAX_RESULT_BYTES, error=_error)
    command_id = _readable_id(obj)
    try:
        f = Fields(obj, where="cmd/res", error=_error)
        _check_version(f, command_id)
        ident = _id(f)
        device_id = f.text("device_id", max_len=64)
        try:
            check_device_id(device_id)
        except TopicError as exc:
            raise BadCommand("bad_schema", str(exc)) from exc
        if device_id != topic_device_id:
            raise BadCommand(
                "wrong_device", f"result names {device_id!r}, published by {topic_device_id!r}"
            )
        if f.flag("ok"):
            result = CommandResult(
                id=ident, device_id=device_id, ok=True, result=f.free("result", depth=_RESULT_DEPTH)
            )
        else:
            error = f.nested("error")
            result = CommandResult(
                id=ident,
                device_id=device_id,
                ok=False,
                error_reason=error.text("reason", max_len=_MAX_REASON),
                error_detail=error.text("detail", max_len=_MAX_DETAIL, null=True),
            )
            error.done()
        f.done()
    except BadCommand as exc:
        exc.command_id = command_id
        raise
    return result


def ok_result(command_id: str, *, device_id: str, result: Mapping[str, Any]) -> CommandResult:
    return CommandResult(id=command_id, device_id=device_id, ok=True, result=dict(result))


def error_result(command_id: str, *, device_id: str, reason: str, detail: str) -> CommandResult:
    return CommandResult(
        id=command_id,
        device_id=device_id,
        ok=False,
        error_reason=reason[:_MAX_REASON] or "error",
        error_detail=detail[:_MAX_DETAIL] or None,
    )


def result_to_json(result: CommandResult) -> bytes:
    """The result as compact JSON; a result over 64 KiB raises BadCommand(too_large)."""
    body: dict[str, Any] = {
        "v": COMMAND_VERSION,
        "id": result.id,
        "device_id": result.device_id,
        "ok": result.ok,
    }
    if result.ok:
        payload = dict(result.result or {})
        check_json_value(payload, depth=_RESULT_DEPTH, where="result", error=_error)
        body["result"] = payload
    else:
        body["error"] = {"reason": result.error_reason or "error", "detail": result.error_detail}
    data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    if len(data) > MAX_RESULT_BYTES:
        raise BadCommand("too_large", f"result is {len(data)} bytes", command_id=result.id)
    return data
