"""Accounts as the API uses them: users, companies, the blacklist, the audit log, logins.

One :class:`AccountService` per app (built in :func:`cloud.app.create_app`):
each method is one transaction over the functions of :mod:`cloud.accounts.users`,
:mod:`cloud.accounts.audit` and :mod:`cloud.accounts.sessions`, stamped with
the app's clock, and returns what the API shows. Errors are the error tree's
(:mod:`cloud.errors`); the app's one handler answers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloud.accounts import audit, users
from cloud.accounts.apikeys import Principal, add_api_key
from cloud.accounts.customers import CustomerHit, LookUpBy, find_customers
from cloud.accounts.rules import ROLE_PERMISSIONS, Role
from cloud.accounts.schemas import (
    AuditOut,
    BlacklistRequest,
    CompanyCreate,
    CompanyOut,
    CompanyUpdate,
    MeOut,
    SessionOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from cloud.accounts.sessions import attempt_login, end_session
from cloud.accounts.tables import AuditRow, CompanyRow, UserRow
from cloud.database import Store
from cloud.errors import InvalidRequest
from common.clock import Clock

__all__ = ["AccountService", "AuditFilter", "Login", "NewKeyOut"]


def _user_out(row: UserRow) -> UserOut:
    return UserOut(**users.user_view(row))


def _company_out(row: CompanyRow) -> CompanyOut:
    return CompanyOut(**users.company_view(row))


def _audit_out(row: AuditRow) -> AuditOut:
    return AuditOut(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        before=row.before,
        after=row.after,
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit entries to list (``since <= at < until``), newest first."""

    object_type: str | None = None
    object_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Login:
    """A started login session: the token goes only into the cookie."""

    token: str
    max_age_s: int
    session: SessionOut

    def __repr__(self) -> str:  # never the token
        return f"Login(user={self.session.user.id})"


NewKeyOut = dict[str, str | int]


class AccountService:
    """Users, partner companies, blacklist, audit log and dashboard logins."""

    def __init__(
        self, store: Store, *, clock: Clock, session_ttl_s: int, session_idle_s: int
    ) -> None:
        self._store = store
        self._clock = clock
        self._session_ttl_s = session_ttl_s
        self._session_idle_s = session_idle_s

    # users --------------------------------------------------------------------
    def create_user(self, actor: Principal, body: UserCreate) -> UserOut:
        with self._store.transaction() as tx:
            row = users.create_user(
                tx,
                email=body.email,
                name=body.name,
                password=body.password,
                role=body.role,
                company_id=body.company_id,
                actor=actor,
                now=self._clock(),
            )
            return _user_out(row)

    def find_users(
        self,
        *,
        email: str | None,
        role: Role | None,
        company_id: int | None,
        limit: int,
        offset: int,
    ) -> list[UserOut]:
        with self._store.transaction() as tx:
            rows = users.find_users(
                tx, email=email, role=role, company_id=company_id, limit=limit, offset=offset
            )
            return [_user_out(r) for r in rows]

    def user(self, user_id: int) -> UserOut:
        """Raises: UnknownUser."""
        with self._store.transaction() as tx:
            return _user_out(users.user(tx, user_id))

    def update_user(self, actor: Principal, user_id: int, body: UserUpdate) -> UserOut:
        """Only the fields sent change; a new role or password ends the user's logins."""
        changes = body.model_dump(exclude_unset=True)
        with self._store.transaction() as tx:
            row = users.update_user(tx, user_id, actor=actor, now=self._clock(), **changes)
            return _user_out(row)

    def disable_user(self, actor: Principal, user_id: int) -> UserOut:
        with self._store.transaction() as tx:
            return _user_out(users.disable_user(tx, user_id, actor=actor, now=self._clock()))

    def create_api_key(self, actor: Principal, user_id: int, *, name: str) -> NewKeyOut:
        """An API key acting as the user, audited; the key is in the answer only.

        Raises:
            UnknownUser: no such user.
            InvalidRequest: a name the key store refuses.
        """
        now = self._clock()
        with self._store.transaction() as tx:
            try:
                new = add_api_key(tx, name=name, now=now, user_id=user_id)
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from exc
            audit.record(
                tx,
                actor=actor,
                action="apikey.create",
                object_type="user",
                object_id=str(user_id),
                before=None,
                after={"api_key_id": new.id, "name": new.name, "prefix": new.prefix},
                now=now,
            )
        return {"id": new.id, "name": new.name, "prefix": new.prefix, "key": new.key}

    def blacklist_user(self, actor: Principal, user_id: int, body: BlacklistRequest) -> UserOut:
        with self._store.transaction() as tx:
            users.set_blacklisted(
                tx,
                kind="user",
                object_id=user_id,
                blacklisted=body.blacklisted,
                reason=body.reason,
                actor=actor,
                now=self._clock(),
            )
            return _user_out(users.user(tx, user_id))

    # companies ----------------------------------------------------------------
    def create_company(self, actor: Principal, body: CompanyCreate) -> CompanyOut:
        with self._store.transaction() as tx:
            row = users.create_company(
                tx,
                name=body.name,
                partner_id=body.partner_id,
                payment_type=body.payment_type,
                actor=actor,
                now=self._clock(),
            )
            return _company_out(row)

    def find_companies(
        self, *, partner_id: str | None, name: str | None, limit: int, offset: int
    ) -> list[CompanyOut]:
        with self._store.transaction() as tx:
            rows = users.find_companies(
                tx, partner_id=partner_id, name=name, limit=limit, offset=offset
            )
            return [_company_out(r) for r in rows]

    def company(self, company_id: int) -> CompanyOut:
        """Raises: UnknownCompany."""
        with self._store.transaction() as tx:
            return _company_out(users.company(tx, company_id))

    def update_company(self, actor: Principal, company_id: int, body: CompanyUpdate) -> CompanyOut:
        with self._store.transaction() as tx:
            row = users.update_company(
                tx,
                company_id,
                actor=actor,
                now=self._clock(),
                name=body.name,
                payment_type=body.payment_type,
            )
            return _company_out(row)

    def blacklist_company(
        self, actor: Principal, company_id: int, body: BlacklistRequest
    ) -> CompanyOut:
        with self._store.transaction() as tx:
            users.set_blacklisted(
                tx,
                kind="company",
                object_id=company_id,
                blacklisted=body.blacklisted,
                reason=body.reason,
                actor=actor,
                now=self._clock(),
            )
            return _company_out(users.company(tx, company_id))

    # customers ----------------------------------------------------------------
    def find_customers(self, text: str, *, by: LookUpBy, limit: int = 50) -> list[CustomerHit]:
        """Customer accounts (owner and partner users, partner companies) matching ``text``."""
        with self._store.transaction() as tx:
            return find_customers(tx, text, by=by, limit=limit)

    # audit --------------------------------------------------------------------
    def audit_entries(self, which: AuditFilter) -> list[AuditOut]:
        with self._store.transaction() as tx:
            rows: Sequence[AuditRow] = audit.entries(
                tx,
                object_type=which.object_type,
                object_id=which.object_id,
                actor=which.actor,
                action=which.action,
                since=which.since,
                until=which.until,
                limit=which.limit,
                offset=which.offset,
            )
            return [_audit_out(r) for r in rows]

    # logins -------------------------------------------------------------------
    def login(self, *, email: str, password: str) -> Login:
        """Check the password and start a session.

        Raises:
            LoginFailed, LoginThrottled: after the attempt's bookkeeping is
                committed (a failure counts towards the lock).
        """
        with self._store.transaction() as tx:
            outcome = attempt_login(
                tx, email=email, password=password, now=self._clock(), ttl_s=self._session_ttl_s
            )
            shown = None if outcome.user is None else _user_out(outcome.user)
        if outcome.error is not None:
            raise outcome.error  # after the commit: the failure counts
        assert outcome.token is not None and outcome.expires_at is not None and shown is not None
        session = SessionOut(
            user=shown, expires_at=outcome.expires_at, idle_timeout_s=self._session_idle_s
        )
        return Login(token=outcome.token, max_age_s=self._session_ttl_s, session=session)

    def logout(self, token: str | None) -> None:
        """End the session of ``token``, if there is one."""
        if token:
            with self._store.transaction() as tx:
                end_session(tx, token)

    def me(self, principal: Principal) -> MeOut:
        """Who ``principal`` is, and what its role may do."""
        shown = None
        if principal.user_id is not None:
            with self._store.transaction() as tx:
                shown = _user_out(users.user(tx, principal.user_id))
        try:
            permissions = sorted(p.value for p in ROLE_PERMISSIONS[Role(principal.role)])
        except ValueError:
            permissions = []
        return MeOut(
            role=principal.role, user=shown, api_key_id=principal.key_id, permissions=permissions
        )
