"""The support desk's new parts without a browser, on SQLite and PostgreSQL: the check
before a report, categories per role, the five questions, support's controls (status,
category, responsible person, tasks, third line), and attachments served only to those
who may read the ticket."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cloud import create_app
from cloud.health.ingest import Incoming
from cloud.settings import CloudSettings
from cloud.testing import AccountsSimulator, PublisherSimulator
from cloud.tickets.tables import TicketAttachmentRow, TicketRow
from protocol.health import HealthReport, health_to_json
from protocol.topics import device_topic
from tests.cloud.harness import Cloud, FakeClock, client, new_api_key, new_user, running
from tests.cloud.pages import csrf_of, signed_in

PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)


@pytest.fixture
async def small_cloud(
    settings: CloudSettings,
    publisher: PublisherSimulator,
    accounts: AccountsSimulator,
    clock: FakeClock,
) -> AsyncIterator[Cloud]:
    """The app with small body limits (64 KiB; images 256 KiB), so large uploads stay fast."""
    small = settings.model_copy(
        update={
            "http_max_body_bytes": 64 << 10,
            "tickets_attachment_limits": {
                "image": 256 << 10,
                "text": 64 << 10,
                "video": 0,
                "pdf": 64 << 10,
            },
        }
    )
    app = create_app(small, publisher=publisher, accounts=accounts, clock=clock)
    async with running(app):
        api_key = new_api_key(app)
        async with client(app, api_key) as http:
            yield Cloud(app, http, publisher, accounts, clock, api_key)


async def _site(cloud: Cloud, owner_id: int, kind: str = "camera") -> tuple[str, str]:
    installation = await cloud.installation("Market Hall")
    answer = await cloud.http.put(
        f"/api/v1/installations/{installation}/owner", json={"user_id": owner_id}
    )
    assert answer.status_code == 200, answer.text
    device = await cloud.device(installation, kind=kind)
    return installation, str(device["device_id"])


def _count(cloud: Cloud, table: type) -> int:
    with cloud.state.store.transaction() as tx:
        return int(tx.scalar(select(func.count()).select_from(table)) or 0)


async def _post(http: httpx.AsyncClient, url: str, page: str, **data: str) -> httpx.Response:
    return await http.post(url, data={"csrf_token": csrf_of(page), **data})


async def _flash(http: httpx.AsyncClient, answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text[:500]
    shown = await http.get(answer.headers["location"])
    found = re.search(r'class="flash flash-(\w+)"[^>]*>([^<]*)<', shown.text)
    assert found is not None, shown.text[:300]
    return f"{found.group(1)}: {found.group(2).strip()}"


async def _open_on_page(http: httpx.AsyncClient, installation: str, body: str, **files: Any) -> str:
    """A technical ticket opened with the new-ticket form; its page's address."""
    form = await http.get("/tickets/new")
    opened = await http.post(
        "/tickets/new",
        data={
            "csrf_token": csrf_of(form.text),
            "category": "technical",
            "subject": "Screen",
            "body": body,
            "installation_id": installation,
        },
        **files,
    )
    assert opened.status_code == 303, opened.text[:300]
    return str(opened.headers["location"])


async def test_the_check_before_a_report_shows_an_obstructed_lens(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="owner") as (http, me):
        _, device = await _site(cloud, me)
        assert cloud.state.health_ingest is not None
        cloud.state.health_ingest.process(
            [
                Incoming(
                    device_topic(device, "health"),
                    health_to_json(
                        HealthReport(
                            device_id=device,
                            seq=seq,
                            ts=cloud.clock() - 300 + 60 * seq,
                            kind="camera",
                            uptime_s=500 + seq,
                            kind_specific={"lens_contrast_pct": 5.0},
                        )
                    ),
                )
                for seq in (1, 2, 3)
            ]
        )
        form = await http.get(f"/tickets/new?device={device}&category=device_fault")
        assert form.status_code == 200
        check = form.text.split('class="flash flash-warning report-check"')[1].split("</section>")[
            0
        ]
        assert f"what {device} says about itself" in check
        assert "The camera lens looks obstructed (image contrast 5% of normal)" in check
        assert "may be a false alarm" in check
        # customers are not offered support-only categories
        chooser = form.text.split('id="category"')[1].split("</select>")[0]
        assert "software_bug" not in chooser and "audit_blockade" not in chooser
        assert "business_inquiry" in chooser
        training = await http.get(f"/tickets/new?device={device}&category=training")
        assert "report-check" not in training.text.split("<main")[1]


async def test_a_customer_opens_with_the_five_questions_and_is_refused_a_support_category(
    cloud: Cloud,
) -> None:
    async with signed_in(cloud.app, role="owner") as (http, me):
        installation, device = await _site(cloud, me)
        form = await http.get("/tickets/new")
        base = {
            "csrf_token": csrf_of(form.text),
            "subject": "Counts too low",
            "body": "Half of last week",
            "installation_id": installation,
            "devices": device,
            "q_what": "Counts halved",
            "q_where": "Main entrance",
        }
        refused = await http.post("/tickets/new", data={**base, "category": "software_bug"})
        assert refused.status_code == 422
        assert "only support files a ticket as software_bug" in refused.text
        assert _count(cloud, TicketRow) == 0
        opened = await http.post(
            "/tickets/new",
            data={**base, "category": "data_accuracy"},
            files={"file": ("counts.png", PNG, "image/png")},
        )
        assert opened.status_code == 303, opened.text[:800]
        page = await http.get(opened.headers["location"])
        assert "Counts halved" in page.text and "Main entrance" in page.text
        assert "counts.png" in page.text
        assert "Status, category and responsible person" not in page.text  # support's only


async def test_support_controls_on_the_ticket_page(cloud: Cloud) -> None:
    owner = new_user(cloud.app, role="owner")
    _, device = await _site(cloud, owner)
    async with signed_in(cloud.app, role="support") as (desk, agent):
        form = await desk.get(f"/tickets/new?device={device}")
        opened = await desk.post(
            "/tickets/new",
            data={
                "csrf_token": csrf_of(form.text),
                "category": "software_bug",
                "subject": "Parser drops lines",
                "body": "Found in the logs",
                "installation_id": "",
                "devices": device,
            },
        )
        assert opened.status_code == 303, opened.text[:800]
        url = opened.headers["location"]
        page = (await desk.get(url)).text
        flashed = await _flash(
            desk, await _post(desk, f"{url}/status", page, status="hard_to_config")
        )
        assert flashed == "success: The status is set."
        flashed = await _flash(
            desk, await _post(desk, f"{url}/responsible", page, user_id=str(agent))
        )
        assert flashed == "success: The responsible person is set."
        flashed = await _flash(
            desk, await _post(desk, f"{url}/responsible", page, user_id=str(owner))
        )
        assert flashed.startswith("error: user ") and "not an active support user" in flashed
        flashed = await _flash(
            desk, await _post(desk, f"{url}/category", page, category="business_inquiry")
        )
        assert flashed == "success: The category is changed."
        bad_task = await _post(
            desk, f"{url}/tasks", page, type="site_visit", title="Visit", hours="0", expected_on=""
        )
        assert (await _flash(desk, bad_task)).startswith("error: Give the task a type")
        task = await _post(
            desk,
            f"{url}/tasks",
            page,
            type="site_visit",
            title="Visit the entrance",
            hours="2,5",
            expected_on="2026-01-08",
        )
        assert await _flash(desk, task) == "success: The task is added."
        no_plan = await _post(desk, f"{url}/stage", page, stage="third_line", plan="", eta="")
        assert "needs a plan" in await _flash(desk, no_plan)
        third = await _post(
            desk, f"{url}/stage", page, stage="third_line", plan="Patch it", eta="2026-01-20"
        )
        assert await _flash(desk, third) == "success: The ticket has moved."
        shown = (await desk.get(url)).text
        assert "Patch it" in shown and "Visit the entrance" in shown and "2.5" in shown
        assert "Business inquiry" in shown and "Test support" in shown
        task_id = re.search(r'action="/tickets/\d+/tasks/(\d+)"', shown)
        assert task_id is not None
        done = await _post(desk, f"{url}/tasks/{task_id.group(1)}", shown, status="done")
        assert await _flash(desk, done) == "success: The task is updated."
        wrong = await _post(desk, f"{url}/tasks/{task_id.group(1)}", shown, status="cancelled")
        assert "a task that is done cannot become cancelled" in await _flash(desk, wrong)
        removed = await _post(desk, f"{url}/tasks/{task_id.group(1)}/delete", shown)
        assert await _flash(desk, removed) == "success: The task is removed."
        assert "Visit the entrance" not in (await desk.get(url)).text
        board = (await desk.get("/tickets")).text
        assert "Responsible: Test support" in board and 'id="col-third_line"' in board


async def test_attachments_on_the_page_only_for_who_may_read(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="owner") as (http, me):
        installation, _ = await _site(cloud, me)
        url = await _open_on_page(http, installation, "See the screenshot")
        page = (await http.get(url)).text
        up = await http.post(
            f"{url}/attachments",
            data={"csrf_token": csrf_of(page)},
            files={"file": ("screen.png", PNG, "image/png")},
        )
        assert await _flash(http, up) == "success: The file is attached."
        page = (await http.get(url)).text
        link = re.search(r'href="(/tickets/\d+/attachments/\d+)"', page)
        assert link is not None
        got = await http.get(link.group(1))
        assert got.status_code == 200 and got.content == PNG
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"].startswith("attachment;")
        refused = await http.post(
            f"{url}/attachments",
            data={"csrf_token": csrf_of(page)},
            files={"file": ("tool.exe", b"MZ\x90\x00" * 10, "application/octet-stream")},
        )
        assert "attach a photo or screenshot" in (await _flash(http, refused)).lower()
        forged = await http.post(f"{url}/attachments", files={"file": ("x.png", PNG, "image/png")})
        assert forged.status_code == 403  # no CSRF token
        assert _count(cloud, TicketAttachmentRow) == 1
    async with signed_in(cloud.app, role="owner") as (stranger, _):
        assert (await stranger.get(link.group(1))).status_code == 404
        assert (await stranger.get(url)).status_code == 404


async def test_files_go_with_their_message_and_their_uploader_deletes_them(cloud: Cloud) -> None:
    async with signed_in(cloud.app, role="owner") as (http, me):
        installation, _ = await _site(cloud, me)
        url = await _open_on_page(
            http, installation, "The opening words", files={"file": ("first.png", PNG, "image/png")}
        )
        page = (await http.get(url)).text
        answer = await http.post(
            f"{url}/messages",
            data={"csrf_token": csrf_of(page), "body": "Two more shots"},
            files=[
                ("file", ("left.png", PNG, "image/png")),
                ("file", ("right.png", PNG + b"r", "image/png")),
            ],
        )
        assert await _flash(http, answer) == "success: Your message is added."
        big = PNG + bytes(cloud.state.settings.http_max_body_bytes + 1000)
        large = await http.post(
            f"{url}/messages",
            data={"csrf_token": csrf_of(page), "body": "A large photo"},
            files={"file": ("large.png", big, "image/png")},
        )  # an answer's files may be larger than other forms
        assert await _flash(http, large) == "success: Your message is added."
        page = (await http.get(url)).text
        thread = page.split('class="messages"')[1].split("</ol>")[0]
        opening, second = thread.split("The opening words")[1].split("Two more shots")
        assert "first.png" in opening and "left.png" not in opening
        assert "left.png" in second and "right.png" in second
        refused = await http.post(
            f"{url}/messages",
            data={"csrf_token": csrf_of(page), "body": "and a tool"},
            files={"file": ("tool.exe", b"MZ\x90\x00" * 10, "application/octet-stream")},
        )
        assert "attach a photo or screenshot" in (await _flash(http, refused)).lower()
        assert "and a tool" not in (await http.get(url)).text
        deletes = re.findall(r'action="(/tickets/\d+/attachments/\d+/delete)"', page)
        assert len(deletes) == 4  # the uploader's own files
        gone = await http.post(deletes[0], data={"csrf_token": csrf_of(page)})
        assert await _flash(http, gone) == "success: The file is deleted."
        assert "first.png" not in (await http.get(url)).text
        assert _count(cloud, TicketAttachmentRow) == 3
    async with signed_in(cloud.app, role="owner") as (stranger, _):
        page = (await stranger.get("/tickets")).text
        assert (
            await stranger.post(deletes[1], data={"csrf_token": csrf_of(page)})
        ).status_code == 404
    async with signed_in(cloud.app, role="support") as (desk, _):
        page = (await desk.get(url)).text
        assert len(re.findall(r"/attachments/\d+/delete", page)) == 3  # support: any file
    assert _count(cloud, TicketAttachmentRow) == 3


async def test_a_form_may_carry_several_files_each_up_to_its_types_limit(
    small_cloud: Cloud,
) -> None:
    """The body limit was one file's (the largest type limit + 64 KiB) and left out the
    new-ticket form: a new ticket with one photo over the general limit, or an answer with
    two photos that together pass one photo's limit, was 413."""
    cloud = small_cloud
    settings = cloud.state.settings
    general, image = settings.http_max_body_bytes, settings.tickets_attachment_limits["image"]
    async with signed_in(cloud.app, role="owner") as (http, me):
        installation, _ = await _site(cloud, me)
        photo = PNG + bytes(general + 1000)  # over the general limit, under the image limit
        url = await _open_on_page(
            http, installation, "One large photo", files={"file": ("big.png", photo, "image/png")}
        )
        assert "big.png" in (await http.get(url)).text
        page = (await http.get(url)).text
        each = PNG + bytes(image * 4 // 5)  # two: over one image's limit and its 64 KiB
        assert 2 * len(each) > image + (64 << 10) and len(each) < image
        answer = await http.post(
            f"{url}/messages",
            data={"csrf_token": csrf_of(page), "body": "Two large photos"},
            files=[
                ("file", ("left.png", each, "image/png")),
                ("file", ("right.png", each + b"r", "image/png")),
            ],
        )
        assert await _flash(http, answer) == "success: Your message is added."
        page = (await http.get(url)).text
        assert "left.png" in page and "right.png" in page
        too_big = PNG + bytes(image)  # one file over its type's limit is still refused
        refused = await http.post(
            f"{url}/messages",
            data={"csrf_token": csrf_of(page), "body": "Too large"},
            files={"file": ("huge.png", too_big, "image/png")},
        )
        said = await _flash(http, refused)
        assert said.startswith("error: ") and f"over {image} bytes" in said
        assert "Too large" not in (await http.get(url)).text
    assert _count(cloud, TicketAttachmentRow) == 3
