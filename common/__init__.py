"""The floor agent and cloud stand on; it imports only ``protocol`` and libraries
both sides ship (pydantic-settings, aiomqtt/paho, the standard library).

- :mod:`common.settings`: how every process reads its settings (the base classes,
  the broker address, :class:`~common.settings.ConfigError`);
- :mod:`common.mqtt`: the one reconnecting MQTT client (errors mapped to
  :class:`~protocol.errors.TransportError`);
- :mod:`common.clock`: the one clock type;
- :mod:`common.tls`: a broker client's TLS context;
- :mod:`common.credentials`: device passwords and every way they are hashed;
- :mod:`common.dynsec`: Mosquitto's dynamic-security documents and ``$CONTROL`` client;
- :mod:`common.tasks`: cancelling tasks and waiting for them.
"""

__all__: list[str] = []
