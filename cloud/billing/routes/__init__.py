"""HTTP routes of billing: one module per resource or topic."""

__all__: list[str] = []
