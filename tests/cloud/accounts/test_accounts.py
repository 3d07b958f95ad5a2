"""Accounts: users, companies, memberships, scoping, blacklist, contacts (SQLite and PostgreSQL).

Scoping answers 404 for an installation (or device) outside a partner's or
owner's scope, exactly as for one that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import httpx
import pytest

from cloud.accounts.apikeys import Principal
from cloud.accounts.users import company_payment_type, is_blacklisted, user_contact
from cloud.devices.access import ensure_installation_access
from cloud.errors import Blacklisted, Forbidden, UnknownCompany, UnknownInstallation, UnknownUser
from tests.cloud.harness import PASSWORD, Cloud, client, new_company, new_user, user_api_key


def _as(cloud: Cloud, user_id: int) -> httpx.AsyncClient:
    return client(cloud.app, user_api_key(cloud.app, user_id))


async def _partner_installation(cloud: Cloud, http: httpx.AsyncClient, name: str) -> str:
    response = await http.post("/api/v1/installations", json={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_partners_see_only_installations_their_company_integrates(cloud: Cloud) -> None:
    company_a, company_b = new_company(cloud.app, name="A"), new_company(cloud.app, name="B")
    alice = new_user(cloud.app, role="partner", company_id=company_a)
    alan = new_user(cloud.app, role="partner", company_id=company_a)  # same company
    bob = new_user(cloud.app, role="partner", company_id=company_b)
    async with _as(cloud, alice) as a, _as(cloud, alan) as a2, _as(cloud, bob) as b:
        inst_a = await _partner_installation(cloud, a, "A's shop")
        inst_b = await _partner_installation(cloud, b, "B's shop")
        device = (
            await a.post("/api/v1/devices", json={"installation_id": inst_a, "kind": "camera"})
        ).json()

        assert [i["id"] for i in (await a.get("/api/v1/installations")).json()] == [inst_a]
        assert [i["id"] for i in (await a2.get("/api/v1/installations")).json()] == [inst_a]
        assert [i["id"] for i in (await b.get("/api/v1/installations")).json()] == [inst_b]
        assert (await a2.get(f"/api/v1/installations/{inst_a}")).status_code == 200

        # B probing A's installation and device: the same 404 as for ids that do not exist
        for path in (f"/api/v1/installations/{inst_a}", f"/api/v1/installations/{inst_a}/members"):
            response = await b.get(path)
            assert response.status_code == 404 and inst_a in response.json()["detail"]
        missing = await b.get("/api/v1/installations/inst_nothere")
        assert missing.status_code == 404
        assert (await b.get(f"/api/v1/devices/{device['device_id']}")).status_code == 404
        assert (
            await b.get(f"/api/v1/devices/{device['device_id']}/entitlement")
        ).status_code == 404
        assert (await b.delete(f"/api/v1/devices/{device['device_id']}")).status_code == 404
        response = await b.post(
            "/api/v1/devices", json={"installation_id": inst_a, "kind": "camera"}
        )
        assert response.status_code == 404
        assert (await a.get(f"/api/v1/devices/{device['device_id']}")).status_code == 200

    # staff see both; the members of A's installation are company A
    all_ids = {i["id"] for i in (await cloud.http.get("/api/v1/installations")).json()}
    assert {inst_a, inst_b} <= all_ids
    members = (await cloud.http.get(f"/api/v1/installations/{inst_a}/members")).json()
    assert members == {
        "installation_id": inst_a,
        "owner_user_id": None,
        "integrator_company_ids": [company_a],
    }


async def test_several_integrators_and_exactly_one_owner(cloud: Cloud) -> None:
    inst = await cloud.installation("Hotel")
    c1, c2 = new_company(cloud.app, name="C1"), new_company(cloud.app, name="C2")
    owner1 = new_user(cloud.app, role="owner")
    owner2 = new_user(cloud.app, role="owner")
    partner2 = new_user(cloud.app, role="partner", company_id=c2)
    for company_id in (c1, c2, c2):  # adding twice changes nothing
        response = await cloud.http.post(
            f"/api/v1/installations/{inst}/integrators", json={"company_id": company_id}
        )
        assert response.status_code == 200, response.text
    assert response.json()["integrator_company_ids"] == [c1, c2]
    for owner in (owner1, owner2):
        response = await cloud.http.put(
            f"/api/v1/installations/{inst}/owner", json={"user_id": owner}
        )
        assert response.status_code == 200
    assert response.json()["owner_user_id"] == owner2  # replaced, not added

    refused = await cloud.http.put(
        f"/api/v1/installations/{inst}/owner", json={"user_id": partner2}
    )
    assert refused.status_code == 422 and "owner role" in refused.text

    async with _as(cloud, owner1) as o1, _as(cloud, owner2) as o2, _as(cloud, partner2) as p2:
        assert (await o1.get(f"/api/v1/installations/{inst}")).status_code == 404
        assert [i["id"] for i in (await o2.get("/api/v1/installations")).json()] == [inst]
        assert (await p2.get(f"/api/v1/installations/{inst}")).status_code == 200
        # an owner cannot add devices (no devices:write), a partner of an integrator can
        body = {"installation_id": inst, "kind": "gateway"}
        assert (await o2.post("/api/v1/devices", json=body)).status_code == 403
        assert (await p2.post("/api/v1/devices", json=body)).status_code == 201

    response = await cloud.http.delete(f"/api/v1/installations/{inst}/integrators/{c2}")
    assert response.json()["integrator_company_ids"] == [c1]
    async with _as(cloud, partner2) as p2:
        assert (await p2.get(f"/api/v1/installations/{inst}")).status_code == 404
    assert (
        await cloud.http.delete(f"/api/v1/installations/{inst}/integrators/{c2}")
    ).status_code == 404


async def test_support_looks_up_but_never_changes(cloud: Cloud) -> None:
    inst = await cloud.installation()
    support = new_user(cloud.app, role="support")
    customer = new_user(cloud.app, role="owner", email="Customer@Shop.example")
    async with _as(cloud, support) as s:
        assert (await s.get(f"/api/v1/installations/{inst}")).status_code == 200
        found = (await s.get("/api/v1/users", params={"email": "customer@shop"})).json()
        assert [u["id"] for u in found] == [customer]
        assert found[0]["email"] == "customer@shop.example"  # one address, one account
        response = await s.put(
            f"/api/v1/users/{customer}/blacklist", json={"blacklisted": True, "reason": "fraud"}
        )
        assert response.status_code == 403
        assert "only customer-service admins and admins blacklist" in response.json()["detail"]
        response = await s.post(
            f"/api/v1/installations/{inst}/grants", json={"feature": "x", "until": 1}
        )
        assert response.status_code == 403
        response = await s.patch(f"/api/v1/users/{customer}", json={"role": "admin"})
        assert response.status_code == 403
    with cloud.state.store.transaction() as tx:
        assert not is_blacklisted(tx, customer)
        principal = Principal(key_id=None, name="s", role="support", user_id=support)
        ensure_installation_access(tx, principal, inst, write=False)
        with pytest.raises(Forbidden, match="support agents look up installations"):
            ensure_installation_access(tx, principal, inst, write=True)


async def test_blacklist_by_cs_admin_stops_buying_not_looking(cloud: Cloud) -> None:
    cs_admin = new_user(cloud.app, role="cs_admin")
    company = new_company(cloud.app, name="Shady", payment_type="card")
    partner = new_user(cloud.app, role="partner", company_id=company)
    async with _as(cloud, partner) as p:
        inst = await _partner_installation(cloud, p, "shop")
    async with _as(cloud, cs_admin) as cs:
        response = await cs.put(
            f"/api/v1/companies/{company}/blacklist",
            json={"blacklisted": True, "reason": "chargebacks"},
        )
        assert response.status_code == 200 and response.json()["blacklisted"] is True
    with cloud.state.store.transaction() as tx:
        assert is_blacklisted(tx, partner)  # through the company
        assert company_payment_type(tx, company) == "card"
        principal = Principal(key_id=None, name="p", role="partner", user_id=partner)
        ensure_installation_access(tx, principal, inst, write=False)
        with pytest.raises(Blacklisted):
            ensure_installation_access(tx, principal, inst, write=True)
    async with _as(cloud, partner) as p:
        assert (await p.get(f"/api/v1/installations/{inst}")).status_code == 200
        response = await p.post("/api/v1/devices", json={"installation_id": inst, "kind": "camera"})
        assert response.status_code == 403 and "blacklisted" in response.json()["detail"]
    response = await cloud.http.put(
        f"/api/v1/companies/{company}/blacklist", json={"blacklisted": False, "reason": "paid"}
    )
    assert response.json()["blacklisted"] is False
    with cloud.state.store.transaction() as tx:
        assert not is_blacklisted(tx, partner)
    actions = [
        e["action"] for e in (await cloud.http.get("/api/v1/audit?object_type=company")).json()
    ]
    assert actions[:2] == ["company.unblacklist", "company.blacklist"]


async def test_users_crud_and_admin_accounts_only_by_admins(cloud: Cloud) -> None:
    cs_admin = new_user(cloud.app, role="cs_admin")
    company = (
        await cloud.http.post(
            "/api/v1/companies",
            json={"name": "Integra", "partner_id": "P-42", "payment_type": "invoice"},
        )
    ).json()
    assert company["partner_id"] == "P-42"
    again = await cloud.http.post(
        "/api/v1/companies", json={"name": "x", "partner_id": "P-42", "payment_type": "card"}
    )
    assert again.status_code == 409
    assert [
        c["id"] for c in (await cloud.http.get("/api/v1/companies?partner_id=P-42")).json()
    ] == [company["id"]]
    async with _as(cloud, cs_admin) as cs:
        body = {
            "email": "pat@integra.example",
            "name": "Pat",
            "password": PASSWORD,
            "role": "partner",
            "company_id": company["id"],
        }
        created = await cs.post("/api/v1/users", json=body)
        assert created.status_code == 201, created.text
        user = created.json()
        assert set(user) == {
            "id",
            "email",
            "name",
            "role",
            "company_id",
            "blacklisted",
            "created_at",
            "disabled_at",
            "phone",
        }
        assert (await cs.post("/api/v1/users", json=body)).status_code == 409
        assert (
            await cs.post(
                "/api/v1/users", json={**body, "email": "x@y.example", "company_id": None}
            )
        ).status_code == 422
        assert (
            await cs.post(
                "/api/v1/users", json={**body, "email": "x@y.example", "password": "short"}
            )
        ).status_code == 422
        response = await cs.post(
            "/api/v1/users",
            json={**body, "email": "boss@y.example", "role": "admin", "company_id": None},
        )
        assert response.status_code == 403 and "only an admin" in response.json()["detail"]
        # a role change drops the company and is audited as a role change
        changed = await cs.patch(f"/api/v1/users/{user['id']}", json={"role": "owner"})
        assert changed.json()["role"] == "owner" and changed.json()["company_id"] is None
        disabled = await cs.delete(f"/api/v1/users/{user['id']}")
        assert disabled.json()["disabled_at"] == cloud.clock.now
        assert (await cs.get("/api/v1/users/99999")).status_code == 404
        assert (await cs.get("/api/v1/audit")).status_code == 200
    promoted = await cloud.http.post(
        "/api/v1/users",
        json={**body, "email": "boss@y.example", "role": "admin", "company_id": None},
    )
    assert promoted.status_code == 201  # an admin may
    entries = (
        await cloud.http.get(f"/api/v1/audit?object_type=user&object_id={user['id']}")
    ).json()
    assert [e["action"] for e in entries] == ["user.disable", "user.role", "user.create"]
    role_change = entries[1]
    assert (role_change["before"]["role"], role_change["after"]["role"]) == ("partner", "owner")
    assert role_change["actor"] == f"user:{cs_admin}"
    with cloud.state.store.transaction() as tx:
        contact = user_contact(tx, user["id"])
        assert (contact.email, contact.name, contact.company_id) == (
            "pat@integra.example",
            "Pat",
            None,
        )
        with pytest.raises(UnknownUser):
            user_contact(tx, 99999)
        with pytest.raises(UnknownCompany):
            company_payment_type(tx, 99999)
        assert company_payment_type(tx, company["id"]) == "invoice"


async def test_contacts_leave_out_vendor_staff(cloud: Cloud) -> None:
    inst = await cloud.installation()
    company = new_company(cloud.app)
    owner = new_user(cloud.app, role="owner", email="owner@home.example")
    partner = new_user(
        cloud.app, role="partner", company_id=company, email="fitter@integra.example"
    )
    new_user(cloud.app, role="partner", company_id=company, email="helper@ENTITLE.example")
    await cloud.http.put(f"/api/v1/installations/{inst}/owner", json={"user_id": owner})
    await cloud.http.post(f"/api/v1/installations/{inst}/integrators", json={"company_id": company})
    support = new_user(cloud.app, role="support")
    async with _as(cloud, support) as s:
        contacts = (await s.get(f"/api/v1/installations/{inst}/contacts")).json()
        assert {c["user_id"]: c["email"] for c in contacts} == {
            owner: "owner@home.example",
            partner: "fitter@integra.example",
        }
        assert (await s.get("/api/v1/installations/inst_none/contacts")).status_code == 404
    with cloud.state.store.transaction() as tx:
        with pytest.raises(UnknownInstallation):
            ensure_installation_access(
                tx, Principal(key_id=1, name="k", role="admin"), "inst_none", write=False
            )


async def test_an_api_key_for_a_user_acts_as_that_user_and_is_audited(cloud: Cloud) -> None:
    owner = new_user(cloud.app, role="owner")
    response = await cloud.http.post(f"/api/v1/users/{owner}/api-keys", params={"name": "app"})
    assert response.status_code == 201, response.text
    created = response.json()
    async with client(cloud.app, created["key"]) as http:
        me = (await http.get("/api/v1/auth/me")).json()
    assert (me["role"], me["user"]["id"], me["api_key_id"]) == ("owner", owner, created["id"])
    [entry] = (await cloud.http.get("/api/v1/audit", params={"action": "apikey.create"})).json()
    assert entry["object_id"] == str(owner) and created["key"] not in str(entry)
    missing = await cloud.http.post("/api/v1/users/9999/api-keys", params={"name": "x"})
    assert missing.status_code == 404
