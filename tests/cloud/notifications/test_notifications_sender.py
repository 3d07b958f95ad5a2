"""The outbox sender against a real SMTP server (aiosmtpd): delivery, retries, two workers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.database import Store
from cloud.notifications.mailer import MailUnavailable, SmtpMailer
from cloud.notifications.outbox import enqueue
from cloud.notifications.queries import claim_due, mark_sent, notifications
from cloud.notifications.sender import OutboxSender, retry_delay
from cloud.notifications.tables import NotificationStatus
from cloud.settings import CloudSettings
from tests.cloud.harness import START, Cloud, FakeClock
from tests.smtp_fixtures import SmtpServer

SENDER = "Entitle billing <billing@entitle.example>"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


def _mailer(server: SmtpServer) -> SmtpMailer:
    return SmtpMailer(
        host=server.host, port=server.port, sender=SENDER, security="none", timeout_s=10
    )


def _sender(store: Store, server: SmtpServer, clock: FakeClock, **options: int) -> OutboxSender:
    return OutboxSender(store, _mailer(server), sender=SENDER, clock=clock, **options)


def _enqueue(store: Store, n: int, *, now: int = START, **fields: object) -> None:
    with store.transaction() as tx:
        for i in range(n):
            enqueue(
                tx,
                kind="charge_failed",
                to=[f"owner{i}@example.com"],
                subject=f"Payment failed {i}",
                body=f"body {i}",
                now=now,
                **fields,
            )


def _statuses(store: Store) -> Counter[NotificationStatus]:
    with store.transaction() as tx:
        return Counter(row.status for row in notifications(tx, limit=1000))


async def test_sender_delivers_to_the_smtp_server(
    store: Store, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    pdf = b"%PDF-1.4\nnot really\n%%EOF"
    with store.transaction() as tx:
        enqueue(
            tx,
            kind="invoice",
            to=["acme@example.com", "ops@example.com"],
            subject="Invoice 2026-000001 (EUR 99.00)",
            body="Attached is invoice 2026-000001.",
            now=START,
            attachments=[("invoice-2026-000001.pdf", "application/pdf", pdf)],
        )
    sender = _sender(store, smtp_server, clock)
    report = await sender.run_once()
    assert len(report.sent) == 1 and report.retried == () and report.failed == ()

    [delivery] = smtp_server.deliveries
    assert delivery.mail_from == "billing@entitle.example"
    assert sorted(delivery.rcpt_tos) == ["acme@example.com", "ops@example.com"]
    mail = delivery.message
    assert mail["To"] == "acme@example.com, ops@example.com"
    assert mail["Subject"] == "Invoice 2026-000001 (EUR 99.00)"
    assert mail["Message-ID"] == f"<notification-{report.sent[0]}@entitle.example>"
    assert "Attached is invoice 2026-000001." in mail.get_body(("plain",)).get_content()
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "invoice-2026-000001.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf

    assert (await sender.run_once()).sent == ()  # nothing is sent twice
    assert len(smtp_server.messages) == 1
    with store.transaction() as tx:
        [row] = notifications(tx)
        assert row.status is NotificationStatus.SENT and row.sent_at == START


async def test_smtp_down_is_retried_later_and_nothing_is_lost(
    store: Store, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    _enqueue(store, 3)
    sender = _sender(store, smtp_server, clock)
    smtp_server.stop()
    report = await sender.run_once()
    assert len(report.retried) == 3 and report.sent == ()
    with store.transaction() as tx:
        rows = notifications(tx)
        assert {row.attempts for row in rows} == {1}
        assert all("cannot reach the SMTP server" in (row.last_error or "") for row in rows)
        assert {row.next_attempt_at for row in rows} == {START + retry_delay(1, max_attempts=10)}

    smtp_server.start()
    clock.advance(retry_delay(1, max_attempts=10) - 1)
    assert (await sender.run_once()).sent == ()  # not due yet
    clock.advance(1)
    assert len((await sender.run_once()).sent) == 3
    assert sorted(m["Subject"] for m in smtp_server.messages) == [
        f"Payment failed {i}" for i in range(3)
    ]
    assert _statuses(store) == {NotificationStatus.SENT: 3}


async def test_try_later_reply_is_retried_and_a_refusal_is_not(
    store: Store, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    _enqueue(store, 1)
    sender = _sender(store, smtp_server, clock)
    smtp_server.reply = "451 4.3.0 mailbox busy, try later"
    assert len((await sender.run_once()).retried) == 1
    smtp_server.reply = "554 5.7.1 rejected by policy"
    clock.advance(retry_delay(1, max_attempts=10))
    assert len((await sender.run_once()).failed) == 1
    clock.advance(365 * 86400)
    assert (await sender.run_once()).sent == ()
    with store.transaction() as tx:
        [row] = notifications(tx)
        assert row.status is NotificationStatus.FAILED and row.attempts == 2
        assert "554" in (row.last_error or "")
    assert smtp_server.messages == []


async def test_gives_up_after_max_attempts(
    store: Store, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    _enqueue(store, 1)
    sender = _sender(store, smtp_server, clock, max_attempts=3)
    smtp_server.stop()
    outcomes = []
    for _ in range(4):
        report = await sender.run_once()
        outcomes.append((len(report.retried), len(report.failed)))
        clock.advance(6 * 3600)
    assert outcomes == [(1, 0), (1, 0), (0, 1), (0, 0)]
    assert _statuses(store) == {NotificationStatus.FAILED: 1}


async def test_a_sender_that_died_mid_send_is_taken_over_after_its_lease(
    store: Store, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    _enqueue(store, 1)
    with store.transaction() as tx:  # worker A claims, then dies before sending
        [claimed] = claim_due(tx, now=clock(), lease_s=900, limit=10)
    sender = _sender(store, smtp_server, clock, lease_s=900)
    assert (await sender.run_once()).sent == ()  # still leased to A
    clock.advance(900)
    assert len((await sender.run_once()).sent) == 1
    with store.transaction() as tx:  # A's late outcome does not overwrite B's
        assert not mark_sent(tx, claimed, now=clock(), note=None)
    assert len(smtp_server.messages) == 1


async def test_two_senders_on_one_database_send_each_message_once(
    database_url: str, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """Two workers (two engines, two connection pools) drain one outbox at the same time."""
    count = 60
    with Store.open(database_url) as first, Store.open(database_url) as second:
        _enqueue(first, count)
        senders = [_sender(s, smtp_server, clock, batch=3) for s in (first, second)]
        reports = await asyncio.gather(*(sender.run_once() for sender in senders))
        sent = [set(report.sent) for report in reports]
        assert sent[0].isdisjoint(sent[1])
        assert len(sent[0] | sent[1]) == count
        assert _statuses(first) == {NotificationStatus.SENT: count}
    ids = Counter(message["Message-ID"] for message in smtp_server.messages)
    assert len(ids) == count and set(ids.values()) == {1}
    assert sorted(len(s) for s in sent)[0] > 0, "both workers should have taken a share"


async def test_starttls_login_with_a_password_file(smtp_server: SmtpServer, tmp_path: Path) -> None:
    ca_file = smtp_server.secure(tmp_path, username="mailer", password="s3cret-pass")
    (tmp_path / "smtp-password").write_text("s3cret-pass\n")
    settings = CloudSettings(
        data_dir=tmp_path,
        smtp_host="localhost",
        smtp_port=smtp_server.port,
        smtp_security="starttls",
        smtp_username="mailer",
        smtp_password_file=tmp_path / "smtp-password",
        smtp_ca_file=ca_file,
        smtp_sender=SENDER,
    )
    mailer = SmtpMailer.from_settings(settings)
    assert mailer is not None and "s3cret" not in repr(mailer)
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = SENDER, "a@example.com", "over TLS"
    mail.set_content("hello")
    await mailer.send(mail)
    assert [m["Subject"] for m in smtp_server.messages] == ["over TLS"]

    wrong = SmtpMailer(
        host="localhost",
        port=smtp_server.port,
        sender=SENDER,
        username="mailer",
        password="wrong",
        ca_file=ca_file,
    )
    with pytest.raises(MailUnavailable, match="refused our login"):
        await wrong.send(mail)
    untrusted = SmtpMailer(
        host="localhost",
        port=smtp_server.port,
        sender=SENDER,
        username="mailer",
        password="s3cret-pass",
    )
    with pytest.raises(MailUnavailable):  # self-signed certificate not in the system CAs
        await untrusted.send(mail)
    assert len(smtp_server.messages) == 1


def test_settings_without_a_password_file_say_what_to_do(tmp_path: Path) -> None:
    settings = CloudSettings(data_dir=tmp_path, smtp_host="mail.example", smtp_username="u")
    with pytest.raises(ValueError, match="ENTITLE_SMTP_PASSWORD_FILE"):
        SmtpMailer.from_settings(settings)
    assert SmtpMailer.from_settings(CloudSettings(data_dir=tmp_path)) is None


def test_retry_delays_grow_and_stop() -> None:
    delays = [retry_delay(n, max_attempts=10) for n in range(1, 11)]
    assert delays[:3] == [60, 120, 240] and delays[-1] is None
    assert all(d is not None and d <= 6 * 3600 for d in delays[:-1])
    assert delays[:-1] == sorted(delays[:-1])


async def test_the_app_runs_the_outbox_sender_as_a_job(
    settings: CloudSettings, smtp_server: SmtpServer, clock: FakeClock, tmp_path: Path
) -> None:
    from cloud import create_app
    from cloud.testing import AccountsSimulator, PublisherSimulator
    from tests.cloud.harness import running

    configured = settings.model_copy(
        update={
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_security": "none",
            "smtp_sender": SENDER,
        }
    )
    app = create_app(
        configured, publisher=PublisherSimulator(), accounts=AccountsSimulator(), clock=clock
    )
    async with running(app):
        state = app.state.cloud
        assert state.outbox is not None and state.outbox in state.jobs.jobs
        _enqueue(state.store, 2)
        # the runner's background pass may hold them for a moment: pass until both are out
        while _statuses(state.store) != {NotificationStatus.SENT: 2}:
            await state.jobs.run_once()
            await asyncio.sleep(0.01)
    assert sorted(m["To"] for m in smtp_server.messages) == [
        "owner0@example.com",
        "owner1@example.com",
    ]


async def test_an_operator_lists_the_outbox_and_retries_a_failed_mail(
    cloud: Cloud, smtp_server: SmtpServer
) -> None:
    store = cloud.state.store
    _enqueue(store, 1)
    sender = _sender(store, smtp_server, cloud.clock, max_attempts=1)
    smtp_server.stop()
    [failed_id] = (await sender.run_once()).failed
    response = await cloud.http.get("/api/v1/notifications", params={"status": "failed"})
    assert response.status_code == 200
    [shown] = response.json()
    assert (shown["id"], shown["to"], shown["attempts"]) == (failed_id, ["owner0@example.com"], 1)
    assert "cannot reach the SMTP server" in shown["last_error"]
    assert "body" not in shown

    smtp_server.start()
    response = await cloud.http.post(f"/api/v1/notifications/{failed_id}/retry")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    again = await cloud.http.post(f"/api/v1/notifications/{failed_id}/retry")
    assert again.status_code == 409
    assert (await cloud.http.post("/api/v1/notifications/9999/retry")).status_code == 404
    assert (await sender.run_once()).sent == (failed_id,)
    assert [m["Subject"] for m in smtp_server.messages] == ["Payment failed 0"]


async def test_refused_recipients_are_noted_and_all_refused_is_a_failure(
    store: Store, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    smtp_server.refuse("gone@example.com", "left@example.com")
    with store.transaction() as tx:
        enqueue(
            tx,
            kind="invoice",
            to=["acme@example.com", "gone@example.com"],
            subject="some",
            body="b",
            now=START,
        )
        enqueue(
            tx,
            kind="invoice",
            to=["gone@example.com", "left@example.com"],
            subject="none",
            body="b",
            now=START,
        )
    report = await _sender(store, smtp_server, clock).run_once()
    assert (len(report.sent), len(report.failed), report.retried) == (1, 1, ())
    [delivery] = smtp_server.deliveries
    assert delivery.rcpt_tos == ("acme@example.com",)
    with store.transaction() as tx:
        rows = {row.subject: row for row in notifications(tx)}
    assert rows["some"].status is NotificationStatus.SENT
    assert rows["some"].last_error == "refused by the mail server: gone@example.com (550)"
    assert rows["none"].status is NotificationStatus.FAILED
    assert "every recipient was refused" in (rows["none"].last_error or "")
