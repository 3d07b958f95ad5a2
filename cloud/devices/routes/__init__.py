"""HTTP routes of devices: one module per resource or topic."""

__all__: list[str] = []
