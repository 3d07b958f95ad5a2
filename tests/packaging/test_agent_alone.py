"""The agent installed alone: what a gateway gets from ``pip install ./packaging/agent``.

One test, in steps, in a fresh virtual environment in a temporary folder:

1. install ``packaging/agent`` (a built wheel, not editable) and the test tools
   the agent's and protocol's tests use (pytest, pytest-asyncio, pytest-timeout,
   hypothesis; pycose and cwt for the COSE interop tests), versions as in the
   root's ``dev`` extra;
2. none of the cloud's libraries is installed, nor pydantic, uvicorn, starlette,
   typer or httpx (left out for the agent's memory), and no package but protocol,
   common and agent of ours (``import cloud`` fails);
3. ``entitle-agent run --help`` answers;
4. ``tests/agent`` and ``tests/protocol`` pass there: they are copied into a work
   folder with the test doubles they drive the agent with (``firmware_stubs``,
   ``simulators``'s token repository), and pytest runs from that folder, where
   no ``agent``, ``common`` or ``protocol`` folder exists: the code under test
   is the installed wheel's (step 4 checks where it imports from).

It needs the package index (the wheel's build backend and the dependencies) and
takes a minute or two; deselect it with ``-m "not packaging"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
TEST_TOOLS = {"pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "pycose", "cwt"}
CLOUD_ONLY = {
    "fastapi",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg-binary",
    "fpdf2",
    "argon2-cffi",
    "aiosmtplib",
    "amqtt",
    "entitle",  # the developer's everything-distribution
}
# libraries the agent could use but leaves out for its memory (bench/bench_agent_rss.py)
NOT_FOR_THE_AGENT = {"pydantic", "pydantic-settings", "uvicorn", "starlette", "typer", "httpx"}
OURS_INSTALLED = {"agent", "common", "protocol"}
OURS_ABSENT = ["cloud", "broker", "entitle", "firmware_stubs", "simulators"]
TESTS = ["tests/agent", "tests/protocol"]
INSTALL_S = 900  # pip builds the wheel and fetches ~40 distributions: slow on a slow index
RUN_S = 1200


def _run(
    cmd: Sequence[str | Path], *, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "PYTHON", "VIRTUAL_ENV", "ENTITLE_"))
    }
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _checked(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def _test_tools() -> list[str]:
    """The test tools' requirements as the root's dev extra pins them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    picked = [r for r in dev if re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() in TEST_TOOLS]
    assert len(picked) == len(TEST_TOOLS), f"dev extra lacks some of {sorted(TEST_TOOLS)}"
    return picked


def _work_folder(into: Path) -> Path:
    """The tests, their pytest settings and test doubles; none of the code under test."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for path in ["tests/__init__.py", "tests/conftest.py", "tests/waiting.py"]:
        (into / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, into / path)
    for folder in [*TESTS, "firmware_stubs", "simulators"]:
        shutil.copytree(REPO / folder, into / folder, ignore=ignore)
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    lines = ["[pytest]"]
    for key, value in options["ini_options"].items():
        shown = " ".join(value) if isinstance(value, list) else str(value)
        lines.append(f"{key} = {shown}")
    (into / "pytest.ini").write_text("\n".join(lines) + "\n")
    assert not [p for p in ("agent", "common", "protocol") if (into / p).exists()]
    return into


def _collected(tests: Sequence[str]) -> int:
    """How many tests the development environment collects in ``tests``."""
    out = _checked(
        _run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
            + list(tests),
            cwd=REPO,
            timeout=RUN_S,
        )
    )
    return int(re.search(r"(\d+) tests? collected", out).group(1))  # type: ignore[union-attr]


def test_the_agent_installs_and_runs_alone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _checked(_run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=INSTALL_S))
    python = venv / "bin" / "python"

    # 1. the agent's distribution, built from packaging/agent, and the test tools
    _checked(
        _run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"]
            + [REPO / "packaging" / "agent", *_test_tools()],
            cwd=tmp_path,
            timeout=INSTALL_S,
        )
    )

    # 2. nothing of the cloud's
    names = json.loads(
        _checked(
            _run(
                [
                    python,
                    "-c",
                    "import importlib.metadata as m, json; "
                    "print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-') "
                    "for d in m.distributions()})))",
                ],
                cwd=tmp_path,
                timeout=RUN_S,
            )
        )
    )
    assert "entitle-agent" in names
    assert not CLOUD_ONLY & set(names), f"cloud packages in the agent's install: {names}"
    assert not NOT_FOR_THE_AGENT & set(names), f"heavy packages in the agent's install: {names}"
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in {OURS_ABSENT}}}))"
    )
    found = json.loads(_checked(_run([python, "-c", probe], cwd=tmp_path, timeout=RUN_S)))
    assert not any(found.values()), f"packages that are not the agent's: {found}"
    refused = _run([python, "-c", "import cloud"], cwd=tmp_path, timeout=RUN_S)
    assert refused.returncode != 0 and "No module named 'cloud'" in refused.stderr

    # 3. its own command
    helped = _checked(
        _run([venv / "bin" / "entitle-agent", "run", "--help"], cwd=tmp_path, timeout=RUN_S)
    )
    assert "usage: entitle-agent run" in helped and "--serial-port" in helped

    # 4. its tests, against the installed wheel
    work = _work_folder(tmp_path / "work")
    where = _checked(
        _run(
            [
                python,
                "-c",
                "import agent, common, protocol; print(agent.__file__, "
                "common.__file__, protocol.__file__)",
            ],
            cwd=work,
            timeout=RUN_S,
        )
    ).split()
    site = str(venv / "lib")
    assert all(path.startswith(site) for path in where), f"not the installed wheel: {where}"
    ran = _run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *TESTS],
        cwd=work,
        timeout=RUN_S,
    )
    summary = ran.stdout.strip().splitlines()[-1] if ran.stdout.strip() else ""
    assert ran.returncode == 0, f"{summary}\n{ran.stdout[-8000:]}\n{ran.stderr[-4000:]}"
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    skipped = re.search(r"(\d+) skipped", summary)
    assert not skipped, f"tests skipped where only the agent is installed: {ran.stdout[-4000:]}"
    assert passed == _collected(TESTS), f"not every test ran: {summary}"
