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
from common.clock import Clock

__all__ = ["TicketJob", "TicketPass"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TicketPass:
    closed: int
    breached: int


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
    ) -> None:
        self._store = store
        self._clock = clock
        self.interval_s = interval_s
        self._on_closed = on_closed

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
            return TicketPass(closed=len(closed), breached=flagged)

        done = await asyncio.to_thread(work)
        if done.closed or done.breached:
            _log.info("tickets: %d auto-closed, %d SLA breached", done.closed, done.breached)
        return done
