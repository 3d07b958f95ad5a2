"""HTTP bodies of tickets, their messages, devices and RMA decisions (pydantic: the edge)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from cloud.http.inputs import BY_VALUE, StrictBody
from cloud.http.schemas import DEVICE_ID_PATTERN, ID_PATTERN
from cloud.tickets.rules import Category, Stage

__all__ = [
    "Attach",
    "MessageCreate",
    "RmaOut",
    "RmaRefusedOut",
    "RmaRequest",
    "StageChange",
    "TicketCreate",
]

_EMAIL = r"^[^@\x00-\x20\x7f-\x9f]{1,64}@[^@\x00-\x20\x7f-\x9f]{1,189}$"  # no spaces, no controls
_TEXT = r"^[^\x00]*$"  # PostgreSQL refuses NUL in text


class TicketCreate(StrictBody):
    category: Annotated[Category, BY_VALUE]
    subject: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    body: str = Field(min_length=1, max_length=20_000, pattern=_TEXT)
    installation_id: str | None = Field(default=None, pattern=ID_PATTERN)
    device_ids: list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] = Field(
        default_factory=list, max_length=20
    )
    cc: list[Annotated[str, Field(pattern=_EMAIL)]] = Field(default_factory=list, max_length=20)


class MessageCreate(StrictBody):
    body: str = Field(min_length=1, max_length=20_000, pattern=_TEXT)


class StageChange(StrictBody):
    stage: Annotated[Stage, BY_VALUE]


class Attach(StrictBody):
    device_ids: list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] = Field(
        default_factory=list, max_length=20
    )
    cc: list[Annotated[str, Field(pattern=_EMAIL)]] = Field(default_factory=list, max_length=20)


class RmaRequest(StrictBody):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)


class RmaOut(BaseModel):
    approved: bool
    why: str
    detail: str
    command_id: str | None


class RmaRefusedOut(BaseModel):
    detail: str
    # ticket_closed | device_not_on_ticket | no_self_test | self_test_stale
    # | self_test_error | self_test_passed | remotely_fixable
    why: str
