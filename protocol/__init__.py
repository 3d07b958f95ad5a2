"""The Entitle protocol: pure code shared by the cloud and the agent.

Token format (COSE_Sign1 + CWT), key sets with threshold rotation, topic
names and the one device-id rule, the messages devices and cloud exchange
(:mod:`protocol.health`, :mod:`protocol.status`, :mod:`protocol.commands`, the
serial frames of :mod:`protocol.serial`), each one typed value with its codec,
and the error tree (see :mod:`protocol.errors`). No I/O, no clocks.
"""

from protocol.errors import *  # noqa: F403
from protocol.errors import __all__ as _errors_all
from protocol.keyset import KeySet, apply_rotations, sign_keyset, trust_root
from protocol.token import Claims, Feature, feature_allowed, issue_token, verify_token
from protocol.topics import KEYS_TOPIC, check_device_id, device_topic, parse_device_topic

__all__ = [
    *_errors_all,
    "KEYS_TOPIC",
    "Claims",
    "Feature",
    "KeySet",
    "apply_rotations",
    "check_device_id",
    "device_topic",
    "feature_allowed",
    "issue_token",
    "parse_device_topic",
    "sign_keyset",
    "trust_root",
    "verify_token",
]
