"""The support desk's pages without a browser: scoping, who sees which control, the RMA rule.

The device's self-test answer is fed to the health ingest as the MQTT bridge would
(the browser test runs a real agent).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from cloud.health.ingest import Incoming
from protocol.commands import ok_result, parse_command, result_to_json
from protocol.topics import device_topic
from tests.cloud.harness import Cloud, new_user
from tests.cloud.pages import csrf_of, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

FAULT = {
    "passed": False,
    "hardware_fault": True,
    "faults": [{"component": "sensor", "code": "E42", "detail": "image sensor dead"}],
}


async def _owned_device(cloud: Cloud, owner_id: int, name: str = "Shop") -> tuple[str, str]:
    installation = await cloud.installation(name)
    answer = await cloud.http.put(
        f"/api/v1/installations/{installation}/owner", json={"user_id": owner_id}
    )
    assert answer.status_code == 200, answer.text
    device = await cloud.device(installation, kind="camera")
    return installation, str(device["device_id"])


async def _self_test(cloud: Cloud, device_id: str, result: dict[str, Any]) -> None:
    sent = await cloud.http.post(f"/api/v1/devices/{device_id}/commands", json={"cmd": "self_test"})
    assert sent.status_code == 202, sent.text
    command = parse_command(cloud.publisher.commands_sent(device_id)[-1])
    body = result_to_json(ok_result(command.id, device_id=device_id, result=result))
    assert cloud.state.health_ingest is not None
    done = cloud.state.health_ingest.process([Incoming(device_topic(device_id, "cmd/res"), body)])
    assert done.answers == 1


async def _open(http: httpx.AsyncClient, device_id: str) -> tuple[httpx.Response, int]:
    form = await http.get(f"/tickets/new?device={device_id}")
    assert form.status_code == 200, form.text[:500]
    chooser = form.text.split('name="installation_id"')[1].split("</select>")[0]
    installation = re.search(r'<option value="([^"]+)" selected>', chooser)
    opened = await http.post(
        "/tickets/new",
        data={
            "csrf_token": csrf_of(form.text),
            "category": "device_fault",
            "subject": "Camera shows black",
            "body": "Since Monday the picture is black.",
            "installation_id": installation.group(1) if installation else "",
            "devices": device_id,
            "cc": "facility@customer.example",
        },
    )
    assert opened.status_code == 303, opened.text.split("<main")[1][:1500]
    return form, int(opened.headers["location"].rsplit("/", 1)[1])


async def test_an_owner_opens_a_ticket_from_a_device_and_sees_only_its_own(cloud: Cloud) -> None:
    other = new_user(cloud.app, role="owner")
    await _owned_device(cloud, other, "Elsewhere")
    async with signed_in(cloud.app, role="owner") as (http, me):
        _, device_id = await _owned_device(cloud, me)
        form, ticket_id = await _open(http, device_id)
        assert f'value="{device_id}"' in form.text  # ?device= attached it
        page = await http.get(f"/tickets/{ticket_id}")
        assert page.status_code == 200
        assert "Camera shows black" in page.text and "facility@customer.example" in page.text
        assert "Approve the RMA" not in page.text  # owners never approve
        assert "No RMA:" in page.text and "No self-test of the device" in page.text
        board = await http.get("/tickets")
        assert f"/tickets/{ticket_id}" in board.text
    async with signed_in(cloud.app, role="owner") as (stranger, _):
        mine = await stranger.get(f"/tickets/{ticket_id}")
        missing = await stranger.get("/tickets/999999")
        assert mine.status_code == missing.status_code == 404
        assert mine.text.replace("999999", "") == missing.text.replace("999999", "")
        assert f"/tickets/{ticket_id}" not in (await stranger.get("/tickets")).text
        not_mine = await stranger.get(f"/tickets/new?device={device_id}")
        assert not_mine.status_code == 404


async def test_the_rma_button_only_where_the_rule_allows_and_the_role_may(cloud: Cloud) -> None:
    owner = new_user(cloud.app, role="owner")
    _, device_id = await _owned_device(cloud, owner)
    async with signed_in(cloud.app, role="support") as (support, _):
        _, ticket_id = await _open(support, device_id)
        await _self_test(cloud, device_id, FAULT)
        seen = await support.get(f"/tickets/{ticket_id}")
        assert "hardware fault" in seen.text and "image sensor dead" in seen.text
        assert "Approve the RMA" not in seen.text  # support may not approve
        forged = await support.post(
            f"/tickets/{ticket_id}/rma",
            data={"csrf_token": csrf_of(seen.text), "device_id": device_id},
        )
        assert forged.status_code == 403
    async with signed_in(cloud.app, role="cs_admin") as (cs, _):
        page = await cs.get(f"/tickets/{ticket_id}")
        assert f"Approve the RMA of {device_id}" in page.text
        approved = await cs.post(
            f"/tickets/{ticket_id}/rma",
            data={"csrf_token": csrf_of(page.text), "device_id": device_id},
        )
        assert approved.status_code == 303
        after = await cs.get(f"/tickets/{ticket_id}")
        assert "RMA approved" in after.text and "Approve the RMA" not in after.text
        await _self_test(cloud, device_id, {"passed": True, "hardware_fault": False, "faults": []})
        # a later passing test: the rule now says no (the approval stays recorded)
        assert "RMA approved" in (await cs.get(f"/tickets/{ticket_id}")).text


async def test_the_page_says_why_not_when_the_self_test_passed(cloud: Cloud) -> None:
    owner = new_user(cloud.app, role="owner")
    _, device_id = await _owned_device(cloud, owner)
    async with signed_in(cloud.app, role="cs_admin") as (cs, _):
        _, ticket_id = await _open(cs, device_id)
        await _self_test(cloud, device_id, {"passed": True, "hardware_fault": False, "faults": []})
        page = await cs.get(f"/tickets/{ticket_id}")
        assert "the hardware is fine, so no RMA" in page.text
        assert "Approve the RMA" not in page.text
        refused = await cs.post(
            f"/tickets/{ticket_id}/rma",
            data={"csrf_token": csrf_of(page.text), "device_id": device_id},
        )
        assert refused.status_code == 303  # back to the ticket, saying so
        flashed = await cs.get(refused.headers["location"])
        assert "is not approved" in flashed.text and "RMA approved" not in flashed.text


async def test_messages_stages_and_the_board_by_stage(cloud: Cloud) -> None:
    owner = new_user(cloud.app, role="owner")
    _, device_id = await _owned_device(cloud, owner)
    async with signed_in(cloud.app, role="support") as (support, _):
        _, ticket_id = await _open(support, device_id)
        page = await support.get(f"/tickets/{ticket_id}")
        token = csrf_of(page.text)
        said = await support.post(
            f"/tickets/{ticket_id}/messages", data={"csrf_token": token, "body": "Try a reboot."}
        )
        assert said.status_code == 303
        moved = await support.post(
            f"/tickets/{ticket_id}/stage", data={"csrf_token": token, "stage": "suggest_close"}
        )
        assert moved.status_code == 303
        board = (await support.get("/tickets")).text
        column = board.split('id="col-suggest_close"')[1].split("</section>")[0]
        assert f"/tickets/{ticket_id}" in column
        _, waiting = await _open(support, device_id)  # stays in first line, past its SLA
    cloud.clock.advance(4 * 86_400)
    async with signed_in(cloud.app, role="support") as (support, _):
        breached = (await support.get("/tickets?breached=true")).text
        assert f"/tickets/{waiting}" in breached and "SLA breached" in breached
        assert f"/tickets/{ticket_id}" not in breached  # resolved in time
        bad = await support.get("/tickets?category=nonsense")
        assert bad.status_code == 422


async def test_a_customer_may_only_close(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="owner") as (http, me):
        _, device_id = await _owned_device(cloud, me)
        _, ticket_id = await _open(http, device_id)
        page = await http.get(f"/tickets/{ticket_id}")
        options = re.findall(r'<option value="([a-z_]+)">', page.text.split('name="stage"')[1])
        assert options[:1] == ["closed"]
        forged = await http.post(
            f"/tickets/{ticket_id}/stage",
            data={"csrf_token": csrf_of(page.text), "stage": "second_line"},
        )
        assert forged.status_code == 403


async def test_a_long_column_has_its_own_pages(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column longer than the board shows says how many, and links to that stage alone,
    page by page, most urgent first, keeping the filters; the other stages are not listed."""
    monkeypatch.setattr("cloud.tickets.pages.PER_COLUMN", 2)
    opened = []
    for n in range(5):
        answer = await cloud.http.post(
            "/api/v1/tickets",
            json={"category": "technical", "subject": f"Case {n}", "body": "It fails."},
        )
        assert answer.status_code == 201, answer.text
        opened.append(answer.json()["id"])
    async with signed_in(cloud.app, role="support") as (support, _):
        board = (await support.get("/tickets?category=technical")).text
        column = board.split('id="col-first_line"')[1].split("</section>")[0]
        assert "2 of 5 shown." in column
        assert 'href="/tickets?category=technical&amp;stage=first_line"' in column
        seen = []
        for page in (1, 2, 3):
            shown = await support.get(f"/tickets?category=technical&stage=first_line&page={page}")
            assert shown.status_code == 200
            assert 'id="col-second_line"' not in shown.text
            assert f"Page {page} of 3 (5 in all)" in shown.text
            seen += [int(i) for i in re.findall(r'href="/tickets/(\d+)"', shown.text)]
        assert sorted(seen) == sorted(opened) and len(seen) == 5  # each once, none lost
        assert (await support.get("/tickets?stage=nonsense")).status_code == 422
        assert (await support.get("/tickets?stage=first_line&page=0")).status_code == 422
