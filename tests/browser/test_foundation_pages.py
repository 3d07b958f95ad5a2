"""The dashboard's shared pages in a real browser: sign-in, the error page, /docs offline."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import PASSWORD, Dashboard


def test_sign_in_page_reads_well_and_signs_in(
    browser: Any, dashboard: Dashboard, shoot: Any
) -> None:
    context = browser.new_context(base_url=dashboard.url, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto("/login")
        shoot(page, "login-anonymous")
        page.fill("#email", dashboard.email("owner"))
        page.fill("#password", "not the password")
        page.click("button[type=submit]")
        assert page.locator("[role=alert]").inner_text() == "Wrong e-mail address or password."
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        page.goto("/no/such/page")
        assert page.locator("h1").inner_text() == "Not found"
        shoot(page, "not-found-owner")
    finally:
        context.close()


def test_sign_in_page_in_dutch(browser: Any, dashboard: Dashboard, shoot: Any) -> None:
    context = browser.new_context(base_url=dashboard.url, locale="nl-NL")
    try:
        page = context.new_page()
        page.goto("/login")
        assert page.locator("h1").inner_text() == "Inloggen bij Entitle"
        shoot(page, "login-anonymous-nl")
    finally:
        context.close()


def test_api_docs_render_with_no_network(browser: Any, dashboard: Dashboard) -> None:
    """Every request /docs makes stays on this server, and Swagger UI renders the API."""
    context = browser.new_context(base_url=dashboard.url, offline=False)
    elsewhere: list[str] = []
    context.route(
        lambda url: not url.startswith(dashboard.url),
        lambda route: (elsewhere.append(route.request.url), route.abort()),
    )
    try:
        page = context.new_page()
        page.goto("/docs")
        page.wait_for_selector(".opblock-tag", timeout=30_000)
        assert page.locator(".opblock-tag").count() > 5
        assert elsewhere == []
    finally:
        context.close()
