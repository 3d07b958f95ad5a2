"""The whole schema: every feature's tables, imported so that ``Base.metadata`` is complete.

Alembic's environment and the schema test compare this to the revisions;
the app imports it before the first query so that every foreign key finds
its table.
"""

from cloud.accounts import tables as accounts
from cloud.billing import tables as billing
from cloud.database import Base
from cloud.devices import tables as devices
from cloud.health import tables as health
from cloud.notifications import tables as notifications
from cloud.repairs import tables as repairs
from cloud.subscriptions import tables as subscriptions
from cloud.tickets import tables as tickets

__all__ = ["Base", "metadata"]

metadata = Base.metadata
_FEATURES = (
    accounts,
    billing,
    devices,
    health,
    notifications,
    repairs,
    subscriptions,
    tickets,
)
