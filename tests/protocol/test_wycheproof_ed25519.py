"""Wycheproof EdDSA (Ed25519) verify vectors through our key and signature path.

Every case goes through :func:`protocol.keys.load_public_key` (the checks a
key passes before it is trusted) and :func:`protocol.keys.verify_ed25519`.
Valid cases verify; invalid ones raise BadSignature, or BadKey when the key
itself is refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.errors import BadKey, BadSignature
from protocol.keys import load_public_key, verify_ed25519
from tests.protocol.cose_forge import load_vector

SUITE = load_vector("wycheproof-ed25519_test.json")
CASES = [
    pytest.param(
        bytes.fromhex(group["publicKey"]["pk"]),
        case,
        id=f"{case['tcId']}-{case['comment'] or '+'.join(case['flags'])}",
    )
    for group in SUITE["testGroups"]
    for case in group["tests"]
]


def test_suite_is_complete() -> None:
    assert len(CASES) == SUITE["numberOfTests"] == 151
    results = [p.values[1]["result"] for p in CASES]
    assert results.count("valid") == 88 and results.count("invalid") == 63


@pytest.mark.parametrize(("public", "case"), CASES)
def test_wycheproof(public: bytes, case: dict[str, Any]) -> None:
    signature, message = bytes.fromhex(case["sig"]), bytes.fromhex(case["msg"])
    if case["result"] == "valid":
        verify_ed25519(load_public_key(public), signature, message)
    else:
        assert case["result"] == "invalid"
        with pytest.raises((BadSignature, BadKey)):
            verify_ed25519(load_public_key(public), signature, message)
