"""The floor agent and cloud stand on; it imports only ``protocol`` and libraries
both sides ship (aiomqtt/paho, the standard library), and pydantic-settings in
:mod:`common.settings`, which the agent never imports.

- :mod:`common.config`: where every process's settings come from, the broker
  address, :class:`~common.config.ConfigError`, and the typed base of the agent's
  settings on the standard library alone;
- :mod:`common.settings`: the pydantic-settings bases of the cloud's and the
  broker's settings (same variables, same sentences);
- :mod:`common.mqtt`: the one reconnecting MQTT client (errors mapped to
  :class:`~protocol.errors.TransportError`);
- :mod:`common.clock`: the one clock type;
- :mod:`common.tls`: a broker client's TLS context;
- :mod:`common.credentials`: device passwords and every way they are hashed;
- :mod:`common.dynsec`: Mosquitto's dynamic-security documents and ``$CONTROL`` client;
- :mod:`common.tasks`: cancelling tasks and waiting for them.
"""

__all__: list[str] = []
