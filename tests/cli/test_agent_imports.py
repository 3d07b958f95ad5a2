"""What `entitle agent run` loads: its RSS (goal < 40 MB, bench/bench_agent_rss.py) is tight."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from agent.hoststats import ProcFS
from simulators import TokenRepositorySimulator

# the modules the agent command imports before it runs (entitle/cli.py, agent_run)
_AGENT_RUN = """
import json, sys
import entitle.cli
from agent.enforcers import FirmwareEnforcer, RetentionPruner
from agent.runtime import open_agent
from agent.session import Connection
import agent.api, agent.firmware
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_the_agent_command_loads_no_cloud_and_no_rich():
    out = subprocess.run(
        [sys.executable, "-c", _AGENT_RUN], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert {"agent", "entitle", "typer", "aiomqtt"} <= loaded  # the probe did run
    assert not loaded & {"rich", "cloud", "fastapi", "sqlalchemy", "firmware_stubs"}


def test_the_cli_console_is_made_on_first_use(capsys):
    from entitle.cli import _real, console

    console.print("hello from the lazy console")
    assert "hello from the lazy console" in capsys.readouterr().out
    assert type(_real(console)).__name__ == "Console"


# what an idle agent never needs (bench/bench_agent_rss.py): sqlite-utils and what it
# loads make the store's tables in a child process at a device's first start only
_SQLITE_UTILS = {"sqlite_utils", "click", "pluggy", "dateutil", "tabulate", "sqlite_fts4"}
# host figures are read from /proc and /sys on Linux, as psutil reads them
_LAZY = _SQLITE_UTILS | ({"psutil"} if ProcFS.available() else set())

# the agent's start as `_run` does it: tables, then the store, its outbox and health
# (one host sample)
_OPEN_AGENT = """
import json, sys
from pathlib import Path
from agent.cli import _make_tables
from agent.runtime import open_agent
data = Path(sys.argv[1])
_make_tables(data)
agent = open_agent(device_id="dev-imports", data_dir=data, connection=None,
                   root_keyset=Path(sys.argv[2]).read_bytes(), health_interval_s=60)
agent.health._host.sample(now=0)
agent.close()
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _start(tmp_path: Path) -> set[str]:
    keyset = tmp_path / "root-keyset.cbor"
    keyset.write_bytes(TokenRepositorySimulator().root_keyset)
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_AGENT, str(tmp_path / "agent"), str(keyset)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out))


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_a_first_start_makes_the_tables_without_loading_sqlite_utils(tmp_path):
    loaded = _start(tmp_path)
    assert {"agent", "sqlite3"} <= loaded  # the probe did run
    assert not loaded & _LAZY
    assert "trust_state" in _tables(tmp_path / "agent" / "agent.db")
    assert {"outbox", "outbox_meta"} <= _tables(tmp_path / "agent" / "outbox.db")


def test_a_restart_on_its_store_loads_no_sqlite_utils(tmp_path):
    _start(tmp_path)
    loaded = _start(tmp_path)  # provisioned now: the state is loaded from the store
    assert {"agent", "sqlite3"} <= loaded
    assert not loaded & _LAZY
