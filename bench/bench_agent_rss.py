"""Idle RSS of a real `entitle agent run` process, beside a bare interpreter.

Starts Mosquitto with a generated config, provisions one device from an
in-memory token repository (simulator), starts the agent as its own process
connected to the broker with its local API socket, lets it sit idle, then
reads VmRSS from /proc. The bare `python -c 'sleep'` figure of the same run
is the floor no Python agent can go under.

    python bench/bench_agent_rss.py --idle 5
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from agent.runtime import open_agent
from broker.mosquitto import MosquittoBroker
from simulators import TokenRepositorySimulator


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main(idle: float) -> None:
    repo = TokenRepositorySimulator()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        password = secrets.token_urlsafe(12)
        with MosquittoBroker(
            root / "broker", accounts={"cloud": "x" + password, "dev-rss": password}
        ) as broker:
            data_dir = root / "agent"
            agent = open_agent(
                device_id="dev-rss",
                data_dir=data_dir,
                connection=None,
                root_keyset=repo.root_keyset,
            )
            now = int(time.time())
            agent.store.save(agent.state)
            agent.store.close()
            token = repo.token("dev-rss", {"remote_access": now + 86400}, now=now)
            (root / "token.cbor").write_bytes(token)
            env = dict(
                os.environ,
                ENTITLE_DEVICE_ID="dev-rss",
                ENTITLE_AGENT_DATA_DIR=str(data_dir),
                ENTITLE_BROKER_URL=broker.url_for("dev-rss", password),
            )
            proc = subprocess.Popen([sys.executable, "-m", "entitle.cli", "agent", "run"], env=env)
            bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            try:
                sock = data_dir / "agent.sock"
                transport = httpx.HTTPTransport(uds=str(sock))
                with httpx.Client(transport=transport, base_url="http://a") as client:
                    deadline = time.time() + 20
                    while True:
                        try:
                            if client.get("/status").json()["connected"]:
                                break
                        except (httpx.HTTPError, OSError):
                            pass
                        if time.time() > deadline:
                            raise SystemExit("agent did not connect; see its log above")
                        time.sleep(0.1)
                    time.sleep(idle)
                    client.get("/features")
                agent_rss, bare_rss = rss_mb(proc.pid), rss_mb(bare.pid)
            finally:
                proc.terminate()
                bare.terminate()
                proc.wait(10)
                bare.wait(10)
    print(
        f"agent idle RSS: {agent_rss:.1f} MB (goal < 60 MB); "
        f"bare python interpreter in the same run: {bare_rss:.1f} MB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=5.0)
    main(parser.parse_args().idle)
