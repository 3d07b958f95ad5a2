"""The outbox: enqueue in the caller's transaction, dedupe, checks, the composed message."""

from __future__ import annotations

import email
import email.policy
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from cloud.database import Store
from cloud.notifications.outbox import build_message, compose, enqueue, fill
from cloud.notifications.queries import claim_due, notifications
from cloud.notifications.tables import NotificationStatus
from tests.cloud.harness import START


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


def _queued(store: Store) -> list[tuple[str, list[str], str]]:
    with store.transaction() as tx:
        return [(row.kind, row.recipients, row.subject) for row in notifications(tx)]


class _Boom(Exception):
    pass


def _mail(session: Session, **fields: Any) -> None:
    defaults = {"kind": "charge_failed", "to": ["a@example.com"], "subject": "S", "body": "B"}
    enqueue(session, now=START, **(defaults | fields))


def test_enqueue_in_a_rolled_back_transaction_queues_nothing(store: Store) -> None:
    with pytest.raises(_Boom), store.transaction() as tx:
        _mail(tx)
        raise _Boom  # the change that caused the mail failed
    assert _queued(store) == []
    with store.transaction() as tx:
        _mail(tx)
    assert _queued(store) == [("charge_failed", ["a@example.com"], "S")]


def test_dedupe_key_queues_once_and_keeps_the_first(store: Store) -> None:
    for subject in ("first", "second"):
        with store.transaction() as tx:
            _mail(tx, subject=subject, dedupe_key="renewal_notice:sub-1:2026-03")
    with store.transaction() as tx:
        _mail(tx, subject="no key")
        _mail(tx, subject="no key")
    assert sorted(subject for _, _, subject in _queued(store)) == ["first", "no key", "no key"]


def test_two_workers_enqueueing_the_same_key_at_once_queue_one(store: Store) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with store.transaction() as tx:
                barrier.wait()
                _mail(tx, subject=name, dedupe_key="invoice:2026-000001")
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(_queued(store)) == 1


def test_attachments_are_stored_with_the_notification(store: Store) -> None:
    pdf = b"%PDF-1.4 fake but bytes\x00\xff"
    with store.transaction() as tx:
        _mail(
            tx,
            to=["b@example.com", "b@example.com"],
            attachments=[("invoice-1.pdf", "application/pdf", pdf)],
        )
    with store.transaction() as tx:
        [message] = claim_due(tx, now=START, lease_s=60, limit=10)
    assert message.recipients == ("b@example.com",)  # duplicates dropped
    assert [(a.filename, a.content_type, a.data) for a in message.attachments] == [
        ("invoice-1.pdf", "application/pdf", pdf)
    ]
    with store.transaction() as tx:
        [row] = notifications(tx)
        assert row.status is NotificationStatus.QUEUED and row.attempts == 1


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "Invoice\r\nBcc: victim@example.com"},
        {"subject": "line\u2028break"},
        {"subject": "  "},
        {"to": ["a@example.com\r\nBcc: x@example.com"]},
        {"to": ["Someone <a@example.com>"]},
        {"to": []},
        {"to": [f"u{i}@example.com" for i in range(51)]},
        {"kind": "Renewal Notice"},
        {"body": "nul\x00byte"},
        {"attachments": [("../../etc/passwd", "text/plain", b"x")]},
        {"attachments": [("a.pdf", "application/pdf\r\nX: y", b"x")]},
        {"attachments": [("a.bin", "application/octet-stream", b"x" * (10 * 1024 * 1024 + 1))]},
        {"dedupe_key": ""},
    ],
)
def test_enqueue_refuses_what_cannot_be_a_clean_email(store: Store, change: dict) -> None:
    fields = {"kind": "invoice", "to": ["a@example.com"], "subject": "S", "body": "B"} | change
    with pytest.raises(ValueError), store.transaction() as tx:
        enqueue(tx, now=START, **fields)
    assert _queued(store) == []


_header_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(subject=_header_text, body=st.text(max_size=300), name=_header_text)
def test_a_composed_message_keeps_its_headers_whatever_the_text(
    subject: str, body: str, name: str
) -> None:
    """Whatever text a caller passes, it is refused or ends up exactly where it was put."""
    try:
        message = compose(
            kind="invoice",
            to=["a@example.com"],
            subject=subject,
            body=body,
            attachments=[("invoice.pdf", "application/pdf", name.encode())],
        )
    except ValueError:
        return
    mail = build_message(
        message, sender="Entitle <billing@example.com>", domain="example.com", now=START
    )
    parsed = email.message_from_bytes(mail.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == subject
    assert parsed["To"] == "a@example.com"
    assert parsed["Bcc"] is None and parsed["Cc"] is None
    text = re.sub(r"\r\n|\r", "\n", body)  # SMTP line endings; set_content ends with one
    assert parsed.get_body(("plain",)).get_content() == (
        text if text.endswith("\n") else text + "\n"
    )
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_content() == name.encode()


def _composed(**fields: Any) -> Any:
    try:
        return compose(kind="expired", to=["a@example.com"], **fields)
    except ValueError:
        return ValueError


@settings(max_examples=400, deadline=None)
@given(
    subject=st.sampled_from(["{sub} has expired", "Expired", "{sub}", " {sub} "]),
    body=st.sampled_from(["Installation {inst} ended.", "{inst}{sub}", "x" * 199_990 + "{inst}"]),
    key=st.sampled_from(["expired:{sub}:{inst}", "k" * 190 + "{sub}"]),
    sub=st.text(max_size=12),
    inst=st.text(st.characters(codec="utf-8"), max_size=12),
)
def test_a_filled_template_is_the_mail_composed_with_the_values(
    subject: str, body: str, key: str, sub: str, inst: str
) -> None:
    """Composed once with placeholders, filled per row: the same message as composing each
    row's text, or the same refusal (a line break, a NUL, a length over the limits)."""
    template = _composed(subject=subject, body=body, dedupe_key=key)
    assert template is not ValueError
    values = {"{sub}": sub, "{inst}": inst}
    try:
        filled = fill(template, values)
    except ValueError:
        filled = ValueError
    texts = {"subject": subject, "body": body, "dedupe_key": key}
    for placeholder, value in values.items():
        texts = {name: text.replace(placeholder, value) for name, text in texts.items()}
    assert filled == _composed(**texts)
