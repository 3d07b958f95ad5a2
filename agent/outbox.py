"""Bounded, persistent outbox of health reports waiting for the broker's PUBACK.

One SQLite file beside the agent's store (``outbox.db``, WAL, synchronous
NORMAL: a commit survives the agent being killed, and a power cut may lose
only the last few reports, never corrupt the file; the entitlement store,
whose state must never go back, stays FULL. FULL fsyncs every commit, twice
per report, which cost a simulated fleet most of its CPU).
:meth:`Outbox.append` takes a :class:`protocol.health.HealthReport`, assigns its
``seq`` and stores its JSON (the bytes the publisher sends) in one
transaction, so a ``seq`` is never reused, even after a kill -9: the counter
row and the report row commit together or not at all. When the outbox holds
``max_rows`` unsent reports the oldest unsent are dropped in that same
transaction and counted in the appended report's ``dropped`` field.

Acknowledged reports are not deleted but marked sent (:meth:`Outbox.mark_sent`)
and kept for a while, at most the newest ``keep_sent`` of them and none older
than ``keep_sent_s``, so that the cloud can ask for them again
(:meth:`Outbox.resend`): a broker may PUBACK a report and still lose it
(Mosquitto 2.0 does not restore shared subscriptions after a restart). Sent
rows are bounded on their own and never push out an unsent report.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from protocol.health import HealthReport, health_to_json

__all__ = [
    "DEFAULT_KEEP_SENT",
    "DEFAULT_KEEP_SENT_S",
    "DEFAULT_MAX_ROWS",
    "Outbox",
    "Queued",
    "Resent",
]

DEFAULT_MAX_ROWS = 10_000
DEFAULT_KEEP_SENT = 2_000
DEFAULT_KEEP_SENT_S = 24 * 3600
_REPORTS = "outbox"
_META = "outbox_meta"


@dataclass(frozen=True, slots=True)
class Queued:
    """One stored report: its ``seq`` and its JSON as stored (``seq`` and ``dropped`` in it)."""

    seq: int
    body: bytes

    @property
    def report(self) -> dict[str, Any]:
        """The stored JSON object, for a look inside (the publisher sends ``body`` as it is)."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass(frozen=True, slots=True)
class Resent:
    """What :meth:`Outbox.resend` did: reports queued again, and seq ranges no longer held."""

    requeued: int
    already_queued: int
    not_held: tuple[tuple[int, int], ...]


class Outbox:
    """FIFO of reports by ``seq``; bounded to ``max_rows`` unsent; survives restarts."""

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        keep_sent: int = DEFAULT_KEEP_SENT,
        keep_sent_s: int = DEFAULT_KEEP_SENT_S,
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if keep_sent < 0 or keep_sent_s < 0:
            raise ValueError("keep_sent and keep_sent_s must not be negative")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        self.keep_sent = keep_sent
        self.keep_sent_s = keep_sent_s
        # autocommit mode: every transaction below is an explicit BEGIN IMMEDIATE
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-256")  # KiB: rows are read in small batches
        self._conn = conn
        # each statement here is idempotent, so a crash between them is harmless
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not {_REPORTS, _META} <= tables:
            # sqlite-utils makes the tables, loaded only then (a device's first start):
            # its imports cost an idle agent megabytes (bench/bench_agent_rss.py)
            import sqlite_utils

            db = sqlite_utils.Database(conn)
            db.table(_REPORTS).create(
                {"seq": int, "dropped": int, "body": str}, pk="seq", if_not_exists=True
            )
            db.table(_META).create(
                {"id": int, "last_seq": int, "dropped_total": int}, pk="id", if_not_exists=True
            )
        if not any(c[1] == "sent_at" for c in conn.execute(f"PRAGMA table_info({_REPORTS})")):
            # outboxes written before reports were kept: every row there is unsent
            conn.execute(f"ALTER TABLE {_REPORTS} ADD COLUMN sent_at INTEGER")
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS ix_{_REPORTS}_sent_at_seq ON {_REPORTS} (sent_at, seq)"
        )
        conn.execute(f"INSERT OR IGNORE INTO {_META} VALUES (1, 0, 0)")
        self._kept = self._sent()  # sent rows held; kept in step so an ack need not count them

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def _meta(self) -> tuple[int, int]:
        row = self._conn.execute(
            f"SELECT last_seq, dropped_total FROM {_META} WHERE id = 1"
        ).fetchone()
        return int(row[0]), int(row[1])

    def append(self, report: HealthReport) -> int:
        """Number ``report`` with the next ``seq`` and store its JSON; return that seq.

        The report's own ``seq`` and ``dropped`` are replaced: the outbox assigns
        both. The JSON is stored as built, whatever its size: the publisher
        refuses to send a report over the wire limit (and counts it).

        If ``max_rows`` reports are unsent the oldest unsent are dropped first,
        in the same transaction (reports kept after sending do not count). The
        new report's ``dropped`` is the number of reports dropped now plus the
        ``dropped`` the victims themselves carried, so the ``dropped`` fields
        of the reports the cloud receives always add up to the reports it will
        never see.
        """
        conn = self._conn
        with self._transaction():
            last_seq, dropped_total = self._meta()
            seq = last_seq + 1
            count = self._unsent()
            overflow = max(0, count + 1 - self.max_rows)
            carried = 0
            if overflow:
                victims = conn.execute(
                    f"SELECT seq, dropped FROM {_REPORTS} WHERE sent_at IS NULL"
                    " ORDER BY seq LIMIT ?",
                    (overflow,),
                ).fetchall()
                carried = sum(d for _, d in victims)
                conn.executemany(
                    f"DELETE FROM {_REPORTS} WHERE seq = ?", [(s,) for s, _ in victims]
                )
            dropped = overflow + carried
            body = health_to_json(replace(report, seq=seq, dropped=dropped), max_bytes=None)
            conn.execute(
                f"INSERT INTO {_REPORTS} (seq, dropped, body) VALUES (?, ?, ?)",
                (seq, dropped, body.decode()),
            )
            conn.execute(
                f"UPDATE {_META} SET last_seq = ?, dropped_total = ? WHERE id = 1",
                (seq, dropped_total + overflow),
            )
        return seq

    def _unsent(self) -> int:
        (count,) = self._conn.execute(
            f"SELECT COUNT(*) FROM {_REPORTS} WHERE sent_at IS NULL"
        ).fetchone()
        return int(count)

    def pending(self, limit: int = 100) -> list[Queued]:
        """Up to ``limit`` unsent reports in ``seq`` order, oldest first."""
        rows = self._conn.execute(
            f"SELECT seq, body FROM {_REPORTS} WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [Queued(seq=seq, body=body.encode()) for seq, body in rows]

    def delete(self, seqs: Iterable[int]) -> int:
        """Forget reports outright (sent or not); how many rows went."""
        wanted = [(int(s),) for s in seqs]
        with self._transaction():
            before = self._conn.total_changes
            self._conn.executemany(f"DELETE FROM {_REPORTS} WHERE seq = ?", wanted)
            gone = self._conn.total_changes - before
        self._kept = self._sent()
        return gone

    def mark_sent(self, seqs: Iterable[int], *, now: int) -> int:
        """Mark acknowledged reports sent (kept for :meth:`resend`); how many were unsent.

        Sent reports beyond the newest ``keep_sent``, or sent before
        ``now - keep_sent_s``, are deleted in the same transaction.
        """
        wanted = [(int(now), int(s)) for s in seqs]
        conn = self._conn
        with self._transaction():
            before = conn.total_changes
            conn.executemany(
                f"UPDATE {_REPORTS} SET sent_at = ? WHERE seq = ? AND sent_at IS NULL", wanted
            )
            marked = conn.total_changes - before
            before = conn.total_changes
            # a range of the (sent_at, seq) index: nothing is read when nothing is that old
            conn.execute(
                f"DELETE FROM {_REPORTS} WHERE sent_at IS NOT NULL AND sent_at < ?",
                (int(now) - self.keep_sent_s,),
            )
            kept = self._kept + marked - (conn.total_changes - before)
            if kept > self.keep_sent:
                before = conn.total_changes
                conn.execute(
                    f"DELETE FROM {_REPORTS} WHERE seq IN (SELECT seq FROM {_REPORTS}"
                    " WHERE sent_at IS NOT NULL ORDER BY seq LIMIT ?)",
                    (kept - self.keep_sent,),
                )
                kept -= conn.total_changes - before
        self._kept = kept
        return marked

    def resend(self, from_seq: int, to_seq: int) -> Resent:
        """Queue the kept reports ``from_seq..to_seq`` (inclusive) to be published again.

        They go out in ``seq`` order with the other unsent reports. Seqs this
        outbox no longer holds (pruned after sending, dropped when full, or
        never assigned) are returned as ranges, so the asker stops asking.
        Only as many are queued again as the unsent bound (``max_rows``) has
        room for, oldest first; the rest stay kept and are not counted in
        ``requeued``, so the asker sees them still missing and asks again later.
        """
        if from_seq > to_seq:
            return Resent(requeued=0, already_queued=0, not_held=())
        conn = self._conn
        with self._transaction():
            rows = conn.execute(
                f"SELECT seq, sent_at FROM {_REPORTS} WHERE seq BETWEEN ? AND ?",
                (from_seq, to_seq),
            ).fetchall()
            room = max(0, self.max_rows - self._unsent())
            sent = sorted((seq,) for seq, at in rows if at is not None)[:room]
            conn.executemany(f"UPDATE {_REPORTS} SET sent_at = NULL WHERE seq = ?", sent)
        self._kept -= len(sent)
        not_held: list[tuple[int, int]] = []
        expect = from_seq
        for seq in sorted(seq for seq, _ in rows):
            if seq > expect:
                not_held.append((expect, seq - 1))
            expect = seq + 1
        if expect <= to_seq:
            not_held.append((expect, to_seq))
        already = sum(1 for _, at in rows if at is None)
        return Resent(requeued=len(sent), already_queued=already, not_held=tuple(not_held))

    def __len__(self) -> int:
        """Unsent reports."""
        return self._unsent()

    @property
    def kept_sent(self) -> int:
        """Sent reports still kept for :meth:`resend`."""
        return self._sent()

    def _sent(self) -> int:
        (count,) = self._conn.execute(
            f"SELECT COUNT(*) FROM {_REPORTS} WHERE sent_at IS NOT NULL"
        ).fetchone()
        return int(count)

    @property
    def last_seq(self) -> int:
        return self._meta()[0]

    @property
    def dropped_total(self) -> int:
        """Reports ever dropped because the outbox was full."""
        return self._meta()[1]

    def stats(self) -> dict[str, int]:
        """Figures for status and health: queued, kept_sent, last_seq, dropped_total."""
        last_seq, dropped_total = self._meta()
        return {
            "queued": len(self),
            "kept_sent": self._sent(),
            "last_seq": last_seq,
            "dropped_total": dropped_total,
        }


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
