"""Accounts as the API uses them: users, companies, the blacklist, the audit log, logins.

One :class:`AccountService` per app (built in :func:`cloud.app.create_app`):
each method is one transaction over the functions of :mod:`cloud.accounts.users`,
:mod:`cloud.accounts.audit` and :mod:`cloud.accounts.sessions`, stamped with
the app's clock, and returns what the API shows. Errors are the error tree's
(:mod:`cloud.errors`); the app's one handler answers them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from cloud.accounts import audit, profile, resets, users
from cloud.accounts import queries as account_queries
from cloud.accounts.apikeys import MAX_NAME, Principal, add_api_key
from cloud.accounts.customers import CustomerHit, LookUpBy, find_customers
from cloud.accounts.notices import Gettext, MailQueue, reset_mail
from cloud.accounts.rules import ROLE_PERMISSIONS, InvoicingDetails, Role
from cloud.accounts.schemas import (
    AuditOut,
    BlacklistRequest,
    CompanyCreate,
    CompanyOut,
    CompanyUpdate,
    InvoicingOut,
    MeOut,
    SessionOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from cloud.accounts.sessions import attempt_login, end_session
from cloud.accounts.tables import ApiKeyRow, AuditRow, CompanyRow, UserRow
from cloud.database import Store
from cloud.errors import (
    N_,
    Forbidden,
    InvalidRequest,
    UnknownApiKey,
    UnknownCompany,
    UnknownUser,
)
from common.clock import Clock

__all__ = ["AccountService", "ApiKeyView", "AuditFilter", "Login", "NewKeyOut", "Profile"]

_log = logging.getLogger(__name__)


def _user_out(row: UserRow) -> UserOut:
    return UserOut(**users.user_view(row))


def _company_out(row: CompanyRow) -> CompanyOut:
    view = users.company_view(row)
    invoicing = InvoicingOut(**{name: view[name] for name in InvoicingOut.model_fields})
    return CompanyOut(**view, invoicing=invoicing)


def _own_company_id(session: Session, principal: Principal) -> int:
    """The company of a partner user (only partners act for a company: an owner's invoices
    name the owner).

    Raises:
        UnknownCompany: a user of another role, or of no company, or a bare API key.
    """
    row = None if principal.user_id is None else users.user(session, principal.user_id)
    if row is None or row.role is not Role.PARTNER or row.company_id is None:
        raise UnknownCompany(
            N_(
                "your account is not a partner company's: invoicing details belong to a "
                "partner company (staff set a company's on its admin page)"
            )
        )
    return row.company_id


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


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    """An API key as the admin pages list it: never the key, only its public prefix."""

    id: int
    name: str
    prefix: str
    role: str
    user_id: int | None
    created_at: int
    revoked_at: int | None


def _key_view(row: ApiKeyRow) -> ApiKeyView:
    return ApiKeyView(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        role=row.role,
        user_id=row.user_id,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@dataclass(frozen=True, slots=True)
class Profile:
    """One's own account as the profile page shows it."""

    user: UserOut
    locale: str
    company_name: str | None


class AccountService:
    """Users, partner companies, blacklist, audit log and dashboard logins."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        session_ttl_s: int,
        session_idle_s: int,
        mail: MailQueue | None = None,
        reset_ttl_s: int = 3600,
        public_url: str = "http://127.0.0.1:8000",
        translations: Callable[[str], Gettext] | None = None,
    ) -> None:
        """``mail`` queues forgotten-password mails (None: none are sent, logged);
        ``public_url`` is where their links point; ``translations`` gives the
        gettext of a language (the mail goes in the user's)."""
        self._store = store
        self._clock = clock
        self._session_ttl_s = session_ttl_s
        self._session_idle_s = session_idle_s
        self._mail = mail
        self._reset_ttl_s = reset_ttl_s
        self._public_url = public_url.rstrip("/")
        self._translations = translations

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
                phone=body.phone,
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

    def count_users(self, *, email: str | None, role: Role | None, company_id: int | None) -> int:
        with self._store.transaction() as tx:
            return users.count_users(tx, email=email, role=role, company_id=company_id)

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
            target = users.user(tx, user_id)
            if actor.role != Role.ADMIN and target.role is Role.ADMIN:
                # a key acts with its user's role: only an admin may mint an admin's
                raise Forbidden(N_("only an admin may create an API key of an admin account"))
            try:
                new = add_api_key(tx, name=name, now=now, user_id=user_id)
            except ValueError as exc:  # the key store's name check (apikeys._check_name)
                raise InvalidRequest(
                    N_("an API key name must be 1-%(max)d printable characters"), max=MAX_NAME
                ) from exc
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

    def count_companies(self, *, partner_id: str | None, name: str | None) -> int:
        with self._store.transaction() as tx:
            return users.count_companies(tx, partner_id=partner_id, name=name)

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
                invoicing=(
                    None
                    if body.invoicing is None
                    else InvoicingDetails(**body.invoicing.model_dump())
                ),
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

    def count_audit(self, which: AuditFilter) -> int:
        with self._store.transaction() as tx:
            return audit.count(
                tx,
                object_type=which.object_type,
                object_id=which.object_id,
                actor=which.actor,
                action=which.action,
                since=which.since,
                until=which.until,
            )

    # API keys -------------------------------------------------------------------
    def api_keys(
        self, *, user_id: int | None = None, newest_first: bool = False
    ) -> list[ApiKeyView]:
        """Every API key (revoked ones too), oldest first; only the user's with ``user_id``."""
        with self._store.transaction() as tx:
            rows = account_queries.api_keys(tx, user_id=user_id, newest_first=newest_first)
            return [_key_view(row) for row in rows]

    def api_key(self, key_id: int) -> ApiKeyView:
        """One API key (never the key itself).

        Raises:
            UnknownApiKey: no key has this id.
        """
        with self._store.transaction() as tx:
            row = account_queries.api_key(tx, key_id)
            if row is None:
                raise UnknownApiKey(f"no API key with id {key_id}")
            return _key_view(row)

    def revoke_api_key(self, actor: Principal, key_id: int) -> None:
        """Revoke a key from now on (audited); revoking it again changes nothing.

        Raises:
            UnknownApiKey: no key has this id.
        """
        now = self._clock()
        with self._store.transaction() as tx:
            row = account_queries.api_key(tx, key_id, lock=True)
            if row is None:
                raise UnknownApiKey(f"no API key with id {key_id}")
            if actor.role != Role.ADMIN and row.role == Role.ADMIN:
                raise Forbidden(N_("only an admin may revoke an admin's API key"))
            if row.revoked_at is not None:
                return
            row.revoked_at = now
            audit.record(
                tx,
                actor=actor,
                action="apikey.revoke",
                object_type="apikey",
                object_id=str(row.id),
                before={"name": row.name, "prefix": row.prefix, "revoked_at": None},
                after={"name": row.name, "prefix": row.prefix, "revoked_at": now},
                now=now,
            )

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

    # one's own account ----------------------------------------------------------
    def profile(self, principal: Principal) -> Profile:
        """Raises: UnknownUser (a bare API key has no profile)."""
        if principal.user_id is None:
            raise UnknownUser("an API key has no profile; sign in as a user")
        with self._store.transaction() as tx:
            row = users.user(tx, principal.user_id)
            company = None if row.company_id is None else users.company(tx, row.company_id).name
            return Profile(user=_user_out(row), locale=row.locale, company_name=company)

    def own_company(self, principal: Principal) -> CompanyOut:
        """The partner company the caller works for, with its invoicing details.

        Raises:
            UnknownCompany: the caller is no partner company's user (owners, staff, bare keys).
        """
        with self._store.transaction() as tx:
            return _company_out(users.company(tx, _own_company_id(tx, principal)))

    def update_own_invoicing(self, principal: Principal, details: InvoicingDetails) -> CompanyOut:
        """Replace the invoicing details of the caller's own company (audited), checked as
        staff's changes are (:func:`~cloud.accounts.rules.check_invoicing`).

        Raises:
            UnknownCompany: the caller is no partner company's user.
            Blacklisted: a blacklisted customer changes nothing.
            InvalidRequest: details the check refuses (nothing is stored).
        """
        with self._store.transaction() as tx:
            company_id = _own_company_id(tx, principal)
            users.ensure_not_blacklisted(tx, principal.user_id)
            row = users.update_company(
                tx,
                company_id,
                actor=principal,
                now=self._clock(),
                invoicing=details,
            )
            return _company_out(row)

    def update_profile(self, principal: Principal, *, name: str, locale: str) -> None:
        """Raises: InvalidRequest, UnknownUser."""
        with self._store.transaction() as tx:
            profile.update_profile(tx, principal, name=name, locale=locale, now=self._clock())

    def change_password(
        self, principal: Principal, *, current: str, new: str, session_token: str | None
    ) -> int:
        """Change one's own password; the other login sessions end (their number is returned).

        Raises:
            LoginFailed: the current password is wrong (it counts towards the lock).
            LoginThrottled: too many wrong passwords in a row.
            InvalidRequest: the new password is too short or too long.
        """
        with self._store.transaction() as tx:
            outcome = profile.change_password(
                tx,
                principal,
                current=current,
                new=new,
                keep_session=session_token,
                now=self._clock(),
            )
        if outcome.error is not None:
            raise outcome.error  # after the commit: a wrong password counts
        return outcome.ended_sessions

    # forgotten passwords ----------------------------------------------------------
    def request_password_reset(self, email: str) -> None:
        """Mail a reset link to the account of ``email``, if any; the same answer either way."""
        now = self._clock()
        with self._store.transaction() as tx:
            issued = resets.issue_reset(tx, email=email, now=now, ttl_s=self._reset_ttl_s)
            if issued is None:
                return
            if self._mail is None:
                _log.warning(
                    "no mail queue: the password reset link of user %d is not sent", issued.user_id
                )
                return
            gettext = (
                (lambda text: text)
                if self._translations is None
                else (self._translations(issued.locale))
            )
            subject, body = reset_mail(
                issued,
                link=f"{self._public_url}/password/reset/{issued.token}",
                ttl_s=self._reset_ttl_s,
                _=gettext,
            )
            self._mail(
                tx, kind="password_reset", to=[issued.email], subject=subject, body=body, now=now
            )

    def password_reset_works(self, token: str) -> bool:
        """Whether a reset link would still set a password (nothing changes)."""
        with self._store.transaction() as tx:
            return resets.reset_user(tx, token, now=self._clock()) is not None

    def reset_password(self, token: str, *, password: str) -> None:
        """Set a new password through a reset link; every login session of the user ends.

        Raises:
            ResetLinkInvalid: unknown, used, replaced or expired link.
            InvalidRequest: a password too short or too long.
        """
        with self._store.transaction() as tx:
            resets.use_reset(tx, token, password=password, now=self._clock())
