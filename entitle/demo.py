"""`entitle demo`: a broker, the cloud and a few agents in one process, live.

Everything is real: Mosquitto with the dynamic-security plugin (or amqtt
when mosquitto is absent), the FastAPI cloud on a local port with a
SQLite file, and one agent per device with its own MQTT login, its own store
and its own verifier. The demo grants and revokes services through the
public API and prints what every device decides, as the devices decide it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from agent.runtime import Agent, open_agent
from agent.session import Connection
from broker.embedded import EmbeddedBroker
from broker.mosquitto import MosquittoBroker, find_free_port, mosquitto_path
from broker.nats import NatsCluster
from cloud.settings import CloudSettings
from common.mqtt import SOCKET_OPTIONS, protocol_version
from common.tasks import cancel_and_wait

if TYPE_CHECKING:
    from cloud.testclock import TestClock

__all__ = ["OPS_USER", "DemoStack", "cancel_and_wait", "run_demo", "running_stack"]

FEATURES = ("remote_access", "voice_control")
OPS_USER = "cloud-ops"
YEAR = 366 * 86400


class DemoStack:
    """Handles on a running broker + cloud + agents."""

    def __init__(
        self,
        *,
        api: httpx.AsyncClient,
        agents: list[Agent],
        broker_label: str,
        installation: str,
        broker_port: int,
        cloud_password: str,
        root: Path,
        root_keyset: bytes,
        mqtt_protocol: int = 5,
        broker_fallbacks: tuple[tuple[str, int], ...] = (),
        cluster: NatsCluster | None = None,
    ) -> None:
        self.api = api
        self.mqtt_protocol = mqtt_protocol  # 4 on NATS (MQTT 3.1.1 only)
        self.broker_fallbacks = broker_fallbacks  # the other nodes of a cluster
        self.cluster = cluster
        self.agents = agents
        self.broker_label = broker_label
        self.installation = installation
        self.broker_port = broker_port
        self.cloud_password = cloud_password  # of OPS_USER, not of the bridge's login
        self.cloud_user = OPS_USER
        self.root = root
        self.root_keyset = root_keyset
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def ops_client(self) -> aiomqtt.Client:
        """An MQTT client with the cloud's ACL (as OPS_USER, not the bridge's login);
        MQTT 5, or 3.1.1 on NATS."""
        return aiomqtt.Client(
            "127.0.0.1",
            self.broker_port,
            username=self.cloud_user,
            identifier=self.cloud_user,
            password=self.cloud_password,
            protocol=protocol_version(self.mqtt_protocol),
            socket_options=SOCKET_OPTIONS,
        )

    async def wait_heard(self, *, within: float) -> None:
        """Until the cloud has heard from every device (its status or a health report): a
        service is sold only to a connected installation (TimeoutError otherwise)."""
        deadline = time.perf_counter() + within
        for agent in self.agents:
            while True:
                response = await self.api.get(f"/api/v1/devices/{agent.device_id}/health")
                response.raise_for_status()
                if response.json()["last_seen"] is not None:
                    break
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"the cloud has not heard from {agent.device_id}")
                await asyncio.sleep(0.05)

    async def stop_agent(self, agent: Agent) -> None:
        """Stop one device's agent (as if it were switched off)."""
        await cancel_and_wait([self.tasks.pop(agent.device_id)])
        self.agents.remove(agent)

    async def grant(self, feature: str, *, until: int, **params: Any) -> dict[str, Any]:
        response = await self.api.post(
            f"/api/v1/installations/{self.installation}/grants",
            json={"feature": feature, "until": until, "params": params},
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def revoke(self, feature: str) -> dict[str, Any]:
        response = await self.api.delete(
            f"/api/v1/installations/{self.installation}/grants/{feature}"
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def wait_until(self, predicate: Callable[[Agent], bool], *, within: float) -> float:
        """Seconds until ``predicate`` holds on every agent (TimeoutError otherwise)."""
        start = time.perf_counter()
        deadline = start + within
        while not all(predicate(a) for a in self.agents):
            if time.perf_counter() > deadline:
                raise TimeoutError("devices did not follow in time")
            await asyncio.sleep(0.002)
        return time.perf_counter() - start


@contextlib.asynccontextmanager
async def running_stack(
    *,
    devices: int,
    embedded: bool = False,
    data_dir: Path | None = None,
    console: Console | None = None,
    database_url: str | None = None,
    clock: Callable[[], float] = time.time,
    test_clock: TestClock | None = None,
    engine: str = "mosquitto",
    nodes: int = 3,
    refresh_interval_s: float = 60.0,
) -> AsyncIterator[DemoStack]:
    """Start broker, cloud and ``devices`` agents; tear everything down after.

    ``engine="nats"``: a NATS cluster of ``nodes`` nodes instead of Mosquitto; the
    cloud and the agents speak MQTT 3.1.1 and know every node (they fail over).
    ``refresh_interval_s``: how often the cloud retries tokens it could not publish.

    With ``test_clock`` the cloud (``settings.test_clock``: the advance route),
    its jobs and every agent read that clock instead of ``clock``.
    """
    from cloud.accounts.apikeys import bootstrap_api_key
    from cloud.app import create_app

    say = console.print if console else (lambda *a, **k: None)
    own_dir = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="entitle-demo-")) if data_dir is None else data_dir
    cloud_password = secrets.token_urlsafe(18)
    # a second identity with the cloud's role for operators and tests: the demo's
    # clients use the username as client id, and a second "cloud" would kick the bridge
    ops_password = secrets.token_urlsafe(18)
    logins = {"cloud": cloud_password, OPS_USER: ops_password}
    use_embedded = engine == "mosquitto" and (embedded or mosquitto_path() is None)
    if use_embedded and not embedded:
        say(
            "[yellow]mosquitto not found[/yellow]: using the embedded amqtt broker "
            "(install it with 'apt-get install mosquitto' for broker-enforced ACLs)"
        )
    async with contextlib.AsyncExitStack() as stack:
        if own_dir:
            stack.callback(shutil.rmtree, root, True)
        broker_dir = root / "broker"
        cluster: NatsCluster | None = None
        fallbacks: tuple[tuple[str, int], ...] = ()
        if engine == "nats":
            cluster = NatsCluster(broker_dir, accounts=logins, nodes=nodes)
            stack.enter_context(cluster)
            port, accounts, label = cluster.nodes[0].mqtt, cluster.accounts_adapter, "nats"
            fallbacks = cluster.fallbacks
        elif use_embedded:
            embedded_broker = await stack.enter_async_context(
                EmbeddedBroker(broker_dir, accounts=logins, cloud_username=["cloud", OPS_USER])
            )
            port, accounts, label = embedded_broker.port, embedded_broker.accounts, "amqtt"
        else:
            mosquitto = stack.enter_context(
                MosquittoBroker(broker_dir, accounts=logins, cloud_username=["cloud", OPS_USER])
            )
            port, accounts, label = mosquitto.port, mosquitto.accounts, "mosquitto"
        http_port = find_free_port()
        settings = CloudSettings(
            data_dir=root / "cloud",
            broker_url=(
                cluster.mqtt_urls("cloud", cloud_password)
                if cluster is not None
                else f"mqtt://cloud:{cloud_password}@127.0.0.1:{port}"
            ),
            http_port=http_port,
            database_url=database_url,
            # amqtt and NATS speak MQTT 3.1.1 only
            mqtt_protocol=4 if use_embedded or cluster is not None else 5,
            broker_engine="nats" if cluster is not None else "mosquitto",
            nats_url=",".join(cluster.nats_servers) if cluster is not None else None,
            test_clock=test_clock is not None,
            refresh_interval_s=refresh_interval_s,
        )
        # the API needs a key: the demo makes its own in the cloud's database
        api_key = await asyncio.to_thread(
            bootstrap_api_key,
            settings.effective_database_url,
            name="entitle demo",
            now=int(time.time()),
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, accounts=accounts, clock=test_clock),
                host="127.0.0.1",
                port=http_port,
                log_level="warning",
                lifespan="on",
            )
        )
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        cloud_task = tasks.create_task(server.serve(), name="cloud")
        stack.push_async_callback(_stop_server, server, cloud_task)
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=10,
            )
        )
        await _wait_ready(api)
        say(f"broker: {label} on 127.0.0.1:{port}; cloud: http://127.0.0.1:{http_port}/docs")
        # a person can watch it all in the dashboard: an admin login made for this run only
        dashboard_password = secrets.token_urlsafe(12)
        made = await api.post(
            "/api/v1/users",
            json={
                "email": "admin@demo.example",
                "name": "Demo admin",
                "password": dashboard_password,
                "role": "admin",
            },
        )
        made.raise_for_status()
        say(
            f"dashboard: http://127.0.0.1:{http_port}/ — sign in as admin@demo.example "
            f"with password {dashboard_password} (made for this run)"
        )
        installation = (await api.post("/api/v1/installations", json={"name": "Demo home"})).json()
        keyset = base64.b64decode((await api.get("/api/v1/keyset")).json()["keyset_b64"])
        agents = []
        agent_tasks: dict[str, asyncio.Task[None]] = {}
        for i in range(devices):
            created = await api.post(
                "/api/v1/devices",
                json={
                    "installation_id": installation["id"],
                    "kind": "gateway",
                    "device_id": f"gw-{i + 1:02d}",
                },
            )
            created.raise_for_status()
            creds = created.json()
            agent = open_agent(
                device_id=creds["device_id"],
                data_dir=root / f"agent-{creds['device_id']}",
                connection=Connection(
                    host="127.0.0.1",
                    port=port,
                    username=creds["mqtt_username"],
                    password=creds["mqtt_password"],
                    protocol=settings.mqtt_protocol,
                    fallbacks=fallbacks,
                ),
                root_keyset=keyset,
                clock=clock if test_clock is None else test_clock,
            )
            stack.callback(agent.store.close)
            agents.append(agent)
            task = tasks.create_task(agent.run(), name=f"agent-{creds['device_id']}")
            agent_tasks[agent.device_id] = task
            # unwound first (last in, first out): the agent stops before its store closes,
            # and every agent before the cloud, also when the start-up below fails (an
            # agent still running on a closed store raised, and its error hid the start-up's)
            stack.push_async_callback(cancel_and_wait, [task])
        demo = DemoStack(
            api=api,
            agents=agents,
            broker_label=label,
            installation=installation["id"],
            broker_port=port,
            cloud_password=ops_password,
            root=root,
            root_keyset=keyset,
            mqtt_protocol=settings.mqtt_protocol,
            broker_fallbacks=fallbacks,
            cluster=cluster,
        )
        demo.tasks = agent_tasks
        # a ceiling for a hang, not a figure: a loaded machine takes seconds per login
        await demo.wait_until(lambda a: bool(a.session and a.session.connected.is_set()), within=60)
        say(f"{devices} devices connected, each with its own login, store and verifier")
        yield demo


async def _stop_server(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Let uvicorn run its lifespan shutdown (bridge, jobs) instead of cancelling it."""
    server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=10)
    except TimeoutError:
        task.cancel()


async def _wait_ready(api: httpx.AsyncClient) -> None:
    for _ in range(200):
        with contextlib.suppress(httpx.HTTPError):
            if (await api.get("/api/v1/healthz")).status_code == 200:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("the cloud did not become ready; run with -v to see its log")


def _table(demo: DemoStack, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("device")
    table.add_column("token ver", justify="right")
    for feature in FEATURES:
        table.add_column(feature)
    for agent in demo.agents:
        row = [agent.device_id, str(agent.state.ver)]
        for feature in FEATURES:
            allowed, why = agent.check(feature)
            claims = agent.state.claims
            if allowed and claims is not None:
                until = datetime.fromtimestamp(claims.ent[feature].until, tz=UTC)
                row.append(f"[green]ON[/green]  paid through {until:%Y-%m-%d %H:%M:%S} UTC")
            else:
                row.append(f"[red]OFF[/red] {why.split(' (')[0]}")
        table.add_row(*row)
    return table


async def _timed(change: Awaitable[Any], demo: DemoStack, done: Callable[[Agent], bool]) -> float:
    """Milliseconds from sending ``change`` to the cloud until every device follows."""
    start = time.perf_counter()
    await change
    await demo.wait_until(done, within=10)
    return (time.perf_counter() - start) * 1000


async def run_demo(
    *,
    devices: int,
    cycles: int,
    interval: float,
    embedded: bool,
    console: Console,
    engine: str = "mosquitto",
) -> None:
    """Grant and revoke services and show every device following, live."""
    console.rule("Entitle demo")
    async with running_stack(
        devices=devices, embedded=embedded, console=console, engine=engine
    ) as demo:
        await demo.wait_until(lambda a: a.state.ver > 0, within=10)
        console.print(_table(demo, "before any grant"))
        cycle = 0
        while cycles == 0 or cycle < cycles:
            cycle += 1
            console.rule(f"cycle {cycle}")
            ms = await _timed(
                demo.grant("remote_access", until=int(time.time()) + YEAR),
                demo,
                lambda a: a.check("remote_access")[0],
            )
            console.print(
                f"granted remote_access for a year → every device [green]ON[/green] "
                f"{ms:.1f} ms after the API call"
            )
            short = max(2, int(interval))
            until = int(time.time()) + short
            await _timed(
                demo.grant("voice_control", until=until),
                demo,
                lambda a: a.check("voice_control")[0],
            )
            console.print(_table(demo, f"voice_control paid for {short}s only"))
            await demo.wait_until(lambda a: not a.check("voice_control")[0], within=short + 10)
            late = (time.time() - until) * 1000
            console.print(
                f"voice_control paid-through second reached → every device "
                f"[red]OFF[/red] on its own, no message ({late:.0f} ms after it)"
            )
            await asyncio.sleep(interval / 2)
            ms = await _timed(
                demo.revoke("remote_access"), demo, lambda a: not a.check("remote_access")[0]
            )
            console.print(
                f"revoked remote_access → every device [red]OFF[/red] "
                f"{ms:.1f} ms after the API call"
            )
            console.print(_table(demo, f"after cycle {cycle}"))
            await asyncio.sleep(interval / 2)
    console.rule("demo finished")
