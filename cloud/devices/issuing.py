"""Every change that alters what a device may do ends in a new token for it.

:class:`IssuingService` runs each change (device added or removed, grant,
revoke, key rotation, refresh) as one database transaction that also stores
the affected devices' new tokens, their outbox rows (and, for a grant, its
audit entry), then publishes them retained through the
:class:`~cloud.ports.EntitlementPublisher` after the commit and marks them
published (which empties their outbox rows). Database work runs in a worker
thread; the decisions are :mod:`cloud.devices.rules`'s.

A publish that fails, or a crash between the commit and the publish, leaves
the token stored with its outbox row: :meth:`IssuingService.publish_outbox`
(run by the refresh job) publishes it again. Within this process a token is
never published after a newer one for the same device.

Jobs that change many installations at once do not sign in their own
transaction: they queue the devices (``token_resign_queue``) and
:meth:`IssuingService.drain_resign` signs them in batches, skipping a device
whose new token would change nothing it does before its current token
expires (:func:`cloud.devices.rules.resign_reason`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.access import ensure_installation_access
from cloud.devices.rules import (
    DeviceKind,
    Grant,
    GrantStatus,
    LastToken,
    check_capacity,
    check_grant,
    entitlements,
    next_claims,
    reissue_reason,
    resign_reason,
)
from cloud.devices.signer import Signer
from cloud.devices.tables import DeviceRow, TokenRow
from cloud.errors import (
    N_,
    AccountRefused,
    BrokerUnavailable,
    DeviceExists,
    UnknownDevice,
    UnknownGrant,
    UnknownInstallation,
)
from cloud.ports import BrokerAccounts, EntitlementPublisher
from common.clock import Clock
from common.credentials import hash_password, new_password
from protocol.errors import TransportError

__all__ = ["IssuingService", "Issued", "NewDevice", "ResignCounters", "ResignPass"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

CTI_BYTES = 16
_BATCH = 200  # devices per transaction in bulk re-issues
_MAX_CONCURRENT_PUBLISHES = 100


@dataclass(frozen=True, slots=True)
class Issued:
    """A token stored for a device, and whether it reached the broker."""

    device_id: str
    token_id: int
    ver: int
    epoch: int
    iat: int
    exp: int
    token: bytes = field(repr=False)
    published: bool = False


@dataclass(frozen=True, slots=True)
class ResignPass:
    """One drained batch of the re-sign queue: what was signed, how many were skipped."""

    claimed: int
    issued: tuple[Issued, ...]
    skipped: int


@dataclass(frozen=True, slots=True)
class ResignCounters:
    """The re-sign queue and the outbox as an operator sees them (for ``/metrics``).

    ``queued`` and ``outbox`` are read from the database (shared by every
    worker); ``signed``, ``skipped`` and ``published`` count this process's
    work since it started (Prometheus counters: sum them over workers).
    """

    queued: int
    outbox: int
    signed: int
    skipped: int
    published: int


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A registered device with its broker credentials: shown once, never stored."""

    device_id: str
    installation_id: str
    kind: DeviceKind
    mqtt_username: str
    mqtt_password: str = field(repr=False)
    token: Issued


def _issued(row: TokenRow) -> Issued:
    return Issued(
        device_id=row.device_id,
        token_id=row.id,
        ver=row.ver,
        epoch=row.epoch,
        iat=row.iat,
        exp=row.exp,
        token=row.token,
        published=False,
    )


class IssuingService:
    """Applies changes and issues, stores and publishes the tokens they require."""

    def __init__(
        self,
        store: Store,
        signer: Signer,
        publisher: EntitlementPublisher,
        accounts: BrokerAccounts,
        *,
        ttl_s: int,
        clock: Clock,
        password_hasher: Callable[[str], str] = hash_password,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("token ttl must be positive")
        self._store = store
        self._signer = signer
        self._publisher = publisher
        self._accounts = accounts
        self._ttl_s = ttl_s
        self._clock = clock
        self._hash = password_hasher
        self._sent: dict[str, int] = {}  # device id -> newest token id handed to the broker
        self._publish_slots = asyncio.Semaphore(_MAX_CONCURRENT_PUBLISHES)
        self._signed = self._skipped = self._published = 0

    @property
    def signer(self) -> Signer:
        return self._signer

    async def _in_thread(self, work: Callable[[], _T]) -> _T:
        return await asyncio.to_thread(work)

    # issuing (runs inside a transaction, in a worker thread) ----------------
    def _issue(
        self,
        tx: Session,
        devices: Sequence[DeviceRow],
        *,
        now: int,
        grants: Mapping[str, Sequence[Grant]],
        current: Mapping[str, TokenRow] | None = None,
    ) -> list[Issued]:
        """Sign and store each device's next token and its outbox row; the caller holds
        the devices' row locks.

        ``grants`` maps each device's installation id to its active grants;
        ``current``: the devices' current tokens when the caller read them already.
        """
        if not devices:
            return []
        epoch = self._signer.keyset.epoch
        if current is None:
            current = device_queries.current_tokens(tx, [d.id for d in devices])
        rows: list[dict[str, Any]] = []
        for device in devices:
            last = current.get(device.id)
            claims = next_claims(
                device_id=device.id,
                installation_id=device.installation_id,
                grants=grants[device.installation_id],
                last=None if last is None else LastToken(epoch=last.epoch, ver=last.ver),
                epoch=epoch,
                now=now,
                ttl_s=self._ttl_s,
                cti=secrets.token_bytes(CTI_BYTES),
            )
            rows.append(
                {
                    "device_id": device.id,
                    "ver": claims.ver,
                    "epoch": claims.epoch,
                    "cti": claims.cti,
                    "iat": claims.iat,
                    "exp": claims.exp,
                    "min_until": min((f.until for f in claims.ent.values()), default=None),
                    "token": self._signer.sign(claims),
                    "claims": claims.to_json(),
                }
            )
        ids = device_queries.add_tokens(tx, rows)
        stored = [(i, r["device_id"]) for i, r in zip(ids, rows, strict=True)]
        device_queries.add_outbox(tx, stored, now=now)
        self._signed += len(rows)
        return [
            Issued(
                device_id=r["device_id"],
                token_id=i,
                ver=r["ver"],
                epoch=r["epoch"],
                iat=r["iat"],
                exp=r["exp"],
                token=r["token"],
            )
            for i, r in zip(ids, rows, strict=True)
        ]

    # publishing --------------------------------------------------------------
    async def _publish_one(self, item: Issued) -> Issued:
        if self._sent.get(item.device_id, -1) > item.token_id:
            return item  # a newer token already went out; never roll the retained one back
        self._sent[item.device_id] = item.token_id
        async with self._publish_slots:
            expiry_s = max(1, item.exp - self._clock())
            try:
                await self._publisher.publish_entitlement(
                    item.device_id, item.token, expiry_s=expiry_s
                )
            except TransportError as exc:
                _log.warning(
                    "token ver %d for %s stored but not published (%s); the refresh job retries",
                    item.ver,
                    item.device_id,
                    exc,
                )
                return item
        return replace(item, published=True)

    async def _publish(self, issued: Sequence[Issued]) -> list[Issued]:
        results = list(await asyncio.gather(*(self._publish_one(i) for i in issued)))
        done = [r.token_id for r in results if r.published]
        self._published += len(done)
        if done:
            now = self._clock()

            def mark() -> None:
                with self._store.transaction() as tx:
                    device_queries.mark_published(tx, done, now=now)

            try:
                await self._in_thread(mark)
            except SQLAlchemyError as exc:  # delivered all the same; the job re-publishes
                _log.warning("could not record %d published token(s): %s", len(done), exc)
        return results

    # changes -----------------------------------------------------------------
    async def add_device(
        self, *, installation_id: str, kind: DeviceKind, device_id: str | None = None
    ) -> NewDevice:
        """Register a device, create its broker account and issue its first token.

        Raises:
            UnknownInstallation, DeviceExists, InstallationFull, AccountRefused.
        """
        device_id = device_id or f"{kind.value}-{secrets.token_hex(6)}"
        password = new_password()
        password_hash = await self._in_thread(lambda: self._hash(password))

        def work() -> Issued:
            now = self._clock()
            account_created = False
            try:
                try:
                    with self._store.transaction() as tx:
                        if device_queries.installation(tx, installation_id, lock=True) is None:
                            raise UnknownInstallation(f"no installation {installation_id}")
                        if device_queries.device(tx, device_id) is not None:
                            raise DeviceExists(
                                N_("device %(device)s is already registered"), device=device_id
                            )
                        controller = kind is DeviceKind.GATEWAY
                        check_capacity(
                            installation_id,
                            device_queries.count_devices(
                                tx, installation_id, controllers=controller
                            ),
                            kind=kind,
                        )
                        device = device_queries.add_device(
                            tx,
                            device_id=device_id,
                            installation_id=installation_id,
                            kind=kind,
                            password_hash=password_hash,
                            now=now,
                        )
                        grants = {
                            installation_id: device_queries.active_grants(tx, installation_id)
                        }
                        [issued] = self._issue(tx, [device], now=now, grants=grants)
                        # Last, so that a refused device never gets an account.
                        try:
                            self._accounts.set_password(device_id, password)
                        except ValueError as exc:
                            raise AccountRefused(
                                N_("the broker refused a login for %(device)s: %(reason)s"),
                                device=device_id,
                                reason=str(exc),
                            ) from exc
                        except TransportError as exc:
                            raise BrokerUnavailable(
                                f"device {device_id} not added: {exc}; try again"
                            ) from exc
                        account_created = True
                except IntegrityError as exc:  # the same id registered concurrently
                    raise DeviceExists(
                        N_("device %(device)s is already registered"), device=device_id
                    ) from exc
            except BaseException:
                if account_created:  # the commit failed after the account was made
                    self._accounts.remove(device_id)
                raise
            return issued

        issued = await self._in_thread(work)
        [issued] = await self._publish([issued])
        _log.info("device %s (%s) added to %s", device_id, kind.value, installation_id)
        return NewDevice(
            device_id=device_id,
            installation_id=installation_id,
            kind=kind,
            mqtt_username=device_id,
            mqtt_password=password,
            token=issued,
        )

    async def remove_device(self, device_id: str) -> bool:
        """Delete a device, its tokens and its broker account; clear its retained token.

        Returns whether the retained token was cleared.

        Raises:
            UnknownDevice.
        """

        def work() -> None:
            with self._store.transaction() as tx:
                if device_queries.device(tx, device_id, lock=True) is None:
                    raise UnknownDevice(f"no device {device_id}")
                device_queries.delete_device(tx, device_id)
                try:
                    self._accounts.remove(device_id)
                except TransportError as exc:
                    raise BrokerUnavailable(
                        f"device {device_id} not removed: {exc}; try again"
                    ) from exc

        await self._in_thread(work)
        self._sent.pop(device_id, None)
        _log.info("device %s removed", device_id)
        try:
            await self._publisher.clear_entitlement(device_id)
        except TransportError as exc:
            _log.warning("retained token of removed device %s not cleared: %s", device_id, exc)
            return False
        return True

    def _reissue_installation(self, tx: Session, installation_id: str, *, now: int) -> list[Issued]:
        grants = device_queries.active_grants(tx, installation_id)
        entitlements(grants, now=now)  # refuses a set of grants no token can carry
        devices = device_queries.devices_of(tx, installation_id, lock=True)
        return self._issue(tx, devices, now=now, grants={installation_id: grants})

    async def grant(
        self,
        installation_id: str,
        feature: str,
        *,
        until: int,
        params: dict[str, Any],
        source: str = "manual",
        actor: Principal | str | None = None,
    ) -> list[Issued]:
        """Grant (or renew) a service for the installation; re-issue for its devices.

        The caller's access (``actor`` a principal), the grant, the devices'
        tokens, their outbox rows and (with ``actor``) the audit entry
        ``grant.set`` are one transaction; the tokens are published after it.

        Raises:
            UnknownInstallation, Forbidden, Blacklisted, InvalidGrant.
        """

        def work() -> list[Issued]:
            now = self._clock()
            with self._store.transaction() as tx:
                if isinstance(actor, Principal):
                    ensure_installation_access(tx, actor, installation_id, write=True)
                check_grant(feature, params)
                if device_queries.installation(tx, installation_id, lock=True) is None:
                    raise UnknownInstallation(f"no installation {installation_id}")
                if actor is not None:
                    after = {"feature": feature, "until": until, "params": params}
                    _audit_grant(tx, actor, "grant.set", installation_id, after, now=now)
                device_queries.upsert_grant(
                    tx,
                    installation_id=installation_id,
                    feature=feature,
                    until=until,
                    params=params,
                    source=source,
                    now=now,
                )
                return self._reissue_installation(tx, installation_id, now=now)

        issued = await self._publish(await self._in_thread(work))
        _log.info("granted %s to %s until %d", feature, installation_id, until)
        return issued

    async def end_grant(
        self,
        installation_id: str,
        feature: str,
        *,
        status: GrantStatus = GrantStatus.REVOKED,
        actor: Principal | str | None = None,
    ) -> list[Issued]:
        """Revoke (or end) an active grant; re-issue for the installation's devices.

        With ``actor``, its access check (a principal) and the audit entry
        ``grant.revoke`` are in the same transaction.

        Raises:
            UnknownInstallation, Forbidden, Blacklisted, UnknownGrant.
        """
        if status is GrantStatus.ACTIVE:
            raise ValueError("end_grant needs a final status")

        def work() -> list[Issued]:
            now = self._clock()
            with self._store.transaction() as tx:
                if isinstance(actor, Principal):
                    ensure_installation_access(tx, actor, installation_id, write=True)
                if device_queries.installation(tx, installation_id, lock=True) is None:
                    raise UnknownInstallation(f"no installation {installation_id}")
                ended = device_queries.end_grant(
                    tx, installation_id=installation_id, feature=feature, status=status, now=now
                )
                if ended is None:
                    raise UnknownGrant(f"installation {installation_id} has no active {feature}")
                if actor is not None:
                    after = {"feature": feature}
                    _audit_grant(tx, actor, "grant.revoke", installation_id, after, now=now)
                return self._reissue_installation(tx, installation_id, now=now)

        issued = await self._publish(await self._in_thread(work))
        _log.info("%s %s for %s", status.value, feature, installation_id)
        return issued

    async def reissue(
        self, device_ids: Sequence[str], *, if_due_within_s: int | None = None
    ) -> list[Issued]:
        """Re-issue and publish for ``device_ids`` (unknown ids are skipped).

        With ``if_due_within_s`` a device is skipped unless its current token
        is still due under :func:`cloud.devices.rules.reissue_reason`, checked under
        the row lock: concurrent runs issue once.
        """

        def work(batch: Sequence[str]) -> list[Issued]:
            now = self._clock()
            epoch = self._signer.keyset.epoch
            with self._store.transaction() as tx:
                devices = device_queries.devices(tx, batch, lock=True)
                if if_due_within_s is not None:
                    current = device_queries.current_tokens(tx, [d.id for d in devices])
                    devices = [
                        d
                        for d in devices
                        if self._due(
                            current.get(d.id), now=now, within_s=if_due_within_s, epoch=epoch
                        )
                    ]
                installations = sorted({d.installation_id for d in devices})
                grants = device_queries.active_grants_of(tx, installations)
                return self._issue(tx, devices, now=now, grants=grants)

        results: list[Issued] = []
        for start in range(0, len(device_ids), _BATCH):
            batch = device_ids[start : start + _BATCH]
            results += await self._publish(await self._in_thread(functools.partial(work, batch)))
        return results

    @staticmethod
    def _due(row: TokenRow | None, *, now: int, within_s: int, epoch: int) -> bool:
        if row is None:
            return True
        state = row.refresh_state()
        return reissue_reason(state, now=now, refresh_before_s=within_s, epoch=epoch) is not None

    # the re-sign queue and the outbox -----------------------------------------
    async def drain_resign(self, *, limit: int, refresh_before_s: int) -> ResignPass:
        """Sign one batch of queued devices (newest grants), publish after the commit.

        One transaction claims up to ``limit`` queued devices (``SKIP LOCKED``:
        workers drain disjoint batches), locks them, reads their grants and
        current tokens with one query each, signs those
        :func:`~cloud.devices.rules.resign_reason` says need it, stores the
        tokens with their outbox rows and empties the claimed queue rows. A
        device queued twice has one row, so it is signed once, with the grants
        as they are at this moment.
        """
        now = self._clock()
        epoch = self._signer.keyset.epoch

        def work() -> tuple[int, list[Issued], int]:
            with self._store.transaction() as tx:
                claimed = device_queries.claim_resign(tx, limit=limit)
                if not claimed:
                    return 0, [], 0
                devices = device_queries.devices(tx, claimed, lock=True)
                grants = device_queries.active_grants_of(
                    tx, sorted({d.installation_id for d in devices})
                )
                current = device_queries.current_tokens(tx, [d.id for d in devices])
                todo = []
                for device in devices:
                    token = current.get(device.id)
                    reason = resign_reason(
                        None if token is None else token.refresh_state(),
                        {} if token is None else token.claims.get("ent", {}),
                        entitlements(grants[device.installation_id], now=now),
                        now=now,
                        refresh_before_s=refresh_before_s,
                        epoch=epoch,
                    )
                    if reason is not None:
                        todo.append(device)
                issued = self._issue(tx, todo, now=now, grants=grants, current=current)
                device_queries.drop_resign(tx, claimed)
                return len(claimed), issued, len(devices) - len(todo)

        claimed, issued, skipped = await self._in_thread(work)
        self._skipped += skipped
        published = await self._publish(issued) if issued else []
        return ResignPass(claimed=claimed, issued=tuple(published), skipped=skipped)

    async def publish_outbox(self, *, before: int, limit: int = _BATCH) -> list[Issued]:
        """Publish the tokens left in the outbox since before ``before`` (a failed publish,
        a crash between commit and publish), each device's current one only; batches
        until the outbox holds nothing that old."""
        results: list[Issued] = []
        while True:

            def claim() -> list[Issued]:
                with self._store.transaction() as tx:
                    rows = device_queries.claim_outbox(tx, before=before, limit=limit)
                    return [_issued(row) for row in rows]

            batch = await self._in_thread(claim)
            if not batch:
                return results
            done = await self._publish(batch)
            results += done
            if not any(i.published for i in done):  # the broker is away: the next pass
                return results

    def resign_counters(self) -> ResignCounters:
        """The re-sign queue's length, the outbox's, and this process's signed / skipped /
        published counts (one COUNT query per table; for the metrics endpoint)."""
        with self._store.transaction() as tx:
            queued = device_queries.resign_length(tx)
            outbox = device_queries.outbox_length(tx)
        return ResignCounters(
            queued=queued,
            outbox=outbox,
            signed=self._signed,
            skipped=self._skipped,
            published=self._published,
        )

    async def republish(self, device_ids: Sequence[str]) -> list[Issued]:
        """Publish the devices' current stored tokens again (no new version).

        A token the broker did not take goes back into the outbox, so the refresh job
        publishes it (a device that came online behind while the cloud's own connection
        was still failing over would otherwise wait for its next status).
        """

        def load() -> list[Issued]:
            with self._store.transaction() as tx:
                rows = device_queries.current_tokens(tx, device_ids)
            return [_issued(rows[d]) for d in device_ids if d in rows]

        results = await self._publish(await self._in_thread(load))
        failed = [(i.token_id, i.device_id) for i in results if not i.published]
        if failed:
            now = self._clock()

            def requeue() -> None:
                with self._store.transaction() as tx:
                    device_queries.add_outbox(tx, failed, now=now)

            await self._in_thread(requeue)
        return results

    async def rotate_keys(self, *, new_root: bool = False, new_epoch: bool = False) -> list[Issued]:
        """Rotate the issuer keys, publish the key-set chain, re-issue for every device."""
        await self._in_thread(lambda: self._signer.rotate(new_root=new_root, new_epoch=new_epoch))
        await self.publish_keyset()

        def ids() -> Sequence[str]:
            with self._store.transaction() as tx:
                return device_queries.device_ids(tx)

        return await self.reissue(await self._in_thread(ids))

    async def publish_keyset(self) -> bool:
        """Retain the current key-set message on ``entitle/v1/keys``; False if not delivered."""
        try:
            await self._publisher.publish_keyset(self._signer.keyset_message())
        except TransportError as exc:
            _log.warning("key set v%d not published: %s", self._signer.keyset.version, exc)
            return False
        return True


def _audit_grant(
    tx: Session,
    actor: Principal | str,
    action: str,
    installation_id: str,
    after: dict[str, Any],
    *,
    now: int,
) -> None:
    audit.record(
        tx,
        actor=actor,
        action=action,
        object_type="installation",
        object_id=installation_id,
        before=None,
        after=after,
        now=now,
    )
