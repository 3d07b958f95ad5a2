"""Preconditions of a purchase (TTecomm): a service is sold only to an installation that
is connected, and, for a product with a minimum firmware, whose controller runs that
version or newer. Pure: the reports, the window and ``now`` are arguments.

*Connected*: some device of the installation reported health at most
``window_s`` seconds before ``now``. *Firmware*: the newest version any of the
installation's controllers (gateways) reports, compared with the product's
``min_firmware`` as semantic versions (``3.7.10`` is above ``3.7.3``; missing
parts count as 0; a leading name such as ``Prosoft 3.8`` and a suffix such as
``-rc1`` are ignored).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cloud.errors import N_, InvalidRequest
from cloud.subscriptions.errors import FirmwareTooOld, NotConnected
from cloud.subscriptions.rules.catalogue import Product

__all__ = ["DeviceReport", "check_preconditions", "is_connected", "parse_version"]

_VERSION = re.compile(r"(\d{1,9}(?:\.\d{1,9}){0,3})")


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What the installation's device last told: its kind, when, which firmware."""

    device_id: str
    kind: str
    last_seen: int | None
    firmware: str | None


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"3.7.3"`` -> ``(3, 7, 3, 0)``; None when the text holds no version."""
    found = _VERSION.search(text)
    if found is None:
        return None
    parts = [int(p) for p in found.group(1).split(".")]
    return tuple(parts + [0] * (4 - len(parts)))


def _recent(reports: Sequence[DeviceReport], now: int, window_s: int) -> list[DeviceReport]:
    return [r for r in reports if r.last_seen is not None and now - r.last_seen <= window_s]


def is_connected(reports: Sequence[DeviceReport], *, now: int, window_s: int) -> bool:
    """Whether some device reported at most ``window_s`` seconds before ``now``."""
    return bool(_recent(reports, now, window_s))


def check_preconditions(
    item: Product,
    *,
    installation_id: str,
    reports: Sequence[DeviceReport],
    now: int,
    window_s: int,
) -> None:
    """Refuse buying ``item`` for an installation that does not meet its preconditions.

    Every product needs the installation connected (the token must reach its
    devices); only a product with ``min_firmware`` checks the controller's version.

    Raises:
        NotConnected: no device reported within ``window_s`` before ``now``.
        FirmwareTooOld: no controller reports a firmware at or above the minimum.
    """
    recent = _recent(reports, now, window_s)
    if not recent:
        raise NotConnected(
            N_(
                "installation %(installation)s is not connected: none of its devices "
                "reported in the last %(hours)d hours; connect the controller to the "
                "internet, wait for its report, then buy %(product)s again"
            ),
            installation=installation_id,
            hours=window_s // 3600,
            product=item.name,
        )
    if item.min_firmware is None:
        return
    minimum = parse_version(item.min_firmware)
    if minimum is None:
        raise InvalidRequest(N_("the catalogue's minimum firmware is not a version"))
    versions = [
        (v, r.firmware)
        for r in recent
        if r.kind == "gateway" and r.firmware is not None
        for v in [parse_version(r.firmware)]
        if v is not None
    ]
    best = max(versions, default=None)
    if best is None or best[0] < minimum:
        raise FirmwareTooOld(
            N_(
                "%(product)s needs controller firmware %(minimum)s or higher, the controller "
                "of installation %(installation)s reports %(found)s: update the controller "
                "to Prosoft %(minimum)s or higher, then buy again"
            ),
            product=item.name,
            minimum=item.min_firmware,
            installation=installation_id,
            found=best[1] if best is not None else N_("no firmware version"),
        )
