"""What `entitle agent run` loads: its RSS (goal < 40 MB, bench/bench_agent_rss.py) is tight."""

from __future__ import annotations

import json
import subprocess
import sys

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
