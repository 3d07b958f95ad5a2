"""HTTP routes of accounts: one module per resource or topic."""

__all__: list[str] = []
