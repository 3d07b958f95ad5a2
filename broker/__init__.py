"""The broker process: Mosquitto's configuration, logins and access rules.

- :mod:`broker.mosquitto`: ``mosquitto.conf`` and the dynamic-security file, the process;
- :mod:`broker.nats`: the clustered engine, N ``nats-server`` nodes and their auth
  responders; :mod:`broker.natsconfig` each node's ``nats.conf``;
  :mod:`broker.natsauth` the auth-callout responder (device logins without reloads);
- :mod:`broker.embedded`: the amqtt fallback for trying Entitle out;
- :mod:`broker.passwd`: logins in a ``$7$`` password file (the embedded broker's);
- :mod:`broker.certs`: a local CA and certificates for the TLS listener;
- :mod:`broker.settings`, :mod:`broker.errors`.

It stands beside the agent and the cloud and imports neither: what it shares
with the cloud (the dynamic-security documents, password hashing) is in
:mod:`common`.
"""

__all__: list[str] = []
