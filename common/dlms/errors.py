"""Typed errors of the DLMS/COSEM codec.

``decode`` either returns a value or raises one of these; it never raises anything else.
All of them derive from ``DlmsError``; the decode-side ones say what was wrong with the
bytes (the peer's fault), ``EncodeError`` says a value given to ``encode`` cannot be put
on the wire (the caller's fault), ``WrapperError`` says a TCP wrapper header is bad and
the connection should be dropped.
"""

from __future__ import annotations

__all__ = [
    "BadLength",
    "BadTag",
    "BadValue",
    "DlmsError",
    "EncodeError",
    "TooDeep",
    "TrailingBytes",
    "Truncated",
    "WrapperError",
]


class DlmsError(Exception):
    """Base of every codec error."""


class Truncated(DlmsError):
    """The bytes end before the APDU or data element does."""


class TrailingBytes(DlmsError):
    """Bytes are left over after one whole APDU."""


class BadTag(DlmsError):
    """An APDU tag, CHOICE index or data type tag that the codec does not know."""


class BadLength(DlmsError):
    """A length or count field that is not a valid definite length."""


class BadValue(DlmsError):
    """A field whose value is out of range or inconsistent (e.g. bad UTF-8)."""


class TooDeep(BadValue):
    """Nested arrays, structures or BER elements deeper than the codec accepts."""


class EncodeError(DlmsError, ValueError):
    """A value given to ``encode`` cannot be encoded."""


class WrapperError(DlmsError):
    """An IEC 62056-47 wrapper header is bad (version, length): drop the connection."""
