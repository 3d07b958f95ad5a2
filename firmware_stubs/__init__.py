"""Device firmware emulators on a pseudo-terminal, one per device kind.

Empty on purpose until the health/serial issue: the serial protocol
(framing, CRC-16, GET_INFO / GET_HEALTH / SET_FEATURES / SELF_TEST /
GET_LOG) and the gateway, camera and counter emulators arrive with it.
"""

__all__: list[str] = []
