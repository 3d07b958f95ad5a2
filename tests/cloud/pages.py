"""Helpers for page tests without a browser: sign in as a role, read a page's CSRF token,
its lines table, and the text of a PDF it serves."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pypdf
from fastapi import FastAPI

from tests.cloud.harness import PASSWORD, new_user

__all__ = ["csrf_of", "line_rows", "pdf_text", "signed_in"]

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found is not None, f"no CSRF field on the page: {html[:300]}"
    return found.group(1)


_LINE_ROW = re.compile(r'<tr id="line-\d+"[^>]*>(.*?)</tr>', re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def line_rows(html: str) -> list[str]:
    """The text of each row of an order page's lines table (one row per line), tags and
    runs of white space made single spaces."""
    return [" ".join(_TAG.sub(" ", row).split()) for row in _LINE_ROW.findall(html)]


def pdf_text(pdf: bytes) -> str:
    """The text of a PDF (an invoice, a shipping slip), its pages one after the other."""
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


@asynccontextmanager
async def signed_in(
    app: FastAPI, *, role: str, email: str | None = None, company_id: int | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    """A browser-like client (cookies kept) signed in as a new user of ``role``; and its id:
    ``async with signed_in(app, role="owner") as (http, user_id): ...``."""
    user_id = new_user(app, role=role, email=email, company_id=company_id)
    from cloud.app import CloudState  # noqa: PLC0415  (type only)

    state: CloudState = app.state.cloud
    with state.store.transaction() as tx:
        from cloud.accounts.tables import UserRow  # noqa: PLC0415

        address = tx.get(UserRow, user_id).email  # type: ignore[union-attr]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://cloud", follow_redirects=False
    ) as http:
        form = await http.get("/login")
        got = await http.post(
            "/login",
            data={
                "csrf_token": csrf_of(form.text),
                "email": address,
                "password": PASSWORD,
                "next": "/",
            },
        )
        assert got.status_code == 303, got.text[:500]
        yield http, user_id
