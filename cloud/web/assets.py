"""The front-end libraries (installed by npm from package.json + package-lock.json) and our own
static files, served by the app itself: an on-premise installation has no internet, so
nothing comes from a CDN.

Only the named folders of each package are served, never ``node_modules`` as a whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

__all__ = ["CLOUD_DIR", "VENDOR", "missing_vendor", "mount_static"]

_log = logging.getLogger(__name__)

CLOUD_DIR = Path(__file__).resolve().parents[1]

VENDOR: dict[str, str] = {
    # URL name under /static/vendor/ → folder inside node_modules
    "pico": "@picocss/pico/css",
    "htmx": "htmx.org/dist",
    "htmx-sse": "htmx-ext-sse/dist",
    "uplot": "uplot/dist",
    "swagger-ui": "swagger-ui-dist",
    "axe-core": "axe-core",  # injected by the browser tests only
}


def missing_vendor(node_modules: Path) -> list[str]:
    """The vendor folders that are not installed (empty when ``npm ci`` ran)."""
    return [name for name, sub in VENDOR.items() if not (node_modules / sub).is_dir()]


def mount_static(app: FastAPI, node_modules: Path) -> None:
    """Mount ``/static/app`` (ours), ``/static/<feature>`` and ``/static/vendor/<name>``."""
    app.mount("/static/app", StaticFiles(directory=CLOUD_DIR / "web" / "static"), name="static-app")
    for feature_static in sorted(CLOUD_DIR.glob("*/static")):
        feature = feature_static.parent.name
        if feature != "web":
            app.mount(
                f"/static/{feature}",
                StaticFiles(directory=feature_static),
                name=f"static-{feature}",
            )
    missing = missing_vendor(node_modules)
    if missing:
        _log.warning(
            "front-end libraries missing in %s (%s): pages render without style and script; "
            "install them with 'npm ci --ignore-scripts' in the source tree (./run.sh does it) "
            "or set ENTITLE_WEB_ASSETS_DIR",
            node_modules,
            ", ".join(missing),
        )
    for name, sub in VENDOR.items():
        app.mount(
            f"/static/vendor/{name}",
            StaticFiles(directory=node_modules / sub, check_dir=False),
            name=f"vendor-{name}",
        )
