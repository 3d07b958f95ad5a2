"""Persistence of installations, devices, grants, issued tokens and API keys (SQLAlchemy 2).

The schema is managed by Alembic (``cloud/migrations``) and upgraded by
:meth:`Store.open`; it runs on a SQLite file or PostgreSQL.
"""

# Every table module is imported so that Base.metadata is complete (migrations test).
from cloud.store import accounts as _accounts  # noqa: E402,F401
from cloud.store import billing as _billing  # noqa: E402,F401
from cloud.store import health as _health  # noqa: E402,F401
from cloud.store import notifications as _notifications  # noqa: E402,F401
from cloud.store import subscriptions as _subscriptions  # noqa: E402,F401
from cloud.store.database import downgrade, make_engine, upgrade
from cloud.store.models import ApiKeyRow, Base, DeviceRow, GrantRow, InstallationRow, TokenRow
from cloud.store.repository import Store, Tx

__all__ = [
    "ApiKeyRow",
    "Base",
    "DeviceRow",
    "GrantRow",
    "InstallationRow",
    "Store",
    "TokenRow",
    "Tx",
    "downgrade",
    "make_engine",
    "upgrade",
]
