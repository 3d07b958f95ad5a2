"""Typed errors for everything the protocol refuses.

Three families (data from outside, the transport, our own stored state), so
callers decide on the family and logs show the leaf::

    EntitleError
    ├── UntrustedDataError            data from outside failed a check
    │   ├── DecodeError               not well-formed (CBOR, COSE, JSON)
    │   │   ├── TooLarge              over the size limit, checked before decoding
    │   │   ├── BadCbor               malformed, indefinite, too deep, duplicate keys,
    │   │   │                         trailing bytes
    │   │   └── BadStructure          not a COSE_Sign1 / COSE_Sign of the expected shape
    │   ├── TokenError                a well-formed token that is not acceptable
    │   │   ├── BadAlgorithm          alg missing, unprotected, or not EdDSA
    │   │   ├── UnknownCriticalHeader
    │   │   ├── UnknownKey            kid not in the trusted key set
    │   │   ├── BadSignature
    │   │   ├── BadClaims             a required claim missing or ill-typed
    │   │   ├── WrongSubject          sub is another device
    │   │   ├── WrongInstallation     inst is not the installation the device belongs to
    │   │   ├── WrongAudience
    │   │   ├── Expired
    │   │   ├── NotYetValid
    │   │   └── Rollback              ver not newer than the last accepted
    │   ├── KeySetError               a key set that cannot be trusted
    │   │   ├── BadKey                wrong length, non-canonical, small order
    │   │   ├── ThresholdNotMet
    │   │   ├── VersionNotNext
    │   │   └── TooManyRotations
    │   ├── TopicError                a topic name or id that is not ours
    │   ├── BadMessage                a JSON message refused (``.reason``: too_large,
    │   │   │                         bad_json, bad_schema, wrong_version, wrong_device)
    │   │   ├── BadHealthReport       protocol.health
    │   │   ├── BadStatus             protocol.status
    │   │   └── BadCommand            protocol.commands (``.command_id`` when readable)
    │   └── SerialFrameError          a serial frame that cannot be used (``.consumed``)
    │       ├── Garbage               bytes outside any frame (line noise, a lost marker)
    │       ├── BadCrc                CRC-16 mismatch: corrupted on the line
    │       ├── FrameTooLarge         payload length over 4 KiB, refused from the header
    │       ├── BadFrame              bad version, flags or payload; overtaken partial frame
    │       └── FirmwareErrorReply    the firmware answered with an ERROR frame (``.code``)
    ├── TransportError                broker, serial link or network failed
    │   ├── SerialTimeout             no answer from the firmware in time
    │   └── FirmwareUnavailable       the serial port failed, or no answer after retries
    └── StoreError                    this side's own stored state is missing, unreadable,
                                      another device's or not provisioned: not retried,
                                      the message says what to do next

The three ``BadMessage`` leaves live beside their codecs.
"""

from __future__ import annotations

__all__ = [
    "BadAlgorithm",
    "BadCbor",
    "BadClaims",
    "BadCrc",
    "BadFrame",
    "BadKey",
    "BadMessage",
    "BadSignature",
    "BadStructure",
    "DecodeError",
    "EntitleError",
    "Expired",
    "FirmwareErrorReply",
    "FirmwareUnavailable",
    "FrameTooLarge",
    "Garbage",
    "KeySetError",
    "NotYetValid",
    "Rollback",
    "SerialFrameError",
    "SerialTimeout",
    "StoreError",
    "ThresholdNotMet",
    "TokenError",
    "TooLarge",
    "TooManyRotations",
    "TopicError",
    "TransportError",
    "UnknownCriticalHeader",
    "UnknownKey",
    "UntrustedDataError",
    "VersionNotNext",
    "WrongAudience",
    "WrongInstallation",
    "WrongSubject",
]


class EntitleError(Exception):
    """Root of every error this project raises on purpose."""

    @property
    def reason(self) -> str:
        """Short machine-readable reason: the leaf class name in snake case."""
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class UntrustedDataError(EntitleError):
    """Data that came from outside failed a check; the previous state is kept."""


class DecodeError(UntrustedDataError):
    """The bytes are not well-formed."""


class TooLarge(DecodeError):
    """Input over its size limit, refused before any decoding."""


class BadCbor(DecodeError):
    """CBOR that is malformed or outside the subset we accept."""


class BadStructure(DecodeError):
    """Well-formed CBOR that is not the COSE structure expected."""


class TokenError(UntrustedDataError):
    """A well-formed token that must not be accepted."""


class BadAlgorithm(TokenError):
    """The algorithm is missing, unprotected or not the pinned EdDSA."""


class UnknownCriticalHeader(TokenError):
    """A header marked critical that we do not understand."""


class UnknownKey(TokenError):
    """The key id is not in the trusted key set."""


class BadSignature(TokenError):
    """The signature does not verify under the named key."""


class BadClaims(TokenError):
    """A required claim is missing or has the wrong type."""


class WrongSubject(TokenError):
    """The token names another device."""


class WrongInstallation(TokenError):
    """The token names another installation than the one the device is bound to."""


class WrongAudience(TokenError):
    """The token's audience is not the entitle service."""


class Expired(TokenError):
    """now >= exp."""


class NotYetValid(TokenError):
    """now < nbf - skew."""


class Rollback(TokenError):
    """ver is not newer than the last accepted token (or same ver, other bytes)."""


class KeySetError(UntrustedDataError):
    """A key set, or a key in it, that cannot be trusted."""


class BadKey(KeySetError):
    """A public key of the wrong length, non-canonical, or of small order."""


class ThresholdNotMet(KeySetError):
    """Too few distinct trusted keys signed the key set."""


class VersionNotNext(KeySetError):
    """A rotation's version is not exactly the current version + 1."""


class TooManyRotations(KeySetError):
    """A message carried more rotations than one message may apply."""


class TopicError(UntrustedDataError):
    """A topic or device id that does not match our topic table."""


class BadMessage(UntrustedDataError):
    """A JSON message (health report, status, command) that is refused.

    ``reason`` names the check that failed, as the codec says it (``too_large``,
    ``bad_json``, ``bad_schema``, ...), not the class name: one class per message
    family, many reasons, counted by reason where they are refused.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self._reason = reason

    @property
    def reason(self) -> str:
        return self._reason


class TransportError(EntitleError):
    """The broker, serial link or network failed; retry later."""


class SerialFrameError(UntrustedDataError):
    """Bytes from the serial line that are not a usable frame.

    ``consumed`` says how many bytes of the reader's buffer to drop before
    reading on (``protocol.serial.read`` sets it; 0 when raised elsewhere).
    """

    def __init__(self, message: str, *, consumed: int = 0) -> None:
        super().__init__(message)
        self.consumed = consumed


class Garbage(SerialFrameError):
    """Bytes outside any frame: line noise, or the rest of a frame whose marker was dropped.

    ``consumed`` is the number of bytes skipped (reason ``garbage``).
    """


class BadCrc(SerialFrameError):
    """The frame's CRC-16 does not match: corrupted on the line."""


class FrameTooLarge(SerialFrameError):
    """The header announces a payload over the limit; refused before reading it."""


class BadFrame(SerialFrameError):
    """Unknown version or flags, a payload that is not one strict CBOR map, or a
    response whose body does not have the shape its op promises."""


class FirmwareErrorReply(SerialFrameError):
    """The firmware answered with an ERROR frame; ``code`` is its error code."""

    def __init__(self, message: str, *, code: str, consumed: int = 0) -> None:
        super().__init__(message, consumed=consumed)
        self.code = code


class SerialTimeout(TransportError):
    """The firmware did not answer within the timeout."""


class FirmwareUnavailable(TransportError):
    """The serial port failed, or the firmware gave no valid answer after the retries."""


class StoreError(EntitleError):
    """The local store is missing, unreadable, another device's or unprovisioned.

    Not untrusted input and not a passing transport failure: retrying changes
    nothing, so the message says what the operator should do next.
    """
