"""Shared pytest setup: the hypothesis profiles, and nothing that needs more than pytest.

This file only needs pytest and hypothesis, so ``tests/agent`` and ``tests/protocol``
run where only the agent is installed (tests/packaging/test_agent_alone.py does
that). The fixtures of a real Mosquitto, PostgreSQL and an SMTP server live in
their own modules (``tests/broker_fixtures.py``, ``tests/database_fixtures.py``,
``tests/smtp_fixtures.py``); the conftest of each folder that uses them
(``tests/cli``, ``tests/cloud``, ``tests/integration``) imports them.

Hypothesis profiles are registered here, once for the whole suite (this file is
imported before any test module, so every ``@settings`` inherits the loaded one):

``ci`` (loaded unless ``HYPOTHESIS_PROFILE`` names another)
    Derandomized: every run tries the same examples, so the verdict is the
    code's, not the seed's or the machine's. No deadline and no ``too_slow``
    health check (both are wall-clock thresholds that flake on a loaded
    machine), no example database (a failure found on one run must not turn
    into a different test on the next); a failure prints its reproduction blob.
    Each bug the property tests ever found is kept as an explicit ``@example``
    or regression test next to the property, so it is tried on every run.
``long``
    The randomized soak run, with a local example database so a failure replays::

        HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/agent/test_stateful.py
        .venv/bin/pytest tests/agent --hypothesis-profile=long

    Property tests lift the per-test timeout for it.
``default``
    Hypothesis' own randomized profile, without its deadline.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, is_hypothesis_test, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=10_000,
    stateful_step_count=50,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("default", settings.get_profile("default"), deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A soak run outlasts the suite's per-test timeout by design: lift it for that run."""
    if settings.get_current_profile_name() != "long":
        return
    for item in items:
        if isinstance(item, pytest.Function) and is_hypothesis_test(item.obj):
            item.add_marker(pytest.mark.timeout(0))


@pytest.fixture
def clean_entitle_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the ``ENTITLE_*`` variables a test sets, and no entitle.toml from the working
    directory (the test runs in ``tmp_path``): for tests of the commands' settings."""
    for name in list(os.environ):
        if name.upper().startswith("ENTITLE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENTITLE_DATA_DIR", str(tmp_path / "data"))
