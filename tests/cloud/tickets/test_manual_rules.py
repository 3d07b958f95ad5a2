"""The manual's ticket rules (pure): categories per role, statuses within a stage, the
third line, SLA per line, action tasks, attachment acceptance, the check before a report."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cloud.errors import Forbidden, InvalidRequest, InvalidTransition
from cloud.tickets.rules import (
    LINE_SLA,
    LINES,
    SLA_S,
    SUPPORT_ONLY,
    TASK_MOVES,
    Category,
    Stage,
    Status,
    TaskStatus,
    breached,
    check_category,
    check_responsible,
    escalate_third_line,
    line_clock,
    move,
    move_task,
    on_message,
    open_ticket,
    recategorise,
    set_status,
    sla_breached,
)
from cloud.tickets.rules.files import (
    FAMILIES,
    AttachmentTooLarge,
    StoredFile,
    UnsupportedAttachment,
    accept,
    check_size,
    orphans,
    safe_name,
    sniff,
)
from cloud.tickets.rules.precheck import report_check

T0 = 1_767_225_600
HOUR = 3600
DAY = 86_400


@pytest.mark.parametrize(("category", "staff"), list(product(Category, (False, True))))
def test_categories_per_role(category: Category, staff: bool) -> None:
    if category in SUPPORT_ONLY and not staff:
        with pytest.raises(Forbidden, match=f"only support files a ticket as {category.value}"):
            check_category(category, staff=staff)
    else:
        assert check_category(category, staff=staff) is category


def test_the_manuals_categories_are_there_and_support_only_ones_named() -> None:
    assert {"software_bug", "business_inquiry", "audit_blockade"} <= {c.value for c in Category}
    assert SUPPORT_ONLY == {Category.SOFTWARE_BUG, Category.AUDIT_BLOCKADE}
    assert all(len(c.value) <= 16 for c in Category)  # the column's width


def test_recategorise_moves_the_sla_and_not_when_closed() -> None:
    ticket = open_ticket(Category.DATA_ACCURACY, now=T0)
    moved = recategorise(ticket, Category.BUSINESS_INQUIRY)
    assert moved.due_at == T0 + SLA_S[Category.BUSINESS_INQUIRY] == T0 + DAY
    with pytest.raises(InvalidTransition):
        recategorise(move(ticket, Stage.CLOSED, now=T0 + 1), Category.TRAINING)


@pytest.mark.parametrize(
    ("role", "disabled", "ok"),
    [
        ("support", False, True),
        ("cs_admin", False, True),
        ("admin", False, True),
        ("support", True, False),
        ("owner", False, False),
        ("partner", False, False),
        (None, False, False),
    ],
)
def test_responsible_is_an_active_support_user(role: str | None, disabled: bool, ok: bool) -> None:
    if ok:
        check_responsible(role, disabled=disabled, user_id=3)
    else:
        with pytest.raises(InvalidRequest, match="user 3 is not an active support user"):
            check_responsible(role, disabled=disabled, user_id=3)


def test_status_follows_the_stage_and_support_sets_it_on_a_line() -> None:
    ticket = open_ticket(Category.CONFIGURATION, now=T0)
    assert ticket.status is Status.OPEN
    hard = set_status(ticket, Status.HARD_TO_CONFIGURE)
    assert hard.status is Status.HARD_TO_CONFIGURE and hard.stage is Stage.FIRST_LINE
    for refused in (Status.SUGGESTED_CLOSE, Status.CLOSED):
        with pytest.raises(InvalidTransition):
            set_status(ticket, refused)
    suggested = move(hard, Stage.SUGGEST_CLOSE, now=T0 + 1)
    assert suggested.status is Status.SUGGESTED_CLOSE
    with pytest.raises(InvalidTransition, match="keeps its status"):
        set_status(suggested, Status.OPEN)
    assert move(suggested, Stage.SECOND_LINE, now=T0 + 2).status is Status.OPEN
    assert move(suggested, Stage.CLOSED, now=T0 + 2).status is Status.CLOSED


def test_third_line_needs_a_plan_and_a_future_eta() -> None:
    ticket = open_ticket(Category.SOFTWARE_BUG, now=T0)
    with pytest.raises(InvalidRequest, match="needs a plan"):
        escalate_third_line(ticket, plan="  ", eta=T0 + DAY, now=T0)
    for eta in (T0, T0 - 1, T0 + 366 * DAY):
        with pytest.raises(InvalidRequest, match="ETA"):
            escalate_third_line(ticket, plan="patch", eta=eta, now=T0)
    third = escalate_third_line(ticket, plan=" patch the parser ", eta=T0 + 4 * DAY, now=T0 + 5)
    assert third.stage is Stage.THIRD_LINE and third.plan == "patch the parser"
    assert third.stage_since == T0 + 5
    closed = move(third, Stage.CLOSED, now=T0 + 6)
    with pytest.raises(InvalidTransition):
        escalate_third_line(closed, plan="again", eta=T0 + DAY, now=T0 + 7)
    # leaving the third line drops its plan
    back = move(third, Stage.SECOND_LINE, now=T0 + 8)
    assert back.plan is None and back.eta is None


@pytest.mark.parametrize("line", LINES)
def test_sla_per_line(line: Stage) -> None:
    ticket = open_ticket(Category.TECHNICAL, now=T0)
    entered = T0 + HOUR
    if line is Stage.THIRD_LINE:
        on = escalate_third_line(ticket, plan="p", eta=entered + 300 * DAY, now=entered)
    elif line is Stage.SECOND_LINE:
        on = move(ticket, line, now=entered)
    else:
        on = ticket
        entered = T0
    sla = LINE_SLA[line]
    clock = line_clock(on, now=entered)
    assert clock is not None and clock.line is line
    assert clock.response_due == entered + sla.response_s
    assert clock.resolution_due == entered + sla.resolution_s
    assert not clock.responded and not clock.response_breached
    late = line_clock(on, now=entered + sla.response_s + 1)
    assert late is not None and late.response_breached and not late.responded
    answered = on_message(on, from_customer=False, now=entered + sla.response_s)
    met = line_clock(answered, now=entered + sla.resolution_s)
    assert met is not None and met.responded and not met.response_breached
    assert not met.resolution_breached
    over = line_clock(answered, now=entered + sla.resolution_s + 1)
    assert over is not None and over.resolution_breached


@pytest.mark.parametrize("line", LINES)
def test_a_breach_is_the_lines_own_sla_not_only_the_categorys(line: Stage) -> None:
    """A 3-day category on each line: the line's first-answer target (4 h, 1 day, 2 days),
    and its resolution target (the third line's ETA) are breaches before the 3 days."""
    ticket = open_ticket(Category.DATA_ACCURACY, now=T0)
    if line is Stage.THIRD_LINE:
        on = escalate_third_line(ticket, plan="p", eta=T0 + 2 * DAY + HOUR, now=T0)
    else:
        on = ticket if line is Stage.FIRST_LINE else move(ticket, line, now=T0)
    sla = LINE_SLA[line]
    response_due = T0 + sla.response_s
    assert not breached(on, now=response_due)
    assert breached(on, now=response_due + 1)
    assert not sla_breached(on, now=response_due + 1)  # the old rule: not yet
    answered = on_message(on, from_customer=False, now=T0 + 60)
    resolution_due = on.eta if on.eta is not None else T0 + sla.resolution_s
    assert not breached(answered, now=min(resolution_due, on.due_at))
    if resolution_due < on.due_at:
        assert breached(answered, now=resolution_due + 1)
        assert not sla_breached(answered, now=resolution_due + 1)
    assert breached(answered, now=on.due_at + 1)  # the category's SLA still counts
    # off the lines only the category's rule is left
    proposed = move(answered, Stage.SUGGEST_CLOSE, now=T0 + 120)
    assert not breached(proposed, now=T0 + 30 * DAY)


def test_the_answer_of_an_earlier_line_does_not_count_on_the_next() -> None:
    answered = on_message(open_ticket(Category.TECHNICAL, now=T0), from_customer=False, now=T0 + 60)
    second = move(answered, Stage.SECOND_LINE, now=T0 + HOUR)
    clock = line_clock(second, now=T0 + HOUR + 2 * DAY)
    assert clock is not None and not clock.responded and clock.response_breached


def test_the_third_lines_eta_is_its_resolution_target_when_earlier() -> None:
    third = escalate_third_line(
        open_ticket(Category.SOFTWARE_BUG, now=T0), plan="p", eta=T0 + 2 * DAY, now=T0
    )
    clock = line_clock(third, now=T0)
    assert clock is not None and clock.resolution_due == T0 + 2 * DAY
    assert line_clock(move(third, Stage.SUGGEST_CLOSE, now=T0 + 1), now=T0 + 1) is None


@pytest.mark.parametrize(("now", "to"), list(product(TaskStatus, TaskStatus)))
def test_task_moves(now: TaskStatus, to: TaskStatus) -> None:
    if to is now or to in TASK_MOVES[now]:
        assert move_task(now, to) is to
    else:
        with pytest.raises(InvalidTransition, match=f"a task that is {now.value}"):
            move_task(now, to)


# attachments -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86", "video/webm"),
        (b"2026-01-01 10:00 counter ok\r\n\tindented\x1b[0m\n", "text/plain"),
        ("tellingen: één\n".encode(), "text/plain"),
        (b"MZ\x90\x00", None),
        (b"log\x00with a NUL", None),
        (b"\xff\xfe not utf-8 \xc3\x28 here", None),
        (b"", None),
        (b"<html><script>alert(1)</script>", "text/plain"),  # served as a download, nosniff
    ],
)
def test_sniff(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_a_character_cut_at_the_sniff_window_is_still_text() -> None:
    head = ("a" * 4095 + "é").encode()[:4096]
    assert sniff(head) == "text/plain"


@settings(max_examples=300)
@given(st.binary(max_size=64))
@example(b"\xc3")
@example(b"RIFF")
@example(b"\x00\x00\x00\x00ftyp")
def test_sniff_names_an_accepted_type_or_none(head: bytes) -> None:
    kind = sniff(head)
    assert kind is None or kind in FAMILIES


LIMITS = {"image": 100, "text": 50, "video": 1000, "pdf": 0}


def test_accept_gives_the_types_limit_and_a_safe_name() -> None:
    got = accept(b"\x89PNG\r\n\x1a\n", name="C:\\Users\\me\\shot 1.exe", limits=LIMITS)
    assert (got.content_type, got.family, got.limit) == ("image/png", "image", 100)
    assert got.filename == "shot_1.png"
    with pytest.raises(UnsupportedAttachment):
        accept(b"%PDF-1.4", name="x.pdf", limits=LIMITS)  # limit 0: refused
    with pytest.raises(UnsupportedAttachment):
        accept(b"", name="empty.txt", limits=LIMITS)
    check_size(50, 50)
    with pytest.raises(AttachmentTooLarge, match="over 50 bytes"):
        check_size(51, 50)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd.txt"),
        ("..", "attachment.txt"),
        ("rapport (1).log", "rapport_1.txt"),
        ("a" * 300 + ".txt", "a" * 114 + ".txt"),
    ],
)
def test_safe_name(name: str, safe: str) -> None:
    assert safe_name(name, "text/plain") == safe


# the check before a report ----------------------------------------------------------
@dataclass(frozen=True)
class _Evidence:
    rule: str
    value: float


def _check(category: Category = Category.DATA_ACCURACY, **kw: object) -> list[tuple[str, str]]:
    args: dict[str, object] = {
        "device_id": "counter-1",
        "online": True,
        "status_at": T0 - DAY,
        "last_seen": T0 - 60,
        "verdict": "healthy",
        "evidence": (),
        "now": T0,
    } | kw
    got = report_check(category, **args)  # type: ignore[arg-type]
    return [(f.code, f.text()) for f in got.findings]


def test_zero_counts_during_opening_hours_since() -> None:
    found = _check(evidence=[_Evidence("counter.zero_counts", 5 * HOUR)])
    assert found == [
        (
            "zero_counts",
            "this counter reported zero counts during opening hours since 2025-12-31 18:59 UTC "
            "(5 opening hours): check that nothing blocks its view and the entrance was open",
        )
    ]


def test_lens_obstructed_offline_and_other_rules() -> None:
    found = _check(
        Category.DEVICE_FAULT,
        online=False,
        evidence=[_Evidence("camera.obstructed", 12.6), _Evidence("thermal.hot", 80)],
    )
    assert [code for code, _ in found] == ["offline", "lens_obstructed", "health_rule"]
    assert "offline since 2025-12-31 00:00 UTC" in found[0][1]
    assert "lens looks obstructed (image contrast 12% of normal)" in found[1][1]
    assert found[2][1] == "the device's health check found a problem: thermal.hot"


def test_a_healthy_device_says_so_and_other_categories_are_not_checked() -> None:
    assert _check() == [
        (
            "healthy",
            "the device's own health check finds nothing wrong (last report 2025-12-31 23:59 "
            "UTC): report the problem if you still see it",
        )
    ]
    assert [c for c, _ in _check(last_seen=None, online=None)] == ["no_reports"]
    for category in set(Category) - {Category.DATA_ACCURACY, Category.DEVICE_FAULT}:
        assert _check(category, evidence=[_Evidence("camera.obstructed", 1)]) == []


def test_false_alarm_is_a_finding_the_customer_can_fix() -> None:
    def likely(**kw: object) -> bool:
        args: dict[str, object] = {
            "device_id": "cam-1",
            "online": True,
            "status_at": None,
            "last_seen": T0,
            "verdict": None,
            "evidence": (),
            "now": T0,
        } | kw
        return report_check(Category.DEVICE_FAULT, **args).likely_false_alarm  # type: ignore[arg-type]

    assert likely(evidence=[_Evidence("camera.obstructed", 3)])
    assert likely(online=False, status_at=T0 - 10)
    assert not likely(evidence=[_Evidence("storage.full", 99)])
    assert not likely()


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(Stage)), st.sampled_from(list(Status)), st.booleans()),
        max_size=20,
    )
)
@example([(Stage.SUGGEST_CLOSE, Status.OPEN, True)])
def test_status_always_matches_the_stage(steps: list[tuple[Stage, Status, bool]]) -> None:
    ticket = open_ticket(Category.TECHNICAL, now=T0)
    now = T0
    for stage, status, by_status in steps:
        now += 60
        try:
            if by_status:
                ticket = set_status(ticket, status)
            elif stage is Stage.THIRD_LINE:
                ticket = escalate_third_line(ticket, plan="p", eta=now + DAY, now=now)
            else:
                ticket = move(ticket, stage, now=now)
        except InvalidTransition:
            pass
        if ticket.stage is Stage.SUGGEST_CLOSE:
            assert ticket.status is Status.SUGGESTED_CLOSE
        elif ticket.stage is Stage.CLOSED:
            assert ticket.status is Status.CLOSED
        else:
            assert ticket.status in {Status.OPEN, Status.RECHECK_APPROVED, Status.HARD_TO_CONFIGURE}
        assert (ticket.plan is not None) == (ticket.stage is Stage.THIRD_LINE) or (
            ticket.stage in (Stage.SUGGEST_CLOSE, Stage.CLOSED)
        )


def test_orphans_are_old_unnamed_files_and_unfinished_uploads() -> None:
    now, grace = T0, 3600
    named, lost = "a" * 64, "b" * 64
    files = [
        StoredFile(f"aa/{named}", named, now - 10 * grace),  # its row exists
        StoredFile(f"bb/{lost}", lost, now - grace - 1),  # no row: a crash lost it
        StoredFile(".upload-1", None, now - grace - 1),  # an upload that never finished
        StoredFile(f"bb/{'c' * 64}", "c" * 64, now - grace),  # in flight, maybe
        StoredFile(".upload-2", None, now - 5),
    ]
    gone = orphans(files, {named}, now=now, grace_s=grace)
    assert [f.name for f in gone] == [f"bb/{lost}", ".upload-1"]
    assert orphans(files, {named, lost}, now=now, grace_s=grace) == [files[2]]
