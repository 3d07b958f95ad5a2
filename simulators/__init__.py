"""Simulators: an in-memory token repository now; fleets with fault injection later."""

from simulators.repository import TokenRepositorySimulator

__all__ = ["TokenRepositorySimulator"]
