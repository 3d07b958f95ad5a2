"""Who may do what: one table from role to permissions (pure, no I/O).

Every protected route declares the one permission it needs with
``Depends(require(Permission.X))`` (``cloud.api.deps``); a test walks every
route and every role against this table. Scoping (a partner sees only the
installations where it is a system integrator, an owner only their own) is
decided by the accounts module on top of this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

__all__ = ["ROLE_PERMISSIONS", "Permission", "Role", "allowed"]


class Role(StrEnum):
    """Roles of users and API keys."""

    ADMIN = "admin"  # global admin (vendor)
    CS_ADMIN = "cs_admin"  # customer-service admin
    SUPPORT = "support"  # support agent
    PARTNER = "partner"  # system integrator, member of a partner company
    OWNER = "owner"  # installation owner


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
    COMMANDS = "commands"  # send cmd to a device (self-test, log, reboot)
    TICKETS_READ = "tickets:read"
    TICKETS_WRITE = "tickets:write"
    RMA_APPROVE = "rma:approve"
    JOBS_RUN = "jobs:run"  # operator-triggered job pass / test clock


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
        _P.COMMANDS,
        _P.TICKETS_READ,
        _P.TICKETS_WRITE,
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
        }
    ),
}


def allowed(role: Role | str, permission: Permission) -> bool:
    """Whether ``role`` holds ``permission``; an unknown role holds nothing."""
    try:
        return permission in ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return False
