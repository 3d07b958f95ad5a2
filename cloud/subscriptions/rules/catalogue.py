"""What can be bought: products, their terms and prices, and the features devices enforce.

Pure data. Each product is one *service* of an installation (its entitlement
feature name); an installation holds at most one subscription per service, so
the video retention tiers, which all drive ``video_retention``, exclude each
other. Prices are in euro cents: ``monthly_cents`` prices renewals by the
month, ``term_cents`` the terms offered at purchase.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cloud.errors import N_, UnknownProduct

__all__ = ["CATALOGUE", "CURRENCY", "Product", "product", "term_price"]

CURRENCY = "EUR"


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
        }


def _yearly(code: str, name: str, feature: str, monthly: int, **params: Any) -> Product:
    return Product(
        code=code,
        name=name,
        feature=feature,
        params=MappingProxyType(dict(params)),
        monthly_cents=monthly,
        term_cents=MappingProxyType({12: monthly * 12}),
    )


_RESOLUTIONS = {"720p": 100, "1080p": 200, "4k": 400}  # cents per month for 7 days kept
_DAYS = {7: 1, 30: 3, 90: 7}  # price multiplier by retention days


def _video(resolution: str, days: int) -> Product:
    monthly = _RESOLUTIONS[resolution] * _DAYS[days]
    return _yearly(
        f"VR-{resolution.upper()}-{days:02d}D",
        f"Camera video retention, {resolution}, {days} days",
        "video_retention",
        monthly,
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
