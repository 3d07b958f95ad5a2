"""What can be bought: products, their terms and prices, and the features devices enforce.

Pure data. Each product is one *service* (its entitlement feature name) with a
*scope*: installation-wide (Remote Services, Voice Control: every device of the
installation carries it), per device (a camera's video-retention plan: only that
camera's token carries it, so one site mixes 7-day 720p and 30-day 4K cameras)
or per user (an office user of an intercom, by the month, at most
:attr:`Product.max_per_installation` of them). One subscription per service and
scope: the video retention tiers, which all drive ``video_retention``, exclude
each other on one camera. Prices are in euro cents: ``monthly_cents`` prices
renewals by the month, ``term_cents`` the terms offered at purchase.

``min_firmware`` is the lowest controller firmware (semantic version) the service
runs on (the manual's "Prosoft 3.7.3 or higher"); such a product is sold only to a
connected installation whose controller reports that version or newer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from cloud.errors import N_, UnknownProduct

__all__ = ["CATALOGUE", "CURRENCY", "Product", "Scope", "product", "term_price"]

CURRENCY = "EUR"


class Scope(enum.StrEnum):
    """What one subscription of a product covers."""

    INSTALLATION = "installation"  # every device of the installation
    DEVICE = "device"  # one device (of :attr:`Product.device_kinds`)
    USER = "user"  # one user or department reference of the installation


@dataclass(frozen=True, slots=True)
class Product:
    """One orderable service and what a device is told it may do when it is paid."""

    code: str
    name: str
    feature: str  # the entitlement feature name devices check
    params: Mapping[str, Any]  # feature parameters carried in the token
    monthly_cents: int  # price of a one-month renewal
    term_cents: Mapping[int, int] = field(default_factory=dict)  # months -> price at purchase
    default_term_months: int = 12
    scope: Scope = Scope.INSTALLATION
    device_kinds: tuple[str, ...] = ()  # per-device products: the kinds that carry them
    max_per_installation: int | None = None  # per-user products: how many users at most
    min_firmware: str | None = None  # lowest controller firmware it runs on (x.y.z)

    @property
    def terms(self) -> tuple[int, ...]:
        """Terms (months) offered at purchase."""
        return tuple(sorted(self.term_cents))

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "feature": self.feature,
            "params": dict(self.params),
            "monthly_cents": self.monthly_cents,
            "currency": CURRENCY,
            "terms": [{"months": m, "cents": self.term_cents[m]} for m in self.terms],
            "default_term_months": self.default_term_months,
            "scope": self.scope.value,
            "device_kinds": list(self.device_kinds),
            "max_per_installation": self.max_per_installation,
            "min_firmware": self.min_firmware,
        }


def _yearly(
    code: str,
    name: str,
    feature: str,
    monthly: int,
    *,
    scope: Scope = Scope.INSTALLATION,
    device_kinds: tuple[str, ...] = (),
    **params: Any,
) -> Product:
    return Product(
        code=code,
        name=name,
        feature=feature,
        params=MappingProxyType(dict(params)),
        monthly_cents=monthly,
        term_cents=MappingProxyType({12: monthly * 12}),
        scope=scope,
        device_kinds=device_kinds,
    )


def _with_minimum(item: Product, *, min_firmware: str) -> Product:
    return replace(item, min_firmware=min_firmware)


_RESOLUTIONS = {"720p": 100, "1080p": 200, "4k": 400}  # cents per month for 7 days kept
_DAYS = {7: 1, 30: 3, 90: 7}  # price multiplier by retention days


def _video(resolution: str, days: int) -> Product:
    monthly = _RESOLUTIONS[resolution] * _DAYS[days]
    return _yearly(
        f"VR-{resolution.upper()}-{days:02d}D",
        f"Camera video retention, {resolution}, {days} days",
        "video_retention",
        monthly,
        scope=Scope.DEVICE,
        device_kinds=("camera",),
        days=days,
        resolution=resolution,
    )


_PRODUCTS = [
    _yearly("TSF16100", "Remote Services", "remote_access", 500),
    _yearly("TSF12125", "Voice Control", "voice_control", 300),
    Product(
        code="TSF16101",
        name="App access",
        feature="app_access",
        params=MappingProxyType({}),
        monthly_cents=250,
        # multi-year terms are cheaper per year
        term_cents=MappingProxyType({12: 3000, 36: 8000, 60: 12_500, 120: 22_000}),
    ),
    *(_video(r, d) for r in _RESOLUTIONS for d in _DAYS),
    # Akuvox: "select the office users ... by the month, maximum 60"
    Product(
        code="AKV-OFFICE-USER",
        name="Intercom office user",
        feature="office_user",
        params=MappingProxyType({}),
        monthly_cents=150,
        term_cents=MappingProxyType({1: 150, 12: 1800}),
        default_term_months=1,
        scope=Scope.USER,
        max_per_installation=60,
    ),
    # TTecomm: sold only to a connected installation on "Prosoft 3.7.3 or higher"
    _with_minimum(
        _yearly("TSF16110", "Remote Diagnostics", "remote_diagnostics", 700), min_firmware="3.7.3"
    ),
]

CATALOGUE: Mapping[str, Product] = MappingProxyType({p.code: p for p in _PRODUCTS})


def product(code: str) -> Product:
    """The product with this code.

    Raises:
        UnknownProduct: no such code (the message lists the valid ones).
    """
    try:
        return CATALOGUE[code]
    except KeyError:
        raise UnknownProduct(
            N_("no product %(code)s: choose one of %(codes)s"),
            code=repr(code),
            codes=", ".join(sorted(CATALOGUE)),
        ) from None


def term_price(item: Product, months: int) -> int:
    """Price of ``months`` months: the term price when offered, else by the month."""
    return item.term_cents.get(months, item.monthly_cents * months)
