"""The outbox sender job: claims due notifications, sends them, records the outcome.

Safe with several workers on one database: a claim leases rows under a row
lock (see :mod:`cloud.notifications.tables`), a sender never starts a send
that its lease might not cover, and outcomes are recorded only for the
attempt this worker claimed. A worker that dies after the mail server took a
message but before recording it may cause one duplicate after its lease ends
(the Message-ID is the same, so mail clients show one); that is the price of
never losing a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr

from cloud.database import Store
from cloud.notifications.mailer import Mailer, MailRejected, MailUnavailable
from cloud.notifications.outbox import build_message
from cloud.notifications.queries import OutboxMessage, claim_due, mark_failed, mark_retry, mark_sent
from common.clock import Clock

__all__ = ["OutboxReport", "OutboxSender", "retry_delay"]

_log = logging.getLogger(__name__)

_FIRST_RETRY_S = 60
_MAX_RETRY_S = 6 * 3600


def retry_delay(attempts: int, *, max_attempts: int) -> int | None:
    """Seconds until the next try after ``attempts`` failed ones; ``None``: give up.

    1, 2, 4, ... minutes, at most 6 hours apart; ten attempts span about 20 hours.
    """
    if attempts >= max_attempts:
        return None
    return int(min(_FIRST_RETRY_S * 2 ** (attempts - 1), _MAX_RETRY_S))


@dataclass(frozen=True, slots=True)
class OutboxReport:
    """What one pass did: ids sent, rescheduled, and given up on."""

    sent: tuple[int, ...] = ()
    retried: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()


class OutboxSender:
    """A :class:`cloud.jobs.Job` that empties the notification outbox through a :class:`Mailer`."""

    def __init__(
        self,
        store: Store,
        mailer: Mailer,
        *,
        sender: str,
        clock: Clock,
        interval_s: float = 30.0,
        batch: int = 10,
        max_per_pass: int = 200,
        send_timeout_s: float = 60.0,
        lease_s: int = 900,
        max_attempts: int = 10,
    ) -> None:
        if interval_s <= 0 or batch <= 0 or max_attempts <= 0:
            raise ValueError("interval, batch and max_attempts must be positive")
        if lease_s < 2 * send_timeout_s:
            raise ValueError("the lease must cover at least two send timeouts")
        address = parseaddr(sender)[1]
        if "@" not in address:
            raise ValueError(f"sender {sender!r} has no e-mail address")
        self.name = "outbox-sender"
        self.interval_s = interval_s
        self._store = store
        self._mailer = mailer
        self._sender = sender
        self._domain = address.rpartition("@")[2]
        self._clock = clock
        self._batch = batch
        self._max_per_pass = max_per_pass
        self._send_timeout_s = send_timeout_s
        self._lease_s = lease_s
        self._max_attempts = max_attempts

    async def run_once(self) -> OutboxReport:
        """Send what is due now, in batches, up to ``max_per_pass`` messages."""
        sent: list[int] = []
        retried: list[int] = []
        failed: list[int] = []
        handled = 0
        while handled < self._max_per_pass:
            claimed_at = self._clock()
            limit = min(self._batch, self._max_per_pass - handled)
            claimed = await asyncio.to_thread(self._claim, claimed_at, limit)
            handled += len(claimed)
            for message in claimed:
                if self._clock() + self._send_timeout_s > claimed_at + self._lease_s:
                    # the lease could run out mid-send and another worker send it too:
                    # leave it, it is due again when the lease ends
                    continue
                outcome = await self._deliver(message)
                {"sent": sent, "retried": retried, "failed": failed}[outcome].append(message.id)
            if len(claimed) < limit:
                break
        if sent or retried or failed:
            _log.info(
                "outbox: %d sent, %d to retry, %d failed", len(sent), len(retried), len(failed)
            )
        return OutboxReport(sent=tuple(sent), retried=tuple(retried), failed=tuple(failed))

    def _claim(self, now: int, limit: int) -> list[OutboxMessage]:
        with self._store.transaction() as tx:
            return claim_due(tx, now=now, lease_s=self._lease_s, limit=limit)

    async def _deliver(self, message: OutboxMessage) -> str:
        now = self._clock()
        mail = build_message(message, sender=self._sender, domain=self._domain, now=now)
        try:
            async with asyncio.timeout(self._send_timeout_s):
                refused = await self._mailer.send(mail)
        except MailRejected as exc:
            return await self._record_failure(message, f"rejected: {exc}", permanent=True)
        except (MailUnavailable, TimeoutError) as exc:
            return await self._record_failure(message, str(exc) or "send timed out")
        except Exception as exc:
            _log.exception("notification %d: unexpected error from the mailer", message.id)
            return await self._record_failure(message, f"{type(exc).__name__}: {exc}")
        note = None
        if refused:  # the others got it: not a failure of the message, but worth a look
            note = f"refused by the mail server: {', '.join(refused)}"
            _log.warning("notification %d: %s", message.id, note)
        await asyncio.to_thread(self._settle, mark_sent, message, now=self._clock(), note=note)
        return "sent"

    async def _record_failure(
        self, message: OutboxMessage, error: str, *, permanent: bool = False
    ) -> str:
        delay = (
            None if permanent else retry_delay(message.attempts, max_attempts=self._max_attempts)
        )
        if delay is None:
            _log.warning(
                "notification %d (%s) failed after %d attempt(s): %s",
                message.id,
                message.kind,
                message.attempts,
                error,
            )
            await asyncio.to_thread(self._settle, mark_failed, message, error=error)
            return "failed"
        _log.info("notification %d: %s; retrying in %ds", message.id, error, delay)
        at = self._clock() + delay
        await asyncio.to_thread(self._settle, mark_retry, message, at=at, error=error)
        return "retried"

    def _settle(self, mark: Callable[..., bool], message: OutboxMessage, **values: object) -> None:
        with self._store.transaction() as tx:
            if not mark(tx, message, **values):
                _log.warning("notification %d was claimed again before its outcome", message.id)
