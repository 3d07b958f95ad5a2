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
from enum import StrEnum

from cloud.errors import N_, Msg

__all__ = [
    "ROLE_PERMISSIONS",
    "STAFF_ROLES",
    "PaymentType",
    "Permission",
    "Role",
    "allowed",
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
