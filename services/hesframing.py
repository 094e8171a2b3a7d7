"""How APDUs are delimited on the client's TCP stream to the HES (``TCP_SERVER.framing``).

``raw`` (the default, as the reference solution does): payloads are written as they
are and whatever a read returns is one downlink chunk. ``wrapper``: IEC 62056-47, each
uplink payload (one APDU: each 0x2100 payload from the meter is one) is preceded by the
8-octet header ``version 1 | source wPort | destination wPort | length``
(``common.dlms.wrapper``), and the downlink stream is cut into the APDUs its headers
delimit, whatever the TCP reads split or merge. A bad downlink header (version, length)
sets the decoder's ``error`` (a ``FramingError``) after the APDUs before it: the stream
cannot be resynchronised, so the caller delivers those, then drops the connection (and
logs and counts it). The wPorts of downlink headers are not checked.

The spool keeps payloads unwrapped, so headers are added where payloads are written to
the socket (``encode``), and each connection gets a fresh ``decoder()``. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from common.dlms import wrapper
from common.dlms.errors import WrapperError

RAW = "raw"
WRAPPER = "wrapper"

FramingError = WrapperError


class RawDecoder:
    """The raw stream: every read is one chunk."""

    error: FramingError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        return [data] if data else []

    @property
    def pending(self) -> int:
        return 0


class WrapperDecoder:
    """The wrapped stream: the APDUs of the whole PDUs, oldest first.

    ``feed`` returns the APDUs that came before a bad header too, and sets
    ``error``: the caller delivers them, then drops the connection. Once ``error``
    is set every later ``feed`` returns nothing. Holds at most one PDU's octets.
    """

    def __init__(self) -> None:
        self._buf = b""
        self.error: FramingError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            return []
        buf = self._buf + data if self._buf else bytes(data)
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= wrapper.HEADER_SIZE:
            try:
                length = wrapper.check_header(buf[pos : pos + wrapper.HEADER_SIZE])
            except FramingError as exc:
                self.error = exc
                break
            end = pos + wrapper.HEADER_SIZE + length
            if end > len(buf):
                break
            out.append(buf[pos + wrapper.HEADER_SIZE : end])
            pos = end
        self._buf = b"" if self.error is not None else buf[pos:]
        return out

    @property
    def pending(self) -> int:
        """Octets held for a PDU not complete yet."""
        return len(self._buf)


Decoder = RawDecoder | WrapperDecoder


class HesFraming(NamedTuple):
    """The framing of one client: ``kind`` and, for the wrapper, the uplink wPorts."""

    # A NamedTuple, not a frozen dataclass: the client process need not import
    # dataclasses (with inspect, ast, dis) for it.

    kind: str = RAW
    source: int = 1
    destination: int = 16

    @classmethod
    def from_config(cls, tcp: dict[str, Any]) -> HesFraming:
        w = tcp.get("wrapper") or {}
        return cls(
            kind=tcp.get("framing", RAW),
            source=int(w.get("source_wport", 1)),
            destination=int(w.get("destination_wport", 16)),
        )

    @property
    def max_payload(self) -> int | None:
        """Longest payload that can be sent (None: no limit)."""
        return 0xFFFF if self.kind == WRAPPER else None

    def fits(self, payload: bytes) -> bool:
        return self.kind != WRAPPER or 0 < len(payload) <= 0xFFFF

    def encode(self, payload: bytes) -> bytes:
        """The bytes to write for one payload (it must ``fit``)."""
        if self.kind == WRAPPER:
            return wrapper.wrap(payload, self.source, self.destination)
        return payload

    def decoder(self) -> Decoder:
        """A decoder for one connection's downlink stream."""
        return WrapperDecoder() if self.kind == WRAPPER else RawDecoder()

    def __str__(self) -> str:
        if self.kind == WRAPPER:
            return f"wrapper(src={self.source},dst={self.destination})"
        return self.kind
