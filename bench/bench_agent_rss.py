"""Idle RSS of a real agent process, before and after a change, in the same run.

Starts Mosquitto with a generated config and, one after the other, runs the
agent as its own process from two source trees: ``--before`` (a git revision,
extracted with ``git archive`` into a temporary folder; default 88164be, the
last commit before the lean agent: pydantic-settings, uvicorn/starlette, typer)
and the current tree.
Each agent provisions itself from the same root key set, connects to the
broker with its local API socket, sits idle, and then its VmRSS is read from
/proc. Each tree is measured both as a gateway runs it
(``entitle-agent run``, i.e. ``python -m agent.cli run``) and as the
development tool runs it (``entitle agent run``), first on an empty data folder
(it provisions itself: a device's first start) and then again on the store it
made (every later start). The bare ``python -c sleep``
figure of the same run is the floor no Python agent can go under; the goal
(< 40 MB) is printed beside it.

    python bench/bench_agent_rss.py --idle 5
    python bench/bench_agent_rss.py --before HEAD~3
"""

from __future__ import annotations

import argparse
import compileall
import io
import os
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from broker.mosquitto import MosquittoBroker
from simulators import TokenRepositorySimulator

REPO = Path(__file__).resolve().parent.parent
BEFORE = "88164be"
GOAL_MB = 40
_ENTITLE_AGENT_RUN = ["-m", "entitle.cli", "agent", "run"]


@dataclass(frozen=True, slots=True)
class Variant:
    label: str
    tree: Path
    command: Sequence[str]  # after ``python``


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def extract(rev: str, into: Path) -> Path:
    """The tree of ``rev`` in ``into`` (git archive: no worktree left behind in .git)."""
    tar = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")
    return into


def idle_rss(
    variant: Variant, *, broker: MosquittoBroker, password: str, data_dir: Path, idle: float
) -> float:
    """Start the agent of ``variant`` (its own tree first on sys.path), let it idle, read RSS.

    With no store in ``data_dir`` the agent provisions itself (a device's first start);
    with one, it restarts on it (every later start).
    """
    device = "dev-rss"
    root = data_dir.parent
    env = dict(
        os.environ,
        PYTHONPATH=str(variant.tree),
        ENTITLE_DEVICE_ID=device,
        ENTITLE_AGENT_DATA_DIR=str(data_dir),
        ENTITLE_ROOT_KEYSET_FILE=str(root / "root-keyset.cbor"),
        ENTITLE_BROKER_URL=broker.url_for(device, password),
    )
    proc = subprocess.Popen([sys.executable, *variant.command], cwd=variant.tree, env=env)
    try:
        transport = httpx.HTTPTransport(uds=str(data_dir / "agent.sock"))
        with httpx.Client(transport=transport, base_url="http://a", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/status").json()["connected"]:
                        break
                except (httpx.HTTPError, OSError, ValueError):
                    pass
                if proc.poll() is not None:
                    raise SystemExit(f"{variant.label}: the agent exited; see its log above")
                if time.monotonic() > deadline:
                    raise SystemExit(f"{variant.label}: agent did not connect; see its log above")
                time.sleep(0.1)
            time.sleep(idle)
            client.get("/features")
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def compiled(tree: Path) -> Path:
    """``tree`` with its packages' bytecode written, as ``pip install`` leaves them.

    Without it a module whose ``.pyc`` is missing (``PYTHONDONTWRITEBYTECODE=1``, a
    fresh checkout) is compiled from source at every start, and the compiler's memory
    (~1.5 MB for common/config.py and agent/settings.py) is counted as the agent's.
    """
    for package in ("agent", "common", "protocol", "entitle", "firmware_stubs"):
        if (tree / package).is_dir():
            compileall.compile_dir(tree / package, quiet=1)
    return tree


def main(*, idle: float, before: str) -> None:
    repo = TokenRepositorySimulator()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "root-keyset.cbor").write_bytes(repo.root_keyset)
        old = compiled(extract(before, root / "before"))
        compiled(REPO)
        variants = [
            Variant(f"before ({before}): entitle-agent run", old, ["-m", "agent.cli", "run"]),
            Variant(f"before ({before}): entitle agent run", old, _ENTITLE_AGENT_RUN),
            Variant("after: entitle-agent run", REPO, ["-m", "agent.cli", "run"]),
            Variant("after: entitle agent run", REPO, _ENTITLE_AGENT_RUN),
        ]
        password = secrets.token_urlsafe(12)
        with MosquittoBroker(
            root / "broker", accounts={"cloud": "x" + password, "dev-rss": password}
        ) as broker:
            figures = []
            for v in variants:
                data_dir = root / f"agent-{secrets.token_hex(4)}"
                for start in ("first start", "restart"):
                    rss = idle_rss(
                        v, broker=broker, password=password, data_dir=data_dir, idle=idle
                    )
                    figures.append((f"{v.label}, {start}", rss))
        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            time.sleep(min(idle, 1.0))
            bare_rss = rss_mb(bare.pid)
        finally:
            bare.terminate()
            bare.wait(10)
    width = max(len(label) for label, _ in figures)
    print(f"agent idle RSS after {idle:g} s connected:")
    for label, rss in figures:
        verdict = "meets" if rss < GOAL_MB else "misses"
        print(f"  {label:<{width}}  {rss:5.1f} MB  ({verdict} the goal)")
    print(f"  {'goal':<{width}}  <{GOAL_MB:4d} MB")
    print(f"  {'bare python interpreter, same run':<{width}}  {bare_rss:5.1f} MB  (the floor)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--before", default=BEFORE, help="git revision to compare with")
    args = parser.parse_args()
    main(idle=args.idle, before=args.before)
