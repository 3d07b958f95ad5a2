"""Who may do what: one table from role to permissions (pure, no I/O).

Every protected route declares the one permission it needs with
``Depends(require(Permission.X))`` (``cloud.http.deps``); a test walks every
route and every role against this table. Scoping (a partner sees only the
installations where it is a system integrator, an owner only their own) is
decided by :mod:`cloud.devices.access` on top of this table:

- ``admin``, ``cs_admin`` and ``support`` see every installation; ``support``
  only looks (its scope is read-only, and its permissions hold no write to
  subscriptions, orders, grants or accounts);
- ``partner`` users see the installations where their partner *company* is a
  system integrator (several companies may integrate one installation);
- ``owner`` users see the one installation(s) they own (one owner each).

The README's role table is :func:`markdown_table` of this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError
from stdnum.in_ import gstin

from cloud.errors import N_, InvalidRequest, Msg

__all__ = [
    "InvoicingDetails",
    "ROLE_PERMISSIONS",
    "STAFF_ROLES",
    "PaymentType",
    "Permission",
    "Role",
    "allowed",
    "check_invoicing",
    "check_phone",
    "markdown_table",
    "refusal",
]


class Role(StrEnum):
    """Roles of users and API keys."""

    ADMIN = "admin"  # global admin (vendor)
    CS_ADMIN = "cs_admin"  # customer-service admin
    SUPPORT = "support"  # support agent
    PARTNER = "partner"  # system integrator, member of a partner company
    OWNER = "owner"  # installation owner


STAFF_ROLES: frozenset[Role] = frozenset({Role.ADMIN, Role.CS_ADMIN, Role.SUPPORT})
"""The vendor's own roles: every installation is theirs to see, and they answer tickets."""


class Permission(StrEnum):
    """One per kind of action a route performs."""

    INSTALLATIONS_READ = "installations:read"
    INSTALLATIONS_WRITE = "installations:write"
    DEVICES_READ = "devices:read"
    DEVICES_WRITE = "devices:write"
    GRANTS_WRITE = "grants:write"  # manual service grants (outside subscriptions)
    KEYS_ROTATE = "keys:rotate"
    ACCOUNTS_READ = "accounts:read"  # look up accounts, contacts, partner ids
    ACCOUNTS_WRITE = "accounts:write"  # create users, companies, change roles
    BLACKLIST = "blacklist"
    AUDIT_READ = "audit:read"
    SUBSCRIPTIONS_READ = "subscriptions:read"
    SUBSCRIPTIONS_WRITE = "subscriptions:write"
    ORDERS_READ = "orders:read"
    ORDERS_WRITE = "orders:write"  # checkout, pay
    REFUNDS = "refunds"  # void / refund
    HEALTH_READ = "health:read"
    FLEET_READ = "fleet:read"  # views across every installation at once (staff only)
    COMMANDS = "commands"  # send cmd to a device (self-test, log, reboot)
    TICKETS_READ = "tickets:read"
    TICKETS_WRITE = "tickets:write"
    RMA_APPROVE = "rma:approve"
    JOBS_RUN = "jobs:run"  # operator-triggered job pass / test clock
    PROFILE = "profile"  # one's own account (GET /auth/me)


class PaymentType(StrEnum):
    """How a partner company pays: card (through checkout) or invoice (saved directly)."""

    CARD = "card"
    INVOICE = "invoice"


_P = Permission
_ALL = frozenset(Permission)
_SUPPORT = frozenset(
    {
        _P.INSTALLATIONS_READ,
        _P.DEVICES_READ,
        _P.ACCOUNTS_READ,
        _P.SUBSCRIPTIONS_READ,
        _P.ORDERS_READ,
        _P.HEALTH_READ,
        _P.FLEET_READ,
        _P.COMMANDS,
        _P.TICKETS_READ,
        _P.TICKETS_WRITE,
        _P.PROFILE,
    }
)
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: _ALL,
    Role.CS_ADMIN: _SUPPORT
    | {_P.BLACKLIST, _P.AUDIT_READ, _P.ACCOUNTS_WRITE, _P.RMA_APPROVE, _P.REFUNDS},
    Role.SUPPORT: _SUPPORT,
    Role.PARTNER: frozenset(
        {
            _P.INSTALLATIONS_READ,
            _P.INSTALLATIONS_WRITE,
            _P.DEVICES_READ,
            _P.DEVICES_WRITE,
            _P.SUBSCRIPTIONS_READ,
            _P.SUBSCRIPTIONS_WRITE,
            _P.ORDERS_READ,
            _P.ORDERS_WRITE,
            _P.HEALTH_READ,
            _P.TICKETS_READ,
            _P.TICKETS_WRITE,
            _P.PROFILE,
        }
    ),
    Role.OWNER: frozenset(
        {
            _P.INSTALLATIONS_READ,
            _P.DEVICES_READ,
            _P.SUBSCRIPTIONS_READ,
            _P.SUBSCRIPTIONS_WRITE,
            _P.ORDERS_READ,
            _P.ORDERS_WRITE,
            _P.HEALTH_READ,
            _P.TICKETS_READ,
            _P.TICKETS_WRITE,
            _P.PROFILE,
        }
    ),
}


def allowed(role: Role | str, permission: Permission) -> bool:
    """Whether ``role`` holds ``permission``; an unknown role holds nothing."""
    try:
        return permission in ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return False


_WHY_NOT: Mapping[tuple[Role, Permission], Msg] = {
    (Role.SUPPORT, Permission.SUBSCRIPTIONS_WRITE): N_(
        "support agents never add or change subscriptions: the customer or their partner does"
    ),
    (Role.SUPPORT, Permission.ORDERS_WRITE): N_("support agents never place or pay orders"),
    (Role.SUPPORT, Permission.BLACKLIST): N_("only customer-service admins and admins blacklist"),
}


def refusal(role: Role | str, permission: Permission) -> tuple[Msg, dict[str, str]]:
    """Why ``role`` gets a 403 for ``permission``, and who may do it instead, as a
    marked text and its parameters: ``raise Forbidden(template, **params)``."""
    holders = ", ".join(r.value for r in Role if permission in ROLE_PERMISSIONS[r])
    try:
        reason = _WHY_NOT.get((Role(role), permission))
    except ValueError:
        reason = None
    if reason is None:
        return N_(
            "the role '%(role)s' may not do this (needs '%(permission)s', held by: "
            "%(holders)s); ask an administrator"
        ), {"role": f"{role}", "permission": permission.value, "holders": holders}
    return N_("%(why)s (needs '%(permission)s', held by: %(holders)s); ask an administrator"), {
        "why": reason,
        "permission": permission.value,
        "holders": holders,
    }


def markdown_table() -> str:
    """The role table as Markdown (the README's copy; a test keeps them equal)."""
    roles = list(Role)
    lines = [
        "| permission | " + " | ".join(r.value for r in roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for permission in Permission:
        marks = ("yes" if permission in ROLE_PERMISSIONS[r] else "no" for r in roles)
        lines.append(f"| `{permission.value}` | " + " | ".join(marks) + " |")
    return "\n".join(lines)


# contacts and invoicing details -------------------------------------------------------

MAX_ADDRESS = 500
MAX_ADDRESS_LINES = 4
# the VAT prefix of each EU member state's country code (Greece is EL, Northern Ireland XI)
_VAT_PREFIX = {"GR": "EL"}
_EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)


def check_phone(raw: str) -> str:
    """A phone number in international (E.164) form, ``+31201234567``.

    Spaces, dots, dashes and brackets are allowed in ``raw``; the country code is required.

    Raises:
        InvalidRequest: not a number that can exist, or without its ``+`` country code.
    """
    text = raw.strip()
    if not text.startswith("+") or len(text) > 32:
        raise InvalidRequest(
            N_("%(phone)s is not a phone number with its country code, e.g. +31 20 123 4567"),
            phone=repr(text[:32]),
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise InvalidRequest(
            N_("%(phone)s is not a phone number with its country code, e.g. +31 20 123 4567"),
            phone=repr(text[:32]),
        )
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


@dataclass(frozen=True, slots=True)
class InvoicingDetails:
    """What a company's invoices say about it: address, country, VAT number or GSTIN."""

    address: str | None = None  # street lines, one per line
    postcode: str | None = None
    city: str | None = None
    country: str | None = None  # ISO 3166 alpha-2
    vat_number: str | None = None  # EU, with its country prefix
    gst_number: str | None = None  # India (GSTIN)


def _blank(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def check_invoicing(details: InvoicingDetails) -> InvoicingDetails:
    """The details, trimmed and normalised (upper case, no spaces in the tax numbers).

    Raises:
        InvalidRequest: a country that is not an ISO 3166 code; a VAT number whose prefix
            is not an EU member state's (or not the company's country), or whose check
            digits are wrong; a GSTIN of a company not in India, or with a wrong check
            character; both numbers; an address of more than four lines or 500 characters.
    """
    address = _blank(details.address)
    if address is not None:
        lines = [line.strip() for line in address.splitlines() if line.strip()]
        if len(lines) > MAX_ADDRESS_LINES or len(address) > MAX_ADDRESS:
            raise InvalidRequest(
                N_("an address has at most %(lines)s lines and %(most)s characters"),
                lines=MAX_ADDRESS_LINES,
                most=MAX_ADDRESS,
            )
        address = "\n".join(lines)
    postcode, city = _blank(details.postcode), _blank(details.city)
    if postcode is not None and (len(postcode) > 16 or not postcode.isprintable()):
        raise InvalidRequest(N_("a postcode has at most 16 characters"))
    if city is not None and (len(city) > 100 or not city.isprintable()):
        raise InvalidRequest(N_("a city has at most 100 characters"))
    country = _blank(details.country)
    if country is not None:
        country = country.upper()
        if country not in phonenumbers.SUPPORTED_REGIONS | {"AQ", "BV", "HM", "TF", "UM"}:
            raise InvalidRequest(
                N_("%(country)s is not a country code (ISO 3166, two letters, e.g. NL)"),
                country=repr(country[:8]),
            )
    vat, gst = _blank(details.vat_number), _blank(details.gst_number)
    if vat is not None and gst is not None:
        raise InvalidRequest(N_("a company has a VAT number (EU) or a GSTIN (India), not both"))
    if vat is not None:
        vat = _checked_vat(vat, country)
    if gst is not None:
        gst = _checked_gstin(gst, country)
    return InvoicingDetails(address, postcode, city, country, vat, gst)


def _checked_vat(raw: str, country: str | None) -> str:
    number = "".join(c for c in raw.upper() if c.isalnum())[:20]
    prefix = number[:2]
    member = {v: k for k, v in _VAT_PREFIX.items()}.get(prefix, prefix)
    if member not in _EU_COUNTRIES and prefix != "XI":
        raise InvalidRequest(
            N_(
                "a VAT number starts with the code of an EU country (e.g. NL, DE, EL), "
                "not %(prefix)s"
            ),
            prefix=repr(prefix),
        )
    if country is not None and country in _EU_COUNTRIES | {"GB"}:
        expected = "XI" if country == "GB" else _VAT_PREFIX.get(country, country)
        if prefix != expected:
            raise InvalidRequest(
                N_("a VAT number of a company in %(country)s starts with %(expected)s"),
                country=country,
                expected=expected,
            )
    try:
        return str(eu_vat.validate(number))
    except ValidationError:
        raise InvalidRequest(
            N_("%(number)s is not a valid VAT number (check the digits)"), number=repr(number)
        ) from None


def _checked_gstin(raw: str, country: str | None) -> str:
    if country is not None and country != "IN":
        raise InvalidRequest(N_("a GSTIN is the tax number of a company in India (IN)"))
    number = "".join(c for c in raw.upper() if c.isalnum())[:15]
    try:
        return str(gstin.validate(number))
    except ValidationError:
        raise InvalidRequest(
            N_("%(number)s is not a valid GSTIN (15 characters with a check character)"),
            number=repr(number),
        ) from None
