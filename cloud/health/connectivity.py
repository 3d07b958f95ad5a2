"""What the subscriptions' purchase preconditions read of health: when each device of an
installation was last heard of, and the firmware its latest report named.

Handed to :class:`cloud.subscriptions.service.SubscriptionService` by the app
(subscriptions sit below health and do not import it).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.devices.tables import DeviceRow
from cloud.health.tables import HealthStateRow
from cloud.subscriptions.rules.preconditions import DeviceReport

__all__ = ["installation_reports"]


def installation_reports(session: Session, installation_id: str) -> list[DeviceReport]:
    """Every device of the installation with its last report time and firmware (None
    when it never reported)."""
    query = (
        select(DeviceRow.id, DeviceRow.kind, HealthStateRow.last_seen, HealthStateRow.latest_report)
        .outerjoin(HealthStateRow, HealthStateRow.device_id == DeviceRow.id)
        .where(DeviceRow.installation_id == installation_id)
        .order_by(DeviceRow.id)
    )
    out = []
    for device_id, kind, last_seen, report in session.execute(query):
        fw = report.get("fw") if isinstance(report, dict) else None
        out.append(
            DeviceReport(
                device_id=device_id,
                kind=str(kind.value if hasattr(kind, "value") else kind),
                last_seen=last_seen,
                firmware=fw if isinstance(fw, str) else None,
            )
        )
    return out
