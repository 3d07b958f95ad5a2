"""HTTP bodies of tickets, their messages, devices and RMA decisions (pydantic: the edge)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Form
from pydantic import BaseModel, Field

from cloud.http.inputs import BY_VALUE, StrictBody
from cloud.http.schemas import DEVICE_ID_PATTERN, ID_PATTERN
from cloud.tickets.rules import Category, Stage, Status, TaskStatus, TaskType

__all__ = [
    "Assign",
    "Attach",
    "CategoryChange",
    "FindingOut",
    "Questions",
    "ReportCheckOut",
    "StatusChange",
    "TaskCreate",
    "TaskUpdate",
    "MessageCreate",
    "MessageForm",
    "RmaOut",
    "RmaRefusedOut",
    "RmaRequest",
    "StageChange",
    "TicketCreate",
]

_EMAIL = r"^[^@\x00-\x20\x7f-\x9f]{1,64}@[^@\x00-\x20\x7f-\x9f]{1,189}$"  # no spaces, no controls
_TEXT = r"^[^\x00]*$"  # PostgreSQL refuses NUL in text

_MESSAGE_MAX = 20_000

MessageForm = Annotated[
    str | None,
    Form(
        description="the message the files are sent with",
        min_length=1,
        max_length=_MESSAGE_MAX,
        pattern=_TEXT,
    ),
]
"""A message's words as a multipart field, beside its files (None: files on their own)."""


_ANSWER = Field(default="", max_length=2000, pattern=_TEXT)


class Questions(StrictBody):
    """The ticket form's five questions (each optional, at most 2,000 characters)."""

    what: str = _ANSWER  # what happens
    where: str = _ANSWER  # where: which entrance, floor, area
    when: str = _ANSWER  # when it happens (since when, at which hours)
    device: str = _ANSWER  # which device
    how: str = _ANSWER  # how it shows, how to see it


class TicketCreate(StrictBody):
    category: Annotated[Category, BY_VALUE]
    subject: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    body: str = Field(min_length=1, max_length=20_000, pattern=_TEXT)
    installation_id: str | None = Field(default=None, pattern=ID_PATTERN)
    device_ids: list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] = Field(
        default_factory=list, max_length=20
    )
    cc: list[Annotated[str, Field(pattern=_EMAIL)]] = Field(default_factory=list, max_length=20)
    questions: Questions | None = None


class MessageCreate(StrictBody):
    body: str = Field(min_length=1, max_length=_MESSAGE_MAX, pattern=_TEXT)


class StageChange(StrictBody):
    """A move; the third line needs ``plan`` (what will be done) and ``eta`` (epoch seconds)."""

    stage: Annotated[Stage, BY_VALUE]
    plan: str | None = Field(default=None, min_length=1, max_length=5000, pattern=_TEXT)
    eta: int | None = Field(default=None, ge=0, le=2**53)


class StatusChange(StrictBody):
    status: Annotated[Status, BY_VALUE]


class CategoryChange(StrictBody):
    category: Annotated[Category, BY_VALUE]


class Assign(StrictBody):
    """The support user responsible for the ticket; null: nobody."""

    user_id: int | None = Field(ge=1, le=2**31 - 1)


_TITLE = r"^[^\x00-\x1f\x7f]*$"


class TaskCreate(StrictBody):
    type: Annotated[TaskType, BY_VALUE]
    title: str = Field(min_length=1, max_length=200, pattern=_TITLE)
    hours: float = Field(gt=0, le=1000)
    expected_on: Annotated[date, BY_VALUE]  # YYYY-MM-DD


class TaskUpdate(StrictBody):
    status: Annotated[TaskStatus | None, BY_VALUE] = None
    title: str | None = Field(default=None, min_length=1, max_length=200, pattern=_TITLE)
    hours: float | None = Field(default=None, gt=0, le=1000)
    expected_on: Annotated[date | None, BY_VALUE] = None


class FindingOut(BaseModel):
    code: str  # offline | no_reports | zero_counts | lens_obstructed | health_rule | healthy
    text: str
    self_fix: bool  # the customer can act on it before reporting


class ReportCheckOut(BaseModel):
    """What the device's own health says, before a data-accuracy or device ticket."""

    device_id: str
    category: Category
    applies: bool
    verdict: str | None
    likely_false_alarm: bool
    findings: list[FindingOut]


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
