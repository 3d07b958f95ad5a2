"""A simulated fleet: which devices, of which kind, with which fault; registering them.

:func:`plan_fleet` is pure: ``devices`` ids split over the kinds by ``mix``
(largest remainder) and ``fault_fraction`` of them given one fault knob of
:class:`firmware_stubs.Faults`, spread round-robin over the knobs that make
sense for the device's kind. Each planned device then becomes a real agent
(:mod:`simulators.fleet_worker`) against a real firmware emulator.

Registration, two ways:

* :func:`register_via_api` -- through the cloud's public API with an admin
  API key (``POST /api/v1/installations``, ``POST /api/v1/devices``): the
  cloud creates each broker login and issues the first token, exactly as for
  real devices. Each registration adds a dynamic-security login over the
  broker's ``$CONTROL`` topic, and Mosquitto rewrites its whole JSON file on
  each change, so this is for fleets of hundreds, not thousands.
* :func:`register_in_store` -- rows written straight into the cloud's
  database (installations of ten, devices) for large fleets, with the broker
  logins returned for the caller to give Mosquitto at start. No first token is
  issued (health reporting needs none); the cloud-side password hash uses a
  low scrypt cost (the parameters live in the hash) because 10,000 hashes at
  the production cost take minutes and the passwords are random 192 bits.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cloud.devices import queries as device_queries

__all__ = [
    "EXPECTED_VERDICT",
    "FAULT_KNOBS",
    "DeviceLogin",
    "DevicePlan",
    "fleet_diagnoses",
    "parse_faults",
    "parse_mix",
    "plan_fleet",
    "register_in_store",
    "register_via_api",
]

KINDS = ("gateway", "camera", "counter")
# knobs that mean something for each kind (firmware_stubs/emulator.py docstring)
FAULT_KNOBS: Mapping[str, tuple[str, ...]] = {
    "gateway": ("overheating", "noisy_line", "disk_write_errors", "reboot_loop"),
    "camera": ("overheating", "lens_obstruction", "noisy_line", "disk_write_errors"),
    "counter": ("overheating", "zero_counts", "noisy_line", "disk_write_errors"),
}
# What the cloud's diagnostics (cloud/health/rules/diagnostics.py) conclude within a
# few reports, checked by tests/integration/test_fleet.py. The other knobs need
# an hour or a day of history (reboot loops every 90 s, one disk error a minute)
# or report a field the rules do not read yet (the camera's lens contrast).
EXPECTED_VERDICT: Mapping[str, str] = {
    "overheating": "rma_recommended",  # thermal.critical: > 90 degC in 3 samples
    "noisy_line": "fix_remotely",  # serial.crc_errors: >= 20 corrupted frames
}
NOISE = 0.01  # fraction of the firmware's bytes flipped by the noisy_line knob
INSTALLATION_SIZE = 10  # cloud.devices.rules.installations.MAX_DEVICES


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """One simulated device: its id, kind and injected fault (None: healthy)."""

    device_id: str
    kind: str
    fault: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    """A planned device with its broker login (username = device id)."""

    plan: DevicePlan
    password: str

    @property
    def device_id(self) -> str:
        return self.plan.device_id


def parse_mix(text: str) -> dict[str, int]:
    """``"gateway:60,camera:30,counter:10"`` → weights by kind.

    Raises:
        ValueError: an unknown kind, a bad weight or no positive weight.
    """
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, weight = part.partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown device kind {kind!r} in --mix: use {', '.join(KINDS)}")
        if not weight.isdigit():
            raise ValueError(f"--mix weight of {kind} must be a whole number, got {weight!r}")
        mix[kind] = mix.get(kind, 0) + int(weight)
    if sum(mix.values()) <= 0:
        raise ValueError("--mix needs at least one kind with a positive weight")
    return mix


def parse_faults(text: str) -> float:
    """``"5%"`` or ``"0.05"`` → 0.05.

    Raises:
        ValueError: not a number or outside 0-100 %.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    if match is None:
        raise ValueError(f"--faults must look like 5% or 0.05, got {text!r}")
    value = float(match.group(1)) / (100 if match.group(2) else 1)
    if not 0 <= value <= 1:
        raise ValueError("--faults must be between 0% and 100%")
    return value


def _split(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """``total`` split by ``weights`` (largest remainder, so the counts add up)."""
    whole = sum(weights.values())
    exact = {k: total * w / whole for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))
    for kind in by_remainder[: total - sum(counts.values())]:
        counts[kind] += 1
    return counts


def plan_fleet(
    *, devices: int, mix: Mapping[str, int], fault_fraction: float, prefix: str = "sim"
) -> list[DevicePlan]:
    """The fleet: ids ``{prefix}-{kind}-{n}``; faulty devices spread evenly over the fleet."""
    if devices < 0:
        raise ValueError("devices must not be negative")
    kinds = [kind for kind, n in _split(devices, mix).items() for _ in range(n)]
    faulty = round(devices * fault_fraction)
    # every (devices / faulty)-th device is faulty, so each kind gets its share
    chosen = {int(i * devices / faulty) for i in range(faulty)} if faulty else set()
    per_kind: Counter[str] = Counter()
    numbers: Counter[str] = Counter()
    plans = []
    for index, kind in enumerate(kinds):
        numbers[kind] += 1
        fault = None
        if index in chosen:
            knobs = FAULT_KNOBS[kind]
            fault = knobs[per_kind[kind] % len(knobs)]
            per_kind[kind] += 1
        plans.append(DevicePlan(f"{prefix}-{kind}-{numbers[kind]:05d}", kind, fault))
    return plans


async def register_via_api(
    api: httpx.AsyncClient,
    plans: Sequence[DevicePlan],
    *,
    concurrency: int = 4,
    on_done: Any = None,
) -> tuple[list[DeviceLogin], bytes, tuple[str, int]]:
    """Register ``plans`` through the cloud API; (logins, root key set, broker host/port).

    ``api`` carries the base URL and ``Authorization: Bearer <admin key>``.

    Raises:
        httpx.HTTPStatusError: the cloud refused (a taken id, a bad key).
    """
    keyset_reply = await api.get("/api/v1/keyset")
    keyset_reply.raise_for_status()
    keyset = base64.b64decode(keyset_reply.json()["keyset_b64"])
    groups = [plans[i : i + INSTALLATION_SIZE] for i in range(0, len(plans), INSTALLATION_SIZE)]
    limit = asyncio.Semaphore(concurrency)
    logins: dict[str, DeviceLogin] = {}
    broker: list[str] = []

    async def one_group(number: int, group: Sequence[DevicePlan]) -> None:
        async with limit:
            made = await api.post(
                "/api/v1/installations", json={"name": f"{group[0].device_id} site {number}"}
            )
            made.raise_for_status()
            installation = made.json()["id"]
            for plan in group:
                reply = await api.post(
                    "/api/v1/devices",
                    json={
                        "installation_id": installation,
                        "kind": plan.kind,
                        "device_id": plan.device_id,
                    },
                )
                reply.raise_for_status()
                body = reply.json()
                logins[plan.device_id] = DeviceLogin(plan, body["mqtt_password"])
                broker.append(body["broker_url"])
                if on_done is not None:
                    on_done(1)

    async with asyncio.TaskGroup() as tasks:
        for number, group in enumerate(groups):
            tasks.create_task(one_group(number, group), name=f"register-{number}")
    host, port = _host_port(broker[0]) if broker else ("127.0.0.1", 1883)
    return [logins[p.device_id] for p in plans], keyset, (host, port)


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def register_in_store(
    database_url: str, plans: Sequence[DevicePlan], *, now: int
) -> list[DeviceLogin]:
    """Write installations and devices straight into the cloud's database (migrated first).

    Returns the logins, for the broker's dynamic-security file at its start.
    """
    from cloud.database import Store
    from cloud.devices.rules import DeviceKind
    from common.credentials import hash_password, new_password

    logins = [DeviceLogin(plan, new_password()) for plan in plans]
    with Store.open(database_url) as store:
        for start in range(0, len(logins), 500):
            with store.transaction() as tx:
                for offset in range(start, min(start + 500, len(logins)), INSTALLATION_SIZE):
                    group = logins[offset : offset + INSTALLATION_SIZE]
                    installation = f"inst-{group[0].device_id}"
                    device_queries.add_installation(
                        tx, installation_id=installation, name=installation, now=now
                    )
                    for login in group:
                        device_queries.add_device(
                            tx,
                            device_id=login.device_id,
                            installation_id=installation,
                            kind=DeviceKind(login.plan.kind),
                            password_hash=hash_password(login.password, n=2),
                            now=now,
                        )
    return logins


async def fleet_diagnoses(api: httpx.AsyncClient) -> tuple[dict[str, int], dict[str, str]]:
    """The cloud's verdict counts and each non-healthy device's verdict (GET /health/fleet)."""
    reply = await api.get("/api/v1/health/fleet", timeout=120)
    reply.raise_for_status()
    body = reply.json()
    attention = {item["device_id"]: item["verdict"] for item in body["attention"]}
    return dict(body["by_verdict"]), attention
