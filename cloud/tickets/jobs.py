"""The tickets job: auto-close 7 days after suggest-close, flag SLA breaches.

A breach is the pure rule's (:func:`cloud.tickets.rules.breached`: the category's SLA or
the current line's own response and resolution targets). Both writes are conditional
UPDATEs (:mod:`cloud.tickets.queries`), safe in every worker. The
tickets it closes are told (``on_closed``: the service's mail and audit) in the same
transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from cloud.database import Store
from cloud.tickets import queries
from cloud.tickets.rules import breached
from cloud.tickets.rules.files import orphans
from cloud.tickets.storage import AttachmentStore
from common.clock import Clock

__all__ = ["TicketJob", "TicketPass"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TicketPass:
    closed: int
    breached: int
    orphans: int = 0  # attachment files removed


class TicketJob:
    """Auto-closes tickets 7 days after suggest-close; flags SLA breaches."""

    name = "tickets"

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        interval_s: float = 300.0,
        on_closed: Callable[[Session, Sequence[int], int], None] | None = None,
        attachments: AttachmentStore | None = None,
        orphan_grace_s: int = 3600,
    ) -> None:
        self._store = store
        self._clock = clock
        self.interval_s = interval_s
        self._on_closed = on_closed
        self._files = attachments
        self._orphan_grace_s = orphan_grace_s

    def _clean_orphans(self, *, now: int) -> int:
        if self._files is None:
            return 0
        listed = self._files.listing()
        # the rule keeps the files younger than the grace (nearly every stored file is older)
        shas = {f.sha256 for f in listed if f.sha256 is not None}
        with self._store.transaction() as tx:
            named = queries.referenced(tx, shas) if shas else set()
        gone = orphans(listed, named, now=now, grace_s=self._orphan_grace_s)
        removed = 0
        for f in gone:
            if self._files.remove(f):
                removed += 1
                _log.warning("tickets: removed orphan attachment file %s", f.name)
        return removed

    async def run_once(self) -> TicketPass:
        now = self._clock()

        def work() -> TicketPass:
            with self._store.transaction() as tx:
                closed = queries.close_suggested(tx, now=now)
                if closed and self._on_closed is not None:
                    self._on_closed(tx, closed, now)
                late = [
                    row.id
                    for row in queries.breach_candidates(tx, now=now)
                    if breached(queries.ticket_state(row), now=now)
                ]
                flagged = queries.flag_breaches(tx, late, now=now)
            return TicketPass(
                closed=len(closed), breached=flagged, orphans=self._clean_orphans(now=now)
            )

        done = await asyncio.to_thread(work)
        if done.closed or done.breached or done.orphans:
            _log.info(
                "tickets: %d auto-closed, %d SLA breached, %d orphan files removed",
                done.closed,
                done.breached,
                done.orphans,
            )
        return done
