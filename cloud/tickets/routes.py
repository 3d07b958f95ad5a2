"""Support tickets, SLAs, RMA approval, action tasks, attachments and the check before a
report."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, Query, UploadFile, status
from fastapi.responses import FileResponse

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.health.deps import HealthDep
from cloud.http.errors import documented
from cloud.http.schemas import DEVICE_ID_PATTERN
from cloud.tickets.deps import TicketsDep
from cloud.tickets.rules import Category, Stage
from cloud.tickets.rules.files import MAX_FILES
from cloud.tickets.rules.precheck import ReportCheck
from cloud.tickets.schemas import (
    Assign,
    Attach,
    CategoryChange,
    FindingOut,
    MessageCreate,
    MessageForm,
    ReportCheckOut,
    RmaOut,
    RmaRefusedOut,
    RmaRequest,
    StageChange,
    StatusChange,
    TaskCreate,
    TaskUpdate,
    TicketCreate,
)
from cloud.tickets.service import AttachmentFile, TicketView, Upload

__all__ = ["ATTACHMENT_UPLOAD", "attachment_response", "check_out", "router", "upload_limit"]

ATTACHMENT_UPLOAD = re.compile(
    r"(/api/v1)?/tickets/[0-9]{1,10}/attachments|/tickets/[0-9]{1,10}/messages|/tickets/new"
)
"""The upload paths (API and page; the page's new tickets and messages carry files), which
the body limit lets carry attachments."""

FORM_OVERHEAD = 64 << 10
"""Room for an upload's form fields and multipart framing beside its files."""


def upload_limit(limits: Mapping[str, int]) -> int:
    """The body an upload path may send: :data:`MAX_FILES` files of the largest type
    limit, and the form around them (the service checks each file's own type limit)."""
    return MAX_FILES * max(limits.values()) + FORM_OVERHEAD


router = APIRouter(prefix="/tickets", tags=["tickets"])


Service = TicketsDep
TicketId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Writer = Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))]
Reader = Annotated[Principal, Depends(require(Permission.TICKETS_READ))]


def check_out(check: ReportCheck) -> ReportCheckOut:
    return ReportCheckOut(
        device_id=check.device_id,
        category=check.category,
        applies=check.applies,
        verdict=check.verdict,
        likely_false_alarm=check.likely_false_alarm,
        findings=[
            FindingOut(code=f.code, text=f.text(), self_fix=f.self_fix) for f in check.findings
        ],
    )


def attachment_response(found: AttachmentFile) -> FileResponse:
    """The file as a download, never rendered: the sniffed type, nosniff, attachment."""
    return FileResponse(
        found.path,
        media_type=found.content_type,
        filename=found.filename,
        content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"},
    )


@router.get("/check", responses=documented({404: "unknown device"}))
def check_before_report(
    principal: Reader,
    service: Service,
    health: HealthDep,
    device_id: Annotated[str, Query(pattern=DEVICE_ID_PATTERN)],
    category: Category,
) -> ReportCheckOut:
    """What the device's own health says before a data-accuracy or device ticket: a lens
    obstructed, zero counts during opening hours, offline... (a likely false alarm)."""
    return check_out(
        service.report_check(principal, health, device_id=device_id, category=category)
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented({403: "no installation named", 404: "unknown installation"}, body=True),
)
def open_ticket(
    body: TicketCreate,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))],
    service: Service,
) -> TicketView:
    """Open a ticket; it is due after its category's SLA (1 or 3 days)."""
    return service.open(
        principal,
        category=body.category,
        subject=body.subject,
        body=body.body,
        installation_id=body.installation_id,
        device_ids=body.device_ids,
        cc=body.cc,
        questions=None if body.questions is None else body.questions.model_dump(),
    )


@router.get("")
def list_tickets(
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_READ))],
    service: Service,
    stage: Stage | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[TicketView]:
    views = service.list(principal, stage=stage, limit=limit, offset=offset)
    return list(views)


@router.get("/{ticket_id}", responses=documented({404: "unknown ticket"}))
def get_ticket(
    ticket_id: TicketId,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_READ))],
    service: Service,
) -> TicketView:
    return service.get(principal, ticket_id)


@router.post(
    "/{ticket_id}/messages",
    responses=documented({404: "unknown ticket", 409: "closed"}, body=True),
)
def add_message(
    ticket_id: TicketId,
    body: MessageCreate,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))],
    service: Service,
) -> TicketView:
    """A message hands the next action to the other party; a customer reply reopens."""
    return service.add_message(principal, ticket_id, body=body.body)


@router.post(
    "/{ticket_id}/stage",
    responses=documented(
        {403: "customers only close", 404: "unknown ticket", 409: "not allowed"}, body=True
    ),
)
def change_stage(
    ticket_id: TicketId,
    body: StageChange,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))],
    service: Service,
) -> TicketView:
    """Move the ticket; the third line needs a plan and an ETA. Mailed to the customer."""
    return service.move(principal, ticket_id, to=body.stage, plan=body.plan, eta=body.eta)


@router.post(
    "/{ticket_id}/status",
    responses=documented(
        {403: "support only", 404: "unknown ticket", 409: "not allowed"}, body=True
    ),
)
def change_status(
    ticket_id: TicketId, body: StatusChange, principal: Writer, service: Service
) -> TicketView:
    """Support sets the status within the line (open, recheck approved, hard to configure)."""
    return service.set_status(principal, ticket_id, status=body.status)


@router.post(
    "/{ticket_id}/category",
    responses=documented({403: "support only", 404: "unknown ticket", 409: "closed"}, body=True),
)
def change_category(
    ticket_id: TicketId, body: CategoryChange, principal: Writer, service: Service
) -> TicketView:
    """Support re-categorises (support-only categories too); the SLA follows."""
    return service.recategorise(principal, ticket_id, category=body.category)


@router.post(
    "/{ticket_id}/responsible",
    responses=documented({403: "support only", 404: "unknown ticket"}, body=True),
)
def assign(ticket_id: TicketId, body: Assign, principal: Writer, service: Service) -> TicketView:
    """Support names the support user responsible for the ticket (null: nobody)."""
    return service.assign(principal, ticket_id, user_id=body.user_id)


@router.post(
    "/{ticket_id}/tasks",
    status_code=status.HTTP_201_CREATED,
    responses=documented({403: "support only", 404: "unknown ticket", 409: "closed"}, body=True),
)
def add_task(
    ticket_id: TicketId, body: TaskCreate, principal: Writer, service: Service
) -> TicketView:
    """Support adds an action task: type, hours, expected date (to do)."""
    return service.add_task(
        principal,
        ticket_id,
        type=body.type,
        title=body.title,
        hours=body.hours,
        expected_on=body.expected_on,
    )


@router.patch(
    "/{ticket_id}/tasks/{task_id}",
    responses=documented(
        {403: "support only", 404: "unknown ticket or task", 409: "status not reachable"}, body=True
    ),
)
def update_task(
    ticket_id: TicketId, task_id: ItemId, body: TaskUpdate, principal: Writer, service: Service
) -> TicketView:
    """Support moves a task (to do, doing, done, cancelled) or corrects it."""
    return service.update_task(
        principal,
        ticket_id,
        task_id,
        status=body.status,
        hours=body.hours,
        expected_on=body.expected_on,
        title=body.title,
    )


@router.delete(
    "/{ticket_id}/tasks/{task_id}",
    responses=documented({403: "support only", 404: "unknown ticket or task"}),
)
def delete_task(
    ticket_id: TicketId, task_id: ItemId, principal: Writer, service: Service
) -> TicketView:
    """Support removes a task entered by mistake (the audit log keeps it)."""
    return service.delete_task(principal, ticket_id, task_id)


@router.post(
    "/{ticket_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        {404: "unknown ticket", 409: "closed", 413: "over the type's size limit"}, body=True
    ),
)
def add_attachment(
    ticket_id: TicketId,
    file: Annotated[
        list[UploadFile],
        File(description="a photo, screenshot, text log, video or PDF (one to five parts)"),
    ],
    principal: Writer,
    service: Service,
    body: MessageForm = None,
) -> TicketView:
    """Send files: with ``body``, a new message that carries them (as ``POST …/messages``:
    the next action passes, the other side is mailed); without, files on their own. Each
    file's type is read from its bytes (PNG, JPEG, WebP, text, MP4, WebM, PDF), each type
    with its size limit. A refused upload leaves nothing stored: no file, row or message."""
    files = [Upload(f.file, f.filename or "attachment") for f in file]
    if body is not None:
        return service.add_message(principal, ticket_id, body=body, files=files)
    return service.add_files(principal, ticket_id, files)


@router.delete(
    "/{ticket_id}/attachments/{attachment_id}",
    responses=documented(
        {
            403: "another's file (customers delete their own)",
            404: "unknown ticket or attachment",
            409: "closed (the uploader)",
        }
    ),
)
def delete_attachment(
    ticket_id: TicketId, attachment_id: ItemId, principal: Writer, service: Service
) -> TicketView:
    """Delete a file: support any, its uploader while the ticket is not closed (audited);
    the stored bytes go when no other attachment has the same."""
    return service.delete_attachment(principal, ticket_id, attachment_id)


@router.get(
    "/{ticket_id}/attachments/{attachment_id}",
    response_class=FileResponse,
    responses=documented({404: "unknown ticket or attachment"}),
)
def get_attachment(
    ticket_id: TicketId, attachment_id: ItemId, principal: Reader, service: Service
) -> FileResponse:
    """The file, as a download (``Content-Disposition: attachment``, ``nosniff``)."""
    return attachment_response(service.attachment(principal, ticket_id, attachment_id))


@router.post(
    "/{ticket_id}/attach", responses=documented({404: "unknown ticket or device"}, body=True)
)
def attach(
    ticket_id: TicketId,
    body: Attach,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))],
    service: Service,
) -> TicketView:
    """Attach device serials and CC addresses."""
    return service.attach(principal, ticket_id, device_ids=body.device_ids, cc=body.cc)


@router.post(
    "/{ticket_id}/rma",
    responses={
        **documented({404: "unknown ticket or device"}, body=True),
        409: {
            "model": RmaRefusedOut,
            "description": "closed ticket, device not attached, or no recent self-test "
            "confirms a hardware fault",
        },
    },
)
def approve_rma(
    ticket_id: TicketId,
    body: RmaRequest,
    principal: Annotated[Principal, Depends(require(Permission.RMA_APPROVE))],
    service: Service,
) -> RmaOut:
    """Approve an RMA of a device attached to this open ticket.

    Only when its latest self-test, answered since the ticket opened and at most
    a day ago, found a hardware fault.
    """
    decision = service.approve_rma(principal, ticket_id, device_id=body.device_id)
    return RmaOut(**dataclasses.asdict(decision))
