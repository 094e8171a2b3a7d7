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

from common.dlms.apdu import _CHOICE_LAYOUTS, _PLAIN_LAYOUTS, ACSE_TAGS

#: The directions counted: from the meter to the HES, and back.
DIRECTIONS: Final = ("up", "down")

_NAMES: Final[dict[int, str]] = {
    **{tag: name for tag, (name, _v) in _CHOICE_LAYOUTS.items()},
    **{tag: name for tag, (name, _l) in _PLAIN_LAYOUTS.items()},
    **ACSE_TAGS,
}


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
