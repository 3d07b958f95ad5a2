"""The running agent: store, verifier, MQTT session, expiry timer, local API,
enforcers, health reports and remote commands.

It enforces from the store before any network is up, applies every message
through the pure verifier (a rejection is logged with its typed reason and
changes nothing), persists an accepted state before using it, and
re-evaluates decisions at the exact second the next one flips. Health
reports go through a persistent outbox (:mod:`agent.health`); commands on
the device's ``cmd`` topic are answered by :mod:`agent.commands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agent.commands import CommandHandler
from agent.health import HealthCollector, HealthPublisher
from agent.outbox import DEFAULT_KEEP_SENT, DEFAULT_MAX_ROWS, Outbox
from agent.session import Connection, MqttSession
from agent.store import Store
from agent.verifier import Outcome, TrustState, accept_keyset, accept_token
from common.clock import Clock
from protocol.errors import UntrustedDataError
from protocol.token import when
from protocol.topics import KEYS_TOPIC, device_topic

if TYPE_CHECKING:  # importing it at run time would load pyserial into every agent
    from agent.firmware import FirmwareClient
    from agent.hoststats import HostSampler
    from agent.notify import SystemdNotifier

__all__ = ["Agent", "BackgroundEnforcer", "Decisions", "Enforcer", "RejectCounter", "open_agent"]

log = logging.getLogger(__name__)
Decisions = Mapping[str, tuple[bool, str]]
_HIGH_WATER_PERSIST_S = 60
_MAX_SLEEP_S = 30.0


class Enforcer(Protocol):
    """Something on the device that follows the decisions (firmware, pruning, ...)."""

    async def apply(self, decisions: Decisions, *, state: TrustState, now: int) -> None: ...


@runtime_checkable
class BackgroundEnforcer(Enforcer, Protocol):
    """An enforcer with its own loop (retries, probes, periodic pruning)."""

    name: str

    async def run(self, now: Clock) -> None: ...

    def stats(self) -> dict[str, Any]: ...


@dataclass
class RejectCounter:
    """Rejected messages by typed reason, for status and health reports."""

    by_reason: dict[str, int] = field(default_factory=dict)
    last: str | None = None

    def count(self, reason: str, detail: str) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.last = f"{reason}: {detail}"


class Agent:
    """One device's agent; drive it with :meth:`run` or call its parts directly."""

    def __init__(
        self,
        *,
        store: Store,
        state: TrustState,
        connection: Connection | None = None,
        clock: Callable[[], float] = time.time,
        api_socket: Path | None = None,
        enforcers: Sequence[Enforcer] = (),
        firmware: FirmwareClient | None = None,
        health: HealthCollector | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        """``firmware``: an :class:`agent.firmware.FirmwareClient` for commands and
        health; ``health``: the collector, whose outbox is drained to the broker;
        ``notifier``: systemd's, told READY once the agent enforces and its local API
        listens, pinged for the watchdog, and told STOPPING when it stops."""
        self.store = store
        self._state = state
        self.connection = connection
        self.clock = clock
        self.api_socket = api_socket
        self.enforcers = list(enforcers)
        self.rejects = RejectCounter()
        self.listeners: list[Callable[[Decisions], None]] = []
        self._decisions: dict[str, tuple[bool, str]] = {}
        self._enforced = False
        self._wake = asyncio.Event()
        self._pending_token: bytes | None = None
        self._setback_reported = 0
        self.session: MqttSession | None = None
        if connection is not None:
            self.session = MqttSession(connection, self.handle, status=self.status_details)
        self.firmware = firmware
        self.commands = CommandHandler(
            device_id=self.device_id,
            firmware=firmware,
            publisher=self.session,
            on_reboot=self._firmware_rebooted,
            resend_health=self._resend_health if health is not None else None,
        )
        self.health = health
        self.notifier = notifier
        self.resent_health = 0  # reports re-queued by resend_health
        self.publisher: HealthPublisher | None = None
        if health is not None:
            health.error_counts = self.error_counts
            if self.session is not None:
                self.publisher = HealthPublisher(
                    device_id=self.device_id,
                    outbox=health.outbox,
                    publisher=self.session,
                    clock=clock,
                )
                health.on_report = self.publisher.notify

    # --- state ----------------------------------------------------------
    @property
    def state(self) -> TrustState:
        return self._state

    @property
    def device_id(self) -> str:
        return self._state.device_id

    def local_now(self) -> int:
        return int(self.clock())

    def decisions(self) -> dict[str, tuple[bool, str]]:
        return self._state.features(local_now=self.local_now())

    def check(self, feature: str) -> tuple[bool, str]:
        return self._state.feature(feature, local_now=self.local_now())

    def status_details(self) -> dict[str, Any]:
        now = self.local_now()
        view = self._state.time(now)
        claims = self._state.claims
        return {
            "device_id": self.device_id,
            "token_ver": self._state.ver,
            "token_exp": claims.exp if claims else None,
            "stale_token": self._state.stale(local_now=now),
            "keyset_version": self._state.keyset.version,
            "keyset_epoch": self._state.keyset.epoch,
            "trusted_time": view.now,
            "clock_setback_s": view.setback_s,
            "rejected": dict(self.rejects.by_reason),
            "last_rejection": self.rejects.last,
            "connected": bool(self.session and self.session.connected.is_set()),
            **self._telemetry_details(),
        }

    def error_counts(self) -> dict[str, dict[str, int]]:
        """Typed error counts by category, for the health report's ``errors``."""
        counters = self.firmware.counters if self.firmware is not None else {}
        serial = {k: int(v) for k, v in counters.items() if k != "requests" and v}
        return {
            "serial": serial,
            "cmd": dict(self.commands.errors),
            "rejected_tokens": dict(self.rejects.by_reason),
        }

    def _telemetry_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "commands": {
                "handled": self.commands.handled,
                "answered": self.commands.answered,
                "errors": dict(self.commands.errors),
            }
        }
        if self.health is not None:
            details["outbox"] = self.health.outbox.stats()
            details["health"] = {
                "collected": self.health.collected,
                "published": self.publisher.published if self.publisher else 0,
                "publish_failures": self.publisher.failures if self.publisher else 0,
                "unpublishable": self.publisher.unpublishable if self.publisher else 0,
                "resent": self.resent_health,
                "interval_s": self.health.interval_s,
            }
        for enforcer in self.enforcers:
            if isinstance(enforcer, BackgroundEnforcer):
                details[f"enforcer_{enforcer.name}"] = enforcer.stats()
        return details

    def _resend_health(self, from_seq: int, to_seq: int) -> dict[str, Any]:
        """The ``resend_health`` command: re-queue kept reports, wake the publisher."""
        assert self.health is not None  # only wired when health is reported
        done = self.health.outbox.resend(from_seq, to_seq)
        self.resent_health += done.requeued
        if done.requeued and self.publisher is not None:
            self.publisher.notify()
        return {
            "requeued": done.requeued,
            "already_queued": done.already_queued,
            "not_held": [list(r) for r in done.not_held],
        }

    def _firmware_rebooted(self) -> None:
        for enforcer in self.enforcers:
            mark = getattr(enforcer, "mark_dirty", None)
            if mark is not None:
                mark()

    def _commit(self, new: TrustState) -> None:
        """Persist first, then use: a crash never leaves a used, unsaved state."""
        self.store.save(new)
        self._state = new

    # --- inputs ---------------------------------------------------------
    async def handle(self, topic: str, payload: bytes) -> None:
        """Apply one MQTT message; rejections are counted and logged, never raised."""
        if topic == KEYS_TOPIC:
            await self.apply_keyset(payload)
        elif topic == device_topic(self.device_id, "entitlement"):
            await self.apply_token(payload)
        elif topic == device_topic(self.device_id, "cmd"):
            self.commands.submit(payload)
        else:
            log.warning("%s: ignoring message on unexpected topic %s", self.device_id, topic)

    async def apply_token(self, payload: bytes) -> bool:
        if not payload:
            log.info("entitlement cleared by the cloud; keeping the last accepted token")
            return False
        try:
            new, outcome = accept_token(self._state, payload, local_now=self.local_now())
        except UntrustedDataError as exc:
            if exc.reason == "unknown_key":
                self._pending_token = payload  # may verify once a rotated key set arrives
            self._reject("entitlement", exc)
            return False
        if outcome is Outcome.ACCEPTED:
            self._commit(new)
            log.info("accepted token ver %s (epoch %s)", new.ver, new.keyset.epoch)
            await self._reevaluate()
        return outcome is Outcome.ACCEPTED

    async def apply_keyset(self, payload: bytes) -> bool:
        try:
            new, outcome = accept_keyset(self._state, payload)
        except UntrustedDataError as exc:
            self._reject("key set", exc)
            return False
        if outcome is Outcome.ACCEPTED:
            old = self._state
            self._commit(new)
            log.info(
                "accepted key set v%s (epoch %s); token %s",
                new.keyset.version,
                new.keyset.epoch,
                "kept" if new.token == old.token else "dropped: no longer trusted",
            )
            pending, self._pending_token = self._pending_token, None
            if pending is not None:
                await self.apply_token(pending)
            await self._reevaluate()
        return outcome is Outcome.ACCEPTED

    def _reject(self, what: str, exc: UntrustedDataError) -> None:
        self.rejects.count(exc.reason, str(exc))
        log.warning("rejected %s: %s (%s)", what, exc.reason, exc)

    # --- decisions and time ---------------------------------------------
    async def _reevaluate(self) -> None:
        """Recompute decisions; on any change tell enforcers and listeners."""
        now = self.local_now()
        view = self._state.time(now)
        if view.setback_s and view.setback_s != self._setback_reported:
            log.warning(
                "local clock is %ss behind trusted time; using the high-water mark %s",
                view.setback_s,
                when(view.now),
            )
        self._setback_reported = view.setback_s
        observed = self._state.observe_clock(now)
        if observed.high_water - self._state.high_water >= _HIGH_WATER_PERSIST_S:
            self._commit(observed)
        decisions = self._state.features(local_now=now)
        changed = decisions != self._decisions
        if changed or not self._enforced:  # enforcers also learn the first (maybe empty) set
            self._log_decisions(decisions, local_now=now)
            self._decisions = decisions
            self._enforced = True
            await self._enforce(decisions, now=view.now)
        if changed:
            for listener in self.listeners:
                listener(decisions)
            if self.session is not None:
                await self._publish_status()
        self._wake.set()

    def _log_decisions(self, decisions: Decisions, *, local_now: int) -> None:
        """Say what is enforced now: each feature whose decision changed, and why."""
        before = self._decisions
        gone = {
            name: self._state.feature(name, local_now=local_now)
            for name in before.keys() - decisions.keys()
        }
        for name, (allowed, why) in sorted({**gone, **decisions}.items()):
            if before.get(name) != (allowed, why):
                log.info("feature %s %s: %s", name, "ALLOWED" if allowed else "DENIED", why)
        if not decisions:
            claims = self._state.claims
            log.info(
                "%s: every feature is denied",
                "no entitlement token accepted yet"
                if claims is None
                else f"token ver {claims.ver} names no feature",
            )

    async def _enforce(self, decisions: Decisions, *, now: int) -> None:
        for enforcer in self.enforcers:
            try:
                await enforcer.apply(decisions, state=self._state, now=now)
            except Exception:  # an enforcer's failure must not stop the others or the agent
                log.exception("enforcer %s failed", type(enforcer).__name__)

    def trusted_now(self) -> int:
        return self._state.time(self.local_now()).now

    async def _publish_status(self) -> None:
        try:
            assert self.session is not None
            await self.session.publish_status()
        except Exception as exc:  # the status is best effort; the session reconnects
            log.debug("status not published: %s", exc)

    async def _timer(self) -> None:
        """Wake at the second the next decision flips (or every 30 s)."""
        while True:
            self._wake.clear()
            now = self.clock()
            nxt = self._state.next_change(local_now=int(now))
            delay = _MAX_SLEEP_S if nxt is None else min(_MAX_SLEEP_S, max(0.0, nxt - now))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            if not self._wake.is_set():
                # sleep can end a hair early; make sure the flip second has arrived
                if nxt is not None and self.clock() < nxt:
                    await asyncio.sleep(max(0.0, math.ceil(nxt) - self.clock()))
                await self._reevaluate()

    # --- running --------------------------------------------------------
    def close(self) -> None:
        """Close the store and the health outbox."""
        self.store.close()
        if self.health is not None:
            self.health.outbox.close()

    async def run(self) -> None:
        """Enforce from the store at once, then stay connected until cancelled.

        The firmware client (if any) is closed when this returns.
        """
        try:
            await self._run()
        finally:
            if self.notifier is not None:
                self.notifier.stopping()
            if self.firmware is not None:
                await self.firmware.close()

    async def _run(self) -> None:
        await self._reevaluate()
        log.info(
            "agent %s started: token ver %s, key set v%s",
            self.device_id,
            self._state.ver,
            self._state.keyset.version,
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._timer(), name="expiry-timer")
            if self.session is not None:
                tasks.create_task(self.session.run(), name="mqtt-session")
            listening = asyncio.Event()
            if self.api_socket is not None:
                from agent.api import serve

                api = serve(self, self.api_socket, listening=listening.set)
                tasks.create_task(api, name="local-api")
            else:
                listening.set()
            tasks.create_task(self.commands.run(), name="commands")
            if self.health is not None:
                tasks.create_task(self.health.run(), name="health-collector")
            if self.publisher is not None:
                tasks.create_task(self.publisher.run(), name="health-publisher")
            for enforcer in self.enforcers:
                if isinstance(enforcer, BackgroundEnforcer):
                    tasks.create_task(
                        enforcer.run(self.trusted_now), name=f"enforcer-{enforcer.name}"
                    )
            if self.notifier is not None:
                await listening.wait()
                self.notifier.ready(
                    f"enforcing token ver {self._state.ver}, key set v{self._state.keyset.version}"
                )
                tasks.create_task(self.notifier.watchdog(), name="systemd-watchdog")


def open_agent(
    *,
    device_id: str,
    data_dir: Path,
    connection: Connection | None,
    root_keyset: bytes | None = None,
    clock: Callable[[], float] = time.time,
    skew: int = 300,
    api_socket: Path | None = None,
    enforcers: Sequence[Enforcer] = (),
    installation_id: str | None = None,
    firmware: FirmwareClient | None = None,
    kind: str | None = None,
    health_interval_s: float | None = None,
    outbox_max_rows: int = DEFAULT_MAX_ROWS,
    outbox_keep_sent: int = DEFAULT_KEEP_SENT,
    host: HostSampler | None = None,
    notifier: SystemdNotifier | None = None,
) -> Agent:
    """Open (or provision) the agent's store and build the agent.

    ``installation_id`` binds the device to one installation at provisioning
    (tokens naming another are refused); it is stored and kept on restarts.

    A store that already holds a state is used as it is (its key set may have
    been rotated since provisioning); ``root_keyset`` is needed only the first
    time. With ``health_interval_s`` the agent samples a health report that
    often into ``outbox.db`` beside the store and publishes it (``kind``: the
    device kind, else the firmware's GET_INFO says); ``firmware`` answers
    commands and adds the firmware's own health; ``host`` samples the host (a
    simulated fleet shares one per process: its devices share the machine).
    """
    from agent.store import StoreError
    from agent.verifier import provision

    store = Store(data_dir / "agent.db")
    state = store.load(device_id=device_id, skew=skew)
    if state is None:
        if root_keyset is None:
            store.close()
            raise StoreError(
                f"device {device_id} is not provisioned: pass the root key set "
                "(ENTITLE_ROOT_KEYSET_FILE, from 'entitle keys show --export FILE')"
            )
        state = provision(device_id, root_keyset, skew=skew, installation_id=installation_id)
        store.save(state)
    health = None
    if health_interval_s is not None:
        health = HealthCollector(
            device_id=device_id,
            outbox=Outbox(
                data_dir / "outbox.db", max_rows=outbox_max_rows, keep_sent=outbox_keep_sent
            ),
            clock=clock,
            kind=kind,
            firmware=firmware,
            interval_s=health_interval_s,
            disk_path=data_dir,
            host=host,
        )
    return Agent(
        store=store,
        state=state,
        connection=connection,
        clock=clock,
        api_socket=api_socket,
        enforcers=enforcers,
        firmware=firmware,
        health=health,
        notifier=notifier,
    )
