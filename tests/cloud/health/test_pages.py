"""The fleet overview and the device page without a browser: who sees what, who may act.

Fleet: admin, customer-service admin and support (fleet:read); a partner or an
owner gets the 403 page. Device page: every role that reads devices, scoped
(another installation's device is the same 404 as no device); the command
buttons only for roles with ``commands``, and the server refuses the others'
POST all the same. A command's fragment polls itself until the device answers.
"""

from __future__ import annotations

import re

import pytest

from cloud.health import queries as repo
from tests.cloud.conftest import Cloud
from tests.cloud.health.test_health_windows import report, store_of, store_reports
from tests.cloud.pages import csrf_of, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def installation_with_device(cloud: Cloud, *, device_id: str = "cam-p1") -> str:
    made = await cloud.http.post("/api/v1/installations", json={"name": "Harbour office"})
    assert made.status_code == 201, made.text
    installation_id: str = made.json()["id"]
    grant = await cloud.http.post(
        f"/api/v1/installations/{installation_id}/grants",
        json={"feature": "voice_control", "until": cloud.clock() + 30 * 86_400},
    )
    assert grant.status_code in (200, 201), grant.text
    device = await cloud.http.post(
        "/api/v1/devices",
        json={"installation_id": installation_id, "kind": "camera", "device_id": device_id},
    )
    assert device.status_code == 201, device.text
    now = cloud.clock()
    with store_of(cloud).transaction() as tx:
        store_reports(
            tx,
            [
                report(device_id, i + 1, now - 3000 + 600 * i, uptime_s=900, cpu_temp_c=83.0)
                for i in range(5)
            ],
            now=now,
        )
        repo.record_status(tx, device_id=device_id, online=True, now=now)
    return installation_id


@pytest.mark.parametrize("role", ["admin", "cs_admin", "support"])
async def test_staff_see_the_fleet_with_counts_and_rows(cloud: Cloud, role: str) -> None:
    await installation_with_device(cloud)
    async with signed_in(cloud.app, role=role) as (http, _):
        page = await http.get("/fleet")
        assert page.status_code == 200, page.text[:500]
        assert 'href="/devices/cam-p1"' in page.text
        assert "Fix remotely" in page.text and "Check the cooling" in page.text
        filtered = await http.get("/fleet", params={"verdict": "healthy", "kind": ""})
        assert "No device matches these filters." in filtered.text
        sorted_page = await http.get("/fleet", params={"sort": "fw", "dir": "asc", "page": 1})
        assert sorted_page.status_code == 200
        assert (await http.get("/fleet", params={"sort": "password"})).status_code == 422
        assert (await http.get("/fleet", params={"verdikt": "healthy"})).status_code == 422


@pytest.mark.parametrize("role", ["partner", "owner"])
async def test_customers_have_no_fleet_page(cloud: Cloud, role: str) -> None:
    async with signed_in(cloud.app, role=role) as (http, _):
        page = await http.get("/fleet")
    assert page.status_code == 403 and "text/html" in page.headers["content-type"]


async def test_the_device_page_as_an_operator(cloud: Cloud) -> None:
    await installation_with_device(cloud)
    async with signed_in(cloud.app, role="admin") as (http, _):
        page = await http.get("/devices/cam-p1")
        assert page.status_code == 200, page.text[:800]
        html = page.text
        assert "RMA recommended" in html or "Fix remotely" in html
        assert "thermal.hot" in html  # the evidence
        assert "voice_control" in html  # a feature of the token, with its paid-through date
        assert 'href="/tickets/new?device=cam-p1"' in html
        for name in ("self_test", "fetch_log", "reboot"):
            assert f'data-command="{name}"' in html
        assert not re.search(r"\son[a-z]+=", html) and " style=" not in html
        charts = await http.get("/devices/cam-p1/charts.json", params={"range": "1h"})
        assert charts.status_code == 200
        data = charts.json()
        assert data["bucket_s"] == 10 and len(data["series"]["t"]) == 5
        assert data["series"]["cpu_temp_c"] == [83.0] * 5
        assert (await http.get("/devices/cam-p1/charts.json?range=1y")).status_code == 422

        # a command from the page: htmx gets the fragment, polling while pending
        sent = await http.post(
            "/devices/cam-p1/commands",
            data={"csrf_token": csrf_of(html), "cmd": "self_test"},
            headers={"HX-Request": "true"},
        )
        assert sent.status_code == 200, sent.text[:500]
        command_id = re.search(r'id="cmd-([^"]+)"', sent.text).group(1)  # type: ignore[union-attr]
        assert 'hx-trigger="every 1s"' in sent.text
        with store_of(cloud).transaction() as tx:
            repo.answer_command(
                tx,
                command_id=command_id,
                device_id="cam-p1",
                ok=True,
                result={"passed": True, "hardware_fault": False, "faults": []},
                now=cloud.clock(),
            )
        done = await http.get(f"/devices/cam-p1/commands/{command_id}")
        assert "Self-test passed" in done.text and "hx-trigger" not in done.text
        # the page shows the kept diagnosis; "diagnose now" makes a new one with the self-test
        again = await http.post("/devices/cam-p1/diagnose", data={"csrf_token": csrf_of(html)})
        assert again.status_code == 303
        assert again.headers["location"].startswith("/devices/cam-p1")
        assert "Diagnosed just now." in (await http.get("/devices/cam-p1")).text
        # without JavaScript: back to the page, the command listed there
        plain = await http.post(
            "/devices/cam-p1/commands", data={"csrf_token": csrf_of(html), "cmd": "reboot"}
        )
        assert plain.status_code == 303 and plain.headers["location"].startswith("/devices/cam-p1")
        forged = await http.post("/devices/cam-p1/commands", data={"cmd": "reboot"})
        assert forged.status_code == 403


async def test_an_owner_sees_its_device_without_commands_and_no_other(cloud: Cloud) -> None:
    installation_id = await installation_with_device(cloud)
    await installation_with_device(cloud, device_id="cam-other")
    async with signed_in(cloud.app, role="owner") as (http, user_id):
        put = await cloud.http.put(
            f"/api/v1/installations/{installation_id}/owner", json={"user_id": user_id}
        )
        assert put.status_code == 200, put.text
        page = await http.get("/devices/cam-p1")
        assert page.status_code == 200
        assert "data-command=" not in page.text
        other = await http.get("/devices/cam-other")
        missing = await http.get("/devices/cam-none")
        assert other.status_code == missing.status_code == 404
        assert other.text.replace("cam-other", "X") == missing.text.replace("cam-none", "X")
        refused = await http.post(
            "/devices/cam-p1/commands", data={"csrf_token": csrf_of(page.text), "cmd": "reboot"}
        )
        assert refused.status_code == 403
        assert (await http.get("/devices/cam-other/charts.json")).status_code == 404


async def test_the_page_of_a_device_that_never_reported(cloud: Cloud) -> None:
    """A device registered a moment ago has no report and no status: the page says so
    (it answered 500 before: the template read the latest report's fields)."""
    made = await cloud.http.post("/api/v1/installations", json={"name": "New site"})
    assert made.status_code == 201, made.text
    device = await cloud.http.post(
        "/api/v1/devices",
        json={"installation_id": made.json()["id"], "kind": "camera", "device_id": "cam-new"},
    )
    assert device.status_code == 201, device.text
    async with signed_in(cloud.app, role="admin") as (http, _):
        page = await http.get("/devices/cam-new")
        assert page.status_code == 200, page.text[:800]
        assert "No health report yet" in page.text
