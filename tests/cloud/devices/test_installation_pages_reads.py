"""What the installation pages read from InstallationService (SQLite and PostgreSQL):
the scoped list with search, sort, page and total, and who works on an installation."""

from __future__ import annotations

import pytest

from cloud.accounts.apikeys import Principal
from cloud.devices import memberships
from cloud.errors import UnknownInstallation
from tests.cloud.harness import Cloud, new_company, new_user

ADMIN = Principal(key_id=1, name="admin", role="admin")


async def test_listing_is_scoped_searchable_sorted_and_counted(cloud: Cloud) -> None:
    service = cloud.state.installations
    assert service is not None
    names = ["Bakery 100%", "Alpha Shop", "cafe_zeta", "Dairy"]
    ids = {name: await cloud.installation(name) for name in names}
    await cloud.device(ids["Dairy"])
    await cloud.device(ids["Dairy"], kind="camera")
    await cloud.device(ids["Alpha Shop"])

    every = service.listing(ADMIN, sort="name")
    assert [i.name for i in every.items] == ["Alpha Shop", "Bakery 100%", "cafe_zeta", "Dairy"]
    assert every.total == 4
    by_devices = service.listing(ADMIN, sort="devices", descending=True)
    assert [(i.name, i.devices) for i in by_devices.items][:2] == [("Dairy", 2), ("Alpha Shop", 1)]
    page = service.listing(ADMIN, sort="name", limit=2, offset=2)
    assert [i.name for i in page.items] == ["cafe_zeta", "Dairy"] and page.total == 4
    # search: case-insensitive, name or id, and % and _ are plain characters
    assert [i.name for i in service.listing(ADMIN, search="SHOP").items] == ["Alpha Shop"]
    assert [i.name for i in service.listing(ADMIN, search="100%").items] == ["Bakery 100%"]
    assert [i.name for i in service.listing(ADMIN, search="e_z").items] == ["cafe_zeta"]
    assert service.listing(ADMIN, search="%").total == 1  # not "anything"
    assert [i.name for i in service.listing(ADMIN, search=ids["Dairy"][-6:]).items] == ["Dairy"]

    company = new_company(cloud.app, name="Integrators BV", payment_type="card")
    partner = new_user(cloud.app, role="partner", company_id=company)
    owner = new_user(cloud.app, role="owner", email="owner@home.example")
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, ids["Dairy"], company, actor="system:tests", now=1)
        memberships.set_owner(tx, ids["Alpha Shop"], owner, actor="system:tests", now=1)
    as_partner = Principal(key_id=None, name="p", role="partner", user_id=partner)
    as_owner = Principal(key_id=None, name="o", role="owner", user_id=owner)
    assert [i.name for i in service.listing(as_partner).items] == ["Dairy"]
    assert service.listing(as_partner).total == 1
    assert [i.name for i in service.listing(as_owner).items] == ["Alpha Shop"]

    people = service.people(as_partner, ids["Dairy"])
    assert people.owner is None
    assert [(i.name, i.payment_type) for i in people.integrators] == [("Integrators BV", "card")]
    people = service.people(ADMIN, ids["Alpha Shop"])
    assert people.owner is not None and people.owner.email == "owner@home.example"
    assert people.integrators == ()
    with pytest.raises(UnknownInstallation):
        service.people(as_owner, ids["Dairy"])
