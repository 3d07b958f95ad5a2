"""Users, partner companies, the blacklist and the audit log.

Support agents look up (``accounts:read``); customer-service admins and
admins change accounts (``accounts:write``; only an admin touches an admin
account) and blacklist (``blacklist``). Every change is in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from cloud.accounts import audit, users
from cloud.accounts.apikeys import Principal, add_api_key
from cloud.accounts.rules import Permission, Role
from cloud.accounts.schemas import (
    AuditOut,
    BlacklistRequest,
    CompanyCreate,
    CompanyOut,
    CompanyUpdate,
    UserCreate,
    UserOut,
    UserUpdate,
)
from cloud.accounts.tables import AuditRow, CompanyRow, UserRow
from cloud.errors import CloudError, InvalidRequest
from cloud.http.deps import ClockDep, StoreDep, require
from cloud.http.errors import documented, http_error
from cloud.http.schemas import NAME_PATTERN

__all__ = ["router"]

router = APIRouter(tags=["accounts"])

_MAX_ID = 2**31 - 1
_MAX_OFFSET = 2**31 - 1
UserId = Path(ge=1, le=_MAX_ID)
CompanyId = Path(ge=1, le=_MAX_ID)
Reader = Annotated[Principal, Depends(require(Permission.ACCOUNTS_READ))]
Writer = Annotated[Principal, Depends(require(Permission.ACCOUNTS_WRITE))]
Blacklister = Annotated[Principal, Depends(require(Permission.BLACKLIST))]
Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
Limit = Query(default=100, ge=1, le=1000)
Offset = Query(default=0, ge=0, le=_MAX_OFFSET)


@contextmanager
def _as_http() -> Iterator[None]:
    try:
        yield
    except CloudError as exc:
        raise http_error(exc) from exc


def _user_out(row: UserRow) -> UserOut:
    return UserOut(**users.user_view(row))


def _company_out(row: CompanyRow) -> CompanyOut:
    return CompanyOut(**users.company_view(row))


# users ------------------------------------------------------------------------
@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        {403: "not allowed", 404: "unknown company", 409: "e-mail taken"}, body=True
    ),
)
def create_user(body: UserCreate, principal: Writer, store: StoreDep, clock: ClockDep) -> UserOut:
    with _as_http(), store.transaction() as tx:
        row = users.create_user(
            tx,
            email=body.email,
            name=body.name,
            password=body.password,
            role=body.role,
            company_id=body.company_id,
            actor=principal,
            now=clock(),
        )
        return _user_out(row)


@router.get("/users")
def list_users(
    principal: Reader,
    store: StoreDep,
    email: str | None = Query(default=None, max_length=254, pattern=NAME_PATTERN),
    role: Role | None = None,
    company_id: int | None = Query(default=None, ge=1, le=_MAX_ID),
    limit: int = Limit,
    offset: int = Offset,
) -> list[UserOut]:
    """Look up users (``email``: any part of the address)."""
    with store.transaction() as tx:
        rows = users.find_users(
            tx, email=email, role=role, company_id=company_id, limit=limit, offset=offset
        )
        return [_user_out(r) for r in rows]


@router.get("/users/{user_id}", responses=documented({404: "unknown user"}))
def get_user(principal: Reader, store: StoreDep, user_id: int = UserId) -> UserOut:
    with _as_http(), store.transaction() as tx:
        return _user_out(users.user(tx, user_id))


@router.patch(
    "/users/{user_id}",
    responses=documented({403: "not allowed", 404: "unknown user or company"}, body=True),
)
def update_user(
    body: UserUpdate, principal: Writer, store: StoreDep, clock: ClockDep, user_id: int = UserId
) -> UserOut:
    """Change name, role, company or password; a new role or password ends the user's logins."""
    changes = body.model_dump(exclude_unset=True)
    with _as_http(), store.transaction() as tx:
        row = users.update_user(tx, user_id, actor=principal, now=clock(), **changes)
        return _user_out(row)


@router.delete("/users/{user_id}", responses=documented({404: "unknown user"}))
def disable_user(
    principal: Writer, store: StoreDep, clock: ClockDep, user_id: int = UserId
) -> UserOut:
    """Disable the user (kept for the audit log): logins, sessions and API keys stop."""
    with _as_http(), store.transaction() as tx:
        return _user_out(users.disable_user(tx, user_id, actor=principal, now=clock()))


@router.post(
    "/users/{user_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    responses=documented({404: "unknown user"}),
)
def create_user_api_key(
    principal: Writer,
    store: StoreDep,
    clock: ClockDep,
    user_id: int = UserId,
    # printable ASCII, no space at either end: what apikeys accepts as a name
    name: str = Query(max_length=100, pattern=r"^[!-~]([ -~]*[!-~])?$"),
) -> dict[str, str | int]:
    """An API key acting as this user (for machines); the key is shown only here."""
    now = clock()
    with _as_http(), store.transaction() as tx:
        try:
            new = add_api_key(tx, name=name, now=now, user_id=user_id)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        audit.record(
            tx,
            actor=principal,
            action="apikey.create",
            object_type="user",
            object_id=str(user_id),
            before=None,
            after={"api_key_id": new.id, "name": new.name, "prefix": new.prefix},
            now=now,
        )
    return {"id": new.id, "name": new.name, "prefix": new.prefix, "key": new.key}


@router.put(
    "/users/{user_id}/blacklist",
    responses=documented(
        {403: "only cs_admin and admin blacklist", 404: "unknown user"}, body=True
    ),
)
def blacklist_user(
    body: BlacklistRequest,
    principal: Blacklister,
    store: StoreDep,
    clock: ClockDep,
    user_id: int = UserId,
) -> UserOut:
    """Put a customer on (or off) the blacklist: a blacklisted customer cannot buy."""
    with _as_http(), store.transaction() as tx:
        users.set_blacklisted(
            tx,
            kind="user",
            object_id=user_id,
            blacklisted=body.blacklisted,
            reason=body.reason,
            actor=principal,
            now=clock(),
        )
        return _user_out(users.user(tx, user_id))


# companies --------------------------------------------------------------------
@router.post(
    "/companies",
    status_code=status.HTTP_201_CREATED,
    responses=documented({409: "partner id taken"}, body=True),
)
def create_company(
    body: CompanyCreate, principal: Writer, store: StoreDep, clock: ClockDep
) -> CompanyOut:
    with _as_http(), store.transaction() as tx:
        row = users.create_company(
            tx,
            name=body.name,
            partner_id=body.partner_id,
            payment_type=body.payment_type,
            actor=principal,
            now=clock(),
        )
        return _company_out(row)


@router.get("/companies")
def list_companies(
    principal: Reader,
    store: StoreDep,
    partner_id: str | None = Query(default=None, max_length=32, pattern=NAME_PATTERN),
    name: str | None = Query(default=None, max_length=200, pattern=NAME_PATTERN),
    limit: int = Limit,
    offset: int = Offset,
) -> list[CompanyOut]:
    """Look up partner companies by partner id or any part of the name."""
    with store.transaction() as tx:
        rows = users.find_companies(
            tx, partner_id=partner_id, name=name, limit=limit, offset=offset
        )
        return [_company_out(r) for r in rows]


@router.get("/companies/{company_id}", responses=documented({404: "unknown company"}))
def get_company(principal: Reader, store: StoreDep, company_id: int = CompanyId) -> CompanyOut:
    with _as_http(), store.transaction() as tx:
        return _company_out(users.company(tx, company_id))


@router.patch("/companies/{company_id}", responses=documented({404: "unknown company"}, body=True))
def update_company(
    body: CompanyUpdate,
    principal: Writer,
    store: StoreDep,
    clock: ClockDep,
    company_id: int = CompanyId,
) -> CompanyOut:
    with _as_http(), store.transaction() as tx:
        row = users.update_company(
            tx,
            company_id,
            actor=principal,
            now=clock(),
            name=body.name,
            payment_type=body.payment_type,
        )
        return _company_out(row)


@router.put(
    "/companies/{company_id}/blacklist",
    responses=documented(
        {403: "only cs_admin and admin blacklist", 404: "unknown company"}, body=True
    ),
)
def blacklist_company(
    body: BlacklistRequest,
    principal: Blacklister,
    store: StoreDep,
    clock: ClockDep,
    company_id: int = CompanyId,
) -> CompanyOut:
    """Put a partner company on (or off) the blacklist: none of its users can buy."""
    with _as_http(), store.transaction() as tx:
        users.set_blacklisted(
            tx,
            kind="company",
            object_id=company_id,
            blacklisted=body.blacklisted,
            reason=body.reason,
            actor=principal,
            now=clock(),
        )
        return _company_out(users.company(tx, company_id))


# audit ------------------------------------------------------------------------
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


def _filter() -> str | None:
    # a new Query per parameter: FastAPI binds a shared one to the first name only
    return Query(default=None, max_length=100, pattern=NAME_PATTERN)  # type: ignore[no-any-return]


def _epoch() -> int | None:
    return Query(default=None, ge=0, le=2**53)  # type: ignore[no-any-return]


@router.get("/audit")
def list_audit(
    principal: Auditor,
    store: StoreDep,
    object_type: str | None = _filter(),
    object_id: str | None = _filter(),
    actor: str | None = _filter(),
    action: str | None = _filter(),
    since: int | None = _epoch(),
    until: int | None = _epoch(),
    limit: int = Limit,
    offset: int = Offset,
) -> list[AuditOut]:
    """The audit log, newest first, filtered (``since <= at < until``)."""
    with store.transaction() as tx:
        rows = audit.entries(
            tx,
            object_type=object_type,
            object_id=object_id,
            actor=actor,
            action=action,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
        return [_audit_out(r) for r in rows]
