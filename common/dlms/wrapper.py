"""IEC 62056-47 TCP/UDP wrapper: sans-I/O codec and stream unwrapper over bytes.

Theory of operation: every APDU on a DLMS/COSEM TCP connection is preceded by an
8-octet header, all fields big-endian 16-bit::

    version (must be 1) | source wPort | destination wPort | length of the APDU

TCP delivers a byte stream, so one read may hold part of a PDU or several PDUs.
``Unwrapper.feed`` buffers and returns every whole PDU the data completes. A header whose
version is not 1, or whose length is 0 or above ``max_length``, means the peer is not
speaking the wrapper protocol (or the stream lost sync): there is no way to find the next
header, so ``feed`` raises ``WrapperError`` and the caller drops the connection. The
buffer never holds more than one header plus ``max_length`` octets besides the chunk
being fed.
"""

from __future__ import annotations

from typing import Final

from common.dlms.errors import WrapperError
from common.frozen import Frozen

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "HEADER_SIZE",
    "VERSION",
    "BadWrapperLength",
    "BadWrapperVersion",
    "Unwrapper",
    "WrapperError",
    "WrapperPdu",
    "check_header",
    "unwrap",
    "wrap",
]

VERSION: Final = 1
HEADER_SIZE: Final = 8
#: Largest APDU accepted by default: what the 16-bit length field allows.
DEFAULT_MAX_LENGTH: Final = 0xFFFF


class BadWrapperVersion(WrapperError):
    """The header's version field is not 1."""


class BadWrapperLength(WrapperError):
    """The header's length is 0, above the maximum, or disagrees with the data."""


class WrapperPdu(Frozen):
    """One wrapper PDU: header fields and the APDU it carries (an immutable value)."""

    # A Frozen rather than a frozen dataclass: the same behaviour, without the
    # memory that importing dataclasses costs the client process.
    __slots__ = ("version", "source", "destination", "apdu")
    __match_args__ = ("version", "source", "destination", "apdu")

    version: int
    source: int
    destination: int
    apdu: bytes

    def __init__(self, version: int, source: int, destination: int, apdu: bytes) -> None:
        for name, v in (("version", version), ("source", source), ("destination", destination)):
            if type(v) is not int or not 0 <= v <= 0xFFFF:
                raise ValueError(f"wrapper {name} must be an int in 0..0xFFFF, got {v!r}")
        if not isinstance(apdu, bytes):
            raise ValueError("wrapper apdu must be bytes")
        _set = object.__setattr__
        _set(self, "version", version)
        _set(self, "source", source)
        _set(self, "destination", destination)
        _set(self, "apdu", apdu)

    def _fields(self) -> tuple[int, int, int, bytes]:
        return (self.version, self.source, self.destination, self.apdu)


def wrap(apdu: bytes, src: int, dst: int) -> bytes:
    """Prefix ``apdu`` with a version-1 header from wPort ``src`` to wPort ``dst``."""
    n = len(apdu)
    if not 0 < n <= 0xFFFF:
        raise BadWrapperLength(f"APDU of {n} octets does not fit a wrapper PDU")
    if not (0 <= src <= 0xFFFF and 0 <= dst <= 0xFFFF):
        raise ValueError(f"wPorts must be in 0..0xFFFF, got {src}, {dst}")
    return (
        VERSION.to_bytes(2, "big")
        + src.to_bytes(2, "big")
        + dst.to_bytes(2, "big")
        + n.to_bytes(2, "big")
        + bytes(apdu)
    )


def _check_header(buf: bytes, max_length: int) -> int:
    version = (buf[0] << 8) | buf[1]
    if version != VERSION:
        raise BadWrapperVersion(f"wrapper version {version}, want {VERSION}")
    length = (buf[6] << 8) | buf[7]
    if length == 0 or length > max_length:
        raise BadWrapperLength(f"wrapper length {length} not in 1..{max_length}")
    return length


def check_header(header: bytes, max_length: int = DEFAULT_MAX_LENGTH) -> int:
    """The APDU length an 8-octet header announces; ``WrapperError`` if it is bad."""
    if len(header) < HEADER_SIZE:
        raise BadWrapperLength(f"{len(header)} octets is shorter than a wrapper header")
    return _check_header(header, max_length)


def unwrap(
    data: bytes | bytearray | memoryview, max_length: int = DEFAULT_MAX_LENGTH
) -> WrapperPdu:
    """Decode exactly one whole wrapper PDU; raise ``WrapperError`` otherwise."""
    buf = bytes(data)
    if len(buf) < HEADER_SIZE:
        raise BadWrapperLength(f"{len(buf)} octets is shorter than a wrapper header")
    length = _check_header(buf, max_length)
    if len(buf) != HEADER_SIZE + length:
        raise BadWrapperLength(f"header says {length} APDU octets, got {len(buf) - HEADER_SIZE}")
    return WrapperPdu(VERSION, (buf[2] << 8) | buf[3], (buf[4] << 8) | buf[5], buf[HEADER_SIZE:])


class Unwrapper:
    """Cut a TCP byte stream into ``WrapperPdu`` values.

    ``feed(data)`` returns the PDUs ``data`` completes, oldest first, and raises
    ``WrapperError`` on a bad header. After an error the stream is unusable: every later
    ``feed`` raises the same error, so a caller that forgets to close still stops.
    """

    __slots__ = ("max_length", "_buf", "_error", "pdus")

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if not 1 <= max_length <= 0xFFFF:
            raise ValueError(f"max_length must be in 1..65535, got {max_length}")
        self.max_length = max_length
        self._buf = b""
        self._error: WrapperError | None = None
        #: PDUs returned so far.
        self.pdus = 0

    @property
    def pending(self) -> int:
        """Octets buffered, waiting for the rest of a PDU."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[WrapperPdu]:
        """Add received octets; return the whole PDUs they complete."""
        if self._error is not None:
            raise self._error
        buf = self._buf + data if self._buf else bytes(data)
        out: list[WrapperPdu] = []
        pos = 0
        size = len(buf)
        while size - pos >= HEADER_SIZE:
            try:
                length = _check_header(buf[pos : pos + HEADER_SIZE], self.max_length)
            except WrapperError as exc:
                self._error = exc
                self._buf = b""
                raise
            end = pos + HEADER_SIZE + length
            if end > size:
                break
            out.append(
                WrapperPdu(
                    VERSION,
                    (buf[pos + 2] << 8) | buf[pos + 3],
                    (buf[pos + 4] << 8) | buf[pos + 5],
                    buf[pos + HEADER_SIZE : end],
                )
            )
            pos = end
        self._buf = buf[pos:] if pos else buf
        self.pdus += len(out)
        return out
