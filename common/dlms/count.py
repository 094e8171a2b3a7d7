"""Counting APDUs by name on the hot path: one look at the first byte, no decode.

``count_apdu(counters, "up", payload)`` adds one to ``dlms.up.<name>``, where
the name is the Green Book choice of the payload's tag (``get-request``,
``data-notification``, ``aarq``, ``glo-get-response`` ...), or ``other`` for a
tag that names no APDU (a payload that is not DLMS, or the middle of a block).
The counter keys are made once, at import, for every byte value and both
directions, so a count is one index and one dictionary increment. It says
what the payload starts with, not that it decodes: ``tap --dlms`` decodes.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Final

#: The directions counted: from the meter to the HES, and back.
DIRECTIONS: Final = ("up", "down")

#: The ciphered forms of the xDLMS services (glo-/ded-), tag -> name; the codec
#: (``common.dlms.apdu``) takes its table from here.
CIPHERED: Final[dict[int, str]] = {
    0x21: "glo-initiate-request",
    0x25: "glo-read-request",
    0x26: "glo-write-request",
    0x28: "glo-initiate-response",
    0x2C: "glo-read-response",
    0x2D: "glo-write-response",
    0x2E: "glo-confirmed-service-error",
    0x36: "glo-unconfirmed-write-request",
    0x38: "glo-information-report-request",
    0x41: "ded-initiate-request",
    0x45: "ded-read-request",
    0x46: "ded-write-request",
    0x48: "ded-initiate-response",
    0x4C: "ded-read-response",
    0x4D: "ded-write-response",
    0x4E: "ded-confirmed-service-error",
    0x56: "ded-unconfirmed-write-request",
    0x58: "ded-information-report-request",
    0xC8: "glo-get-request",
    0xC9: "glo-set-request",
    0xCA: "glo-event-notification-request",
    0xCB: "glo-action-request",
    0xCC: "glo-get-response",
    0xCD: "glo-set-response",
    0xCF: "glo-action-response",
    0xD0: "ded-get-request",
    0xD1: "ded-set-request",
    0xD2: "ded-event-notification-request",
    0xD3: "ded-action-request",
    0xD4: "ded-get-response",
    0xD5: "ded-set-response",
    0xD7: "ded-action-response",
}

#: Tag byte -> APDU name, written out rather than taken from ``common.dlms.apdu``
#: so that the processes that count (resolver workers, client) do not import
#: the whole codec (about 3 MB each); a test checks it matches the codec's tables.
NAMES: Final[dict[int, str]] = {
    0x01: "initiate-request",
    0x08: "initiate-response",
    0x0E: "confirmed-service-error",
    0x0F: "data-notification",
    0x60: "aarq",
    0x61: "aare",
    0x62: "rlrq",
    0x63: "rlre",
    0xC0: "get-request",
    0xC1: "set-request",
    0xC2: "event-notification-request",
    0xC3: "action-request",
    0xC4: "get-response",
    0xC5: "set-response",
    0xC7: "action-response",
    0xD8: "exception-response",
    0xDB: "general-glo-ciphering",
    0xDC: "general-ded-ciphering",
    0xDD: "general-ciphering",
    0xDF: "general-signing",
    0xE0: "general-block-transfer",
    **CIPHERED,
}
_NAMES = NAMES


def apdu_name(first_byte: int) -> str:
    """The APDU name a tag byte stands for, ``other`` if none."""
    return _NAMES.get(first_byte, "other")


_KEYS: Final[dict[str, tuple[str, ...]]] = {
    d: tuple(f"dlms.{d}.{apdu_name(b)}" for b in range(256)) for d in DIRECTIONS
}


def count_apdu(counters: MutableMapping[str, int], direction: str, payload: bytes) -> None:
    """Count ``payload``'s APDU by name under ``dlms.<direction>.``; empty counts nothing."""
    if payload:
        key = _KEYS[direction][payload[0]]
        counters[key] = counters.get(key, 0) + 1
