"""The broker process: Mosquitto's configuration, logins and access rules.

- :mod:`broker.mosquitto`: ``mosquitto.conf`` and the dynamic-security file, the process;
- :mod:`broker.embedded`: the amqtt fallback for trying Entitle out;
- :mod:`broker.passwd`: logins in a ``$7$`` password file (the embedded broker's);
- :mod:`broker.certs`: a local CA and certificates for the TLS listener;
- :mod:`broker.settings`, :mod:`broker.errors`.

It stands beside the agent and the cloud and imports neither: what it shares
with the cloud (the dynamic-security documents, password hashing) is in
:mod:`common`.
"""

__all__: list[str] = []
