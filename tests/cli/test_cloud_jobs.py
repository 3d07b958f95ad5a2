"""``entitle cloud jobs``: the job runner alone, which takes no share of the health stream."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from entitle import cli

pytestmark = pytest.mark.usefixtures("clean_entitle_environment")


def test_cloud_jobs_runs_the_jobs_and_consumes_no_health(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Any] = []
    monkeypatch.setattr(cli, "_serve_one", lambda settings, verbose: served.append(settings))
    # what a worker's environment file may say is overridden: this process is the runner
    env = {"ENTITLE_RUN_JOBS": "false", "ENTITLE_INGEST_HEALTH": "true"}
    result = CliRunner().invoke(cli.app, ["cloud", "jobs"], env=env)
    assert result.exit_code == 0, result.output
    [settings] = served
    assert settings.run_jobs is True
    assert settings.ingest_health is False
    # and 'cloud serve' keeps what it was told
    result = CliRunner().invoke(cli.app, ["cloud", "serve"], env=env)
    assert result.exit_code == 0, result.output
    assert (served[1].run_jobs, served[1].ingest_health) == (False, True)
