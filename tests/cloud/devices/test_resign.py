"""The token re-sign queue and the entitlement outbox, through the running app.

- a device queued twice is signed once, with the grants as they are when
  the queue is drained;
- a device whose token already stops the ended service by its own ``until``
  is skipped (nothing changes on the device before its token expires);
- the counters show the queue, the outbox and what was signed or skipped;
- a grant commits its grant, tokens, audit entry and outbox rows together:
  a crash after that commit and before the publish leaves the outbox rows,
  and the refresh job publishes them (marked published, outbox empty);
- two PostgreSQL drainers whose transactions overlap claim disjoint devices.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from cloud.accounts.tables import AuditRow
from cloud.database import Store
from cloud.devices import queries
from cloud.devices.issuing import IssuingService
from cloud.devices.rules import DeviceKind, GrantStatus
from cloud.devices.tables import GrantRow, OutboxRow, TokenRow
from cloud.settings import CloudSettings
from cloud.testing import PublisherSimulator
from protocol.token import verify_token
from tests.cloud.harness import DAY, Cloud


@pytest.fixture
def settings(settings: CloudSettings) -> CloudSettings:
    """The app's own re-sign job stays out of the way: each test drains when it means to."""
    return settings.model_copy(update={"resign_interval_s": 3600.0})


def _queue(cloud: Cloud, *device_ids: str) -> None:
    with cloud.state.store.transaction() as tx:
        queries.enqueue_resign(tx, list(device_ids), now=cloud.clock())


def _set_grant(cloud: Cloud, inst: str, feature: str, until: int) -> None:
    """Change a grant in the database only (as a sweep does), without issuing."""
    with cloud.state.store.transaction() as tx:
        queries.upsert_grant(
            tx,
            installation_id=inst,
            feature=feature,
            until=until,
            params={},
            source="subscription",
            now=cloud.clock(),
        )


def _tokens(cloud: Cloud, device_id: str) -> int:
    with cloud.state.store.transaction() as tx:
        query = select(func.count()).select_from(TokenRow).where(TokenRow.device_id == device_id)
        return int(tx.scalar(query) or 0)


async def _ent(cloud: Cloud, device_id: str) -> dict[str, int]:
    token = cloud.publisher.entitlement(device_id)
    assert token is not None
    claims = verify_token(
        token, key_for=(await cloud.keyset()).token_key, device_id=device_id, now=cloud.clock()
    )
    return {name: f.until for name, f in claims.ent.items()}


async def test_a_device_queued_twice_is_signed_once_with_the_newest_grants(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    service = cloud.state.service
    before = service.resign_counters()
    _set_grant(cloud, inst, "remote", cloud.clock() + 30 * DAY)
    _queue(cloud, device_id)
    _set_grant(cloud, inst, "remote", cloud.clock() + 60 * DAY)
    _queue(cloud, device_id)
    assert service.resign_counters().queued == 1

    done = await service.drain_resign(limit=100, refresh_before_s=3 * DAY)
    assert (done.claimed, len(done.issued), done.skipped) == (1, 1, 0)
    assert done.issued[0].published and done.issued[0].ver == 2
    assert await _ent(cloud, device_id) == {"remote": cloud.clock() + 60 * DAY}
    after = service.resign_counters()
    assert (after.queued, after.outbox) == (0, 0)
    assert (after.signed - before.signed, after.skipped - before.skipped) == (1, 0)
    assert after.published - before.published == 1
    again = await service.drain_resign(limit=100, refresh_before_s=3 * DAY)
    assert again.claimed == 0 and _tokens(cloud, device_id) == 2


async def test_a_token_whose_until_already_lapsed_is_not_signed_again(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    grants = f"/api/v1/installations/{inst}/grants"
    r = await cloud.http.post(grants, json={"feature": "remote", "until": cloud.clock() + DAY})
    assert r.status_code in (200, 201), r.text
    cloud.clock.advance(DAY)
    with cloud.state.store.transaction() as tx:  # the sweep ends the grant at its until
        queries.end_grant(
            tx, installation_id=inst, feature="remote", status=GrantStatus.ENDED, now=cloud.clock()
        )
    _queue(cloud, device_id)
    service = cloud.state.service
    before = service.resign_counters()
    done = await service.drain_resign(limit=100, refresh_before_s=3 * DAY)
    assert (done.claimed, done.issued, done.skipped) == (1, (), 1)
    assert _tokens(cloud, device_id) == 2  # the first and the grant's: none for the expiry
    after = service.resign_counters()
    assert (after.queued, after.skipped - before.skipped, after.signed - before.signed) == (0, 1, 0)

    # a change the token does not already carry is signed: a new feature
    _set_grant(cloud, inst, "voice", cloud.clock() + 30 * DAY)
    _queue(cloud, device_id)
    done = await service.drain_resign(limit=100, refresh_before_s=3 * DAY)
    assert (len(done.issued), done.skipped) == (1, 0)
    assert await _ent(cloud, device_id) == {"voice": cloud.clock() + 30 * DAY}


class _Crash(BaseException):
    """The process dies here (not an error anyone catches)."""


class _CrashingPublisher(PublisherSimulator):
    async def publish_entitlement(self, device_id: str, token: bytes, *, expiry_s: int) -> None:
        raise _Crash


async def test_a_crash_between_commit_and_publish_is_published_from_the_outbox(
    cloud: Cloud,
) -> None:
    inst = await cloud.installation()
    ids = sorted([(await cloud.device(inst))["device_id"] for _ in range(2)])
    state = cloud.state
    dying = IssuingService(
        state.store,
        state.signer,
        _CrashingPublisher(),
        cloud.accounts,
        ttl_s=state.settings.token_ttl_s,
        clock=cloud.clock,
    )
    until = cloud.clock() + 90 * DAY
    with pytest.raises(_Crash):
        await dying.grant(inst, "remote", until=until, params={}, actor="system:test")

    with state.store.transaction() as tx:  # one transaction committed all of it
        [grant] = tx.scalars(select(GrantRow).where(GrantRow.installation_id == inst)).all()
        assert (grant.feature, grant.valid_until) == ("remote", until)
        [entry] = tx.scalars(select(AuditRow).where(AuditRow.action == "grant.set")).all()
        assert entry.object_id == inst and entry.actor == "system:test"
        current = queries.current_tokens(tx, ids)
        assert {t.published_at for t in current.values()} == {None}
        waiting = set(tx.scalars(select(OutboxRow.token_id)))
        assert waiting == {t.id for t in current.values()}
    for device_id in ids:
        assert await _ent(cloud, device_id) == {}  # the broker still holds the old token

    job = state.refresh_job
    assert (await job.run_once()).republished == ()  # within the grace: maybe in flight
    cloud.clock.advance(60)
    report = await job.run_once()
    assert sorted(i.device_id for i in report.republished) == ids
    for device_id in ids:
        assert await _ent(cloud, device_id) == {"remote": until}
    with state.store.transaction() as tx:
        assert tx.scalar(select(func.count()).select_from(OutboxRow)) == 0
        assert all(t.published_at is not None for t in queries.current_tokens(tx, ids).values())
    assert (await job.run_once()).republished == ()


def test_two_postgresql_drainers_claim_disjoint_devices(cloud_postgres_url: str) -> None:
    """Overlapping transactions: the second claim skips the first's rows (no wait)."""
    from tests.cloud.conftest import _empty_tables

    _empty_tables(cloud_postgres_url)
    first = Store.open(cloud_postgres_url)
    second = Store.open(cloud_postgres_url, migrate=False)
    try:
        with first.transaction() as tx:
            queries.add_installation(tx, installation_id="inst", name="x", now=0)
            for i in range(10):
                queries.add_device(
                    tx,
                    device_id=f"gw-{i}",
                    installation_id="inst",
                    kind=DeviceKind.GATEWAY,
                    password_hash="x",
                    now=0,
                )
            queries.enqueue_resign(tx, [f"gw-{i}" for i in range(10)], now=0)
        held, took = threading.Event(), threading.Event()
        claims: dict[str, list[str]] = {}

        def hold() -> None:
            with first.transaction() as tx:
                claims["a"] = queries.claim_resign(tx, limit=4)
                held.set()
                assert took.wait(20), "the second drainer waited for the first's rows"

        def skip() -> None:
            assert held.wait(20)
            with second.transaction() as tx:
                claims["b"] = queries.claim_resign(tx, limit=4)
            took.set()

        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(hold), pool.submit(skip)]:
                f.result(timeout=40)
        assert len(claims["a"]) == len(claims["b"]) == 4
        assert not set(claims["a"]) & set(claims["b"])
    finally:
        first.close()
        second.close()
