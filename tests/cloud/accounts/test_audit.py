"""The audit log: appended by every account change, filtered on read, refused UPDATE and DELETE."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.tables import AuditRow
from tests.cloud.harness import Cloud, client, new_user, user_api_key


async def test_record_and_filter(cloud: Cloud) -> None:
    store, now = cloud.state.store, cloud.clock.now
    admin = Principal(key_id=7, name="ops", role="admin")
    with store.transaction() as tx:
        audit.record(
            tx,
            actor=admin,
            action="subscription.create",
            object_type="subscription",
            object_id="12",
            before=None,
            after={"status": "active", "until": now + 10},
            now=now,
        )
        audit.record(
            tx,
            actor="system:renewals",
            action="subscription.renew",
            object_type="subscription",
            object_id="12",
            before={"until": now + 10},
            after={"until": now + 20},
            now=now + 5,
        )
        with pytest.raises(ValueError, match="audit action"):
            audit.record(
                tx,
                actor=admin,
                action="",
                object_type="x",
                object_id="1",
                before=None,
                after=None,
                now=now,
            )
    http = cloud.http
    rows = (await http.get("/api/v1/audit", params={"object_id": "12"})).json()
    assert [r["action"] for r in rows] == ["subscription.renew", "subscription.create"]
    assert rows[1]["actor"] == "apikey:7" and rows[1]["after"]["status"] == "active"
    assert rows[0]["actor"] == "system:renewals" and rows[0]["before"] == {"until": now + 10}
    only = (await http.get("/api/v1/audit", params={"actor": "system:renewals"})).json()
    assert [r["action"] for r in only] == ["subscription.renew"]
    window = (await http.get("/api/v1/audit", params={"since": now, "until": now + 5})).json()
    assert [r["action"] for r in window] == ["subscription.create"]
    paged = await http.get("/api/v1/audit", params={"object_id": "12", "limit": 1, "offset": 1})
    assert [r["action"] for r in paged.json()] == ["subscription.create"]
    assert (await http.get("/api/v1/audit", params={"action": "nothing"})).json() == []


async def test_only_cs_admin_and_admin_read_it(cloud: Cloud) -> None:
    for role, status in (("cs_admin", 200), ("support", 403), ("partner", 403), ("owner", 403)):
        async with client(cloud.app, user_api_key(cloud.app, new_user(cloud.app, role=role))) as h:
            assert (await h.get("/api/v1/audit")).status_code == status, role


async def test_the_database_refuses_update_and_delete(cloud: Cloud) -> None:
    new_user(cloud.app, role="owner")  # audited as user.create
    engine = cloud.state.store.engine
    for statement in ("UPDATE audit_log SET action = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    with pytest.raises(DBAPIError, match="append-only"), cloud.state.store.transaction() as tx:
        row = tx.query(AuditRow).first()
        assert row is not None
        tx.delete(row)
    with cloud.state.store.transaction() as tx:
        [row] = tx.query(AuditRow).all()
        assert row.action == "user.create"


def test_no_code_changes_or_deletes_audit_rows() -> None:
    cloud_dir = Path(__file__).resolve().parents[3] / "cloud"
    forbidden = re.compile(
        r"(update|delete)\(\s*AuditRow|UPDATE\s+audit_log|DELETE\s+FROM\s+audit_log", re.I
    )
    offenders = [
        str(path) for path in cloud_dir.rglob("*.py") if forbidden.search(path.read_text())
    ]
    assert offenders == []
