"""The ``packaging`` mark: tests that build and install a distribution (``-m "not packaging"``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "packaging: builds and installs a distribution in a fresh venv (slow)"
    )
