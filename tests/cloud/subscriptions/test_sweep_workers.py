"""Two sweepers at once: every due subscription is ticked exactly once.

PostgreSQL: two sessions on two engines, in two threads. The first claims a
batch and keeps its transaction open until the second has claimed too: with
``SKIP LOCKED`` the second takes other rows at once (without it, it would wait
for the first's locks, and the test fails on its timeout instead of hanging).
Then both run free until nothing is due. SQLite runs the free part: its
``BEGIN IMMEDIATE`` lets one sweeper write at a time, and the next one reads
the new ``due_at``.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm.exc import StaleDataError

from cloud.accounts.rules import Role
from cloud.accounts.tables import AuditRow
from cloud.accounts.users import create_user
from cloud.database import Store
from cloud.devices.rules import DeviceKind, GrantStatus
from cloud.devices.tables import DeviceRow, GrantRow, InstallationRow, ResignRow
from cloud.notifications.tables import NotificationRow
from cloud.subscriptions import queries as rows
from cloud.subscriptions.rules.catalogue import product
from cloud.subscriptions.rules.lifecycle import Status, Subscription
from cloud.subscriptions.sweep import sweep_batch
from cloud.subscriptions.tables import SubscriptionRow

END = 1_801_440_000  # 2027-02-01T00:00:00Z
ITEM = product("TSF16100")
N = 600
BATCH = 50
WAIT_S = 20  # a sweeper blocked on the other's locks fails here instead of hanging


def _seed(store: Store) -> None:
    with store.transaction() as tx:
        buyer = create_user(
            tx,
            email="owner@example.com",
            name="Owner",
            password="correct horse battery staple",
            role=Role.OWNER,
            company_id=None,
            actor="test",
            now=END - 400 * 86400,
        ).id
    subs = [
        Subscription(
            id=f"sub_{i:05d}",
            installation_id=f"inst-{i:05d}",
            product=ITEM,
            purchaser=buyer,
            status=Status.ACTIVE,
            term_months=12,
            start=END - 365 * 86400,
            end=END,
            notice_for=END,
            attempts=11,
        )
        for i in range(N)
    ]
    with store.engine.begin() as c:
        c.execute(
            insert(InstallationRow),
            [{"id": s.installation_id, "name": "x", "created_at": 0} for s in subs],
        )
        c.execute(
            insert(DeviceRow),
            [
                {
                    "id": f"gw-{i:05d}",
                    "installation_id": s.installation_id,
                    "kind": DeviceKind.GATEWAY,
                    "mqtt_password_hash": "x",
                    "created_at": 0,
                }
                for i, s in enumerate(subs)
            ],
        )
        c.execute(
            insert(GrantRow),
            [
                {
                    "installation_id": s.installation_id,
                    "feature": ITEM.feature,
                    "params": dict(ITEM.params),
                    "valid_until": END,
                    "source": "subscription",
                    "status": GrantStatus.ACTIVE,
                    "created_at": 0,
                    "updated_at": 0,
                    "ended_at": None,
                }
                for s in subs
            ],
        )
        c.execute(
            insert(SubscriptionRow),
            [
                {
                    "id": s.id,
                    "pay_with": "card",
                    "card_token": "tok",
                    "created_at": 0,
                    "version": 1,
                    **rows.row_values(s, now=0),
                }
                for s in subs
            ],
        )


def _sweep_until_done(store: Store, now: int) -> int:
    ticked = 0
    while True:
        with store.transaction() as tx:
            done = sweep_batch(tx, now=now, limit=BATCH, actor="system:renewals")
        ticked += done.ticked
        if done.selected == 0:
            return ticked


def _assert_each_expired_once(store: Store) -> None:
    with store.transaction() as tx:
        ticks = Counter(
            tx.scalars(select(AuditRow.object_id).where(AuditRow.action == "subscription.tick"))
        )
        assert len(ticks) == N and set(ticks.values()) == {1}
        statuses = Counter(tx.scalars(select(SubscriptionRow.status)))
        assert statuses == {Status.EXPIRED: N}
        mails = tx.scalar(
            select(func.count())
            .select_from(NotificationRow)
            .where(NotificationRow.kind == "expired")
        )
        assert mails == N
        ended = tx.scalar(
            select(func.count()).select_from(GrantRow).where(GrantRow.status == GrantStatus.ENDED)
        )
        assert ended == N
        assert tx.scalar(select(func.count()).select_from(ResignRow)) == N


def _run_two(stores: list[Store], now: int) -> list[int]:
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda s: _sweep_until_done(s, now), stores))


def test_two_postgresql_sweepers_skip_each_others_rows(postgres_url: str) -> None:
    first, second = Store.open(postgres_url), Store.open(postgres_url, migrate=False)
    try:
        _seed(first)
        now = END + 1
        a_claimed, b_claimed = threading.Event(), threading.Event()
        claimed: dict[str, set[str]] = {}

        def hold(store: Store) -> None:
            with store.transaction() as tx:
                sweep_batch(tx, now=now, limit=BATCH, actor="system:renewals")
                claimed["a"] = _ticked_in(tx)
                a_claimed.set()
                assert b_claimed.wait(WAIT_S), "the second sweeper never got its batch"

        def skip(store: Store) -> None:
            assert a_claimed.wait(WAIT_S)
            with store.transaction() as tx:
                sweep_batch(tx, now=now, limit=BATCH, actor="system:renewals")
                claimed["b"] = _ticked_in(tx)
            b_claimed.set()

        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(hold, first), pool.submit(skip, second)]:
                f.result(timeout=2 * WAIT_S)
        assert len(claimed["a"]) == len(claimed["b"]) == BATCH
        assert not claimed["a"] & claimed["b"]

        ticked = _run_two([first, second], now)
        assert sum(ticked) == N - 2 * BATCH
        _assert_each_expired_once(first)
    finally:
        first.close()
        second.close()


def _ticked_in(tx: object) -> set[str]:
    """The subscriptions this transaction has ticked so far (its own audit rows)."""
    query = select(AuditRow.object_id).where(AuditRow.action == "subscription.tick")
    return set(tx.scalars(query))  # type: ignore[attr-defined]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_free_running_sweepers_tick_each_subscription_once(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("postgres_url")
        if database == "postgresql"
        else f"sqlite:///{tmp_path / 'cloud.db'}"
    )
    first, second = Store.open(url), Store.open(url, migrate=False)
    try:
        _seed(first)
        ticked = _run_two([first, second], END + 1)
        assert sum(ticked) == N
        _assert_each_expired_once(first)
    finally:
        first.close()
        second.close()


def test_a_row_changed_under_the_batch_fails_it_and_nothing_is_written(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's UPDATE is version-checked: a row whose version moved between the claim
    and the write (what another writer's commit does) is not matched, the batch raises
    and its transaction writes nothing; the next pass ticks every row."""
    store = Store.open(database_url)
    try:
        _seed(store)
        load, bumped = rows.load, []

        with pytest.raises(StaleDataError, match="1 of 50 subscriptions changed"):
            with store.transaction() as tx:

                def load_after_a_bump(row: object) -> Subscription:
                    if not bumped:  # another writer, inside the claim's window
                        bumped.append(row.id)  # type: ignore[attr-defined]
                        tx.execute(
                            update(SubscriptionRow)
                            .where(SubscriptionRow.id == row.id)  # type: ignore[attr-defined]
                            .values(version=SubscriptionRow.version + 1)
                        )
                    return load(row)

                monkeypatch.setattr(rows, "load", load_after_a_bump)
                sweep_batch(tx, now=END + 1, limit=BATCH, actor="system:renewals")
        monkeypatch.setattr(rows, "load", load)
        with store.transaction() as tx:
            assert not _ticked_in(tx)
            assert tx.scalar(select(func.count()).select_from(ResignRow)) == 0
            statuses = Counter(tx.scalars(select(SubscriptionRow.status)))
            assert statuses == {Status.ACTIVE: N}
        assert _sweep_until_done(store, END + 1) == N
        _assert_each_expired_once(store)
    finally:
        store.close()
