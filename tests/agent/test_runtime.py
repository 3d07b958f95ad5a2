"""The agent runtime without a broker: store, restart, expiry timer, local API."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from pathlib import Path

import pytest

from agent.api import query
from agent.runtime import open_agent
from agent.session import Connection
from agent.store import Store, StoreError
from common.tasks import cancel_and_wait
from simulators import TokenRepositorySimulator
from tests.waiting import HANG_S

DAY = 86400


class SteppingClock:
    """A clock a test sets; time.time() plus an offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def repo() -> TokenRepositorySimulator:
    return TokenRepositorySimulator()


async def _query(sock: Path, path: str) -> dict:
    deadline = time.monotonic() + HANG_S
    while True:
        try:
            _, answer = await asyncio.to_thread(query, sock, path)
            return answer
        except OSError:  # not listening yet
            assert time.monotonic() < deadline, f"local API at {sock} never answered"
            await asyncio.sleep(0.05)


async def test_unprovisioned_agent_says_what_to_do(tmp_path):
    with pytest.raises(StoreError, match="not provisioned"):
        open_agent(device_id="dev-a", data_dir=tmp_path, connection=None)


async def test_restart_with_broker_down_enforces_from_store(tmp_path, repo):
    now = int(time.time())
    agent = open_agent(
        device_id="dev-a", data_dir=tmp_path, connection=None, root_keyset=repo.root_keyset
    )
    assert await agent.apply_token(repo.token("dev-a", {"remote": now + DAY}, now=now))
    agent.store.close()

    sock = tmp_path / "api.sock"
    down = Connection(host="127.0.0.1", port=_closed_port(), username="dev-a", password="x")
    restarted = open_agent(device_id="dev-a", data_dir=tmp_path, connection=down, api_socket=sock)
    task = asyncio.create_task(restarted.run())
    try:
        answer = await _query(sock, "/features/remote")
        assert answer["allowed"] is True, answer
        assert (await _query(sock, "/features/voice"))["allowed"] is False
        status = await _query(sock, "/status")
        assert status["connected"] is False and status["token_ver"] == 1
    finally:
        await cancel_and_wait([task])
        assert task.cancelled()
        restarted.store.close()


async def test_clock_set_back_a_day_is_reported_and_ignored(tmp_path, repo):
    clock = SteppingClock()
    now = int(clock())
    agent = open_agent(
        device_id="dev-a",
        data_dir=tmp_path,
        connection=None,
        root_keyset=repo.root_keyset,
        clock=clock,
    )
    await agent.apply_token(repo.token("dev-a", {"remote": now + 3600}, now=now))
    clock.offset = -DAY
    details = agent.status_details()
    assert details["clock_setback_s"] >= DAY - 2
    assert details["trusted_time"] >= now
    # a token issued "yesterday" by the local clock's reckoning is still the newest
    assert agent.check("remote")[0] is True
    agent.store.close()


async def test_expiry_is_enforced_at_the_second_without_a_message(tmp_path, repo):
    now = int(time.time())
    agent = open_agent(
        device_id="dev-a", data_dir=tmp_path, connection=None, root_keyset=repo.root_keyset
    )
    changes: list[dict] = []
    flipped = asyncio.Event()

    def listener(decisions):
        changes.append(dict(decisions))
        if decisions.get("remote", (True,))[0] is False:
            flipped.set()

    agent.listeners.append(listener)
    until = now + 2
    await agent.apply_token(repo.token("dev-a", {"remote": until}, now=now))
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(flipped.wait(), timeout=HANG_S)
        assert time.time() >= until  # never early
        assert changes[0]["remote"][0] is True
    finally:
        await cancel_and_wait([task])
        assert task.cancelled()
        agent.store.close()


async def test_rejected_message_is_counted_and_changes_nothing(tmp_path, repo):
    now = int(time.time())
    agent = open_agent(
        device_id="dev-a", data_dir=tmp_path, connection=None, root_keyset=repo.root_keyset
    )
    await agent.apply_token(repo.token("dev-a", {"remote": now + DAY}, now=now))
    before = agent.state
    await agent.handle("entitle/v1/dev/dev-a/entitlement", b"\xff not cbor")
    await agent.handle("entitle/v1/keys", b"\x00")
    assert agent.state is before
    assert agent.rejects.by_reason == {"bad_cbor": 1, "bad_structure": 1}
    agent.store.close()
    with Store(tmp_path / "agent.db") as store:
        assert store.load(device_id="dev-a", skew=300).ver == 1


async def test_installation_binding_survives_a_restart(tmp_path, repo):
    from protocol.errors import WrongInstallation

    now = int(time.time())
    agent = open_agent(
        device_id="dev-a",
        data_dir=tmp_path,
        connection=None,
        root_keyset=repo.root_keyset,
        installation_id="inst_home",
    )
    assert await agent.apply_token(repo.token("dev-a", {"x": now + 60}, now=now, inst="inst_home"))
    agent.store.close()
    again = open_agent(device_id="dev-a", data_dir=tmp_path, connection=None)
    assert again.state.installation_id == "inst_home"
    assert not await again.apply_token(
        repo.token("dev-a", {"x": now + 60}, now=now, inst="inst_other")
    )
    assert again.rejects.by_reason == {WrongInstallation().reason: 1}
    again.store.close()


async def test_what_is_enforced_is_logged_with_dates_not_epoch_seconds(tmp_path, repo, caplog):
    """Each feature whose decision changed, revoked ones too, until when (ISO 8601 UTC)."""
    caplog.set_level(logging.INFO, logger="agent.runtime")
    now = 1_767_225_600  # 2026-01-01T00:00:00Z
    agent = open_agent(
        device_id="dev-a",
        data_dir=tmp_path,
        connection=None,
        root_keyset=repo.root_keyset,
        clock=lambda: float(now),
    )
    try:
        await agent.apply_token(
            repo.token("dev-a", {"remote": now + 31 * DAY, "voice": now - DAY}, now=now, ttl=DAY)
        )
        await agent.apply_token(repo.token("dev-a", {"voice": now - DAY}, now=now, ttl=DAY))
        await agent.apply_token(repo.token("dev-a", {}, now=now, ttl=DAY))
    finally:
        agent.store.close()
    said = [r.getMessage() for r in caplog.records if r.name == "agent.runtime"]
    assert [m for m in said if m.startswith("feature") or "every feature" in m] == [
        "feature remote ALLOWED: paid through 2026-02-01T00:00:00Z "
        "(token ver 1, fresh until 2026-01-02T00:00:00Z)",
        "feature voice DENIED: paid through 2025-12-31T00:00:00Z, now is 2026-01-01T00:00:00Z",
        "feature remote DENIED: feature not in token ver 2",
        "feature voice DENIED: feature not in token ver 3",
        "token ver 3 names no feature: every feature is denied",
    ]
    assert not [m for m in said if re.search(r"\b1\d{9}\b", m)], said
