"""Users, partner companies, the blacklist and the audit log.

Support agents look up (``accounts:read``); customer-service admins and
admins change accounts (``accounts:write``; only an admin touches an admin
account) and blacklist (``blacklist``). Every change is in the audit log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import AccountsDep, require
from cloud.accounts.rules import InvoicingDetails, Permission, Role
from cloud.accounts.schemas import (
    AuditOut,
    BlacklistRequest,
    CompanyCreate,
    CompanyOut,
    CompanyUpdate,
    InvoicingIn,
    UserCreate,
    UserOut,
    UserUpdate,
)
from cloud.accounts.service import AuditFilter, NewKeyOut
from cloud.http.errors import documented
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


# users ------------------------------------------------------------------------
@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        {403: "not allowed", 404: "unknown company", 409: "e-mail taken"}, body=True
    ),
)
def create_user(body: UserCreate, principal: Writer, service: AccountsDep) -> UserOut:
    return service.create_user(principal, body)


@router.get("/users")
def list_users(
    principal: Reader,
    service: AccountsDep,
    email: str | None = Query(default=None, max_length=254, pattern=NAME_PATTERN),
    role: Role | None = None,
    company_id: int | None = Query(default=None, ge=1, le=_MAX_ID),
    limit: int = Limit,
    offset: int = Offset,
) -> list[UserOut]:
    """Look up users (``email``: any part of the address)."""
    return service.find_users(
        email=email, role=role, company_id=company_id, limit=limit, offset=offset
    )


@router.get("/users/{user_id}", responses=documented({404: "unknown user"}))
def get_user(principal: Reader, service: AccountsDep, user_id: int = UserId) -> UserOut:
    return service.user(user_id)


@router.patch(
    "/users/{user_id}",
    responses=documented({403: "not allowed", 404: "unknown user or company"}, body=True),
)
def update_user(
    body: UserUpdate, principal: Writer, service: AccountsDep, user_id: int = UserId
) -> UserOut:
    """Change name, role, company or password; a new role or password ends the user's logins."""
    return service.update_user(principal, user_id, body)


@router.delete("/users/{user_id}", responses=documented({404: "unknown user"}))
def disable_user(principal: Writer, service: AccountsDep, user_id: int = UserId) -> UserOut:
    """Disable the user (kept for the audit log): logins, sessions and API keys stop."""
    return service.disable_user(principal, user_id)


@router.post(
    "/users/{user_id}/api-keys",
    status_code=status.HTTP_201_CREATED,
    responses=documented({404: "unknown user"}),
)
def create_user_api_key(
    principal: Writer,
    service: AccountsDep,
    user_id: int = UserId,
    # printable ASCII, no space at either end: what apikeys accepts as a name
    name: str = Query(max_length=100, pattern=r"^[!-~]([ -~]*[!-~])?$"),
) -> NewKeyOut:
    """An API key acting as this user (for machines); the key is shown only here."""
    return service.create_api_key(principal, user_id, name=name)


@router.put(
    "/users/{user_id}/blacklist",
    responses=documented(
        {403: "only cs_admin and admin blacklist", 404: "unknown user"}, body=True
    ),
)
def blacklist_user(
    body: BlacklistRequest,
    principal: Blacklister,
    service: AccountsDep,
    user_id: int = UserId,
) -> UserOut:
    """Put a customer on (or off) the blacklist: a blacklisted customer cannot buy."""
    return service.blacklist_user(principal, user_id, body)


# companies --------------------------------------------------------------------
@router.post(
    "/companies",
    status_code=status.HTTP_201_CREATED,
    responses=documented({409: "partner id taken"}, body=True),
)
def create_company(body: CompanyCreate, principal: Writer, service: AccountsDep) -> CompanyOut:
    return service.create_company(principal, body)


@router.get("/companies")
def list_companies(
    principal: Reader,
    service: AccountsDep,
    partner_id: str | None = Query(default=None, max_length=32, pattern=NAME_PATTERN),
    name: str | None = Query(default=None, max_length=200, pattern=NAME_PATTERN),
    limit: int = Limit,
    offset: int = Offset,
) -> list[CompanyOut]:
    """Look up partner companies by partner id or any part of the name."""
    return service.find_companies(partner_id=partner_id, name=name, limit=limit, offset=offset)


@router.get("/companies/{company_id}", responses=documented({404: "unknown company"}))
def get_company(principal: Reader, service: AccountsDep, company_id: int = CompanyId) -> CompanyOut:
    return service.company(company_id)


@router.patch("/companies/{company_id}", responses=documented({404: "unknown company"}, body=True))
def update_company(
    body: CompanyUpdate,
    principal: Writer,
    service: AccountsDep,
    company_id: int = CompanyId,
) -> CompanyOut:
    return service.update_company(principal, company_id, body)


# one's own company: a partner reads and sets its invoicing details, never another's -------
Me = Annotated[Principal, Depends(require(Permission.PROFILE))]
_NOT_A_PARTNER = {404: "you are not a partner company's user (owners, staff, bare keys)"}


@router.get("/me/company", responses=documented(_NOT_A_PARTNER))
def get_own_company(principal: Me, service: AccountsDep) -> CompanyOut:
    """The partner company you work for, with its invoicing details."""
    return service.own_company(principal)


@router.put(
    "/me/company/invoicing",
    responses=documented(
        {**_NOT_A_PARTNER, 403: "a blacklisted customer changes nothing"}, body=True
    ),
)
def put_own_invoicing(body: InvoicingIn, principal: Me, service: AccountsDep) -> CompanyOut:
    """Replace your company's invoicing details (a field left out is cleared), checked as on
    the admin page: an ISO country, an EU VAT number with its check digits (or a GSTIN);
    audited. A refused change stores nothing (422)."""
    return service.update_own_invoicing(principal, InvoicingDetails(**body.model_dump()))


@router.put(
    "/companies/{company_id}/blacklist",
    responses=documented(
        {403: "only cs_admin and admin blacklist", 404: "unknown company"}, body=True
    ),
)
def blacklist_company(
    body: BlacklistRequest,
    principal: Blacklister,
    service: AccountsDep,
    company_id: int = CompanyId,
) -> CompanyOut:
    """Put a partner company on (or off) the blacklist: none of its users can buy."""
    return service.blacklist_company(principal, company_id, body)


# audit ------------------------------------------------------------------------
def _filter() -> str | None:
    # a new Query per parameter: FastAPI binds a shared one to the first name only
    return Query(default=None, max_length=100, pattern=NAME_PATTERN)  # type: ignore[no-any-return]


def _epoch() -> int | None:
    return Query(default=None, ge=0, le=2**53)  # type: ignore[no-any-return]


@router.get("/audit")
def list_audit(
    principal: Auditor,
    service: AccountsDep,
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
    which = AuditFilter(
        object_type=object_type,
        object_id=object_id,
        actor=actor,
        action=action,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return service.audit_entries(which)
