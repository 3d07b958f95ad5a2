"""The browser tests' harness: the real ``entitle cloud serve``, Mosquitto, an SMTP server,
real agents, and Debian's Chromium driven by Playwright.

Fixtures (one cloud per xdist worker, shared by its browser tests; tests that change
things make their own installation with :meth:`Dashboard.new_installation`; a test that
needs other settings starts its own cloud with :func:`serve_cloud`):

    dashboard   session scope: the running cloud, seeded with a user of every role
                (:data:`ROLES`), two partner companies (invoice, card) and installations
                ("Harbour Office" connected: a gateway of it has reported, so services
                can be bought for it; :meth:`Dashboard.connect` does that for others)
    browser     module scope: headless Chromium (/usr/bin/chromium)
    login       ``login("support") -> Page``: a fresh browser context signed in as that role
    shoot       ``shoot(page, "fleet-admin")``: a full-page screenshot under
                artifacts/screenshots/ (git-ignored, kept as a CI artifact), then axe-core
                (served by the app from npm) — fails on any serious or critical violation,
                and on any Content Security Policy violation the page logged
    answered    ``answered(page, 404)``: the page's error status was the point of the test

Everything skips, with the reason under ``-ra``, when Chromium, Playwright, the npm
packages or Mosquitto are missing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho_mqtt
import paho.mqtt.publish as paho_publish
import pytest

from cloud.accounts.apikeys import bootstrap_api_key
from protocol.health import HealthReport, health_to_json
from protocol.topics import device_topic
from tests.broker_fixtures import FixtureBroker, _require_mosquitto
from tests.smtp_fixtures import SmtpServer, _free_port
from tests.waiting import HANG_S

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"

ROLES = ("admin", "cs_admin", "support", "partner", "card_partner", "owner", "other_owner")
"""Seeded users: ``partner`` is in the invoiced company, ``card_partner`` in the card-paying
one; ``owner`` owns the "Harbour Office" installation, ``other_owner`` owns "Villa Dune"."""


def _require_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright (Python) not installed: pip install -e '.[dev]'")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (apt-get install chromium): browser tests")
    if not (ROOT / "node_modules" / "axe-core" / "axe.min.js").exists():
        pytest.skip("front-end packages not installed (npm ci --ignore-scripts): browser tests")


@dataclass
class Agent:
    """``entitle agent run`` for one device, as its own process."""

    device_id: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def check(self, feature: str) -> int:
        """``entitle agent check FEATURE``'s exit code: 0 allowed, else refused."""
        done = subprocess.run(
            [sys.executable, "-m", "entitle.cli", "agent", "check", feature],
            env=self.env,
            capture_output=True,
            timeout=30,
        )
        return done.returncode

    def wait_allowed(self, feature: str, *, within: float = HANG_S) -> None:
        """Until the agent allows ``feature`` (it enforces the token it received)."""
        deadline = time.monotonic() + within
        while self.check(feature) != 0:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.device_id} never allowed {feature!r}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Dashboard:
    """The running cloud and what was seeded in it."""

    url: str
    root: Path
    api: httpx.Client  # an admin API key's client of the REST API
    broker: FixtureBroker
    smtp: SmtpServer
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # role name → user
    companies: dict[str, int] = field(default_factory=dict)  # "invoice" / "card" → id
    installations: dict[str, str] = field(default_factory=dict)  # name → id
    agents: list[Agent] = field(default_factory=list)
    agent_dirs: list[Path] = field(default_factory=list)

    def email(self, who: str) -> str:
        return str(self.users[who]["email"])

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        got = self.api.request(method, f"/api/v1{path}", **kwargs)
        assert got.status_code < 300, f"{method} {path}: {got.status_code} {got.text[:500]}"
        return got.json() if got.content else None

    def new_user(self, who: str, role: str, *, company: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "email": f"{who.replace('_', '-')}-{secrets.token_hex(3)}@customer.example",
            "name": who.replace("_", " ").title(),
            "password": PASSWORD,
            "role": role,
        }
        if company is not None:
            body["company_id"] = self.companies[company]
        user: dict[str, Any] = self.call("POST", "/users", json=body)
        self.users[who] = user
        return user

    def new_installation(
        self, name: str, *, owner: str | None = None, integrators: tuple[str, ...] = ()
    ) -> str:
        """An installation owned by the seeded user ``owner`` and integrated by companies."""
        installation_id = str(self.call("POST", "/installations", json={"name": name})["id"])
        if owner is not None:
            self.call(
                "PUT",
                f"/installations/{installation_id}/owner",
                json={"user_id": self.users[owner]["id"]},
            )
        for company in integrators:
            self.call(
                "POST",
                f"/installations/{installation_id}/integrators",
                json={"company_id": self.companies[company]},
            )
        self.installations[name] = installation_id
        return installation_id

    def new_device(self, installation_id: str, kind: str = "gateway") -> dict[str, Any]:
        """A registered device and its broker credentials (shown once)."""
        created: dict[str, Any] = self.call(
            "POST", "/devices", json={"installation_id": installation_id, "kind": kind}
        )
        return created

    def connect(self, installation_id: str) -> str:
        """A gateway of the installation that has reported health over MQTT, stored by the
        cloud: the installation is connected (a purchase needs that). Its id."""
        device = self.new_device(installation_id)
        device_id = str(device["device_id"])
        report = HealthReport(
            device_id=device_id, seq=1, ts=int(time.time()), kind="gateway", uptime_s=60
        )

        # paho's blocking helper: Playwright's sync API keeps an event loop running here
        paho_publish.single(
            device_topic(device_id, "health"),
            health_to_json(report),
            qos=1,
            hostname=self.broker.host,
            port=self.broker.port,
            client_id=device_id,
            auth={"username": str(device["mqtt_username"]), "password": device["mqtt_password"]},
            protocol=paho_mqtt.MQTTv5,
        )
        self.wait_seen(device_id)
        return device_id

    def wait_seen(self, device_id: str) -> None:
        """Until the cloud has heard from ``device_id`` (a health report or an agent's
        status): its installation is connected."""
        deadline = time.monotonic() + HANG_S  # a hang guard: the ingest takes milliseconds
        while self.call("GET", f"/devices/{device_id}/health")["last_seen"] is None:
            assert time.monotonic() < deadline, f"the cloud never heard from {device_id}"
            time.sleep(0.05)

    def start_agent(self, device: dict[str, Any]) -> Agent:
        """A real agent for ``device`` (from :meth:`new_device`), connected to the broker."""
        device_id = str(device["device_id"])
        # a short folder of its own: the agent's Unix socket lives under it, and a socket
        # path is at most 107 bytes (pytest's tmp paths under xdist came to 109)
        data = Path(tempfile.mkdtemp(prefix="agent-"))
        self.agent_dirs.append(data)
        keyset = data / "root-keyset.cbor"  # provisioned: the cloud's signed key set
        keyset.write_bytes(base64.b64decode(self.call("GET", "/keyset")["keyset_b64"]))
        env = dict(
            os.environ,
            ENTITLE_DATA_DIR=str(data),
            ENTITLE_DEVICE_ID=device_id,
            ENTITLE_ROOT_KEYSET_FILE=str(keyset),
            ENTITLE_BROKER_URL=self.broker.url_for(
                str(device["mqtt_username"]), str(device["mqtt_password"])
            ),
        )
        log = data / "agent.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "entitle.cli", "agent", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        agent = Agent(device_id, env, process, log)
        self.agents.append(agent)
        return agent


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HANG_S * 2
    while True:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("entitle cloud serve never answered /healthz:\n" + log.read_text())
        time.sleep(0.1)


@contextmanager
def serve_cloud(root: Path, **settings: str) -> Iterator[Dashboard]:
    """``entitle cloud serve`` under ``root`` with Mosquitto, SMTP and SQLite, and the extra
    ``ENTITLE_*`` ``settings`` (e.g. ``ENTITLE_REPAIR_WARRANTY_MONTHS="0"``): an unseeded
    :class:`Dashboard` of it, stopped (with its agents) at the end. The one way the browser
    tests start a cloud."""
    _require_browser()
    _require_mosquitto()
    smtp = SmtpServer(_free_port())
    smtp.start()
    try:
        with FixtureBroker(root / "broker") as broker:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            database_url = f"sqlite:///{root / 'cloud.db'}"
            env = dict(
                os.environ,
                ENTITLE_DATA_DIR=str(root / "data"),
                ENTITLE_DATABASE_URL=database_url,
                ENTITLE_BROKER_URL=broker.url(broker.cloud_username),
                ENTITLE_HTTP_PORT=str(port),
                ENTITLE_PUBLIC_URL=url,
                ENTITLE_SMTP_HOST=smtp.host,
                ENTITLE_SMTP_PORT=str(smtp.port),
                ENTITLE_SMTP_SECURITY="none",
                ENTITLE_OUTBOX_INTERVAL_S="0.2",
                ENTITLE_WEB_ASSETS_DIR=str(ROOT / "node_modules"),
                **settings,
            )
            key = bootstrap_api_key(database_url, name="browser tests", now=int(time.time()))
            log = root / "cloud.log"
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "entitle.cli", "cloud", "serve"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            board = Dashboard(url=url, root=root, api=api, broker=broker, smtp=smtp)
            try:
                _wait_ready(url, process, log)
                yield board
            finally:
                for agent in board.agents:
                    agent.stop()
                for folder in board.agent_dirs:
                    shutil.rmtree(folder, ignore_errors=True)
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                api.close()
    finally:
        smtp.stop()


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """``entitle cloud serve`` with Mosquitto, SMTP and SQLite, seeded (see the module doc)."""
    with serve_cloud(tmp_path_factory.mktemp("dashboard")) as board:
        board.companies["invoice"] = board.call(
            "POST",
            "/companies",
            json={"name": "Noord Integratie BV", "payment_type": "invoice"},
        )["id"]
        board.companies["card"] = board.call(
            "POST", "/companies", json={"name": "Kaart Installaties", "payment_type": "card"}
        )["id"]
        board.new_user("admin", "admin")
        board.new_user("cs_admin", "cs_admin")
        board.new_user("support", "support")
        board.new_user("partner", "partner", company="invoice")
        board.new_user("card_partner", "partner", company="card")
        board.new_user("owner", "owner")
        board.new_user("other_owner", "owner")
        harbour = board.new_installation(
            "Harbour Office", owner="owner", integrators=("invoice", "card")
        )
        board.connect(harbour)
        board.new_installation("Villa Dune", owner="other_owner")
        yield board


@pytest.fixture(scope="module")
def browser(dashboard: Dashboard) -> Iterator[Any]:
    """Chromium for one test module. Not session-wide: Playwright's sync API keeps an event
    loop running while it is open, and an async test run meanwhile by the same pytest
    process (xdist interleaves modules) would find it ("cannot be called from a running
    event loop"); pytest tears a module's fixtures down before another module's test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


_PROBLEMS: dict[int, list[str]] = {}  # id(page) → CSP violations and script errors it logged


def _watch(page: Any) -> None:
    problems = _PROBLEMS.setdefault(id(page), [])

    def on_console(message: Any) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))


def answered(page: Any, status: int) -> None:
    """The page just loaded answered ``status`` on purpose (a refused form: 402 like the API,
    a page out of scope: 404); Chromium logs that as a console error, which ``shoot`` would
    count. Take exactly that one line off the page's problems, and nothing else."""
    page.wait_for_load_state("load")
    problems = _PROBLEMS.get(id(page), [])
    expected = [p for p in problems if f"status of {status} " in p]
    assert expected, f"the page did not answer {status}: {problems}"
    problems.remove(expected[0])


def sign_in(browser: Any, board: Dashboard, who: str, *, phone: bool = False) -> Any:
    """A page in a fresh browser context signed in to ``board`` as its user ``who`` (the
    caller closes ``page.context``)."""
    viewport = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
    context = browser.new_context(
        viewport=viewport, base_url=board.url, accept_downloads=True, locale="en-GB"
    )
    page = context.new_page()
    _watch(page)
    page.goto("/login")
    page.fill("#email", board.email(who))
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    return page


@pytest.fixture
def login(browser: Any, dashboard: Dashboard) -> Iterator[Callable[..., Any]]:
    """``login(who, *, phone=False) -> Page`` signed in as a seeded user (see :data:`ROLES`)."""
    pages: list[Any] = []

    def login_as(who: str, *, phone: bool = False) -> Any:
        pages.append(sign_in(browser, dashboard, who, phone=phone))
        return pages[-1]

    yield login_as
    for page in pages:
        page.context.close()


_SERIOUS = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations
    .filter(v => v.impact === "serious" || v.impact === "critical")
    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}));
}"""


@pytest.fixture
def shoot() -> Callable[[Any, str], Path]:
    """``shoot(page, name)``: screenshot, then no serious/critical axe violation, no CSP error."""

    def take(page: Any, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_load_state("load")
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        page.add_script_tag(url="/static/vendor/axe-core/axe.min.js")  # same origin: CSP allows
        violations = page.evaluate(_SERIOUS)
        assert not violations, f"{name}: accessibility violations:\n" + json.dumps(
            violations, indent=1
        )
        problems = _PROBLEMS.get(id(page), [])
        assert not problems, f"{name}: the page logged errors: {problems}"
        return path

    return take
