"""Pure rules of health: one module per resource or topic."""

__all__: list[str] = []
