"""Device logins on Mosquitto's dynamic-security plugin, added and removed at run time.

Every device is a dynamic-security *client* whose client id is pinned to its
username, with a *role* of its own that names its topics literally: it may
subscribe to and receive only its own ``entitlement`` and ``cmd`` and the key
set, and publish only its own ``health``, ``status`` and ``cmd/res``
(:func:`protocol.topics.device_reads` / :func:`~protocol.topics.device_writes`).
Everything else is refused by the plugin's default ACL — at SUBSCRIBE too, with
reason code 135, so a device can never join the cloud's ``$share/cloud/…``
group and take half of the health stream. Mosquitto 2.0.11's plugin does not
expand ``%u``/``%c`` in subscribe ACLs, hence one role per device.

:class:`DynsecAccounts` is the real ``cloud.ports.BrokerAccounts`` for
Mosquitto: it sends ``createClient``/``deleteClient`` on
``$CONTROL/dynamic-security/v1`` with the cloud's own login, so a device can log
in the moment it is created, and a deleted device is disconnected at once (the
plugin kicks it) — no file is rewritten by us and no broker is reloaded.
:func:`merge_config` writes the plugin's file before the broker first starts.

Errors: :class:`BrokerAccountsUnavailable` (a
:class:`~protocol.errors.TransportError`): the broker did not answer or refused
the command; ``ValueError``: a username that must not become a device.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from common.credentials import mosquitto_secret
from common.settings import BrokerClientSettings
from protocol.errors import TransportError
from protocol.topics import check_device_id, cloud_subscriptions, device_reads, device_writes

__all__ = [
    "CLOUD_ROLE",
    "CONTROL_TOPIC",
    "BrokerAccountsUnavailable",
    "DynsecAccounts",
    "device_role_name",
    "merge_config",
]

_log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
CLOUD_ROLE = "entitle-cloud"


class BrokerAccountsUnavailable(TransportError):
    """The broker did not answer a dynamic-security command, or refused it."""


def device_role_name(device_id: str) -> str:
    return f"entitle-device-{check_device_id(device_id)}"


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def device_acls(device_id: str) -> list[dict[str, Any]]:
    """Literal topics only: subscribe + receive what it reads, send what it writes."""
    acls: list[dict[str, Any]] = []
    for topic in device_reads(device_id):
        acls += [_acl("subscribeLiteral", topic), _acl("publishClientReceive", topic)]
    acls += [_acl("publishClientSend", topic) for topic in device_writes(device_id)]
    return acls


def cloud_acls() -> list[dict[str, Any]]:
    """The cloud: everything under the prefix, its own shared group, and the plugin's
    control topic (it adds and removes device logins)."""
    everything = cloud_subscriptions()[0]
    acls = [_acl("publishClientSend", everything), _acl("publishClientReceive", everything)]
    acls += [_acl("subscribePattern", f) for f in cloud_subscriptions()]
    control = f"{CONTROL_TOPIC.rsplit('/', 1)[0]}/#"
    acls += [_acl(t, control) for t in ("publishClientSend", "publishClientReceive")]
    acls.append(_acl("subscribePattern", control))
    return acls


def merge_config(
    existing: Mapping[str, Any] | None,
    *,
    clouds: Mapping[str, str],
    devices: Mapping[str, str],
) -> dict[str, Any]:
    """The plugin's JSON file: ``existing`` (devices added at run time are kept) with
    these cloud and device logins set (username -> clear-text password) and the
    default ACL closed for sending, receiving and subscribing."""
    config: dict[str, Any] = json.loads(json.dumps(existing)) if existing else {}
    clients = {c["username"]: c for c in config.get("clients", [])}
    roles = {r["rolename"]: r for r in config.get("roles", [])}
    roles[CLOUD_ROLE] = {"rolename": CLOUD_ROLE, "acls": cloud_acls()}
    for username, password in clouds.items():
        check_device_id(username)
        clients[username] = {
            "username": username,
            "textName": "entitle cloud",
            **mosquitto_secret(password),
            "roles": [{"rolename": CLOUD_ROLE}],
        }
    for device_id, password in devices.items():
        role = device_role_name(device_id)
        roles[role] = {"rolename": role, "acls": device_acls(device_id)}
        clients[device_id] = _device_client(device_id, mosquitto_secret(password))
    config["clients"] = sorted(clients.values(), key=lambda c: str(c["username"]))
    config["roles"] = sorted(roles.values(), key=lambda r: str(r["rolename"]))
    config.setdefault("groups", [])
    config["defaultACLAccess"] = {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    return config


def _device_client(device_id: str, secret: Mapping[str, Any]) -> dict[str, Any]:
    # clientid pinned: a device cannot connect as another client id, so it can
    # never take over (or discard) another device's session
    return {
        "username": device_id,
        "clientid": device_id,
        **secret,
        "roles": [{"rolename": device_role_name(device_id)}],
    }


def _check_is_device(get_client: Mapping[str, Any], username: str) -> None:
    """A ``getClient`` response must show the device's own role and nothing else."""
    client = get_client.get("data", {}).get("client", {})
    roles = [r.get("rolename") for r in client.get("roles", [])]
    if roles != [device_role_name(username)] or client.get("groups"):
        raise ValueError(f"{username!r} is a broker login that is not a device's")


class DynsecAccounts:
    """A :class:`cloud.ports.BrokerAccounts` over ``$CONTROL/dynamic-security/v1``.

    Blocking (the issuing service calls it from a worker thread inside the device's
    transaction, so a broker that refuses rolls the device back). One MQTT 5
    connection per instance, made on first use with a client id of its own and kept
    by paho's network thread; :meth:`close` ends it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str,
        password: str | None,
        tls_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        self._username = username
        self._password = password
        self._tls_context = tls_context
        self._lock = threading.Lock()  # one connect at a time
        self._pending: dict[str, tuple[threading.Event, list[Any]]] = {}
        self._pending_lock = threading.Lock()
        self._ready = threading.Event()
        self._refused: str | None = None
        self._client: mqtt.Client | None = None

    @classmethod
    def from_settings(cls, settings: BrokerClientSettings) -> DynsecAccounts:
        """With the cloud's own broker login (``ENTITLE_BROKER_URL`` and password file)."""
        broker = settings.broker
        return cls(
            broker.host,
            broker.port,
            username=broker.username or "",
            password=broker.password.get_secret_value() if broker.password else None,
            tls_context=settings.broker_tls_context(),
        )

    # --- BrokerAccounts -------------------------------------------------------------

    def set_password(self, username: str, password: str) -> None:
        """Create the device's role and login, or change the password of its login."""
        role = device_role_name(username)
        created = self._call(
            [
                {"command": "createRole", "rolename": role, "acls": device_acls(username)},
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "clientid": username,
                    "roles": [{"rolename": role}],
                },
            ],
            tolerate={"Role already exists", "Client already exists"},
        )
        if created[1].get("error") != "Client already exists":
            return
        # Only a device's own login may be changed this way: never a cloud login.
        [found] = self._call([{"command": "getClient", "username": username}])
        _check_is_device(found, username)
        self._call([{"command": "setClientPassword", "username": username, "password": password}])

    def remove(self, username: str) -> None:
        """Delete the device's login (the broker disconnects it at once) and its role."""
        role = device_role_name(username)
        [found] = self._call(
            [{"command": "getClient", "username": username}], tolerate={"Client not found"}
        )
        if "error" in found:
            return
        _check_is_device(found, username)
        self._call(
            [
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": role},
            ],
            tolerate={"Client not found", "Role not found"},
        )

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._ready.clear()
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # --- the control channel ----------------------------------------------------------

    def _call(
        self, commands: list[dict[str, Any]], *, tolerate: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Send ``commands`` in one message; their responses, in order."""
        client = self._connected()
        correlation = secrets.token_hex(8)
        for command in commands:
            command["correlationData"] = correlation
        done, out = threading.Event(), cast(list[list[dict[str, Any]]], [])
        with self._pending_lock:
            self._pending[correlation] = (done, out)
        try:
            info = client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise self._unavailable(f"publish failed ({mqtt.error_string(info.rc)})")
            if not done.wait(self.timeout_s):
                raise self._unavailable(
                    f"no answer to {commands[0]['command']} within {self.timeout_s:g}s"
                )
        finally:
            with self._pending_lock:
                self._pending.pop(correlation, None)
        responses: list[dict[str, Any]] = out[0]
        allowed = set(tolerate)
        for response in responses:
            error = response.get("error")
            if error and error not in allowed:
                raise BrokerAccountsUnavailable(
                    f"the broker refused {response.get('command')}: {error}"
                )
        return responses

    def _unavailable(self, what: str) -> BrokerAccountsUnavailable:
        return BrokerAccountsUnavailable(
            f"broker accounts at {self.host}:{self.port}: {what}; is Mosquitto running with "
            "the dynamic-security plugin ('entitle broker run'), and is this the cloud's login?"
        )

    def _connected(self) -> mqtt.Client:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            client = self._client
        if not self._ready.wait(self.timeout_s):
            raise self._unavailable(self._refused or f"not connected within {self.timeout_s:g}s")
        return client

    def _connect(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self._username}-accounts-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(self._username, self._password)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(0.1, 5)  # type: ignore[arg-type]  # paho sleeps a float
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise self._unavailable(f"cannot connect ({exc})") from exc
        client.loop_start()
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self._refused = f"login refused ({rc})"
            _log.error("broker accounts: %s", self._refused)
            return
        self._refused = None
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        if codes and codes[0].is_failure:
            self._refused = f"may not read {RESPONSE_TOPIC} ({codes[0]})"
            _log.error("broker accounts: %s", self._refused)
            return
        self._ready.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._ready.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
            correlation = responses[0].get("correlationData")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            _log.warning("broker accounts: unreadable response %r", message.payload[:200])
            return
        with self._pending_lock:
            waiter = self._pending.get(correlation)
        if waiter is not None:
            waiter[1].append(responses)
            waiter[0].set()
