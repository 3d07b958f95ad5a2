"""The installations pages without a browser: the scoped list (search, sort, page), one
installation with its devices and people, and the same "not found" page for an
installation out of scope as for one that does not exist."""

from __future__ import annotations

import re

import pytest

from cloud.devices import memberships
from tests.cloud.conftest import Cloud
from tests.cloud.harness import new_company
from tests.cloud.pages import signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _set_owner(cloud: Cloud, installation_id: str, user_id: int) -> None:
    with cloud.state.store.transaction() as tx:
        memberships.set_owner(tx, installation_id, user_id, actor="system:tests", now=1)


def _body(html: str) -> str:
    """The page's main content, without what differs per request (the CSRF token)."""
    main = re.search(r"<main.*?</main>", html, re.S)
    assert main is not None
    return main.group(0)


async def test_owner_sees_only_its_installation_and_others_are_not_found(cloud: Cloud) -> None:
    mine = await cloud.installation("Home of the owner")
    theirs = await cloud.installation("Somebody else's shop")
    await cloud.device(mine)
    await cloud.device(mine, kind="camera")
    async with signed_in(cloud.app, role="owner", email="owner@home.example") as (http, uid):
        _set_owner(cloud, mine, uid)
        listing = await http.get("/installations")
        assert listing.status_code == 200
        assert "Home of the owner" in listing.text and "Somebody else" not in listing.text
        page = await http.get(f"/installations/{mine}")
        assert page.status_code == 200
        assert "Home of the owner" in page.text and "owner@home.example" in page.text
        assert page.text.count('href="/devices/') == 2
        assert "1 of 10 controllers" in page.text  # the camera is no controller

        other = await http.get(f"/installations/{theirs}")
        missing = await http.get("/installations/inst_0000000000000000")
        assert other.status_code == missing.status_code == 404
        assert _body(other.text) == _body(missing.text)
        assert theirs not in other.text and "Somebody else" not in other.text


async def test_list_searches_sorts_and_pages_for_a_partner(cloud: Cloud) -> None:
    company = new_company(cloud.app, name="Fitters BV", payment_type="invoice")
    ids = [await cloud.installation(f"Site {n:02d}") for n in range(30)]
    await cloud.installation("Not theirs")
    with cloud.state.store.transaction() as tx:
        for inst in ids:
            memberships.add_integrator(tx, inst, company, actor="system:tests", now=1)
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        first = await http.get("/installations")
        assert first.status_code == 200
        assert "Site 00" in first.text and "Site 25" not in first.text
        assert "Not theirs" not in first.text
        assert "Page 1 of 2 (30 in all)" in first.text
        second = await http.get("/installations?page=2")
        assert "Site 29" in second.text and "Site 00" not in second.text
        backwards = await http.get("/installations?sort=name&dir=desc")
        assert backwards.text.index("Site 29") < backwards.text.index("Site 28")
        found = await http.get("/installations?q=site+07")
        assert "Site 07" in found.text and "Site 08" not in found.text
        nothing = await http.get("/installations?q=zzz")
        assert "No installation matches" in nothing.text
        # strict inputs: an unknown sort or parameter is refused, not ignored
        assert (await http.get("/installations?sort=secret")).status_code == 422
        assert (await http.get("/installations?debug=1")).status_code == 422


async def test_pages_need_a_login(cloud: Cloud) -> None:
    inst = await cloud.installation()
    async with signed_in(cloud.app, role="admin") as (http, _):
        assert (await http.get(f"/installations/{inst}")).status_code == 200
    from tests.cloud.harness import client

    async with client(cloud.app) as anonymous:
        got = await anonymous.get(f"/installations/{inst}")
        assert got.status_code in (303, 307) and got.headers["location"].startswith("/login")
