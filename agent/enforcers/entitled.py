"""Which features an enforcer must switch on, with their token parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.verifier import TrustState

__all__ = ["entitled_features"]


def entitled_features(
    decisions: Mapping[str, tuple[bool, str]], state: TrustState
) -> dict[str, dict[str, Any]]:
    """Allowed feature -> its parameters from the accepted token (``until`` left out)."""
    ent = state.claims.ent if state.claims is not None else {}
    return {
        name: dict(ent[name].params) if name in ent else {}
        for name, (allowed, _) in sorted(decisions.items())
        if allowed
    }
