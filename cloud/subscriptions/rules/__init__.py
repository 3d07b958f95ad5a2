"""Pure rules of subscriptions: one module per resource or topic."""

__all__: list[str] = []
