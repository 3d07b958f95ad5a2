"""The catalogue: the vendors' service codes, terms, prices and the features devices enforce."""

from __future__ import annotations

import pytest

from cloud.devices.rules import check_grant
from cloud.errors import UnknownProduct
from cloud.subscriptions.rules.catalogue import CATALOGUE, product, term_price


def test_service_codes_map_to_device_features() -> None:
    assert product("TSF16100").feature == "remote_access"
    assert product("TSF12125").feature == "voice_control"
    app = product("TSF16101")
    assert (app.feature, app.terms) == ("app_access", (12, 36, 60, 120))


def test_video_retention_tiers_are_resolution_by_days() -> None:
    tiers = {
        (p.params["resolution"], p.params["days"])
        for p in CATALOGUE.values()
        if p.feature == "video_retention"
    }
    assert tiers == {(r, d) for r in ("720p", "1080p", "4k") for d in (7, 30, 90)}
    tier = product("VR-1080P-30D")
    assert dict(tier.params) == {"days": 30, "resolution": "1080p"}
    # more days or more pixels never costs less
    assert (
        product("VR-4K-90D").monthly_cents
        > tier.monthly_cents
        > product("VR-720P-07D").monthly_cents
    )


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_product_fits_in_a_token_and_has_positive_prices(code: str) -> None:
    item = CATALOGUE[code]
    check_grant(item.feature, dict(item.params))  # raises if devices could not read it
    assert item.monthly_cents > 0 and all(c > 0 for c in item.term_cents.values())
    assert item.default_term_months in item.terms
    assert item.to_json()["code"] == code


def test_prices_by_term_and_by_month() -> None:
    app = product("TSF16101")
    assert term_price(app, 120) < 10 * term_price(app, 12)  # a 10-year term is cheaper per year
    assert term_price(product("TSF16100"), 7) == 7 * 500


def test_unknown_code_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownProduct, match="TSF16100"):
        product("TSF99999")
