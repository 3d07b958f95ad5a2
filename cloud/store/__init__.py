"""Persistence of installations, devices, grants, issued tokens and API keys (SQLAlchemy 2).

The schema is managed by Alembic (``cloud/migrations``) and upgraded by
:meth:`Store.open`; it runs on a SQLite file or PostgreSQL.
"""

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
