"""The broker process: Mosquitto's configuration, logins and access rules."""

__all__: list[str] = []
