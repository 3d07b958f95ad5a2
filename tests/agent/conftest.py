"""Hypothesis profiles for the agent's property and state-machine tests.

``default`` keeps CI quick; ``long`` is the soak run::

    .venv/bin/pytest tests/agent/test_stateful.py --hypothesis-profile=long
    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/agent

(``--hypothesis-profile`` is read before this file is imported only when the
command names a path inside ``tests/agent``; the environment variable works
from anywhere.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# "default" is the active profile, so registering it changes it in place for the
# whole session: only what the state machine needs is changed here (the protocol
# fuzzers keep their example counts); test_stateful.py caps its own examples at 50
# under "default" and "ci".
_HERE = Path(__file__).parent

settings.register_profile(
    "default", settings.get_profile("default"), stateful_step_count=30, deadline=None
)
settings.register_profile(
    "long",
    max_examples=10_000,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A soak run outlasts the suite's per-test timeout by design: lift it for that run."""
    if settings.get_current_profile_name() == "long":
        for item in items:
            if item.path.is_relative_to(_HERE):
                item.add_marker(pytest.mark.timeout(0))
