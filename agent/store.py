"""The agent's local store: one SQLite file (sqlite-utils), written atomically.

The whole trust state (key set, accepted token, counter, trusted-time
high-water mark) is one row replaced in one transaction, so a crash leaves
either the old state or the new one. The journal is WAL with synchronous
FULL: an accepted token survives power loss once :meth:`save` returns.

The agent raises the high-water mark every minute from the local clock.
A save that changes nothing but that mark is one ``UPDATE`` committed with
synchronous NORMAL (no fsync): a power cut may lose the last raises (the
OS writes them back within seconds, the next FULL commit or checkpoint
makes them durable), which sets trusted time back by those minutes at
most, never below a raise that was fsynced and never losing a token. An
fsync a minute per device blocked a simulated fleet's event loop for
nothing a real device needs.

sqlite-utils makes the table; it is imported only when there is a table to
make (a device's first start, which ``entitle-agent run`` does in a child
process): it loads ~40 modules (click, pluggy, dateutil, tabulate, decimal,
uuid, ...) that the running agent never needs (``tests/cli/test_agent_imports.py``,
``bench/bench_agent_rss.py``).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from agent.verifier import TrustState, restore
from protocol.errors import StoreError, UntrustedDataError

__all__ = ["Store", "StoreError"]

log = logging.getLogger(__name__)
_STATE = "trust_state"
_SCHEMA_VERSION = 1


class Store:
    """Persistent trust state of one device."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        if read_only:
            if not path.exists():
                raise StoreError(f"no agent store at {path}: run 'entitle agent run' first")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        self._conn = conn
        self._saved: tuple[object, ...] | None = None  # the row as last written here
        if read_only:
            return
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({_STATE})")}
        if not columns:
            import sqlite_utils

            sqlite_utils.Database(conn).table(_STATE).create(
                {
                    "id": int,
                    "schema": int,
                    "device_id": str,
                    "keyset": bytes,
                    "token": bytes,
                    "ver": int,
                    "high_water": int,
                    "installation_id": str,
                },
                pk="id",
                not_null={"device_id", "keyset", "ver", "high_water"},
            )
        elif "installation_id" not in columns:
            conn.execute(f"ALTER TABLE {_STATE} ADD COLUMN installation_id TEXT")  # older stores

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self, *, device_id: str, skew: int) -> TrustState | None:
        """The saved state, re-checked; None when nothing was provisioned yet."""
        try:
            if not self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_STATE,)
            ).fetchone():
                return None
            cursor = self._conn.execute(f"SELECT * FROM {_STATE} WHERE id = 1")
            found = cursor.fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"agent store {self.path} is unreadable: {exc}") from exc
        if found is None:
            return None
        row = dict(zip((c[0] for c in cursor.description), found, strict=True))
        if row["device_id"] != device_id:
            raise StoreError(
                f"store {self.path} belongs to device {row['device_id']!r}, not {device_id!r}"
            )
        try:
            return restore(
                device_id=device_id,
                keyset_raw=row["keyset"],
                token=row["token"],
                ver=row["ver"],
                high_water=row["high_water"],
                skew=skew,
                installation_id=row.get("installation_id"),
            )
        except UntrustedDataError as exc:
            raise StoreError(
                f"the key set in {self.path} no longer verifies ({exc.reason}: {exc}); "
                "re-provision the device with 'entitle agent run --root-keyset FILE'"
            ) from exc

    def save(self, state: TrustState) -> None:
        """Replace the stored state in one transaction (see the module's note on fsync)."""
        row = (
            1,
            _SCHEMA_VERSION,
            state.device_id,
            state.keyset_raw,
            state.token,
            state.ver,
            state.high_water,
            state.installation_id,
        )
        saved, conn = self._saved, self._conn
        if saved is not None and saved[:6] == row[:6] and saved[7] == row[7]:
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn:
                    conn.execute(
                        f"UPDATE {_STATE} SET high_water = ? WHERE id = 1", (state.high_water,)
                    )
            finally:
                conn.execute("PRAGMA synchronous=FULL")
        else:
            with conn:
                conn.execute(
                    f"INSERT OR REPLACE INTO {_STATE} (id, schema, device_id, keyset, token,"
                    " ver, high_water, installation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
        self._saved = row
