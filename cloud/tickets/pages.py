"""The support desk: the tickets board, a ticket, and a new ticket (``?device=`` attaches one
and shows what the device's own health says first: check before you report).

Every page calls :class:`~cloud.tickets.service.TicketService`, the same service as
``/api/v1/tickets``: scoping (a customer sees only its installations' tickets; another's
answers like one that does not exist), who may move a ticket, and the RMA rule
(:func:`cloud.tickets.rules.decide_rma`) are the service's. The page only shows what the
role may do: the RMA button appears for ``rma:approve`` and only where the rule allows,
and otherwise the page says why not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import page_require
from cloud.accounts.rules import STAFF_ROLES, Permission
from cloud.devices.deps import DevicesDep, InstallationsDep
from cloud.devices.service import InstallationService
from cloud.errors import (
    N_,
    CloudError,
    ContentTooLarge,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    UnknownDevice,
)
from cloud.health.deps import HealthDep
from cloud.health.schemas import DeviceHealthOut
from cloud.http.schemas import DEVICE_ID_PATTERN
from cloud.tickets.deps import TicketsDep
from cloud.tickets.routes import attachment_response
from cloud.tickets.rules import (
    AUTO_CLOSE_AFTER_S,
    SUPPORT_ONLY,
    Category,
    RmaRefused,
    Stage,
    Status,
    TaskStatus,
    TaskType,
    moves,
)
from cloud.tickets.rules.precheck import CHECKED, Finding, ReportCheck
from cloud.tickets.schemas import (
    Attach,
    MessageCreate,
    Questions,
    RmaRequest,
    TaskCreate,
    TaskUpdate,
    TicketCreate,
)
from cloud.tickets.service import Upload
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import render, translator
from protocol.topics import DEVICE_ID_MAX_LEN

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(page_require(Permission.TICKETS_READ))]
Writer = Annotated[Principal, Depends(page_require(Permission.TICKETS_WRITE))]
Approver = Annotated[Principal, Depends(page_require(Permission.RMA_APPROVE))]
TicketId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]
QUESTIONS = ("what", "where", "when", "device", "how")


def _is_staff(who: Principal) -> bool:
    return who.role in STAFF_ROLES


def _words(raw: object) -> list[str]:
    """Items separated by commas, spaces or lines (the API's schema checks each and the count)."""
    return [item for item in re.split(r"[\s,;]+", str(raw or "")) if item]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _fields(exc: ValidationError) -> list[str]:
    """The form fields a schema refused, in the schema's order, each once."""
    return list(dict.fromkeys(str(error["loc"][0]) for error in exc.errors() if error["loc"]))


Refusals = Sequence[tuple[type[Exception], str | None]]
"""Errors an action answers on the ticket page: (error type, what to say; None: the
error's own text in the reader's language)."""

_ANY_REFUSAL: Refusals = ((CloudError, None),)


def _act(
    request: Request,
    ticket_id: int,
    call: Callable[[], object],
    done: str,
    *,
    refused: Refusals = _ANY_REFUSAL,
) -> Response:
    """The one shape of a ticket page's actions: ``call`` reads the form and calls the
    service, then the browser goes back to the ticket, told ``done`` or why not.

    Synchronous on purpose, like the service's database calls: FastAPI runs a plain
    ``def`` handler in its thread pool, never on the event loop. An error ``refused``
    names (the first that matches) is said on the ticket; any other goes to the app's
    error pages, and a not-found (an unknown ticket or task) is the not-found page
    unless a not-found type is named.
    """
    try:
        call()
    except (CloudError, ValidationError) as exc:
        said = _refusal(exc, refused, request)
        if said is None:
            raise
        return redirect(f"/tickets/{ticket_id}", said, level="error")
    return redirect(f"/tickets/{ticket_id}", done)


def _refusal(exc: Exception, refused: Refusals, request: Request) -> str | None:
    for kind, said in refused:
        if not isinstance(exc, kind):
            continue
        if isinstance(exc, NotFound) and not issubclass(kind, NotFound):
            return None
        if said is not None:
            return said
        return exc.text(translator(request).gettext) if isinstance(exc, CloudError) else None
    return None


# the board ----------------------------------------------------------------------
PER_COLUMN = 50  # tickets a board column shows; a column's own pages show as many each


@router.get("/tickets")
def board(
    request: Request,
    who: Reader,
    service: TicketsDep,
    category: Annotated[Category | None, Query()] = None,
    breached: Annotated[bool, Query()] = False,
    stage: Annotated[Stage | None, Query()] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Tickets by stage, most urgent first, with their SLA clocks; with ``?stage=``, that
    stage's tickets alone, page by page."""
    shown = service.board(
        who,
        category=category,
        breached_only=breached,
        per_stage=PER_COLUMN,
        stage=stage,
        offset=(page - 1) * PER_COLUMN if stage is not None else 0,
    )
    column_total = 0 if stage is None else shown.counts[stage.value]
    context = {
        "board": shown,
        "stages": [stage.value] if stage is not None else [s.value for s in Stage],
        "focus": None if stage is None else stage.value,
        "page": page,
        "pages": max(1, math.ceil(column_total / PER_COLUMN)),
        "categories": [c.value for c in Category],
        "category": None if category is None else category.value,
        "breached": breached,
    }
    return render(request, "tickets/board.html", context)


# a new ticket --------------------------------------------------------------------
def _new_form(
    request: Request,
    who: Principal,
    installations: InstallationService,
    *,
    values: dict[str, Any],
    error: str | None = None,
    code: int = status.HTTP_200_OK,
    check: ReportCheck | None = None,
) -> HTMLResponse:
    choices = [] if _is_staff(who) else installations.visible(who, limit=200, offset=0)
    staff = _is_staff(who)
    context = {
        "values": values,
        "error": error,
        "categories": [c.value for c in Category if staff or c not in SUPPORT_ONLY],
        "checked": [c.value for c in Category if c in CHECKED],
        "installations": choices,
        "staff": staff,
        "check": check,
        "findings": [] if check is None else [_sentence(f, request) for f in check.findings],
        "questions": QUESTIONS,
    }
    return render(request, "tickets/new.html", context, status_code=code)


def _sentence(finding: Finding, request: Request) -> str:
    """A finding as a sentence of its own on the page (the rule's text starts lower-case)."""
    text = finding.text(translator(request).gettext)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


@router.get("/tickets/new")
def new_ticket(
    request: Request,
    who: Writer,
    devices: DevicesDep,
    installations: InstallationsDep,
    service: TicketsDep,
    health: HealthDep,
    device: Annotated[
        str | None, Query(max_length=DEVICE_ID_MAX_LEN, pattern=DEVICE_ID_PATTERN)
    ] = None,
    category: Annotated[Category | None, Query()] = None,
) -> HTMLResponse:
    """The form; with ``?device=ID`` the device is attached and its installation chosen, and
    for a data-accuracy or device ticket the device's own health is shown first."""
    chosen = category or (Category.DEVICE_FAULT if device else Category.TECHNICAL)
    if chosen in SUPPORT_ONLY and not _is_staff(who):
        chosen = Category.TECHNICAL
    values: dict[str, Any] = {"category": chosen.value}
    check = None
    if device is not None:
        found = devices.get(who, device)  # out of scope: the not-found page
        values |= {"devices": found.device_id, "installation_id": found.installation_id}
        check = service.report_check(who, health, device_id=device, category=chosen)
    return _new_form(request, who, installations, values=values, check=check)


@router.post("/tickets/new")
def new_ticket_submit(
    request: Request,
    who: Writer,
    form: CheckedForm,
    service: TicketsDep,
    installations: InstallationsDep,
) -> Response:
    """Open the ticket and show it."""
    _ = translator(request).gettext
    values = {
        key: str(form.get(key, "")).strip()
        for key in ("category", "subject", "body", "installation_id", "devices", "cc")
    }
    values |= {f"q_{key}": str(form.get(f"q_{key}", "")).strip() for key in QUESTIONS}
    says = {
        "category": _("Choose a category."),
        "subject": _("Give a subject of 1 to 200 characters on one line."),
        "body": _("Describe the problem (at most 20,000 characters)."),
        "installation_id": _("The installation id is not one."),
        "device_ids": _("Device serials are letters, digits, - and _ (at most 20)."),
        "cc": _("Copy addresses are e-mail addresses (at most 20)."),
        "questions": _("Answer each question in at most 2,000 characters."),
    }
    problems = []
    body: TicketCreate | None = None
    try:
        body = TicketCreate(
            category=values["category"],  # type: ignore[arg-type]
            subject=values["subject"],
            body=values["body"],
            installation_id=values["installation_id"] or None,
            device_ids=_words(values["devices"]),
            cc=_words(values["cc"]),
            questions=Questions(**{key: values[f"q_{key}"] for key in QUESTIONS}),
        )
    except ValidationError as exc:
        problems = [says[field] for field in _fields(exc) if field in says]
    if not values["installation_id"] and not _is_staff(who):
        problems.append(_("Choose the installation the ticket is about."))
    if problems or body is None:
        return _new_form(
            request,
            who,
            installations,
            values=values,
            error=" ".join(problems),
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    files = _uploads(form)
    try:
        opened = service.open(
            who,
            category=body.category,
            subject=body.subject,
            body=body.body,
            installation_id=body.installation_id,
            device_ids=_unique(body.device_ids),
            cc=_unique(body.cc),
            questions=None if body.questions is None else body.questions.model_dump(),
        )
    except CloudError as exc:
        if not isinstance(exc, NotFound):
            return _new_form(
                request,
                who,
                installations,
                values=values,
                error=exc.text(_),
                code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            )
        return _new_form(
            request,
            who,
            installations,
            values=values,
            error=_("No installation or device with this id is yours to name."),
            code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    if files:
        try:  # with the opening message, which is the opener's
            service.add_files(who, opened.id, files, message_id=opened.messages[0]["id"])
        except CloudError as exc:
            return redirect(
                f"/tickets/{opened.id}",
                _("Ticket %(id)s is open, but its attachment was refused: %(why)s")
                % {"id": opened.id, "why": exc.text(_)},
                level="error",
            )
    return redirect(f"/tickets/{opened.id}", _("Ticket %(id)s is open.") % {"id": opened.id})


# one ticket -----------------------------------------------------------------------
@router.get("/tickets/{ticket_id}")
def ticket_page(
    request: Request,
    ticket_id: TicketId,
    who: Reader,
    service: TicketsDep,
    health: HealthDep,
) -> HTMLResponse:
    """Messages, CC, devices with their diagnosis and self-tests, and the RMA rule's answer."""
    ticket = service.get(who, ticket_id)
    checks = service.device_checks(who, ticket_id)
    diagnoses: dict[str, DeviceHealthOut | None] = {}
    for check in checks:
        try:
            diagnoses[check.device_id] = health.device_health(who, check.device_id)
        except NotFound:  # removed since it was attached, or not the caller's
            diagnoses[check.device_id] = None
    reachable = moves(Stage(ticket.stage), staff=_is_staff(who))
    context = {
        "ticket": ticket,
        "checks": checks,
        "diagnoses": diagnoses,
        "moves": [s.value for s in Stage if s in reachable],
        "staff": _is_staff(who),
        "auto_close_at": (ticket.suggest_close_at or 0) + AUTO_CLOSE_AFTER_S,
        "statuses": [
            s.value for s in (Status.OPEN, Status.RECHECK_APPROVED, Status.HARD_TO_CONFIGURE)
        ],
        "categories": [c.value for c in Category],
        "support_users": service.support_users(who),
        "task_types": [t.value for t in TaskType],
        "task_statuses": [t.value for t in TaskStatus],
        "questions": QUESTIONS,
        "deletable": service.deletable(who, ticket),
        "loose_files": [a for a in ticket.attachments or [] if a["message_id"] is None],
    }
    return render(request, "tickets/ticket.html", context)


def _uploads(form: Any) -> list[Upload]:
    """The files a form sends (its ``file`` inputs; an empty input sends none)."""
    return [
        Upload(item.file, item.filename)
        for item in form.getlist("file")
        if isinstance(item, UploadFile) and item.filename
    ]


_FILE_REFUSALS: Refusals = ((InvalidRequest, None), (ContentTooLarge, None))
"""A refused file (its type, its size, how many): said on the ticket, nothing stored."""


@router.post("/tickets/{ticket_id}/messages")
def add_message(
    request: Request, ticket_id: TicketId, who: Writer, form: CheckedForm, service: TicketsDep
) -> Response:
    """Answer on the ticket, with the files the answer carries; the next action passes to
    the other party."""
    _ = translator(request).gettext
    files = _uploads(form)
    return _act(
        request,
        ticket_id,
        lambda: service.add_message(
            who,
            ticket_id,
            body=MessageCreate(body=str(form.get("body", "")).strip()).body,
            files=files,
        ),
        _("Your message is added."),
        refused=(
            (ValidationError, _("Write a message of at most 20,000 characters.")),
            (InvalidTransition, _("The ticket is closed: open a new ticket.")),
            *_FILE_REFUSALS,
        ),
    )


@router.post("/tickets/{ticket_id}/stage")
def change_stage(
    request: Request, ticket_id: TicketId, who: Writer, form: CheckedForm, service: TicketsDep
) -> Response:
    """Move the ticket (customers may only close it; the service refuses anything else)."""
    _ = translator(request).gettext
    try:
        to = Stage(str(form.get("stage", "")))
    except ValueError:
        raise InvalidRequest(N_("choose a stage the ticket can move to")) from None
    plan = str(form.get("plan", "")).strip() or None
    eta = _eta(str(form.get("eta", "")))
    return _act(
        request,
        ticket_id,
        lambda: service.move(who, ticket_id, to=to, plan=plan, eta=eta),
        _("The ticket has moved."),
        refused=(
            (InvalidTransition, _("The ticket cannot move there from its stage.")),
            (InvalidRequest, None),
        ),
    )


def _eta(raw: str) -> int | None:
    """A date (YYYY-MM-DD) as the end of that day, UTC; None for anything else."""
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError:
        return None
    return int(datetime(day.year, day.month, day.day, 23, 59, tzinfo=UTC).timestamp())


def _choice(form: Any, key: str, kind: type[Any]) -> Any:
    try:
        return kind(str(form.get(key, "")))
    except ValueError:
        raise InvalidRequest(
            N_("choose one of the offered values for %(field)s"), field=key
        ) from None


@router.post("/tickets/{ticket_id}/status")
def change_status(
    request: Request, ticket_id: TicketId, who: Writer, form: CheckedForm, service: TicketsDep
) -> Response:
    """Support sets the status within the line."""
    to = _choice(form, "status", Status)
    _ = translator(request).gettext
    return _act(
        request,
        ticket_id,
        lambda: service.set_status(who, ticket_id, status=to),
        _("The status is set."),
    )


@router.post("/tickets/{ticket_id}/category")
def change_category(
    request: Request, ticket_id: TicketId, who: Writer, form: CheckedForm, service: TicketsDep
) -> Response:
    """Support re-categorises the ticket."""
    to = _choice(form, "category", Category)
    _ = translator(request).gettext
    return _act(
        request,
        ticket_id,
        lambda: service.recategorise(who, ticket_id, category=to),
        _("The category is changed."),
    )


@router.post("/tickets/{ticket_id}/responsible")
def assign(
    request: Request, ticket_id: TicketId, who: Writer, form: CheckedForm, service: TicketsDep
) -> Response:
    """Support names the responsible person (empty: nobody)."""
    raw = str(form.get("user_id", "")).strip()
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        raise InvalidRequest(N_("choose one of the offered values for %(field)s"), field="user_id")
    user_id = int(raw) if raw else None
    _ = translator(request).gettext
    return _act(
        request,
        ticket_id,
        lambda: service.assign(who, ticket_id, user_id=user_id),
        _("The responsible person is set."),
    )


@router.post("/tickets/{ticket_id}/tasks")
def add_task(
    request: Request, ticket_id: TicketId, who: Writer, form: CheckedForm, service: TicketsDep
) -> Response:
    """Support adds an action task."""
    _ = translator(request).gettext

    def add() -> object:
        task = TaskCreate.model_validate(
            {
                "type": str(form.get("type", "")),
                "title": str(form.get("title", "")).strip(),
                "hours": _number(form.get("hours")),
                "expected_on": str(form.get("expected_on", "")),
            }
        )
        return service.add_task(
            who,
            ticket_id,
            type=task.type,
            title=task.title,
            hours=task.hours,
            expected_on=task.expected_on,
        )

    return _act(
        request,
        ticket_id,
        add,
        _("The task is added."),
        refused=(
            (
                ValidationError,
                _("Give the task a type, a title, its hours (more than 0) and an expected date."),
            ),
            *_ANY_REFUSAL,
        ),
    )


def _number(raw: object) -> float | str:
    try:
        return float(str(raw or "").replace(",", "."))
    except ValueError:
        return str(raw)


@router.post("/tickets/{ticket_id}/tasks/{task_id}")
def update_task(
    request: Request,
    ticket_id: TicketId,
    task_id: ItemId,
    who: Writer,
    form: CheckedForm,
    service: TicketsDep,
) -> Response:
    """Support moves a task to another status."""
    _ = translator(request).gettext
    try:
        change = TaskUpdate.model_validate({"status": str(form.get("status", ""))})
    except ValidationError:
        raise InvalidRequest(
            N_("choose one of the offered values for %(field)s"), field="status"
        ) from None
    return _act(
        request,
        ticket_id,
        lambda: service.update_task(who, ticket_id, task_id, status=change.status),
        _("The task is updated."),
    )


@router.post("/tickets/{ticket_id}/tasks/{task_id}/delete")
def delete_task(
    request: Request,
    ticket_id: TicketId,
    task_id: ItemId,
    who: Writer,
    form: CheckedForm,
    service: TicketsDep,
) -> Response:
    """Support removes a task entered by mistake."""
    _ = translator(request).gettext
    return _act(
        request,
        ticket_id,
        lambda: service.delete_task(who, ticket_id, task_id),
        _("The task is removed."),
    )


@router.post("/tickets/{ticket_id}/attachments")
def add_attachment(
    request: Request, ticket_id: TicketId, who: Writer, form: CheckedForm, service: TicketsDep
) -> Response:
    """Send photos, screenshots, logs, videos or PDFs on their own (without a message)."""
    _ = translator(request).gettext
    files = _uploads(form)
    if not files:
        return redirect(f"/tickets/{ticket_id}", _("Choose a file to attach."), level="error")
    return _act(
        request,
        ticket_id,
        lambda: service.add_files(who, ticket_id, files),
        _("The file is attached."),
    )


@router.post("/tickets/{ticket_id}/attachments/{attachment_id}/delete")
def delete_attachment(
    request: Request,
    ticket_id: TicketId,
    attachment_id: ItemId,
    who: Writer,
    form: CheckedForm,
    service: TicketsDep,
) -> Response:
    """Delete a file: support any, its uploader while the ticket is open (anyone else: 403)."""
    _ = translator(request).gettext
    return _act(
        request,
        ticket_id,
        lambda: service.delete_attachment(who, ticket_id, attachment_id),
        _("The file is deleted."),
        refused=((InvalidTransition, None),),
    )


@router.get("/tickets/{ticket_id}/attachments/{attachment_id}")
def download_attachment(
    ticket_id: TicketId, attachment_id: ItemId, who: Reader, service: TicketsDep
) -> FileResponse:
    """The file, as a download; another customer's is the not-found page."""
    return attachment_response(service.attachment(who, ticket_id, attachment_id))


@router.post("/tickets/{ticket_id}/attach")
def attach(
    request: Request, ticket_id: TicketId, who: Writer, form: CheckedForm, service: TicketsDep
) -> Response:
    """Attach device serials and copy addresses."""
    _ = translator(request).gettext
    try:
        adding: Attach | None = Attach(
            device_ids=_words(form.get("devices")), cc=_words(form.get("cc"))
        )
    except ValidationError:
        adding = None
    if adding is None or not (adding.device_ids or adding.cc):
        return redirect(
            f"/tickets/{ticket_id}",
            _("Give device serials or e-mail addresses to add (at most 20 of each)."),
            level="error",
        )
    device_ids, cc = _unique(adding.device_ids), _unique(adding.cc)
    return _act(
        request,
        ticket_id,
        lambda: service.attach(who, ticket_id, device_ids=device_ids, cc=cc),
        _("Added to the ticket."),
        refused=((UnknownDevice, _("No device with this serial is yours to attach.")),),
    )


@router.post("/tickets/{ticket_id}/rma")
def approve_rma(
    request: Request, ticket_id: TicketId, who: Approver, form: CheckedForm, service: TicketsDep
) -> Response:
    """Approve the RMA of an attached device, if the rule allows it now."""
    _ = translator(request).gettext
    try:
        device_id = RmaRequest(device_id=str(form.get("device_id", ""))).device_id
    except ValidationError:
        raise InvalidRequest(N_("name the device to approve the RMA of")) from None
    return _act(
        request,
        ticket_id,
        lambda: service.approve_rma(who, ticket_id, device_id=device_id),
        _("The RMA of %(device)s is approved.") % {"device": device_id},
        refused=(
            (
                RmaRefused,
                _("The RMA of %(device)s is not approved: see why under the device.")
                % {"device": device_id},
            ),
        ),
    )
