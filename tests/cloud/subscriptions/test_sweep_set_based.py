"""The set-based renewal sweep writes exactly what the per-row path writes, on generated data.

The per-row path is the one every other event takes: for each due row, the
pure rule's :class:`Tick` and :meth:`SubscriptionService.commit` (ORM save,
audit entry, grant upsert or end, e-mail, devices to re-issue). The
set-based path is :func:`cloud.subscriptions.sweep.sweep_batch`. Both run on
copies of one SQLite database seeded with the same generated subscriptions
(any status, term, product, charge and retry state, around the term's end),
grants and devices; every table they write must come out equal, the devices
to re-sign must be the devices to re-issue, and the charges the same keys.

Both write a transition's audit entry, grants and mails through one writer
(:mod:`cloud.subscriptions.effects`), for one row or a batch; what differs, and
is compared here, is the rest: the rule applied once per group of rows with
placeholder identities against once per row on the row itself, each group's mail
filled in per row, and the bulk ``UPDATE`` against the ORM's save.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from cloud.accounts.rules import Role
from cloud.accounts.tables import AuditRow
from cloud.accounts.users import create_user
from cloud.database import Store
from cloud.devices.rules import DeviceKind, GrantStatus
from cloud.devices.tables import DeviceRow, GrantRow, InstallationRow, ResignRow
from cloud.notifications.tables import NotificationRow
from cloud.subscriptions import queries as rows
from cloud.subscriptions.rules.calendar import DAY_S, add_months
from cloud.subscriptions.rules.catalogue import CATALOGUE
from cloud.subscriptions.rules.lifecycle import Charge, Status, Subscription, Tick, apply
from cloud.subscriptions.service import SubscriptionService
from cloud.subscriptions.sweep import sweep_batch
from cloud.subscriptions.tables import SubscriptionRow
from tests.cloud.conftest import _empty_tables

BASE = 1_798_761_600  # 2027-01-01T00:00:00Z
ACTOR = "system:renewals"
CODES = sorted(CATALOGUE)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A migrated database with two purchasers, copied for every example."""
    path = tmp_path_factory.mktemp("sweep") / "template.db"
    store = Store.open(f"sqlite:///{path}")
    _purchasers(store)
    store.close()
    yield path


_sub = st.fixed_dictionaries(
    {
        "inst": st.integers(0, 5),
        "code": st.sampled_from(CODES),
        "purchaser": st.sampled_from([1, 2]),
        "status": st.sampled_from(list(Status)),
        "end_months": st.integers(-1, 3),
        "awaiting_payment": st.booleans(),
        "auto_renew": st.booleans(),
        "noticed": st.booleans(),
        "attempts": st.integers(0, 3),
        "charging": st.one_of(st.none(), st.integers(0, 3)),
        "sent_ago": st.one_of(st.none(), st.integers(0, 2 * 3600)),
        "retry_in": st.one_of(st.none(), st.integers(-5 * DAY_S, 5 * DAY_S)),
        "charges_sent": st.integers(0, 4),
        "start_in": st.integers(-3 * DAY_S, 3 * DAY_S),
        "grant": st.sampled_from(["none", "active", "ended"]),
        "devices": st.integers(0, 2),
    }
)


def _state(i: int, d: dict[str, Any], now: int) -> Subscription:
    item = CATALOGUE[d["code"]]
    term = min(item.term_cents)  # the term the start is reckoned from (a tweak keeps it)
    end = add_months(BASE, d["end_months"])
    pending = d["status"] is Status.PENDING
    return Subscription(
        id=f"sub_{i:04d}",
        installation_id=f"inst-{d['inst']}",
        product=item,
        purchaser=d["purchaser"],
        status=d["status"],
        term_months=d.get("term") or term,
        start=now + d["start_in"] if pending else add_months(end, -term),
        end=end,
        auto_renew=d["auto_renew"],
        awaiting_payment=d["awaiting_payment"],
        notice_for=end if d["noticed"] else None,
        attempts=d["attempts"],
        charging=d["charging"],
        charge_sent_at=None if d["sent_ago"] is None else now - d["sent_ago"],
        next_retry_at=None if d["retry_in"] is None else now + d["retry_in"],
        charges_sent=d["charges_sent"],
        scope=d.get("scope") or "",
    )


def _seed(store: Store, subs: list[tuple[Subscription, dict[str, Any]]], now: int) -> None:
    installations = sorted({s.installation_id for s, _ in subs})
    with store.engine.begin() as c:
        c.execute(
            insert(InstallationRow),
            [{"id": i, "name": i, "created_at": BASE} for i in installations],
        )
        devices = {}
        for sub, d in subs:
            for n in range(d["devices"]):
                devices[f"{sub.installation_id}-gw{n}"] = sub.installation_id
        if devices:
            c.execute(
                insert(DeviceRow),
                [
                    {
                        "id": device_id,
                        "installation_id": inst,
                        "kind": DeviceKind.GATEWAY,
                        "mqtt_password_hash": "x",
                        "created_at": BASE,
                    }
                    for device_id, inst in sorted(devices.items())
                ],
            )
        grants = [
            {
                "installation_id": sub.installation_id,
                "feature": sub.product.feature,
                "params": {"old": True},
                "valid_until": sub.end,
                "source": "manual",
                "status": GrantStatus.ACTIVE if d["grant"] == "active" else GrantStatus.ENDED,
                "created_at": BASE - DAY_S,
                "updated_at": BASE - DAY_S,
                "ended_at": None if d["grant"] == "active" else BASE - DAY_S,
            }
            for sub, d in subs
            if d["grant"] != "none"
        ]
        if grants:
            c.execute(insert(GrantRow), grants)
        c.execute(
            insert(SubscriptionRow),
            [
                {
                    "id": sub.id,
                    "pay_with": "card",
                    "card_token": "tok",
                    "created_at": BASE - DAY_S,
                    "version": 1,
                    **rows.row_values(sub, now=BASE - DAY_S),
                }
                for sub, _ in subs
            ],
        )


def _per_row(store: Store, now: int) -> tuple[set[str], list[str]]:
    """The reference: the rule and ``SubscriptionService.commit``, one row at a time."""
    service = SubscriptionService.__new__(SubscriptionService)  # commit() reads no attribute
    devices: set[str] = set()
    charges: list[str] = []
    with store.transaction() as tx:
        for row in rows.due_subscriptions(tx, now=now, limit=10_000):
            before = rows.load(row)
            t = apply(before, Tick(), now=now)
            if t.state == before:
                continue
            _, changed = service.commit(
                tx, row, before, t, actor=ACTOR, action="subscription.tick", now=now
            )
            devices |= set(changed)
            charges += [e.idempotency_key for e in t.effects if isinstance(e, Charge)]
    return devices, charges


def _set_based(store: Store, now: int) -> tuple[set[str], list[str]]:
    with store.transaction() as tx:
        done = sweep_batch(tx, now=now, limit=10_000, actor=ACTOR)
        queued = set(tx.scalars(select(ResignRow.device_id)))
    assert done.devices_queued == len(queued)
    return queued, [d.charge.idempotency_key for d in done.charges]


def _dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    def table(model: Any, order: Any, skip: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
        columns = [c for c in model.__table__.columns if c.name not in skip]
        with store.engine.connect() as c:
            return [tuple(r) for r in c.execute(select(*columns).order_by(*order))]

    return {
        "subscriptions": table(SubscriptionRow, [SubscriptionRow.id]),
        "grants": table(GrantRow, [GrantRow.installation_id, GrantRow.feature], ("id",)),
        "audit": table(AuditRow, [AuditRow.id], ("id",)),
        "mail": table(NotificationRow, [NotificationRow.id], ("id",)),
    }


def _assert_both_paths_write_alike(
    template: Path, prefix: Path, subs: list[tuple[Subscription, dict[str, Any]]], now: int
) -> None:
    """Seed two copies of ``template`` with ``subs``; the per-row path on one and the
    set-based sweep on the other must write the same rows, devices and charges."""
    stores = {}
    for name in ("per_row", "set_based"):
        path = prefix.with_name(f"{prefix.name}-{name}.db")
        shutil.copy(template, path)
        stores[name] = Store.open(f"sqlite:///{path}", migrate=False)
        _seed(stores[name], subs, now)
    try:
        expected = _per_row(stores["per_row"], now)
        got = _set_based(stores["set_based"], now)
        assert got == expected
        assert _dump(stores["set_based"]) == _dump(stores["per_row"])
    finally:
        for store in stores.values():
            store.close()


def _unique(generated: list[dict[str, Any]], now: int) -> list[tuple[Subscription, dict[str, Any]]]:
    """The generated subscriptions, one per installation and service (the first)."""
    seen: set[tuple[str, str]] = set()
    subs = []
    for i, d in enumerate(generated):
        sub = _state(i, d, now)
        key = (sub.installation_id, sub.product.feature)
        if key not in seen:
            seen.add(key)
            subs.append((sub, d))
    return subs


@settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(_sub, min_size=1, max_size=12),
    st.integers(-70 * DAY_S, 100 * DAY_S),
)
def test_set_based_sweep_writes_what_the_per_row_path_writes(
    template: Path, tmp_path: Path, generated: list[dict[str, Any]], offset: int
) -> None:
    now = BASE + offset
    subs = _unique(generated, now)
    _assert_both_paths_write_alike(template, tmp_path / f"{offset}-{len(generated)}", subs, now)


def _purchasers(store: Store) -> None:
    with store.transaction() as tx:
        for i in (1, 2):
            create_user(
                tx,
                email=f"buyer{i}@example.com",
                name=f"Buyer {i}",
                password="correct horse battery staple",
                role=Role.OWNER,
                company_id=None,
                actor="test",
                now=BASE,
            )


@settings(
    derandomize=True,
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(_sub, min_size=1, max_size=12),
    st.integers(-70 * DAY_S, 100 * DAY_S),
)
def test_on_postgresql_the_set_based_sweep_writes_what_the_per_row_path_writes(
    template: Path,
    tmp_path: Path,
    cloud_postgres_url: str,
    generated: list[dict[str, Any]],
    offset: int,
) -> None:
    """PostgreSQL's own batch inserts (one statement over a JSON document, rows in
    ``WITH ORDINALITY`` order) against the per-row path on SQLite: the same rows in
    the same order (ids skipped, rows ordered by id), devices and charges."""
    now = BASE + offset
    subs = _unique(generated, now)
    path = tmp_path / f"{offset}-{len(generated)}-per-row.db"
    shutil.copy(template, path)
    reference = Store.open(f"sqlite:///{path}", migrate=False)
    _empty_tables(cloud_postgres_url)
    postgres = Store.open(cloud_postgres_url)  # migrated once a session
    try:
        _purchasers(postgres)
        for store in (reference, postgres):
            _seed(store, subs, now)
        expected = _per_row(reference, now)
        assert _set_based(postgres, now) == expected
        assert _dump(postgres) == _dump(reference)
    finally:
        reference.close()
        postgres.close()


def _tweaked(d: dict[str, Any], field: str) -> dict[str, Any]:
    """``d`` with one field the rule reads changed (``"none"``: unchanged)."""
    flip = {
        "none": lambda v: v,
        "code": lambda v: CODES[(CODES.index(v) + 1) % len(CODES)],
        "purchaser": lambda v: 3 - v,
        "status": lambda v: list(Status)[(list(Status).index(v) + 1) % len(Status)],
        "end_months": lambda v: v + 1,
        "awaiting_payment": lambda v: not v,
        "auto_renew": lambda v: not v,
        "noticed": lambda v: not v,
        "attempts": lambda v: v + 1,
        "charging": lambda v: 0 if v is None else None,
        "sent_ago": lambda v: 3600 if v is None else None,
        "retry_in": lambda v: -DAY_S if v is None else None,
        "charges_sent": lambda v: v + 1,
        "start_in": lambda v: v + DAY_S,
        "term": lambda v: 24 if v is None else None,  # no product's shortest term
        "scope": lambda v: "user:tweaked" if v is None else None,
    }[field]
    return d if field == "none" else {**d, field: flip(d.get(field))}


_TWEAKS = ["none", "none", "none", *sorted({"code", "purchaser", "status", "end_months"})]
_TWEAKS += ["awaiting_payment", "auto_renew", "noticed", "attempts", "charging", "sent_ago"]
_TWEAKS += ["retry_in", "charges_sent", "start_in", "term", "scope"]


@settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(_sub, min_size=1, max_size=3),
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 9), st.sampled_from(_TWEAKS)),
        min_size=2,
        max_size=16,
    ),
    st.integers(-70 * DAY_S, 100 * DAY_S),
)
def test_rows_differing_in_one_field_or_only_in_identity_are_decided_apart(
    template: Path,
    tmp_path: Path,
    shapes: list[dict[str, Any]],
    copies: list[tuple[int, int, str]],
    offset: int,
) -> None:
    """Many rows share a state (the sweep decides once for them and fills each row's
    identities in), others differ from it in exactly one field the rule reads (they must
    not be taken for it): the per-row path is the reference again."""
    now = BASE + offset
    seen: set[tuple[str, str]] = set()
    subs = []
    for i, (shape, inst, field) in enumerate(copies):
        d = _tweaked({**shapes[shape % len(shapes)], "inst": inst}, field)
        sub = _state(i, d, now)
        key = (sub.installation_id, sub.product.feature)
        if key not in seen:
            seen.add(key)
            subs.append((sub, d))
    _assert_both_paths_write_alike(template, tmp_path / f"{offset}-{len(copies)}", subs, now)


_SHAPE: dict[str, Any] = {
    "code": "TSF16100",
    "purchaser": 1,
    "status": Status.ACTIVE,
    "end_months": 1,
    "awaiting_payment": False,
    "auto_renew": True,
    "noticed": True,
    "attempts": 3,
    "charging": None,
    "sent_ago": None,
    "retry_in": None,
    "charges_sent": 3,
    "start_in": 0,
    "grant": "active",
    "devices": 1,
}


def test_state_columns_are_every_column_load_reads_but_the_identities() -> None:
    """The sweep groups rows equal in :data:`~cloud.subscriptions.queries.STATE_COLUMNS`
    and gives them one decision: a column ``load`` reads and the list misses would let
    rows differing in it share the first row's decision."""
    sub = _state(0, {**_SHAPE, "inst": 0}, BASE)
    values = {"id": sub.id, **rows.row_values(sub, now=BASE)}
    read: set[str] = set()

    class Recording:
        def __getattr__(self, name: str) -> Any:
            read.add(name)
            return values[name]

    assert rows.load(Recording()) == sub
    assert read == {"id", "installation_id", *rows.STATE_COLUMNS}
    assert len(rows.STATE_COLUMNS) == len(set(rows.STATE_COLUMNS))


def test_the_rule_decides_once_for_rows_of_one_state(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty subscriptions expiring at one end for one purchaser: one decision, forty
    rows written, each mail and audit entry naming its own subscription and installation."""
    import cloud.subscriptions.sweep as sweep

    calls: list[Subscription] = []

    def counted(sub: Subscription, event: Any, *, now: int) -> Any:
        calls.append(sub)
        return apply(sub, event, now=now)

    monkeypatch.setattr(sweep, "apply", counted)
    now = add_months(BASE, 1) + 1
    shape = _SHAPE
    subs = [(_state(i, {**shape, "inst": i}, now), {**shape, "inst": i}) for i in range(40)]
    path = tmp_path / "once.db"
    shutil.copy(template, path)
    store = Store.open(f"sqlite:///{path}", migrate=False)
    try:
        _seed(store, subs, now)
        devices, charges = _set_based(store, now)
        assert len(calls) == 1
        assert devices == {f"inst-{i}-gw0" for i in range(40)} and charges == []
        with store.transaction() as tx:
            states = {r.id: r.status for r in tx.scalars(select(SubscriptionRow))}
            mails = {m.dedupe_key: m.body for m in tx.scalars(select(NotificationRow))}
            audited = sorted(
                tx.scalars(select(AuditRow.object_id).where(AuditRow.object_type == "subscription"))
            )
        assert set(states.values()) == {Status.EXPIRED}
        assert audited == sorted(states)
        for i in range(40):
            body = mails[f"expired:sub_{i:04d}:{add_months(BASE, 1)}"]
            assert f"installation inst-{i} ended" in body and "⟦" not in body
    finally:
        store.close()
