"""HTTP bodies of the account routes: logins, users, companies, memberships, audit.

No model carries a password hash; a password travels only inward (login,
create, change) and is never echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field

from cloud.accounts.passwords import MAX_PASSWORD, MIN_PASSWORD
from cloud.accounts.rules import PaymentType, Role
from cloud.http.inputs import BY_VALUE, StrictBody
from cloud.http.schemas import NAME_PATTERN

__all__ = [
    "posted_invoicing",
    "AuditOut",
    "BlacklistRequest",
    "CompanyCreate",
    "CompanyOut",
    "CompanyUpdate",
    "ContactOut",
    "IntegratorAdd",
    "InvoicingIn",
    "InvoicingOut",
    "LoginRequest",
    "MeOut",
    "MembersOut",
    "OwnerSet",
    "SessionOut",
    "UserCreate",
    "UserOut",
    "UserUpdate",
]

PARTNER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
# what a new account's address may look like (ASCII; compared lower-cased)
EMAIL_PATTERN = r"^[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$"
_PASSWORD = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD, repr=False)


_PHONE = Field(default=None, max_length=32, description="international form, e.g. +31 20 123 4567")


class LoginRequest(StrictBody):
    email: str = Field(min_length=1, max_length=254, pattern=NAME_PATTERN)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD, repr=False)


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    role: Role
    company_id: int | None
    blacklisted: bool
    created_at: int
    disabled_at: int | None
    phone: str | None = None


class SessionOut(BaseModel):
    """The login's user and when the session ends (the token is only in the cookie)."""

    user: UserOut
    expires_at: int
    idle_timeout_s: int


class MeOut(BaseModel):
    """Who the request acts as: a user (session or their API key) or a bare API key."""

    role: Role | str
    user: UserOut | None
    api_key_id: int | None
    permissions: list[str]


class UserCreate(StrictBody):
    email: str = Field(max_length=254, pattern=EMAIL_PATTERN)
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    password: str = _PASSWORD
    role: Annotated[Role, BY_VALUE]
    company_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    phone: str | None = _PHONE


class UserUpdate(StrictBody):
    """Only the fields sent change; ``company_id: null`` takes the user out of a company."""

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    role: Annotated[Role | None, BY_VALUE] = None
    company_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    password: str | None = Field(
        default=None, min_length=MIN_PASSWORD, max_length=MAX_PASSWORD, repr=False
    )
    phone: str | None = _PHONE


class CompanyCreate(StrictBody):
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    partner_id: str | None = Field(default=None, pattern=PARTNER_ID_PATTERN)
    payment_type: Annotated[PaymentType, BY_VALUE]


class InvoicingIn(StrictBody):
    """A company's invoicing details, all replaced at once (a field left out is cleared)."""

    address: str | None = Field(
        default=None, max_length=500, description="street lines, separated by line breaks"
    )
    postcode: str | None = Field(default=None, max_length=16)
    city: str | None = Field(default=None, max_length=100)
    country: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2}$", description="ISO 3166 alpha-2, e.g. NL"
    )
    vat_number: str | None = Field(
        default=None,
        max_length=24,
        pattern=r"^[A-Za-z]{2}[A-Za-z0-9 .-]{2,22}$",
        description="EU: with its country prefix and check digits, e.g. NL004495445B01",
    )
    gst_number: str | None = Field(
        default=None,
        max_length=20,
        pattern=r"^[0-9A-Za-z ]{15,20}$",
        description="India: the 15-character GSTIN with its check character",
    )


def posted_invoicing(form: Mapping[str, Any]) -> dict[str, str | None]:
    """A page form's invoicing fields (those of :class:`InvoicingIn`): trimmed, capped, and
    None when empty (which clears the field)."""
    return {
        name: str(form.get(name, "")).strip()[:600] or None for name in InvoicingIn.model_fields
    }


class CompanyUpdate(StrictBody):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    payment_type: Annotated[PaymentType | None, BY_VALUE] = None
    invoicing: InvoicingIn | None = None


class InvoicingOut(BaseModel):
    address: str | None
    postcode: str | None
    city: str | None
    country: str | None
    vat_number: str | None
    gst_number: str | None


class CompanyOut(BaseModel):
    id: int
    name: str
    partner_id: str
    payment_type: PaymentType
    blacklisted: bool
    created_at: int
    invoicing: InvoicingOut | None = None


class BlacklistRequest(StrictBody):
    blacklisted: bool
    reason: str = Field(min_length=1, max_length=500, pattern=NAME_PATTERN)


class ContactOut(BaseModel):
    user_id: int
    email: str
    name: str
    company_id: int | None
    phone: str | None = None


class MembersOut(BaseModel):
    installation_id: str
    owner_user_id: int | None
    integrator_company_ids: list[int]


class OwnerSet(StrictBody):
    user_id: int = Field(ge=1, le=2**31 - 1)


class IntegratorAdd(StrictBody):
    company_id: int = Field(ge=1, le=2**31 - 1)


class AuditOut(BaseModel):
    id: int
    at: int
    actor: str
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
