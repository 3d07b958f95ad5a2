"""Tickets and RMA over the API (in-process app, SQLite and PostgreSQL, fake clock).

Device answers are fed to the ingest's batch handler, as the MQTT bridge
would; the round trip through Mosquitto is in tests/integration/test_health_ingest.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cloud import create_app
from cloud.accounts.apikeys import create_api_key
from cloud.app import CloudState
from cloud.health.ingest import Incoming
from cloud.settings import CloudSettings
from cloud.testing import AccountsSimulator, PublisherSimulator
from cloud.tickets.rules import SELF_TEST_MAX_AGE_S
from protocol.commands import error_result, ok_result, parse_command, result_to_json
from protocol.health import HealthReport, health_to_json
from protocol.topics import device_topic
from tests.cloud.harness import DAY, FakeClock, client, new_api_key, running


@dataclass
class App:
    app: FastAPI
    http: httpx.AsyncClient
    commands: PublisherSimulator  # records commands as well as tokens
    clock: FakeClock

    @property
    def state(self) -> CloudState:
        state: CloudState = self.app.state.cloud
        return state

    def key(self, role: str) -> httpx.AsyncClient:
        made = create_api_key(self.state.store, name=role, now=self.clock(), role=role)
        return client(self.app, made.key)

    def answer(self, device_id: str, result: dict[str, Any] | None, *, ok: bool = True) -> None:
        """The device answers the last command sent to it."""
        command = parse_command(self.commands.commands_sent(device_id)[-1])
        if ok:
            body = result_to_json(ok_result(command.id, device_id=device_id, result=result or {}))
        else:
            body = result_to_json(
                error_result(command.id, device_id=device_id, reason="busy", detail="try later")
            )
        assert self.state.health_ingest is not None
        done = self.state.health_ingest.process(
            [Incoming(device_topic(device_id, "cmd/res"), body)]
        )
        assert done.answers == 1


@pytest.fixture
async def api(
    settings: CloudSettings,
    publisher: PublisherSimulator,
    accounts: AccountsSimulator,
    clock: FakeClock,
) -> AsyncIterator[App]:
    app = create_app(settings, publisher=publisher, accounts=accounts, clock=clock)
    async with running(app):
        async with client(app, new_api_key(app)) as http:
            yield App(app, http, publisher, clock)


async def setup_device(http: httpx.AsyncClient, device_id: str = "cam-1") -> str:
    inst = (await http.post("/api/v1/installations", json={"name": "Shop"})).json()["id"]
    made = await http.post(
        "/api/v1/devices", json={"installation_id": inst, "kind": "camera", "device_id": device_id}
    )
    assert made.status_code == 201, made.text
    return str(inst)


async def open_ticket(http: httpx.AsyncClient, inst: str, **extra: Any) -> dict[str, Any]:
    body = {
        "category": "device_fault",
        "subject": "no picture",
        "body": "the camera shows nothing",
        "installation_id": inst,
        **extra,
    }
    made = await http.post("/api/v1/tickets", json=body)
    assert made.status_code == 201, made.text
    return dict(made.json())


FAULT = {"passed": False, "hardware_fault": True, "faults": [{"component": "sensor"}]}


async def test_ticket_lifecycle_sla_and_auto_close(api: App) -> None:
    inst = await setup_device(api.http)
    ticket = await open_ticket(
        api.http, inst, category="technical", device_ids=["cam-1"], cc=["ops@example.com"]
    )
    assert ticket["stage"] == "first_line" and ticket["next_action"] == "support"
    assert ticket["due_at"] == api.clock() + DAY
    assert ticket["devices"] == ["cam-1"] and ticket["cc"] == ["ops@example.com"]
    tid = ticket["id"]

    api.clock.advance(DAY + 1)
    passes = await api.state.jobs.run_once()
    assert passes["tickets"].breached == 1
    shown = (await api.http.get(f"/api/v1/tickets/{tid}")).json()
    assert shown["sla_breached"] is True

    moved = await api.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "second_line"})
    assert moved.json()["stage"] == "second_line"
    replied = await api.http.post(f"/api/v1/tickets/{tid}/messages", json={"body": "on it"})
    assert replied.json()["next_action"] == "customer"
    suggested = await api.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "suggest_close"})
    assert suggested.json()["stage"] == "suggest_close"

    api.clock.advance(7 * DAY - 1)
    assert (await api.state.jobs.run_once())["tickets"].closed == 0
    api.clock.advance(1)
    assert (await api.state.jobs.run_once())["tickets"].closed == 1
    assert (await api.state.jobs.run_once())["tickets"].closed == 0  # idempotent
    closed = (await api.http.get(f"/api/v1/tickets/{tid}")).json()
    assert closed["stage"] == "closed" and closed["next_action"] == "nobody"
    again = await api.http.post(f"/api/v1/tickets/{tid}/messages", json={"body": "hello?"})
    assert again.status_code == 409
    listed = (await api.http.get("/api/v1/tickets", params={"stage": "closed"})).json()
    assert [t["id"] for t in listed] == [tid]


async def test_rma_needs_a_confirming_self_test(api: App) -> None:
    inst = await setup_device(api.http)
    # a self-test from before the ticket does not count
    await api.http.post("/api/v1/devices/cam-1/commands", json={"cmd": "self_test"})
    api.answer("cam-1", FAULT)
    api.clock.advance(60)
    tid = (await open_ticket(api.http, inst))["id"]
    rma = f"/api/v1/tickets/{tid}/rma"

    async def refused() -> str:
        got = await api.http.post(rma, json={"device_id": "cam-1"})
        assert got.status_code == 409, got.text
        assert got.json()["detail"]
        return str(got.json()["why"])

    assert await refused() == "device_not_on_ticket"  # not attached: not what it is about
    attached = await api.http.post(f"/api/v1/tickets/{tid}/attach", json={"device_ids": ["cam-1"]})
    assert attached.status_code == 200, attached.text
    assert await refused() == "no_self_test"
    for result, ok, why in [
        ({"passed": True, "hardware_fault": False, "faults": []}, True, "self_test_passed"),
        (
            {"passed": False, "hardware_fault": False, "faults": [{"component": "config"}]},
            True,
            "remotely_fixable",
        ),
        (None, False, "self_test_error"),
    ]:
        api.clock.advance(10)
        sent = await api.http.post("/api/v1/devices/cam-1/commands", json={"cmd": "self_test"})
        assert sent.status_code == 202
        api.clock.advance(5)
        api.answer("cam-1", result, ok=ok)
        assert await refused() == why

    api.clock.advance(10)
    sent = (await api.http.post("/api/v1/devices/cam-1/commands", json={"cmd": "self_test"})).json()
    api.clock.advance(5)
    api.answer("cam-1", FAULT)
    async with api.key("support") as support:  # support may not approve RMAs
        assert (await support.post(rma, json={"device_id": "cam-1"})).status_code == 403
    approved = await api.http.post(rma, json={"device_id": "cam-1"})
    assert approved.status_code == 200
    assert approved.json() == {
        "approved": True,
        "why": "approved",
        "detail": approved.json()["detail"],
        "command_id": sent["id"],
    }
    ticket = (await api.http.get(f"/api/v1/tickets/{tid}")).json()
    assert [a["device_id"] for a in ticket["rma"]] == ["cam-1"]


async def self_test(api: App, device_id: str, result: dict[str, Any]) -> str:
    sent = await api.http.post(f"/api/v1/devices/{device_id}/commands", json={"cmd": "self_test"})
    assert sent.status_code == 202, sent.text
    api.clock.advance(5)
    api.answer(device_id, result)
    return str(sent.json()["id"])


async def test_rma_refuses_another_device_a_stale_test_and_a_closed_ticket(api: App) -> None:
    inst = await setup_device(api.http)
    made = await api.http.post(
        "/api/v1/devices", json={"installation_id": inst, "kind": "camera", "device_id": "cam-2"}
    )
    assert made.status_code == 201
    tid = (await open_ticket(api.http, inst, device_ids=["cam-1"]))["id"]
    rma = f"/api/v1/tickets/{tid}/rma"

    async def refused(device_id: str) -> str:
        got = await api.http.post(rma, json={"device_id": device_id})
        assert got.status_code == 409, got.text
        assert got.json()["detail"]
        return str(got.json()["why"])

    # cam-2 (same installation, not on the ticket) has the hardware fault: refused
    api.clock.advance(10)
    await self_test(api, "cam-2", FAULT)
    assert await refused("cam-2") == "device_not_on_ticket"
    assert await refused("cam-1") == "no_self_test"  # cam-2's fault is not cam-1's
    # cam-1's fault, but older than a day by the time someone approves: refused
    await self_test(api, "cam-1", FAULT)
    api.clock.advance(SELF_TEST_MAX_AGE_S + 1)
    assert await refused("cam-1") == "self_test_stale"
    health = (await api.http.get("/api/v1/devices/cam-1/health")).json()
    assert health["diagnosis"]["verdict"] == "healthy"  # the stale fault is evidence of nothing
    # a fresh fault, then a later pass: the pass supersedes, in the RMA and the diagnosis
    await self_test(api, "cam-1", FAULT)
    health = (await api.http.get("/api/v1/devices/cam-1/health")).json()
    assert health["diagnosis"]["action"] == "replace_device"
    api.clock.advance(10)
    await self_test(api, "cam-1", {"passed": True, "hardware_fault": False, "faults": []})
    assert await refused("cam-1") == "self_test_passed"
    health = (await api.http.get("/api/v1/devices/cam-1/health")).json()
    assert health["diagnosis"]["verdict"] == "healthy"
    # a fresh fault on a closed ticket: refused
    api.clock.advance(10)
    await self_test(api, "cam-1", FAULT)
    closed = await api.http.post(f"/api/v1/tickets/{tid}/stage", json={"stage": "closed"})
    assert closed.status_code == 200, closed.text
    assert await refused("cam-1") == "ticket_closed"
    assert (await api.http.get(f"/api/v1/tickets/{tid}")).json()["rma"] == []


async def test_commands_time_out_and_validate(api: App) -> None:
    await setup_device(api.http)
    sent = await api.http.post("/api/v1/devices/cam-1/commands", json={"cmd": "reboot"})
    assert sent.status_code == 202
    cid = sent.json()["id"]
    payload = api.commands.commands_sent("cam-1")[-1]
    assert json.loads(payload) == {"v": 1, "id": cid, "cmd": "reboot", "args": {}}
    api.clock.advance(api.state.settings.command_timeout_s)
    await api.state.jobs.run_once()
    got = (await api.http.get(f"/api/v1/devices/cam-1/commands/{cid}")).json()
    assert got["status"] == "timed_out"
    bad = await api.http.post("/api/v1/devices/cam-1/commands", json={"cmd": "format_disk"})
    assert bad.status_code == 422
    missing = await api.http.post("/api/v1/devices/nope/commands", json={"cmd": "reboot"})
    assert missing.status_code == 404
    api.commands.down = True
    down = await api.http.post("/api/v1/devices/cam-1/commands", json={"cmd": "self_test"})
    assert down.status_code == 503
    async with api.key("partner") as partner:  # partners do not send commands
        assert (
            await partner.post("/api/v1/devices/cam-1/commands", json={"cmd": "reboot"})
        ).status_code == 403  # noqa: E501


async def test_health_routes(api: App) -> None:
    await setup_device(api.http)
    now = api.clock()
    assert api.state.health_ingest is not None
    reports = [
        Incoming(
            device_topic("cam-1", "health"),
            health_to_json(
                HealthReport(
                    device_id="cam-1",
                    seq=seq,
                    ts=now - 300 * (5 - seq),
                    kind="camera",
                    uptime_s=seq,
                    cpu_temp_c=80.0 + seq,
                )
            ),
        )
        for seq in range(1, 6)
    ]
    api.state.health_ingest.process(reports)
    api.state.health_ingest.process([Incoming(device_topic("cam-1", "health"), b"{")])
    health = (await api.http.get("/api/v1/devices/cam-1/health")).json()
    assert health["latest"]["seq"] == 5
    assert health["diagnosis"]["verdict"] == "fix_remotely"
    assert health["diagnosis"]["action"] == "check_cooling"
    assert health["diagnosis"]["evidence"][0]["rule"] == "thermal.hot"
    page = (await api.http.get("/api/v1/devices/cam-1/health/history", params={"limit": 2})).json()
    assert [r["seq"] for r in page["reports"]] == [1, 2] and page["next_offset"] == 2
    rest = (
        await api.http.get(
            "/api/v1/devices/cam-1/health/history", params={"limit": 10, "offset": 2}
        )
    ).json()
    assert [r["seq"] for r in rest["reports"]] == [3, 4, 5] and rest["next_offset"] is None
    fleet = (await api.http.get("/api/v1/health/fleet")).json()
    assert fleet["by_verdict"] == {"healthy": 0, "fix_remotely": 1, "rma_recommended": 0}
    assert fleet["attention"] == [
        {"device_id": "cam-1", "verdict": "fix_remotely", "action": "check_cooling"}
    ]
    assert (await api.http.get("/api/v1/health/rejects")).json() == {"bad_json": 1}
    async with api.key("owner") as owner:  # a bare owner key owns nothing
        assert (await owner.get("/api/v1/devices/cam-1/health")).status_code == 404
        assert (await owner.get("/api/v1/health/rejects")).status_code == 403
        assert (await owner.get("/api/v1/health/fleet")).json()["devices"] == 0
