"""HTTP bodies of repairs, their steps, quotes, payments and shipments (pydantic: the edge)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from cloud.http.inputs import BY_VALUE, StrictBody
from cloud.http.schemas import DEVICE_ID_PATTERN
from cloud.repairs.rules import MAX_QUOTE_CENTS, ShipmentKind

__all__ = [
    "Accept",
    "Cancel",
    "EventOut",
    "Quote",
    "RepairCreate",
    "RepairOut",
    "Reship",
    "ShipmentCreate",
    "ShipmentOut",
    "StepTaken",
]

_TEXT = r"^[^\x00]*$"  # PostgreSQL refuses NUL in text
_LINE = r"^[^\x00-\x1f\x7f]*$"
_TRACKING = r"^[A-Za-z0-9][A-Za-z0-9 ._/-]{0,63}$"


class RepairCreate(StrictBody):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    ticket_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    problem: str = Field(min_length=1, max_length=5_000, pattern=_TEXT)
    ship_to: str = Field(
        min_length=1, max_length=500, pattern=_TEXT, description="address lines, one per line"
    )


class StepTaken(StrictBody):
    step: Literal["approve", "decline", "receive", "mark_repaired", "close"]
    note: str = Field(default="", max_length=500, pattern=_LINE)


class Quote(StrictBody):
    amount_cents: int = Field(ge=1, le=MAX_QUOTE_CENTS)
    description: str = Field(min_length=1, max_length=200, pattern=_LINE)


class Accept(StrictBody):
    card_token: str | None = Field(
        default=None, min_length=1, max_length=256, description="absent: pay by invoice"
    )


_SERIAL = "the replacement device's serial: required for a replacement, absent otherwise"


class ShipmentCreate(StrictBody):
    kind: Annotated[ShipmentKind, BY_VALUE]
    carrier: str = Field(min_length=1, max_length=64, pattern=_TRACKING)
    tracking: str = Field(min_length=1, max_length=64, pattern=_TRACKING)
    serial: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN, description=_SERIAL)


class Reship(StrictBody):
    carrier: str = Field(min_length=1, max_length=64, pattern=_TRACKING)
    tracking: str = Field(min_length=1, max_length=64, pattern=_TRACKING)
    serial: str | None = Field(
        default=None,
        pattern=DEVICE_ID_PATTERN,
        description="a lost replacement: the serial of the device sent instead (required)",
    )


class Cancel(StrictBody):
    reason: str = Field(min_length=1, max_length=500, pattern=_LINE)


class ShipmentOut(BaseModel):
    id: int
    kind: str
    status: str
    carrier: str
    tracking: str
    serial: str | None = Field(description="the replacement device's serial (replacements)")
    replaces_id: int | None
    created_at: int


class EventOut(BaseModel):
    at: int
    actor: str
    step: str
    status: str
    note: str


class RepairOut(BaseModel):
    id: int
    number: str
    device_id: str
    installation_id: str
    ticket_id: int | None
    rma_id: int | None
    path: str = Field(description="warranty (a replacement) or paid (quoted and paid)")
    status: str
    in_warranty: bool
    installed_at: int
    warranty_ends_at: int
    problem: str
    ship_to: str
    quote_cents: int | None
    quote_text: str | None
    currency: str
    order_id: int | None
    order_status: str | None
    created_at: int
    updated_at: int
    steps: list[str] = Field(description="the steps the caller may take now")
    shipments: list[ShipmentOut]
    events: list[EventOut]
