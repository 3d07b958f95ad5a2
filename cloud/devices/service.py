"""Installations and devices as the API uses them, scoped to who is asking.

:class:`InstallationService` and :class:`DeviceService` are built once by
:func:`cloud.app.create_app`. Each method checks the caller's scope
(:mod:`cloud.devices.access`: out of scope answers like unknown), does its
work in one transaction or through :class:`~cloud.devices.issuing.IssuingService`
(which signs and publishes tokens), and returns what the API shows. Errors
are the error tree's; the app's one handler answers them.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import Role
from cloud.accounts.schemas import ContactOut, MembersOut
from cloud.accounts.users import user
from cloud.database import Store
from cloud.devices import memberships, queries
from cloud.devices.access import (
    check_device,
    check_installation,
    ensure_device_access,
    ensure_installation_access,
    ensure_may_change,
    visible_installation_ids,
)
from cloud.devices.issuing import Issued, IssuingService
from cloud.devices.memberships import People, authorised_contacts
from cloud.devices.schemas import (
    DeviceCreate,
    DeviceCredentialsOut,
    DeviceOut,
    EntitlementOut,
    GrantCreate,
    GrantOut,
    GrantResult,
    InstallationCreate,
    InstallationDetail,
    InstallationOut,
    TokenSummary,
    token_versions,
)
from cloud.devices.tables import DeviceRow, GrantRow, InstallationRow, TokenRow
from cloud.errors import UnknownDevice, UnknownInstallation
from common.clock import Clock

__all__ = ["DeviceService", "InstallationListing", "InstallationService", "ListedInstallation"]


@dataclass(frozen=True, slots=True)
class ListedInstallation:
    """An installation in a list: its name and how many devices it has."""

    id: str
    name: str
    created_at: int
    devices: int


@dataclass(frozen=True, slots=True)
class InstallationListing:
    """One page of the installations a principal may see, and how many there are in all."""

    items: list[ListedInstallation]
    total: int


def _device_out(device: DeviceRow, token: TokenRow | None) -> DeviceOut:
    summary = None
    if token is not None:
        summary = TokenSummary(
            ver=token.ver,
            epoch=token.epoch,
            iat=token.iat,
            exp=token.exp,
            published=token.published_at is not None,
        )
    return DeviceOut(
        device_id=device.id,
        installation_id=device.installation_id,
        kind=device.kind,
        created_at=device.created_at,
        token=summary,
    )


def _installation_out(row: InstallationRow) -> InstallationOut:
    return InstallationOut(id=row.id, name=row.name, created_at=row.created_at)


def _grant_out(row: GrantRow) -> GrantOut:
    return GrantOut(
        feature=row.feature,
        scope=row.scope,
        until=row.valid_until,
        params=row.params,
        source=row.source,
        status=row.status,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
    )


def _grant_result(installation_id: str, feature: str, issued: list[Issued]) -> GrantResult:
    return GrantResult(
        installation_id=installation_id, feature=feature, tokens=token_versions(issued)
    )


def _members_out(m: memberships.Members) -> MembersOut:
    return MembersOut(
        installation_id=m.installation_id,
        owner_user_id=m.owner_user_id,
        integrator_company_ids=list(m.integrator_company_ids),
    )


class InstallationService:
    """Installations, their service grants, members and contacts."""

    def __init__(
        self,
        store: Store,
        issuing: IssuingService,
        *,
        clock: Clock,
        staff_email_domains: tuple[str, ...] | list[str] = (),
    ) -> None:
        self._store = store
        self._issuing = issuing
        self._clock = clock
        self._staff_domains = tuple(staff_email_domains)

    def create(self, principal: Principal, body: InstallationCreate) -> InstallationOut:
        """A new installation; a partner's company becomes its system integrator.

        Raises:
            Blacklisted: the caller may not change anything.
        """
        now = self._clock()
        with self._store.transaction() as tx:
            ensure_may_change(tx, principal)
            row = queries.add_installation(
                tx, installation_id=f"inst_{secrets.token_hex(8)}", name=body.name, now=now
            )
            if principal.role == Role.PARTNER and principal.user_id is not None:
                company_id = user(tx, principal.user_id).company_id
                if company_id is not None:
                    memberships.add_integrator(tx, row.id, company_id, actor=principal, now=now)
            return _installation_out(row)

    def visible(self, principal: Principal, *, limit: int, offset: int) -> list[InstallationOut]:
        """The installations ``principal`` may see (partners and owners: only theirs)."""
        with self._store.transaction() as tx:
            within = visible_installation_ids(tx, principal)
            rows = queries.installations(tx, limit=limit, offset=offset, within=within)
            return [_installation_out(r) for r in rows]

    def detail(self, principal: Principal, installation_id: str) -> InstallationDetail:
        """The installation with its devices (and their current tokens) and grants.

        Raises:
            UnknownInstallation: no such installation, or not one of the caller's.
        """
        with self._store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            row = queries.installation(tx, installation_id)
            if row is None:
                raise UnknownInstallation(f"no installation {installation_id}")
            rows = queries.devices_of(tx, installation_id)
            tokens = queries.current_tokens(tx, [d.id for d in rows])
            devices = [_device_out(d, tokens.get(d.id)) for d in rows]
            grants = [_grant_out(g) for g in queries.grants_of(tx, installation_id)]
        return InstallationDetail(
            id=row.id, name=row.name, created_at=row.created_at, devices=devices, grants=grants
        )

    async def grant(
        self, principal: Principal, installation_id: str, body: GrantCreate
    ) -> GrantResult:
        """Grant (or renew) a service; every device gets a new token; audited (one transaction
        with the access check)."""
        issued = await self._issuing.grant(
            installation_id, body.feature, until=body.until, params=body.params, actor=principal
        )
        return _grant_result(installation_id, body.feature, issued)

    async def revoke(self, principal: Principal, installation_id: str, feature: str) -> GrantResult:
        """Revoke a service; every device gets a token without it; audited (one transaction)."""
        issued = await self._issuing.end_grant(installation_id, feature, actor=principal)
        return _grant_result(installation_id, feature, issued)

    # what the pages list ------------------------------------------------------
    def listing(
        self,
        principal: Principal,
        *,
        search: str | None = None,
        sort: str = "name",
        descending: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> InstallationListing:
        """A page of the installations ``principal`` may see, with their device counts."""
        with self._store.transaction() as tx:
            within = visible_installation_ids(tx, principal)
            rows, total = queries.installation_listing(
                tx,
                within=within,
                search=search,
                sort=sort,
                descending=descending,
                limit=limit,
                offset=offset,
            )
        items = [ListedInstallation(r.id, r.name, r.created_at, n) for r, n in rows]
        return InstallationListing(items=items, total=total)

    def people(self, principal: Principal, installation_id: str) -> People:
        """The owner and system integrators of an installation, by name.

        Raises:
            UnknownInstallation: no such installation, or not one of the caller's.
        """
        with self._store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            return memberships.people(tx, installation_id)

    # members and contacts -----------------------------------------------------
    def members(self, principal: Principal, installation_id: str) -> MembersOut:
        with self._store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            return _members_out(memberships.members(tx, installation_id))

    def set_owner(self, principal: Principal, installation_id: str, user_id: int) -> MembersOut:
        with self._store.transaction() as tx:
            m = memberships.set_owner(
                tx, installation_id, user_id, actor=principal, now=self._clock()
            )
            return _members_out(m)

    def add_integrator(
        self, principal: Principal, installation_id: str, company_id: int
    ) -> MembersOut:
        with self._store.transaction() as tx:
            m = memberships.add_integrator(
                tx, installation_id, company_id, actor=principal, now=self._clock()
            )
            return _members_out(m)

    def remove_integrator(
        self, principal: Principal, installation_id: str, company_id: int
    ) -> MembersOut:
        with self._store.transaction() as tx:
            m = memberships.remove_integrator(
                tx, installation_id, company_id, actor=principal, now=self._clock()
            )
            return _members_out(m)

    def contacts(self, principal: Principal, installation_id: str) -> list[ContactOut]:
        """The owner and the integrators' partner users, not vendor staff."""
        with self._store.transaction() as tx:
            ensure_installation_access(tx, principal, installation_id, write=False)
            contacts = authorised_contacts(tx, installation_id, staff_domains=self._staff_domains)
        return [
            ContactOut(user_id=c.user_id, email=c.email, name=c.name, company_id=c.company_id)
            for c in contacts
        ]


class DeviceService:
    """Devices: register (credentials shown once), look up, remove; their tokens."""

    def __init__(self, store: Store, issuing: IssuingService, *, broker_url: str) -> None:
        """``broker_url``: where devices connect, ``scheme://host:port`` (no secrets)."""
        self._store = store
        self._issuing = issuing
        self._broker_url = broker_url

    async def add(self, principal: Principal, body: DeviceCreate) -> DeviceCredentialsOut:
        """Register a device and issue its first token; the password is only in the answer."""
        await check_installation(self._store, principal, body.installation_id, write=True)
        new = await self._issuing.add_device(
            installation_id=body.installation_id, kind=body.kind, device_id=body.device_id
        )
        return DeviceCredentialsOut(
            device_id=new.device_id,
            mqtt_username=new.mqtt_username,
            mqtt_password=new.mqtt_password,
            broker_url=self._broker_url,
        )

    def get(self, principal: Principal, device_id: str) -> DeviceOut:
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)
            device = queries.device(tx, device_id)
            if device is None:
                raise UnknownDevice(f"no device {device_id}")
            return _device_out(device, queries.current_token(tx, device_id))

    async def remove(self, principal: Principal, device_id: str) -> None:
        """Delete the device and its broker account, and clear its retained token."""
        await check_device(self._store, principal, device_id, write=True)
        await self._issuing.remove_device(device_id)

    def entitlement(self, principal: Principal, device_id: str) -> EntitlementOut:
        """The device's current token and its claims."""
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)
            token = queries.current_token(tx, device_id)
        if token is None:
            raise UnknownDevice(f"no device {device_id} or no token yet")
        return EntitlementOut(
            device_id=device_id,
            token_b64=base64.b64encode(token.token).decode("ascii"),
            claims=token.claims,
        )
