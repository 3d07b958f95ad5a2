"""Who may read a repair: staff every one; an owner or partner only their installations'
(another customer's repair answers like one that does not exist)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import STAFF_ROLES
from cloud.devices.access import ensure_installation_access
from cloud.errors import NotFound
from cloud.repairs.tables import RepairRow

__all__ = ["UnknownRepair", "is_staff", "load_repair"]


class UnknownRepair(NotFound):
    """No repair with this id (or not one the principal may see)."""


def is_staff(principal: Principal) -> bool:
    return principal.role in STAFF_ROLES


def load_repair(
    session: Session, principal: Principal, repair_id: int, *, lock: bool = False
) -> RepairRow:
    """The repair if ``principal`` may read it (``lock``: FOR UPDATE). Raises UnknownRepair."""
    row = session.get(RepairRow, repair_id, with_for_update=lock)
    missing = UnknownRepair(f"no repair {repair_id}")
    if row is None:
        raise missing
    if not is_staff(principal):
        try:
            ensure_installation_access(session, principal, row.installation_id, write=False)
        except NotFound:
            raise missing from None
    return row
