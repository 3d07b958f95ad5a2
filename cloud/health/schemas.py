"""HTTP bodies of device health, the fleet, the ingest and commands (pydantic: the edge)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from cloud.health.rules.diagnostics import Diagnosis
from cloud.http.inputs import StrictBody
from protocol.commands import MAX_LOG_BYTES

__all__ = [
    "CommandCreate",
    "FetchLogArgs",
    "FetchLogCommand",
    "NoArgs",
    "RebootCommand",
    "SelfTestCommand",
    "DeviceHealthOut",
    "DiagnosisOut",
    "EvidenceOut",
    "FleetOut",
    "HistoryOut",
    "HourlyOut",
    "HourlyPageOut",
    "IngestOut",
]


class EvidenceOut(BaseModel):
    rule: str
    metric: str
    measure: str
    value: float
    values: list[float]
    threshold: float
    window_s: int


class DiagnosisOut(BaseModel):
    verdict: str
    action: str
    evidence: list[EvidenceOut]

    @classmethod
    def of(cls, diagnosis: Diagnosis) -> DiagnosisOut:
        return cls(
            verdict=diagnosis.verdict.value,
            action=diagnosis.action.value,
            evidence=[EvidenceOut(**dataclasses.asdict(e)) for e in diagnosis.evidence],
        )


class DeviceHealthOut(BaseModel):
    device_id: str
    online: bool | None
    status_at: int | None
    last_seen: int | None
    latest: dict[str, Any] | None
    diagnosis: DiagnosisOut
    reported_token_ver: int | None = None  # the token version the device last said it holds


class HistoryOut(BaseModel):
    device_id: str
    reports: list[dict[str, Any]]
    next_offset: int | None


class HourlyOut(BaseModel):
    hour: int  # epoch seconds of the hour's start
    metric: str
    n: int
    mean: float
    min: float
    max: float


class HourlyPageOut(BaseModel):
    device_id: str
    aggregates: list[HourlyOut]
    next_offset: int | None


class FleetOut(BaseModel):
    devices: int
    by_verdict: dict[str, int]
    attention: list[dict[str, str]]  # devices not healthy: id, verdict, action (one page)
    attention_total: int = 0  # every device not healthy, past this page
    next_offset: int | None = None  # of the attention list
    verdicts_as_of: int | None = None  # the oldest kept verdict's diagnosis time


class IngestOut(BaseModel):
    connected: bool  # this worker's MQTT bridge is connected and subscribed
    pending: int  # received, not committed yet (so not acked)
    stored: int
    duplicates: int
    statuses: int
    answers: int
    rejected: dict[str, int]


class NoArgs(StrictBody):
    """A command that takes no arguments: ``{}`` or none."""


class FetchLogArgs(StrictBody):
    max_bytes: int | None = Field(default=None, ge=1, le=MAX_LOG_BYTES)


class SelfTestCommand(StrictBody):
    cmd: Literal["self_test"]
    args: NoArgs = Field(default_factory=NoArgs)


class RebootCommand(StrictBody):
    cmd: Literal["reboot"]
    args: NoArgs = Field(default_factory=NoArgs)


class FetchLogCommand(StrictBody):
    cmd: Literal["fetch_log"]
    args: FetchLogArgs = Field(default_factory=FetchLogArgs)


# one body per command, told apart by ``cmd``: the schema says which arguments each takes
# (as protocol.commands checks them), so a schema-valid body is one the device accepts
CommandCreate = Annotated[
    SelfTestCommand | RebootCommand | FetchLogCommand, Field(discriminator="cmd")
]
