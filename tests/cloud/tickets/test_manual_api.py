"""Tickets as the vendor's manual runs them, through the API on SQLite and PostgreSQL:
categories per role, the third line, statuses, the responsible person, action tasks,
attachments on disk, mails in the outbox, and the check before a report."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from cloud.accounts.tables import AuditRow
from cloud.health.ingest import Incoming
from cloud.notifications.tables import NotificationRow
from cloud.tickets.storage import AttachmentStore
from cloud.tickets.tables import TicketAttachmentRow, TicketRow
from protocol.health import HealthReport, health_to_json
from protocol.topics import device_topic
from tests.cloud.harness import DAY, Cloud, client, new_user, user_api_key

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
LOG = b"2026-01-01 10:00:00 counter: no objects detected\n" * 20


async def _site(cloud: Cloud, *, email: str = "owner@shop.example") -> tuple[str, str, int]:
    """An installation owned by a new owner user, with a camera; (installation, device, owner)."""
    owner = new_user(cloud.app, role="owner", email=email)
    inst = await cloud.installation()
    answer = await cloud.http.put(f"/api/v1/installations/{inst}/owner", json={"user_id": owner})
    assert answer.status_code == 200, answer.text
    device = await cloud.device(inst, kind="camera")
    return inst, str(device["device_id"]), owner


def _as(cloud: Cloud, user_id: int) -> httpx.AsyncClient:
    return client(cloud.app, user_api_key(cloud.app, user_id))


async def _open(http: httpx.AsyncClient, inst: str, **extra: Any) -> httpx.Response:
    body = {
        "category": "data_accuracy",
        "subject": "Counts too low",
        "body": "Saturday counts are half of last week's",
        "installation_id": inst,
        **extra,
    }
    return await http.post("/api/v1/tickets", json=body)


def _mails(cloud: Cloud) -> list[NotificationRow]:
    with cloud.state.store.transaction() as tx:
        rows = tx.scalars(select(NotificationRow).order_by(NotificationRow.id)).all()
        tx.expunge_all()
        return list(rows)


def _count(cloud: Cloud, table: type) -> int:
    with cloud.state.store.transaction() as tx:
        return int(tx.scalar(select(func.count()).select_from(table)) or 0)


def _files(cloud: Cloud) -> list[Path]:
    root = cloud.state.settings.attachments_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_categories_per_role_and_recategorise_audited(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    async with _as(cloud, owner) as customer:
        refused = await _open(customer, inst, category="software_bug")
        assert refused.status_code == 403
        assert "only support files a ticket as software_bug" in refused.json()["detail"]
        assert (await _open(customer, inst, category="audit_blockade")).status_code == 403
        assert _count(cloud, TicketRow) == 0
        made = await _open(customer, inst, category="business_inquiry")
        assert made.status_code == 201, made.text
        tid = made.json()["id"]
        assert made.json()["due_at"] == cloud.clock() + DAY
        # a customer cannot re-categorise
        assert (
            await customer.post(f"/api/v1/tickets/{tid}/category", json={"category": "training"})
        ).status_code == 403
    moved = await cloud.http.post(
        f"/api/v1/tickets/{tid}/category", json={"category": "audit_blockade"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["category"] == "audit_blockade"
    with cloud.state.store.transaction() as tx:
        entry = tx.scalars(select(AuditRow).where(AuditRow.action == "ticket.category")).one()
        assert entry.before["category"] == "business_inquiry"  # type: ignore[index]
        assert entry.after["category"] == "audit_blockade"  # type: ignore[index]
    # support may open support-only categories itself
    assert (await _open(cloud.http, inst, category="software_bug")).status_code == 201
    bad = await cloud.http.post(f"/api/v1/tickets/{tid}/category", json={"category": "nonsense"})
    assert bad.status_code == 422


async def test_third_line_needs_plan_and_eta_and_has_its_own_sla(cloud: Cloud) -> None:
    inst, _, _ = await _site(cloud)
    tid = (await _open(cloud.http, inst, category="software_bug")).json()["id"]
    first = (await cloud.http.get(f"/api/v1/tickets/{tid}")).json()
    assert first["line_sla"]["line"] == "first_line"
    assert first["line_sla"]["response_due"] == cloud.clock() + 4 * 3600
    assert first["line_sla"]["resolution_due"] == cloud.clock() + DAY
    no_plan = await cloud.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "third_line"})
    assert no_plan.status_code == 422 and "plan" in no_plan.text
    past = await cloud.http.post(
        f"/api/v1/tickets/{tid}/stage",
        json={"stage": "third_line", "plan": "fix the parser", "eta": cloud.clock() - 1},
    )
    assert past.status_code == 422 and "ETA" in past.text
    assert (await cloud.http.get(f"/api/v1/tickets/{tid}")).json()["stage"] == "first_line"
    cloud.clock.advance(3600)
    eta = cloud.clock() + 5 * DAY
    third = await cloud.http.post(
        f"/api/v1/tickets/{tid}/stage",
        json={"stage": "third_line", "plan": "fix the parser", "eta": eta},
    )
    assert third.status_code == 200, third.text
    shown = third.json()
    assert shown["stage"] == "third_line" and shown["plan"] == "fix the parser"
    assert shown["eta"] == eta
    assert shown["line_sla"]["response_due"] == cloud.clock() + 2 * DAY
    assert shown["line_sla"]["resolution_due"] == eta  # the ETA is earlier than 10 days
    cloud.clock.advance(3 * DAY)
    late = (await cloud.http.get(f"/api/v1/tickets/{tid}")).json()["line_sla"]
    assert late["response_breached"] is True and late["resolution_breached"] is False
    back = await cloud.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "second_line"})
    assert back.json()["plan"] is None and back.json()["line_sla"]["line"] == "second_line"


async def test_status_within_stage(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    tid = (await _open(cloud.http, inst)).json()["id"]
    assert (await cloud.http.get(f"/api/v1/tickets/{tid}")).json()["status"] == "open"
    set_ = await cloud.http.post(
        f"/api/v1/tickets/{tid}/status", json={"status": "recheck_approved"}
    )
    assert set_.status_code == 200 and set_.json()["status"] == "recheck_approved"
    wrong = await cloud.http.post(f"/api/v1/tickets/{tid}/status", json={"status": "closed"})
    assert wrong.status_code == 409
    async with _as(cloud, owner) as customer:
        denied = await customer.post(
            f"/api/v1/tickets/{tid}/status", json={"status": "hard_to_config"}
        )
        assert denied.status_code == 403
    suggested = await cloud.http.post(
        f"/api/v1/tickets/{tid}/stage", json={"stage": "suggest_close"}
    )
    assert suggested.json()["status"] == "suggested_close"
    stuck = await cloud.http.post(f"/api/v1/tickets/{tid}/status", json={"status": "open"})
    assert stuck.status_code == 409
    closed = await cloud.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "closed"})
    assert closed.json()["status"] == "closed"


async def test_responsible_person(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    agent = new_user(cloud.app, role="support", email="agent@entitle.example")
    tid = (await _open(cloud.http, inst)).json()["id"]
    not_support = await cloud.http.post(
        f"/api/v1/tickets/{tid}/responsible", json={"user_id": owner}
    )
    assert not_support.status_code == 422
    missing = await cloud.http.post(f"/api/v1/tickets/{tid}/responsible", json={"user_id": 9999})
    assert missing.status_code == 422
    done = await cloud.http.post(f"/api/v1/tickets/{tid}/responsible", json={"user_id": agent})
    assert done.status_code == 200, done.text
    assert done.json()["responsible"] == {"user_id": agent, "name": "Test support"}
    async with _as(cloud, owner) as customer:
        assert (
            await customer.post(f"/api/v1/tickets/{tid}/responsible", json={"user_id": agent})
        ).status_code == 403
    # a customer's message now goes to the responsible person
    async with _as(cloud, owner) as customer:
        assert (
            await customer.post(f"/api/v1/tickets/{tid}/messages", json={"body": "any news?"})
        ).status_code == 200
    last = _mails(cloud)[-1]
    assert last.kind == "ticket_message" and last.recipients == ["agent@entitle.example"]
    assert "any news?" in last.body
    cleared = await cloud.http.post(f"/api/v1/tickets/{tid}/responsible", json={"user_id": None})
    assert cleared.json()["responsible"] is None


async def test_action_tasks(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    tid = (await _open(cloud.http, inst)).json()["id"]
    task = {
        "type": "data_recheck",
        "title": "Recount Saturday",
        "hours": 1.5,
        "expected_on": "2026-01-05",
    }
    made = await cloud.http.post(f"/api/v1/tickets/{tid}/tasks", json=task)
    assert made.status_code == 201, made.text
    [shown] = made.json()["tasks"]
    assert shown["status"] == "todo" and shown["hours"] == 1.5
    assert shown["expected_on"] == "2026-01-05"
    for bad in ({**task, "hours": 0}, {**task, "expected_on": "05/01/2026"}, {**task, "type": "x"}):
        assert (await cloud.http.post(f"/api/v1/tickets/{tid}/tasks", json=bad)).status_code == 422
    url = f"/api/v1/tickets/{tid}/tasks/{shown['id']}"
    done = await cloud.http.patch(url, json={"status": "done", "hours": 2})
    assert done.json()["tasks"][0]["status"] == "done"
    assert done.json()["tasks"][0]["hours"] == 2
    refused = await cloud.http.patch(url, json={"status": "cancelled"})
    assert refused.status_code == 409
    assert (await cloud.http.get(f"/api/v1/tickets/{tid}")).json()["tasks"][0]["status"] == "done"
    assert (await cloud.http.patch(f"/api/v1/tickets/{tid}/tasks/999", json={})).status_code == 404
    async with _as(cloud, owner) as customer:
        assert (await customer.post(f"/api/v1/tickets/{tid}/tasks", json=task)).status_code == 403
        seen = (await customer.get(f"/api/v1/tickets/{tid}")).json()["tasks"]
        assert [t["title"] for t in seen] == ["Recount Saturday"]
    async with _as(cloud, owner) as customer:
        assert (await customer.delete(url)).status_code == 403
    removed = await cloud.http.delete(url)
    assert removed.status_code == 200 and removed.json()["tasks"] == []
    assert (await cloud.http.delete(url)).status_code == 404
    with cloud.state.store.transaction() as tx:
        actions = tx.scalars(select(AuditRow.action).where(AuditRow.object_type == "ticket_task"))
        assert sorted(actions) == ["ticket.task.add", "ticket.task.delete", "ticket.task.update"]


async def test_attachment_upload_download_and_scoping(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    other = new_user(cloud.app, role="owner", email="other@elsewhere.example")
    async with _as(cloud, owner) as customer:
        tid = (await _open(customer, inst)).json()["id"]
        up = await customer.post(
            f"/api/v1/tickets/{tid}/attachments",
            files={"file": ("../../etc/shot.exe", io.BytesIO(PNG), "application/x-msdownload")},
        )
        assert up.status_code == 201, up.text
        [meta] = up.json()["attachments"]
        assert meta["content_type"] == "image/png"  # sniffed, not the declared type
        assert meta["filename"] == "shot.png" and meta["size"] == len(PNG)
        got = await customer.get(f"/api/v1/tickets/{tid}/attachments/{meta['id']}")
        assert got.status_code == 200 and got.content == PNG
        assert got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"].startswith("attachment;")
        assert 'filename="shot.png"' in got.headers["content-disposition"]
    async with _as(cloud, other) as stranger:
        assert (
            await stranger.get(f"/api/v1/tickets/{tid}/attachments/{meta['id']}")
        ).status_code == 404
        sneaky = await stranger.post(
            f"/api/v1/tickets/{tid}/attachments", files={"file": ("a.png", io.BytesIO(PNG))}
        )
        assert sneaky.status_code == 404
    assert (await cloud.http.get(f"/api/v1/tickets/{tid}/attachments/{meta['id']}")).content == PNG
    assert (await cloud.http.get(f"/api/v1/tickets/{tid}/attachments/99")).status_code == 404
    assert len(_files(cloud)) == 1
    # the same bytes again: a second row, one stored file
    again = await cloud.http.post(
        f"/api/v1/tickets/{tid}/attachments", files={"file": ("again.png", io.BytesIO(PNG))}
    )
    assert len(again.json()["attachments"]) == 2 and len(_files(cloud)) == 1


async def test_refused_uploads_leave_no_file_and_no_row(cloud: Cloud) -> None:
    inst, _, _ = await _site(cloud)
    tid = (await _open(cloud.http, inst)).json()["id"]
    url = f"/api/v1/tickets/{tid}/attachments"
    exe = await cloud.http.post(
        url, files={"file": ("log.txt", io.BytesIO(b"MZ\x90\x00\x03" * 50))}
    )
    assert exe.status_code == 422 and "text log" in exe.text
    empty = await cloud.http.post(url, files={"file": ("e.txt", io.BytesIO(b""))})
    assert empty.status_code == 422
    limit = cloud.state.settings.tickets_attachment_limits["text"]
    huge = await cloud.http.post(url, files={"file": ("big.log", io.BytesIO(b"a" * (limit + 1)))})
    assert huge.status_code == 413, huge.text
    just = await cloud.http.post(url, files={"file": ("ok.log", io.BytesIO(LOG))})
    assert just.status_code == 201
    assert just.json()["attachments"][0]["content_type"] == "text/plain"
    assert _count(cloud, TicketAttachmentRow) == 1 and len(_files(cloud)) == 1
    tmp = [p for p in cloud.state.settings.attachments_dir.rglob(".upload-*")]
    assert tmp == []
    assert (
        await cloud.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "closed"})
    ).status_code == 200
    late = await cloud.http.post(url, files={"file": ("more.log", io.BytesIO(LOG))})
    assert late.status_code == 409
    assert _count(cloud, TicketAttachmentRow) == 1 and len(_files(cloud)) == 1


async def test_mails_on_messages_status_and_suggest_close(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    async with _as(cloud, owner) as customer:
        tid = (await _open(customer, inst, cc=["manager@shop.example"])).json()["id"]
    # the people in copy hear of it; support has nobody responsible and no address yet
    [opened] = _mails(cloud)
    assert opened.recipients == ["manager@shop.example"] and "Saturday counts" in opened.body
    await cloud.http.post(f"/api/v1/tickets/{tid}/messages", json={"body": "Please recount."})
    mail = _mails(cloud)[-1]
    assert mail.kind == "ticket_message"
    assert mail.recipients == ["manager@shop.example", "owner@shop.example"]
    assert f"[Ticket #{tid}] New message: Counts too low" == mail.subject
    assert "Please recount." in mail.body and f"/tickets/{tid}" in mail.body
    await cloud.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "second_line"})
    mail = _mails(cloud)[-1]
    assert mail.kind == "ticket_status" and "Second line" in mail.subject
    await cloud.http.post(f"/api/v1/tickets/{tid}/status", json={"status": "hard_to_config"})
    mail = _mails(cloud)[-1]
    assert mail.kind == "ticket_status" and "hard to configure" in mail.body
    await cloud.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "suggest_close"})
    mail = _mails(cloud)[-1]
    assert mail.kind == "ticket_suggest_close" and "7 days" in mail.body
    assert mail.recipients == ["manager@shop.example", "owner@shop.example"]
    assert len(_mails(cloud)) == 5


async def test_mails_in_the_customers_language(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    with cloud.state.store.transaction() as tx:
        from cloud.accounts.tables import UserRow

        user = tx.get(UserRow, owner)
        assert user is not None
        user.locale = "nl"
    tid = (await _open(cloud.http, inst)).json()["id"]
    await cloud.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "suggest_close"})
    mail = _mails(cloud)[-1]
    assert mail.recipients == ["owner@shop.example"]
    assert "Opgelost?" in mail.subject, mail.subject


def _report(cloud: Cloud, device_id: str, seq: int, **kind_specific: float) -> Incoming:
    report = HealthReport(
        device_id=device_id,
        seq=seq,
        ts=cloud.clock() - 600 + 60 * seq,
        kind="camera",
        uptime_s=1000 + seq,
        kind_specific=kind_specific,
    )
    return Incoming(device_topic(device_id, "health"), health_to_json(report))


async def test_check_before_report_shows_the_devices_own_diagnosis(cloud: Cloud) -> None:
    inst, device, owner = await _site(cloud)
    other = new_user(cloud.app, role="owner", email="other@elsewhere.example")
    url = "/api/v1/tickets/check"
    async with _as(cloud, owner) as customer:
        quiet = (
            await customer.get(url, params={"device_id": device, "category": "device_fault"})
        ).json()
        assert quiet["applies"] is True
        assert [f["code"] for f in quiet["findings"]] == ["no_reports"]
        assert cloud.state.health_ingest is not None
        cloud.state.health_ingest.process(
            [_report(cloud, device, seq, lens_contrast_pct=8.0) for seq in (1, 2, 3)]
        )
        check = await customer.get(url, params={"device_id": device, "category": "data_accuracy"})
        assert check.status_code == 200, check.text
        body = check.json()
        assert body["likely_false_alarm"] is True
        [finding] = body["findings"]
        assert finding["code"] == "lens_obstructed" and finding["self_fix"] is True
        assert "camera lens looks obstructed (image contrast 8% of normal)" in finding["text"]
        other_kind = await customer.get(url, params={"device_id": device, "category": "training"})
        assert other_kind.json()["applies"] is False and other_kind.json()["findings"] == []
        bad = await customer.get(url, params={"device_id": "no such!", "category": "device_fault"})
        assert bad.status_code == 422
    async with _as(cloud, other) as stranger:
        hidden = await stranger.get(url, params={"device_id": device, "category": "device_fault"})
        assert hidden.status_code == 404


async def test_auto_close_is_mailed_and_audited(cloud: Cloud) -> None:
    inst, _, _ = await _site(cloud)
    agent = new_user(cloud.app, role="support", email="agent@entitle.example")
    tid = (await _open(cloud.http, inst)).json()["id"]
    await cloud.http.post(f"/api/v1/tickets/{tid}/responsible", json={"user_id": agent})
    await cloud.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "suggest_close"})
    before = len(_mails(cloud))
    cloud.clock.advance(7 * DAY - 1)
    assert (await cloud.state.jobs.run_once())["tickets"].closed == 0
    cloud.clock.advance(1)
    assert (await cloud.state.jobs.run_once())["tickets"].closed == 1
    assert (await cloud.state.jobs.run_once())["tickets"].closed == 0  # once
    shown = (await cloud.http.get(f"/api/v1/tickets/{tid}")).json()
    assert shown["stage"] == "closed" and shown["status"] == "closed"
    mails = _mails(cloud)[before:]
    assert [(m.kind, m.recipients) for m in mails] == [
        ("ticket_status", ["owner@shop.example"]),
        ("ticket_status", ["agent@entitle.example"]),
    ]
    assert "Closed" in mails[0].subject
    with cloud.state.store.transaction() as tx:
        entry = tx.scalars(select(AuditRow).where(AuditRow.action == "ticket.auto_close")).one()
        assert entry.actor == "system:tickets" and entry.object_id == str(tid)


async def test_an_attachment_may_be_larger_than_other_request_bodies(cloud: Cloud) -> None:
    inst, _, _ = await _site(cloud)
    tid = (await _open(cloud.http, inst)).json()["id"]
    general = cloud.state.settings.http_max_body_bytes
    photo = PNG + bytes(general + 1000)  # over the general limit, under the image limit
    up = await cloud.http.post(
        f"/api/v1/tickets/{tid}/attachments", files={"file": ("big.png", io.BytesIO(photo))}
    )
    assert up.status_code == 201, up.text
    assert up.json()["attachments"][0]["size"] == len(photo)
    too_long = await cloud.http.post(
        f"/api/v1/tickets/{tid}/messages", content=b"{" + b" " * general + b"}"
    )
    assert too_long.status_code == 413  # every other route keeps the general limit
    assert len((await cloud.http.get(f"/api/v1/tickets/{tid}")).json()["messages"]) == 1


async def test_the_job_flags_each_lines_own_sla(cloud: Cloud) -> None:
    """Four 3-day tickets (the old rule flags none before 3 days): first line unanswered,
    first line answered, second line unanswered, third line answered with a 1-day ETA."""
    inst, _, _ = await _site(cloud)
    start = cloud.clock()
    ids = {}
    for name in ("first", "answered", "second", "third"):
        ids[name] = (await _open(cloud.http, inst)).json()["id"]
    url = "/api/v1/tickets/{}".format
    await cloud.http.post(f"{url(ids['answered'])}/messages", json={"body": "looking"})
    await cloud.http.post(f"{url(ids['second'])}/stage", json={"stage": "second_line"})
    third = await cloud.http.post(
        f"{url(ids['third'])}/stage",
        json={"stage": "third_line", "plan": "patch", "eta": start + DAY + 3600},
    )
    assert third.status_code == 200, third.text
    await cloud.http.post(f"{url(ids['third'])}/messages", json={"body": "on it"})

    async def flagged_after(seconds: int) -> set[str]:
        cloud.clock.advance(start + seconds - cloud.clock())
        await cloud.state.jobs.run_once()
        return {
            name
            for name, tid in ids.items()
            if (await cloud.http.get(url(tid))).json()["sla_breached"]
        }

    assert await flagged_after(4 * 3600) == set()
    assert await flagged_after(4 * 3600 + 1) == {"first"}  # no answer within 4 h
    assert await flagged_after(DAY + 1) == {"first", "answered", "second"}
    assert await flagged_after(DAY + 3600 + 1) == set(ids)  # the third line's ETA
    with cloud.state.store.transaction() as tx:
        stamps = dict(tx.execute(select(TicketRow.id, TicketRow.sla_breached_at)).all())
    assert stamps[ids["first"]] == start + 4 * 3600 + 1  # flagged once, when first seen
    assert stamps[ids["third"]] == start + DAY + 3600 + 1


async def test_the_job_removes_orphan_files_after_the_grace_period(cloud: Cloud) -> None:
    """A file stored before a crash lost its row, and an upload cut off half-way, go once
    older than the grace period; a file a row names, and files not ours, stay."""
    inst, _, _ = await _site(cloud)
    tid = (await _open(cloud.http, inst)).json()["id"]
    up = await cloud.http.post(
        f"/api/v1/tickets/{tid}/attachments", files={"file": ("shot.png", io.BytesIO(PNG))}
    )
    [kept] = up.json()["attachments"]
    settings = cloud.state.settings
    root = settings.attachments_dir
    store = AttachmentStore(root, limits=settings.tickets_attachment_limits)
    lost = store.put(io.BytesIO(LOG), name="lost.log")  # the crash: no row follows
    half = root / ".upload-0123456789abcdef"
    half.write_bytes(b"half a video")
    not_ours = root / "README"
    not_ours.write_text("the operator's note")
    grace = settings.tickets_orphan_grace_s
    written = cloud.clock() - grace
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (written, written))
    assert (await cloud.state.jobs.run_once())["tickets"].orphans == 0  # within the grace
    assert store.path(lost.sha256).exists() and half.exists()
    cloud.clock.advance(1)
    assert (await cloud.state.jobs.run_once())["tickets"].orphans == 2
    assert not store.path(lost.sha256).exists() and not half.exists()
    assert not_ours.exists()
    got = await cloud.http.get(f"/api/v1/tickets/{tid}/attachments/{kept['id']}")
    assert got.status_code == 200 and got.content == PNG
    assert (await cloud.state.jobs.run_once())["tickets"].orphans == 0


async def test_a_message_carries_its_files(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    async with _as(cloud, owner) as customer:
        tid = (await _open(customer, inst)).json()["id"]
        url = f"/api/v1/tickets/{tid}/attachments"
        sent = await customer.post(
            url,
            data={"body": "the log and a photo of the counter"},
            files=[("file", ("counter.log", LOG)), ("file", ("counter.png", PNG))],
        )
        assert sent.status_code == 201, sent.text
        shown = sent.json()
        first, message = shown["messages"]
        assert message["body"] == "the log and a photo of the counter"
        assert [a["filename"] for a in message["attachments"]] == ["counter.txt", "counter.png"]
        assert {a["message_id"] for a in shown["attachments"]} == {message["id"]}
        assert first["attachments"] == []
        assert shown["next_action"] == "support"
        # files on their own, as before: no message
        alone = await customer.post(url, files={"file": ("more.png", PNG)})
        assert alone.status_code == 201
        assert len(alone.json()["messages"]) == 2
        assert alone.json()["attachments"][-1]["message_id"] is None
        rows, files = _count(cloud, TicketAttachmentRow), _files(cloud)
        # one refused file refuses the message and every file sent with it
        mixed = await customer.post(
            url,
            data={"body": "and an exe"},
            files=[("file", ("new.log", LOG + b"new")), ("file", ("x.log", b"MZ\x90\x00" * 9))],
        )
        assert mixed.status_code == 422, mixed.text
        six = await customer.post(
            url, data={"body": "six"}, files=[("file", (f"{i}.png", PNG)) for i in range(6)]
        )
        assert six.status_code == 422 and "at most 5 files" in six.text
        nul = await customer.post(url, data={"body": "a\x00b"}, files={"file": ("e.png", PNG)})
        assert nul.status_code == 422
        after = (await customer.get(f"/api/v1/tickets/{tid}")).json()
        assert len(after["messages"]) == 2
        assert _count(cloud, TicketAttachmentRow) == rows and _files(cloud) == files


async def test_deleting_an_attachment(cloud: Cloud) -> None:
    inst, _, owner = await _site(cloud)
    other = new_user(cloud.app, role="owner", email="other@elsewhere.example")
    async with _as(cloud, owner) as customer:
        tid = (await _open(customer, inst)).json()["id"]
        url = f"/api/v1/tickets/{tid}/attachments"
        mine = await customer.post(url, data={"body": "photo"}, files={"file": ("a.png", PNG)})
        [own] = mine.json()["messages"][-1]["attachments"]
    theirs = await cloud.http.post(url, files={"file": ("same.png", PNG)})  # the same bytes
    shared = theirs.json()["attachments"][-1]
    [stored] = _files(cloud)
    async with _as(cloud, other) as stranger:
        assert (await stranger.delete(f"{url}/{own['id']}")).status_code == 404
    async with _as(cloud, owner) as customer:
        refused = await customer.delete(f"{url}/{shared['id']}")  # support's file
        assert refused.status_code == 403, refused.text
        assert (await customer.delete(f"{url}/999")).status_code == 404
        gone = await customer.delete(f"{url}/{own['id']}")
        assert gone.status_code == 200, gone.text
        assert [a["id"] for a in gone.json()["attachments"]] == [shared["id"]]
        assert gone.json()["messages"][-1]["attachments"] == []
        assert (await customer.get(f"{url}/{own['id']}")).status_code == 404
        assert (await customer.get(f"{url}/{shared['id']}")).content == PNG  # file kept
        assert _files(cloud) == [stored]
        assert (await customer.delete(f"{url}/{own['id']}")).status_code == 404  # once
    with cloud.state.store.transaction() as tx:
        entry = tx.scalars(
            select(AuditRow).where(AuditRow.action == "ticket.attachment.delete")
        ).one()
        assert entry.actor == f"user:{owner}" and entry.object_id == str(own["id"])
        assert entry.before["filename"] == "a.png"  # type: ignore[index]
    # support deletes any file; once no row names the bytes the tickets job removes them
    # after the grace period (not the delete: an upload of the same bytes may be under way)
    assert (await cloud.http.delete(f"{url}/{shared['id']}")).status_code == 200
    assert (await cloud.http.get(f"{url}/{shared['id']}")).status_code == 404
    assert _files(cloud) == [stored]
    os.utime(stored, (cloud.clock(), cloud.clock()))
    cloud.clock.advance(cloud.state.settings.tickets_orphan_grace_s + 1)
    assert (await cloud.state.jobs.run_once())["tickets"].orphans == 1
    assert _files(cloud) == []
    # on a closed ticket the uploader may not, support may
    async with _as(cloud, owner) as customer:
        late = await customer.post(url, files={"file": ("log.txt", LOG)})
        [kept] = late.json()["attachments"]
        await customer.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "closed"})
        assert (await customer.delete(f"{url}/{kept['id']}")).status_code == 409
    assert (await cloud.http.delete(f"{url}/{kept['id']}")).status_code == 200
    assert _count(cloud, TicketAttachmentRow) == 0
