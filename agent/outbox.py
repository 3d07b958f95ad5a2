"""Bounded, persistent outbox of health reports waiting for the broker's PUBACK.

One SQLite file beside the agent's store (``outbox.db``, WAL, synchronous
FULL). :meth:`Outbox.append` assigns the report's ``seq`` and stores it in one
transaction, so a ``seq`` is never reused, even after a kill -9: the counter
row and the report row commit together or not at all. When the outbox holds
``max_rows`` reports the oldest are dropped in that same transaction and
counted in the appended report's ``dropped`` field. Acknowledged reports are deleted by ``seq``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

__all__ = ["DEFAULT_MAX_ROWS", "Outbox", "Queued"]

DEFAULT_MAX_ROWS = 10_000
_REPORTS = "outbox"
_META = "outbox_meta"


@dataclass(frozen=True, slots=True)
class Queued:
    """One stored report: its ``seq`` and the report (``seq`` and ``dropped`` filled in)."""

    seq: int
    report: dict[str, Any]


class Outbox:
    """FIFO of reports by ``seq``; bounded to ``max_rows``; survives restarts."""

    def __init__(self, path: Path, *, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        # autocommit mode: every transaction below is an explicit BEGIN IMMEDIATE
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=-256")  # KiB: rows are read in small batches
        self._db = sqlite_utils.Database(conn)
        # each statement here is idempotent, so a crash between them is harmless
        self._db.table(_REPORTS).create(
            {"seq": int, "dropped": int, "body": str}, pk="seq", if_not_exists=True
        )
        self._db.table(_META).create(
            {"id": int, "last_seq": int, "dropped_total": int}, pk="id", if_not_exists=True
        )
        conn.execute(f"INSERT OR IGNORE INTO {_META} VALUES (1, 0, 0)")

    def close(self) -> None:
        self._db.conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db.conn)

    def _meta(self) -> tuple[int, int]:
        row = self._db.conn.execute(
            f"SELECT last_seq, dropped_total FROM {_META} WHERE id = 1"
        ).fetchone()
        return int(row[0]), int(row[1])

    def append(self, report: Mapping[str, Any]) -> int:
        """Store ``report`` with the next ``seq``; return that seq.

        If the outbox is full the oldest reports are dropped first, in the same
        transaction. The new report's ``dropped`` is the number of reports
        dropped now plus the ``dropped`` the victims themselves carried, so the
        ``dropped`` fields of the reports the cloud receives always add up to
        the reports it will never see.
        """
        conn = self._db.conn
        with self._transaction():
            last_seq, dropped_total = self._meta()
            seq = last_seq + 1
            (count,) = conn.execute(f"SELECT COUNT(*) FROM {_REPORTS}").fetchone()
            overflow = max(0, count + 1 - self.max_rows)
            carried = 0
            if overflow:
                victims = conn.execute(
                    f"SELECT seq, dropped FROM {_REPORTS} ORDER BY seq LIMIT ?", (overflow,)
                ).fetchall()
                carried = sum(d for _, d in victims)
                conn.executemany(
                    f"DELETE FROM {_REPORTS} WHERE seq = ?", [(s,) for s, _ in victims]
                )
            dropped = overflow + carried
            body = {**report, "seq": seq, "dropped": dropped}
            conn.execute(
                f"INSERT INTO {_REPORTS} (seq, dropped, body) VALUES (?, ?, ?)",
                (seq, dropped, json.dumps(body, separators=(",", ":"))),
            )
            conn.execute(
                f"UPDATE {_META} SET last_seq = ?, dropped_total = ? WHERE id = 1",
                (seq, dropped_total + overflow),
            )
        return seq

    def pending(self, limit: int = 100) -> list[Queued]:
        """Up to ``limit`` reports in ``seq`` order, oldest first."""
        rows = self._db.conn.execute(
            f"SELECT seq, body FROM {_REPORTS} ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [Queued(seq=seq, report=json.loads(body)) for seq, body in rows]

    def delete(self, seqs: Iterable[int]) -> int:
        """Forget acknowledged reports; how many rows went."""
        wanted = [(int(s),) for s in seqs]
        with self._transaction():
            before = self._db.conn.total_changes
            self._db.conn.executemany(f"DELETE FROM {_REPORTS} WHERE seq = ?", wanted)
            return self._db.conn.total_changes - before

    def __len__(self) -> int:
        (count,) = self._db.conn.execute(f"SELECT COUNT(*) FROM {_REPORTS}").fetchone()
        return int(count)

    @property
    def last_seq(self) -> int:
        return self._meta()[0]

    @property
    def dropped_total(self) -> int:
        """Reports ever dropped because the outbox was full."""
        return self._meta()[1]

    def stats(self) -> dict[str, int]:
        """Figures for status and health: queued, last_seq, dropped_total."""
        last_seq, dropped_total = self._meta()
        return {"queued": len(self), "last_seq": last_seq, "dropped_total": dropped_total}


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
