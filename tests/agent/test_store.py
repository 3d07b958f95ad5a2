"""The agent's store: what a save writes, what a reopen gives back, older files."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from agent.store import Store
from agent.verifier import TrustState, accept_token, provision
from simulators import TokenRepositorySimulator

DEV = "dev-store"
T0 = 1_800_000_000


def _reopened(path) -> TrustState:
    with Store(path) as store:
        loaded = store.load(device_id=DEV, skew=300)
    assert loaded is not None
    return loaded


def _synchronous(store: Store) -> int:
    (level,) = store._conn.execute("PRAGMA synchronous").fetchone()
    return int(level)


def test_high_water_raises_and_a_token_after_them_survive_a_reopen(tmp_path):
    repo = TokenRepositorySimulator()
    path = tmp_path / "agent.db"
    state = provision(DEV, repo.root_keyset).observe_clock(T0)
    with Store(path) as store:
        store.save(state)
        for minute in range(1, 4):  # the runtime's once-a-minute raise: the light path
            state = state.observe_clock(T0 + 60 * minute)
            store.save(state)
            assert _synchronous(store) == 2  # FULL again for whatever comes next
        token = repo.token(DEV, {"remote": T0 + 86400}, now=T0 + 180)
        state, _ = accept_token(state, token, local_now=T0 + 180)
        store.save(state)
        state = state.observe_clock(T0 + 240)
        store.save(state)
    loaded = _reopened(path)
    assert (loaded.high_water, loaded.token, loaded.ver) == (T0 + 240, token, 1)


def test_a_change_beside_the_high_water_is_written_whole(tmp_path):
    repo = TokenRepositorySimulator()
    path = tmp_path / "agent.db"
    state = provision(DEV, repo.root_keyset).observe_clock(T0)
    with Store(path) as store:
        store.save(state)
        store.save(replace(state, installation_id="inst_1"))
    assert _reopened(path).installation_id == "inst_1"


def test_a_store_written_before_installation_binding_opens_and_saves(tmp_path):
    repo = TokenRepositorySimulator()
    path = tmp_path / "agent.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE trust_state (id INTEGER PRIMARY KEY, schema INTEGER, device_id TEXT NOT NULL,"
        " keyset BLOB NOT NULL, token BLOB, ver INTEGER NOT NULL, high_water INTEGER NOT NULL)"
    )
    old.execute(
        "INSERT INTO trust_state VALUES (1, 1, ?, ?, NULL, 0, ?)", (DEV, repo.root_keyset, T0)
    )
    old.commit()
    old.close()
    with Store(path) as store:
        loaded = store.load(device_id=DEV, skew=300)
        assert loaded is not None and loaded.high_water == T0
        store.save(replace(loaded, installation_id="inst_2").observe_clock(T0 + 60))
    again = _reopened(path)
    assert (again.installation_id, again.high_water) == ("inst_2", T0 + 60)
