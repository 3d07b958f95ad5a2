"""The floor agent and cloud stand on: settings, the MQTT client, the clock."""

__all__: list[str] = []
