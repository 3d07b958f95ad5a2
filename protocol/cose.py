"""COSE_Sign1 (tag 18) and COSE_Sign (tag 98) with EdDSA, per RFC 9052.

The algorithm is pinned here, never taken from the message: ``alg`` must be
present in the *protected* header and equal EdDSA (-8). Header labels marked
critical must be ones we understand. Parsing returns the parts; the caller
chooses the key by kid and calls :func:`verify_sign1` / :func:`signed_by`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import cbor
from protocol.errors import (
    BadAlgorithm,
    BadSignature,
    BadStructure,
    KeySetError,
    UnknownCriticalHeader,
)
from protocol.keys import verify_ed25519

__all__ = [
    "ALG_EDDSA",
    "Sign1",
    "SignMessage",
    "Signature",
    "decode_sign",
    "decode_sign1",
    "encode_sign",
    "encode_sign1",
    "verify_sign1",
]

ALG_EDDSA = -8
TAG_SIGN1 = 18
TAG_SIGN = 98
H_ALG, H_CRIT, H_CONTENT_TYPE, H_KID = 1, 2, 3, 4
_UNDERSTOOD = frozenset({H_ALG, H_CRIT, H_CONTENT_TYPE, H_KID})
_HEADER_MAX = 1024
# Our canonical protected header: map(2) {1: -8, 4: bstr(8) kid}. See _headers.
_OURS_PREFIX = b"\xa2\x01\x27\x04\x48"
_OURS_PREFIX_LEN = len(_OURS_PREFIX)
_OURS_LEN = _OURS_PREFIX_LEN + 8


@dataclass(frozen=True, slots=True)
class Sign1:
    """A parsed, not yet verified, COSE_Sign1."""

    protected_raw: bytes
    kid: bytes
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        return _sig_structure1(self.protected_raw, self.payload)


@dataclass(frozen=True, slots=True)
class Signature:
    """One signer of a COSE_Sign."""

    protected_raw: bytes
    kid: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignMessage:
    """A parsed, not yet verified, COSE_Sign with several signers."""

    protected_raw: bytes
    payload: bytes
    signatures: tuple[Signature, ...]

    def signed_by(self, keys: Mapping[bytes, Ed25519PublicKey]) -> frozenset[bytes]:
        """Distinct kids in ``keys`` whose signature verifies (duplicates count once)."""
        good: set[bytes] = set()
        for sig in self.signatures:
            key = keys.get(sig.kid)
            if key is None or sig.kid in good:
                continue
            tbs = _sig_structure(self.protected_raw, sig.protected_raw, self.payload)
            try:
                verify_ed25519(key, sig.signature, tbs)
            except BadSignature:
                continue
            good.add(sig.kid)
        return frozenset(good)


_SIG1_PREFIX = b"\x84\x6aSignature1"  # array(4), text(10) "Signature1"


def _bstr_head(length: int) -> bytes:
    """Head of a definite-length byte string, preferred (shortest) encoding."""
    if length < 24:
        return bytes((0x40 | length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    return b"\x5a" + length.to_bytes(4, "big")


def _sig_structure1(protected_raw: bytes, payload: bytes) -> bytes:
    # Same bytes as cbor2.dumps(["Signature1", protected_raw, b"", payload]),
    # built by hand: this runs once per token verification.
    return b"".join(
        (
            _SIG1_PREFIX,
            _bstr_head(len(protected_raw)),
            protected_raw,
            b"\x40",  # external_aad: empty byte string
            _bstr_head(len(payload)),
            payload,
        )
    )


def _sig_structure(body_protected: bytes, sign_protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature", body_protected, sign_protected, b"", payload])


def _protected(kid: bytes | None) -> bytes:
    header: dict[int, Any] = {H_ALG: ALG_EDDSA}
    if kid is not None:
        header[H_KID] = kid
    return cbor.encode(header)


def encode_sign1(payload: bytes, private: Ed25519PrivateKey, *, kid: bytes) -> bytes:
    """Sign ``payload`` into a tagged COSE_Sign1 with ``{1: -8, 4: kid}`` protected."""
    protected = _protected(kid)
    signature = private.sign(_sig_structure1(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [protected, {}, payload, signature]))


def encode_sign(
    payload: bytes, signers: Iterable[tuple[bytes, Ed25519PrivateKey]], *, content_type: str
) -> bytes:
    """Sign ``payload`` by every (kid, key) into a tagged COSE_Sign."""
    body_protected = cbor.encode({H_CONTENT_TYPE: content_type})
    sigs = []
    for kid, private in signers:
        sign_protected = _protected(kid)
        signature = private.sign(_sig_structure(body_protected, sign_protected, payload))
        sigs.append([sign_protected, {}, signature])
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN, [body_protected, {}, payload, sigs]))


def _headers(
    protected_raw: Any, unprotected: Any, *, need_alg: bool
) -> tuple[dict[Any, Any], dict[Any, Any]]:
    if not isinstance(protected_raw, bytes):
        raise BadStructure("protected header must be a byte string")
    if not isinstance(unprotected, dict):
        raise BadStructure("unprotected header must be a map")
    protected: Any = {}
    if len(protected_raw) == _OURS_LEN and protected_raw.startswith(_OURS_PREFIX):
        # The header we emit: these bytes can only mean {1: -8, 4: <last 8 bytes>},
        # exactly what the generic decode below returns for them (same checks follow).
        protected = {H_ALG: ALG_EDDSA, H_KID: protected_raw[_OURS_PREFIX_LEN:]}
    elif protected_raw:
        protected = cbor.decode(protected_raw, max_size=_HEADER_MAX)
        if not isinstance(protected, dict):
            raise BadStructure("protected header must encode a map")
    if H_ALG in unprotected:
        raise BadAlgorithm("alg must be in the protected header, found it unprotected")
    if H_CRIT in unprotected:
        raise BadStructure("crit must be in the protected header")
    if need_alg and H_ALG not in protected:
        raise BadAlgorithm("no alg in the protected header")
    if H_ALG in protected:
        alg = protected[H_ALG]
        # type check too: -8.0 == -8 in Python, but a float is not a COSE alg
        if type(alg) is not int or alg != ALG_EDDSA:
            raise BadAlgorithm(f"alg {alg!r} is not EdDSA (-8)")
    if H_CRIT in protected:  # present, even as null: then a non-empty array
        crit = protected[H_CRIT]
        if not isinstance(crit, list) or not crit:
            raise BadStructure("crit must be a non-empty array")
        if not all(type(label) is int or isinstance(label, str) for label in crit):
            raise BadStructure("crit labels must be integers or text")
        unknown = [label for label in crit if label not in _UNDERSTOOD]
        if unknown:
            raise UnknownCriticalHeader(f"critical header labels not understood: {unknown!r}")
    return protected, unprotected


def _kid(protected: dict[Any, Any], unprotected: dict[Any, Any]) -> bytes:
    kid = protected.get(H_KID, unprotected.get(H_KID))
    if not isinstance(kid, bytes):
        raise BadStructure("kid missing or not a byte string")
    return kid


def _untag(data: bytes, *, tag: int, max_size: int, what: str) -> list[Any]:
    item = cbor.decode(data, max_size=max_size)
    if not isinstance(item, cbor2.CBORTag) or item.tag != tag:
        found = item.tag if isinstance(item, cbor2.CBORTag) else type(item).__name__
        raise BadStructure(f"{what} must carry CBOR tag {tag}, found {found}")
    value = item.value
    if not isinstance(value, list) or len(value) != 4:
        raise BadStructure(f"{what} must be an array of 4 items")
    if not isinstance(value[2], bytes):
        raise BadStructure(f"{what} payload must be an attached byte string")
    return value


def _bstr_span(data: bytes, pos: int) -> tuple[int, int] | None:
    """(start, end) of the byte string whose head is at ``pos``, for heads of 1-3 bytes.

    None if ``data[pos]`` is no such head. ``end`` is not checked against the input.
    """
    head = data[pos]
    if 0x40 <= head <= 0x57:
        return pos + 1, pos + 1 + head - 0x40
    if head == 0x58:
        return pos + 2, pos + 2 + data[pos + 1]
    if head == 0x59:
        return pos + 3, pos + 3 + int.from_bytes(data[pos + 1 : pos + 3], "big")
    return None


def _plain_sign1(data: bytes, *, max_size: int) -> list[Any] | None:
    """The four parts of a COSE_Sign1 laid out as we emit it, or None for any other input.

    The layout: tag 18, array(4), byte string, empty map, byte string, byte
    string, nothing after. Such bytes pass every check of the strict decode
    (size limit, definite lengths, tag 18, depth 2, no map keys, no trailing
    bytes) and it would return exactly these parts, so it need not run; input
    of any other layout, type or size goes through :func:`_untag` unchanged.
    """
    if type(data) is not bytes or len(data) > max_size or data[:2] != b"\xd2\x84":
        return None
    try:
        protected = _bstr_span(data, 2)
        if protected is None or data[protected[1]] != 0xA0:  # the empty unprotected map
            return None
        payload = _bstr_span(data, protected[1] + 1)
        if payload is None:
            return None
        signature = _bstr_span(data, payload[1])
    except IndexError:  # truncated: the strict decode says how
        return None
    # Spans follow each other, so the last ending at the end keeps all inside.
    if signature is None or signature[1] != len(data):
        return None
    return [
        data[protected[0] : protected[1]],
        {},
        data[payload[0] : payload[1]],
        data[signature[0] : signature[1]],
    ]


def decode_sign1(data: bytes, *, max_size: int) -> Sign1:
    """Parse a tagged COSE_Sign1 and check its headers; the signature is not checked."""
    parts = _plain_sign1(data, max_size=max_size)
    if parts is None:
        parts = _untag(data, tag=TAG_SIGN1, max_size=max_size, what="COSE_Sign1")
    protected_raw, unprotected, payload, signature = parts
    protected, unprotected = _headers(protected_raw, unprotected, need_alg=True)
    if not isinstance(signature, bytes):
        raise BadStructure("signature must be a byte string")
    return Sign1(protected_raw, _kid(protected, unprotected), payload, signature)


def verify_sign1(msg: Sign1, key_for: Callable[[bytes], Ed25519PublicKey]) -> bytes:
    """Verify ``msg`` under the key ``key_for(kid)`` and return the payload.

    Raises:
        UnknownKey: from ``key_for``.
        BadSignature: the signature does not verify.
    """
    verify_ed25519(key_for(msg.kid), msg.signature, msg.to_be_signed())
    return msg.payload


def decode_sign(data: bytes, *, max_size: int, max_signatures: int) -> SignMessage:
    """Parse a tagged COSE_Sign; every signer must name EdDSA and a kid."""
    protected_raw, unprotected, payload, sigs = _untag(
        data, tag=TAG_SIGN, max_size=max_size, what="COSE_Sign"
    )
    _headers(protected_raw, unprotected, need_alg=False)
    if not isinstance(sigs, list) or not sigs:
        raise BadStructure("COSE_Sign needs a non-empty array of signatures")
    if len(sigs) > max_signatures:
        raise KeySetError(f"{len(sigs)} signatures is over the limit of {max_signatures}")
    parsed = []
    for sig in sigs:
        if not isinstance(sig, list) or len(sig) != 3 or not isinstance(sig[2], bytes):
            raise BadStructure("each COSE_Signature is [protected, unprotected, signature]")
        s_protected, s_unprotected = _headers(sig[0], sig[1], need_alg=True)
        parsed.append(Signature(sig[0], _kid(s_protected, s_unprotected), sig[2]))
    return SignMessage(protected_raw, payload, tuple(parsed))
