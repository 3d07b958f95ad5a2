"""Device logins on each engine, in the same run: created/s, then MQTT logins/s.

Creates N device logins through each engine's accounts adapter (Mosquitto:
dynamic-security over ``$CONTROL``; NATS: the responders' key-value bucket on a
3-node cluster), then logs each device in once over MQTT (CONNECT, CONNACK,
DISCONNECT; clean session, no subscription), one after the other, from a plain
socket. On NATS each login is an auth-callout round trip to a Python responder;
the cloud's own static login (no callout) is timed the same way as the raw
limit of a login on that node.

    python bench/bench_nats_logins.py --devices 200
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from pathlib import Path

from broker.mosquitto import MosquittoBroker
from broker.nats import NatsCluster, _mqtt_login


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.0f}/s ({seconds * 1000 / count:6.2f} ms each)"


def _logins(host: str, port: int, users: list[tuple[str, str, str]]) -> float:
    """Seconds for one login each of (user, password, client id), one after the other."""
    start = time.perf_counter()
    for user, password, ident in users:
        ok = _mqtt_login(host, port, username=user, password=password, timeout=30, client_id=ident)
        if not ok:
            raise SystemExit(f"login {user} refused on {host}:{port}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    args = parser.parse_args()
    n = args.devices
    devices = {f"bench-{i:05d}": secrets.token_urlsafe(24) for i in range(n)}
    cloud = {"cloud": secrets.token_urlsafe(16)}
    device_logins = [(user, password, user) for user, password in devices.items()]
    # the cloud's login is not a device's: any client id, here a new one each time
    static = [("cloud", cloud["cloud"], f"cloud-{i}") for i in range(n)]
    print(f"{n} devices; machine shared with other work: figures are for comparison only")
    with tempfile.TemporaryDirectory() as tmp:
        with MosquittoBroker(Path(tmp) / "mosquitto", accounts=cloud) as mosquitto:
            start = time.perf_counter()
            for user, password in devices.items():
                mosquitto.accounts.set_password(user, password)
            created = time.perf_counter() - start
            print(f"mosquitto  created {_rate(n, created)}")
            logins_s = _logins(mosquitto.host, mosquitto.port, device_logins)
            print(f"mosquitto  device logins {_rate(n, logins_s)}")
            static_s = _logins(mosquitto.host, mosquitto.port, static)
            print(f"mosquitto  cloud login (raw limit) {_rate(n, static_s)}")
        with NatsCluster(Path(tmp) / "nats", accounts=cloud, nodes=3) as cluster:
            start = time.perf_counter()
            for user, password in devices.items():
                cluster.accounts_adapter.set_password(user, password)
            created = time.perf_counter() - start
            print(f"nats x3    created {_rate(n, created)}")
            port = cluster.nodes[0].mqtt
            print(
                f"nats x3    device logins {_rate(n, _logins(cluster.host, port, device_logins))}"
            )
            static_s = _logins(cluster.host, port, static)
            print(f"nats x3    cloud login, no callout (raw limit) {_rate(n, static_s)}")


if __name__ == "__main__":
    main()
