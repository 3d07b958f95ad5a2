"""What every step of a repair leaves behind: a timeline entry, an audit row, and the mail
to the installation's contacts, each in their language; in the step's transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.tables import UserRow
from cloud.devices.memberships import authorised_contacts
from cloud.notifications.outbox import enqueue
from cloud.repairs import queries
from cloud.repairs.notices import RepairFacts, repair_mail
from cloud.repairs.rules import Status
from cloud.repairs.tables import RepairEventRow, RepairRow
from cloud.repairs.views import snapshot
from cloud.settings import CloudSettings

__all__ = ["Gettext", "Journal"]

_log = logging.getLogger(__name__)
Gettext = Callable[[str], str]


class Journal:
    """Records a step; ``translations`` gives the gettext of a reader's language."""

    def __init__(
        self, settings: CloudSettings, translations: Callable[[str | None], Gettext] | None
    ) -> None:
        self._settings = settings
        self._translations = translations

    def record(
        self,
        session: Session,
        row: RepairRow,
        actor: Principal | str,
        *,
        step: str,
        before: dict[str, Any] | None,
        now: int,
        note: str = "",
        facts: dict[str, Any] | None = None,
        audited: dict[str, Any] | None = None,
    ) -> None:
        """The timeline entry, the audit row (``audited``: more of the step than the repair's
        snapshot, e.g. the parcel) and the mail of one step."""
        name = actor.actor if isinstance(actor, Principal) else actor
        row.updated_at = now
        session.add(
            RepairEventRow(
                repair_id=row.id,
                at=now,
                actor=name,
                step=step,
                status=Status(row.status),
                note=note[:500],
            )
        )
        audit.record(
            session,
            actor=actor,
            action=f"repair.{step}",
            object_type="repair",
            object_id=str(row.id),
            before=before,
            after={**snapshot(row), **({"note": note} if note else {}), **(audited or {})},
            now=now,
        )
        self._mail(
            session,
            row,
            RepairFacts(
                repair_id=row.id,
                device_id=row.device_id,
                status=Status(row.status),
                step=step,
                link=f"{self._settings.effective_public_url}/repairs/{row.id}",
                **(facts or {}),
            ),
            now=now,
        )

    def gettext(self, lang: str | None) -> Gettext:
        """The gettext of ``lang`` (None: the default language)."""
        return (lambda text: text) if self._translations is None else self._translations(lang)

    def _contacts(self, session: Session, row: RepairRow) -> list[tuple[str, str | None, bool]]:
        """The installation's contacts as (e-mail, their language, a partner's)."""
        contacts = authorised_contacts(
            session, row.installation_id, staff_domains=self._settings.staff_email_domains
        )
        locales = dict(
            session.execute(
                select(UserRow.id, UserRow.locale).where(
                    UserRow.id.in_([c.user_id for c in contacts])
                )
            ).all()
        )
        return [(c.email, locales.get(c.user_id), c.company_id is not None) for c in contacts]

    def customer_gettext(self, session: Session, row: RepairRow) -> Gettext:
        """The gettext of the customer's language: the owner's, else the first partner's."""
        owner_first = sorted(self._contacts(session, row), key=lambda contact: contact[2])
        return self.gettext(owner_first[0][1] if owner_first else None)

    def _mail(self, session: Session, row: RepairRow, facts: RepairFacts, *, now: int) -> None:
        contacts = self._contacts(session, row)
        if not contacts:
            _log.info("repair %d has nobody to tell (no owner or partner users)", row.id)
            return
        by_language: dict[str | None, list[str]] = {}
        for email, lang, _partner in contacts:
            by_language.setdefault(lang, []).append(email)
        for lang, emails in sorted(by_language.items(), key=lambda item: item[0] or ""):
            subject, body = repair_mail(facts, self.gettext(lang))
            count = queries.event_count(session, row.id)
            enqueue(
                session,
                kind="repair",
                to=emails,
                subject=subject,
                body=body,
                now=now,
                dedupe_key=f"repair:{row.id}:{count}:{lang or '-'}",
            )
