"""Meter-side frame codec: pure functions and a stream deframer over bytes, no I/O.

Theory of operation (see shared/docs/wire-format.md):

* ``quectel`` (default) profile::

      7E FF 03 | protocol LE16 | length BE16 (= 1 + len(info)) | cmd | info | FCS BE16 | 7E

  No octet stuffing: the length field delimits the frame, so ``info`` may hold ``7E``.
* ``rfc1662`` profile: PPP-style HDLC framing, protocol big-endian, no length field, FCS
  low byte first, ``7E``/``7D`` and ACCM-selected control bytes escaped as ``7D (b ^ 0x20)``.

The FCS is CRC-16/X.25 (PPP FCS-16). It is computed with ``binascii.crc_hqx`` (the
non-reflected CCITT CRC, in C) on bit-reversed bytes; reversing the 16-bit result gives the
reflected X.25 value. That keeps the per-byte work out of Python.

``decode`` takes exactly one whole frame and either returns a ``Frame`` or raises a
``FrameError`` subclass. ``Deframer`` cuts a byte stream into frames, never raises on bad
input, counts what it drops and keeps its buffer bounded.
"""

from __future__ import annotations

import array
import binascii
from collections.abc import Sequence
from typing import Final

from common.frozen import Frozen

__all__ = [
    "ADDRESS",
    "CMD_ACTION",
    "CMD_ACTION_RESP",
    "CMD_EVENT",
    "CMD_EVENT_RESP",
    "CMD_GET",
    "CMD_GET_ERROR",
    "CMD_GET_RESP",
    "CMD_SERIAL_NET",
    "CMD_SET",
    "CMD_SET_RESP",
    "CONTROL",
    "DEFAULT_ACCM",
    "DEFAULT_MAX_INFO",
    "ESCAPE",
    "FLAG",
    "MIN_FRAME",
    "PROFILES",
    "PROTO_PARAMS",
    "PROTO_TRANSPARENT",
    "BadEscape",
    "BadFCS",
    "BadFlag",
    "BadHeader",
    "BadLength",
    "Deframer",
    "Frame",
    "FrameError",
    "MissingFlag",
    "TooLong",
    "decode",
    "encode",
    "fcs16",
    "frame_size",
    "wrap_transparent",
]

FLAG: Final = 0x7E
ESCAPE: Final = 0x7D
ADDRESS: Final = 0xFF
CONTROL: Final = 0x03

PROTO_TRANSPARENT: Final = 0x2100
PROTO_PARAMS: Final = 0x2200

CMD_SERIAL_NET: Final = 0xBF
CMD_GET: Final = 0xC0
CMD_SET: Final = 0xC1
CMD_EVENT: Final = 0xC2
CMD_ACTION: Final = 0xC3
CMD_GET_RESP: Final = 0xC4
CMD_SET_RESP: Final = 0xC5
CMD_EVENT_RESP: Final = 0xC6
CMD_ACTION_RESP: Final = 0xC7
CMD_GET_ERROR: Final = 0xC8

#: Largest info field accepted by default. The longest frame seen on real meters is well
#: under this; the length field itself allows up to 65534 info bytes.
DEFAULT_MAX_INFO: Final = 1024
#: Default async-control-character map for the rfc1662 profile: escape all of 0x00..0x1F.
DEFAULT_ACCM: Final = 0xFFFFFFFF
#: Smallest quectel frame: flag, address, control, protocol(2), length(2), cmd, FCS(2), flag.
MIN_FRAME: Final = 11
PROFILES: Final = ("quectel", "rfc1662")

_HEADER: Final = b"\x7e\xff\x03"
_OVERHEAD: Final = 10  # quectel frame size = _OVERHEAD + length field
_MAX_LENGTH_FIELD: Final = 0xFFFF


# --- errors -----------------------------------------------------------------------------


class FrameError(Exception):
    """A byte string is not one valid frame (the peer's or the line's fault)."""


class BadHeader(FrameError):
    """The frame does not start with flag, address ``FF`` and control ``03``."""


class BadLength(FrameError):
    """The length field disagrees with the frame's size, or the frame is too short."""


class BadFCS(FrameError):
    """The frame check sequence does not match the frame's contents."""


class MissingFlag(FrameError):
    """The opening or closing ``7E`` flag is missing."""


class BadFlag(MissingFlag):
    """rfc1662 profile: a ``7E`` flag inside the frame body."""


class BadEscape(FrameError):
    """rfc1662 profile: ``7D`` at the end of the frame or followed by a flag/escape."""


class TooLong(FrameError):
    """The info field is longer than the configured maximum."""


# --- frame value ------------------------------------------------------------------------


class Frame(Frozen):
    """One meter-side frame: ``protocol`` (16 bit), ``cmd`` (8 bit) and ``info`` bytes.

    Fields are checked when built; a bad one raises ``ValueError``. ``info`` may be given
    as any bytes-like object and is stored as ``bytes``. Frames are immutable values:
    equal (and hashing alike) when their fields are.
    """

    # A Frozen rather than a frozen dataclass: the same behaviour, without the
    # memory that importing dataclasses costs every process. Its own equality
    # and hash: the codec makes and compares many.
    __slots__ = ("protocol", "cmd", "info")
    __match_args__ = ("protocol", "cmd", "info")

    protocol: int
    cmd: int
    info: bytes

    def __init__(self, protocol: int, cmd: int, info: bytes) -> None:
        p = protocol
        if type(p) is not int:
            if not isinstance(p, int) or isinstance(p, bool):
                raise ValueError(f"frame protocol must be an int, got {p!r}")
            p = int(p)
        if not 0 <= p <= 0xFFFF:
            raise ValueError(f"frame protocol must be in 0..0xFFFF, got {p!r}")
        c = cmd
        if type(c) is not int:
            if not isinstance(c, int) or isinstance(c, bool):
                raise ValueError(f"frame cmd must be an int, got {c!r}")
            c = int(c)
        if not 0 <= c <= 0xFF:
            raise ValueError(f"frame cmd must be in 0..0xFF, got {c!r}")
        i: object = info
        if type(i) is not bytes:
            if not isinstance(i, (bytearray, memoryview)):
                raise ValueError(f"frame info must be bytes, got {type(i).__name__}")
            i = bytes(i)
        _set_protocol(self, p)
        _set_cmd(self, c)
        _set_info(self, i)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Frame:
            return NotImplemented
        return self.protocol == other.protocol and self.cmd == other.cmd and self.info == other.info

    def __hash__(self) -> int:
        return hash((self.protocol, self.cmd, self.info))


# The slot descriptors let the codec fill a Frame without the frozen __setattr__ guard and
# without re-checking ranges that the wire format already guarantees.
_set_protocol = Frame.__dict__["protocol"].__set__
_set_cmd = Frame.__dict__["cmd"].__set__
_set_info = Frame.__dict__["info"].__set__
_new_frame = object.__new__


def _frame(protocol: int, cmd: int, info: bytes) -> Frame:
    """Build a Frame from fields already known to be in range (decoder fast path)."""
    f: Frame = _new_frame(Frame)
    _set_protocol(f, protocol)
    _set_cmd(f, cmd)
    _set_info(f, info)
    return f


# --- FCS --------------------------------------------------------------------------------

_BITREV: Final = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
# _REV16_XOR[c] = bitreverse16(c) ^ 0xFFFF: turns crc_hqx's result into the X.25 FCS.
_REV16_XOR: Final = array.array(
    "H", (((_BITREV[c & 0xFF] << 8) | _BITREV[c >> 8]) ^ 0xFFFF for c in range(0x10000))
)
_crc_hqx = binascii.crc_hqx


def fcs16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25 (PPP FCS-16) of ``data``: reflected 0x1021, init 0xFFFF, xorout 0xFFFF.

    ``fcs16(b"123456789") == 0x906E``.
    """
    return _REV16_XOR[_crc_hqx(bytes(data).translate(_BITREV), 0xFFFF)]


# --- quectel profile --------------------------------------------------------------------


def frame_size(info_len: int) -> int:
    """Size on the wire of a quectel-profile frame with ``info_len`` info bytes."""
    if info_len < 0:
        raise ValueError(f"info length must be >= 0, got {info_len}")
    return MIN_FRAME + info_len


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown frame profile {profile!r}, expected one of {PROFILES}")


def encode(
    frame: Frame,
    profile: str = "quectel",
    accm: int = DEFAULT_ACCM,
    max_info: int = DEFAULT_MAX_INFO,
) -> bytes:
    """Encode ``frame`` for the wire. Raises ``TooLong`` if its info exceeds ``max_info``."""
    info = frame.info
    n = len(info)
    if n > max_info or n + 1 > _MAX_LENGTH_FIELD:
        raise TooLong(f"info is {n} bytes, max is {min(max_info, _MAX_LENGTH_FIELD - 1)}")
    p = frame.protocol
    if profile == "quectel":
        length = n + 1
        head = bytes((ADDRESS, CONTROL, p & 0xFF, p >> 8, length >> 8, length & 0xFF, frame.cmd))
        body = head + info
        fcs = _REV16_XOR[_crc_hqx(body.translate(_BITREV), 0xFFFF)]
        return b"\x7e" + body + bytes((fcs >> 8, fcs & 0xFF, FLAG))
    _check_profile(profile)
    body = bytes((ADDRESS, CONTROL, p >> 8, p & 0xFF, frame.cmd)) + info
    fcs = _REV16_XOR[_crc_hqx(body.translate(_BITREV), 0xFFFF)]
    body += bytes((fcs & 0xFF, fcs >> 8))
    return b"\x7e" + _stuff(body, accm) + b"\x7e"


def decode(
    raw: bytes | bytearray | memoryview,
    profile: str = "quectel",
    max_info: int = DEFAULT_MAX_INFO,
    accm: int = DEFAULT_ACCM,
) -> Frame:
    """Decode exactly one whole frame; raise a ``FrameError`` subclass for anything else."""
    if profile != "quectel":
        _check_profile(profile)
        return _decode_rfc1662(bytes(raw), max_info, accm)
    if type(raw) is not bytes:
        raw = bytes(raw)
    n = len(raw)
    if n < MIN_FRAME:
        raise BadLength(f"frame is {n} bytes, the minimum is {MIN_FRAME}")
    if raw[:3] != _HEADER:
        if raw[0] != FLAG:
            raise MissingFlag(f"no opening flag: first byte is 0x{raw[0]:02X}")
        raise BadHeader(f"bad header {raw[:3].hex(' ')}, want 7e ff 03")
    length = (raw[5] << 8) | raw[6]
    if length - 1 > max_info:
        raise TooLong(f"length field {length} exceeds max info {max_info} + 1")
    if n != length + _OVERHEAD:
        raise BadLength(f"length field {length} implies {length + _OVERHEAD} bytes, got {n}")
    if raw[-1] != FLAG:
        raise MissingFlag(f"no closing flag: last byte is 0x{raw[-1]:02X}")
    got = (raw[-3] << 8) | raw[-2]
    want = _REV16_XOR[_crc_hqx(raw[1:-3].translate(_BITREV), 0xFFFF)]
    if got != want:
        raise BadFCS(f"bad FCS: got 0x{got:04X}, want 0x{want:04X}")
    f: Frame = _new_frame(Frame)
    _set_protocol(f, raw[3] | (raw[4] << 8))
    _set_cmd(f, raw[7])
    _set_info(f, raw[8:-3])
    return f


_TRANSPARENT_LE = bytes((PROTO_TRANSPARENT & 0xFF, PROTO_TRANSPARENT >> 8))


def transparent_infos(
    frames: Sequence[object], max_info: int = DEFAULT_MAX_INFO
) -> list[bytes] | None:
    """The info fields of a batch of ``quectel`` 0x2100 frames, or None.

    For frames the uart's ``Deframer`` has already checked, FCS included: the
    structure is checked again (flags, header, protocol, length) but not the
    FCS, so a batch of meter data costs the resolver a few slices per frame.
    None as soon as one frame is anything else (another protocol, another
    shape, not bytes); the caller then decodes each frame with ``decode``.
    """
    out: list[bytes] = []
    for raw in frames:
        if type(raw) is not bytes or len(raw) < MIN_FRAME:
            return None
        if raw[:3] != _HEADER or raw[3:5] != _TRANSPARENT_LE or raw[-1] != FLAG:
            return None
        length = (raw[5] << 8) | raw[6]
        if length - 1 > max_info or len(raw) != length + _OVERHEAD:
            return None
        out.append(raw[8:-3])
    return out


def wrap_transparent(
    data: bytes,
    max_info: int = DEFAULT_MAX_INFO,
    profile: str = "quectel",
    accm: int = DEFAULT_ACCM,
) -> list[bytes]:
    """Split ``data`` into encoded 0x2100/0xBF frames of at most ``max_info`` info bytes.

    Empty ``data`` gives no frames.
    """
    if max_info < 1:
        raise ValueError(f"max_info must be >= 1, got {max_info}")
    data = bytes(data)
    return [
        encode(
            _frame(PROTO_TRANSPARENT, CMD_SERIAL_NET, data[i : i + max_info]),
            profile,
            accm,
            max_info,
        )
        for i in range(0, len(data), max_info)
    ]


# --- rfc1662 profile --------------------------------------------------------------------


def _escaped_set(accm: int) -> bytes:
    if not 0 <= accm <= 0xFFFFFFFF:
        raise ValueError(f"accm must be a 32-bit unsigned int, got {accm!r}")
    return bytes([ESCAPE, FLAG] + [b for b in range(32) if accm >> b & 1])


_ESCAPED_CACHE: dict[int, bytes] = {}


def _escaped(accm: int) -> bytes:
    s = _ESCAPED_CACHE.get(accm)
    if s is None:
        s = _escaped_set(accm)
        if len(_ESCAPED_CACHE) < 64:
            _ESCAPED_CACHE[accm] = s
    return s


def _stuff(body: bytes, accm: int) -> bytes:
    # ESCAPE comes first in the set so that later replacements' 7D bytes are not re-escaped.
    for b in _escaped(accm):
        if b in body:
            body = body.replace(bytes((b,)), bytes((ESCAPE, b ^ 0x20)))
    return body


def _unstuff(inner: bytes, accm: int) -> bytes:
    """Undo octet stuffing of the bytes between two flags (flags already excluded)."""
    if accm:
        # RFC 1662 4.2: unescaped control bytes flagged in the ACCM were added in transit.
        inner = inner.translate(None, _escaped(accm)[2:])
    if ESCAPE not in inner:
        return inner
    parts = inner.split(b"\x7d")
    out = [parts[0]]
    for part in parts[1:]:
        if not part:
            raise BadEscape("escape 7d at end of frame or followed by another 7d")
        out.append(bytes((part[0] ^ 0x20,)))
        out.append(part[1:])
    return b"".join(out)


def _decode_rfc1662(raw: bytes, max_info: int, accm: int) -> Frame:
    n = len(raw)
    if n < 2 or raw[0] != FLAG or raw[-1] != FLAG:
        raise MissingFlag("rfc1662 frame must start and end with a 7e flag")
    inner = raw[1:-1]
    if FLAG in inner:
        raise BadFlag("7e flag inside an rfc1662 frame")
    body = _unstuff(inner, accm)
    m = len(body)
    if m < 7:
        raise BadLength(f"unstuffed frame is {m} bytes, the minimum is 7")
    if body[0] != ADDRESS or body[1] != CONTROL:
        raise BadHeader(f"bad header {body[:2].hex(' ')}, want ff 03")
    if m - 7 > max_info:
        raise TooLong(f"info is {m - 7} bytes, max is {max_info}")
    got = body[-2] | (body[-1] << 8)
    want = _REV16_XOR[_crc_hqx(body[:-2].translate(_BITREV), 0xFFFF)]
    if got != want:
        raise BadFCS(f"bad FCS: got 0x{got:04X}, want 0x{want:04X}")
    return _frame((body[2] << 8) | body[3], body[4], body[5:-2])


# --- stream deframer --------------------------------------------------------------------


_FF03 = b"\xff\x03"


class Deframer:
    """Cut a serial byte stream into whole valid frames (raw wire bytes, FCS checked).

    ``feed(data)`` returns every frame ``data`` completes, in order. ``flush()`` is called
    when the line has been idle for the configured gap: the partial frame still buffered is
    stale, so its first byte is dropped, what follows is scanned for whole frames and the
    rest is counted as garbage. Neither ever raises on bad input.

    quectel profile: look for ``7E FF 03``, read the length, wait for the whole frame,
    check the closing flag and the FCS. On any failure drop one byte and scan again (the
    real next frame may start inside a false one). A length over ``max_info + 1`` is a bad
    start, not a reason to wait, so the buffer never holds more than one maximal frame
    besides the chunk being fed.

    rfc1662 profile: a frame is the bytes between two flags; empty ones (back-to-back
    flags) are ignored, bad ones counted and dropped up to the next flag.

    Counters (plain int attributes, also ``counters()``): ``frames`` good frames,
    ``garbage_bytes`` bytes dropped, ``bad_fcs``, ``bad_flag`` (quectel: no closing flag
    where the length says), ``oversize`` (length over max), ``bad_length`` (quectel:
    length 0; rfc1662: frame too short), ``bad_header`` and ``bad_escape`` (rfc1662),
    ``truncated`` (partial frames dropped by ``flush``). quectel: every byte fed ends up
    in a returned frame, ``garbage_bytes`` or the buffer (``pending``), in exactly one
    of them but for a flag that closes one returned frame and opens the next, which is
    in both. rfc1662: flags are delimiters and idle fill, never garbage, and a flag shared by two
    frames belongs to both.
    """

    COUNTERS: Final = (
        "frames",
        "garbage_bytes",
        "bad_fcs",
        "bad_flag",
        "oversize",
        "bad_length",
        "bad_header",
        "bad_escape",
        "truncated",
    )

    __slots__ = ("profile", "max_info", "accm", "_buf", "_lead_used", "_max_frame", *COUNTERS)

    def __init__(
        self,
        profile: str = "quectel",
        max_info: int = DEFAULT_MAX_INFO,
        accm: int = DEFAULT_ACCM,
    ) -> None:
        _check_profile(profile)
        if not 0 <= max_info <= _MAX_LENGTH_FIELD - 1:
            raise ValueError(f"max_info must be in 0..{_MAX_LENGTH_FIELD - 1}, got {max_info}")
        _escaped(accm)  # validates accm
        self.profile = profile
        self.max_info = max_info
        self.accm = accm
        self._buf = b""
        # quectel: the buffer starts with the closing flag of a frame already
        # returned, kept because it may also open the next frame (a shared flag).
        self._lead_used = False
        # rfc1662: worst case every body byte escaped, plus both flags.
        self._max_frame = MIN_FRAME + max_info if profile == "quectel" else 2 * (7 + max_info) + 2
        self.frames = 0
        self.garbage_bytes = 0
        self.bad_fcs = 0
        self.bad_flag = 0
        self.oversize = 0
        self.bad_length = 0
        self.bad_header = 0
        self.bad_escape = 0
        self.truncated = 0

    def counters(self) -> dict[str, int]:
        """A snapshot of the counters."""
        return {name: getattr(self, name) for name in self.COUNTERS}

    @property
    def partial(self) -> bytes:
        """The bytes buffered toward the next frame; feeding them to a new
        ``Deframer`` puts it where this one is (the uart journals them, so
        a frame half read when the process dies is finished by the next)."""
        return self._buf

    @property
    def pending(self) -> int:
        """Bytes buffered, waiting for the rest of a frame."""
        return len(self._buf) - self._lead_used

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return the frames they complete, oldest first."""
        # The buffer is immutable bytes: frames are sliced out of it with one copy, and the
        # unfinished tail (at most one frame) is kept by slicing once per feed.
        if self._lead_used and len(self._buf) == 1 and not _FF03.startswith(bytes(data[:2])):
            # Only the last frame's closing flag is buffered and the new data
            # cannot continue it into a header: drop it without a copy.
            self._lead_used = False
            self._buf = b""
        buf = self._buf + data if self._buf else bytes(data)
        if self.profile == "quectel":
            return self._scan(buf, False)
        return self._scan_rfc1662(buf, False)

    def flush(self) -> list[bytes]:
        """The line went idle: resolve the stale partial frame; return frames found in it."""
        if not self._buf:
            return []
        if self.profile == "quectel":
            return self._scan(self._buf, True)
        return self._scan_rfc1662(self._buf, True)

    def _scan(self, buf: bytes, final: bool) -> list[bytes]:
        size = len(buf)
        find = buf.find
        max_len = self.max_info + 1
        out: list[bytes] = []
        pos = 0
        garbage = 0
        # A frame's closing flag may also open the next frame, as in HDLC: after
        # a frame the scan resumes on its closing flag, which is then not garbage
        # if dropped. Without this, a frame cut short before its closing flag
        # would take the next frame's opening flag and hide that frame.
        used = 0 if self._lead_used else -1
        while True:
            i = find(_HEADER, pos)
            if i < 0:
                # Keep a tail that may be the start of a header ("7E" or "7E FF").
                keep = 0
                if not final:
                    if buf.endswith(b"\x7e\xff"):
                        keep = 2
                    elif buf.endswith(b"\x7e"):
                        keep = 1
                    keep = min(keep, size - pos)
                garbage += size - keep - pos - (pos <= used < size - keep)
                pos = size - keep
                break
            garbage += i - pos - (pos <= used < i)
            pos = i
            if size - i < 7:
                if final:
                    self.truncated += 1
                    garbage += used != i
                    pos = i + 1
                    continue
                break
            length = (buf[i + 5] << 8) | buf[i + 6]
            if length > max_len or length == 0:
                if length:
                    self.oversize += 1
                else:
                    self.bad_length += 1
                garbage += used != i
                pos = i + 1
                continue
            end = i + _OVERHEAD + length
            if end > size:
                if final:
                    self.truncated += 1
                    garbage += used != i
                    pos = i + 1
                    continue
                break
            if buf[end - 1] != FLAG:
                self.bad_flag += 1
                garbage += used != i
                pos = i + 1
                continue
            if (
                _REV16_XOR[_crc_hqx(buf[i + 1 : end - 3].translate(_BITREV), 0xFFFF)]
                != (buf[end - 3] << 8) | buf[end - 2]
            ):
                self.bad_fcs += 1
                garbage += used != i
                pos = i + 1
                continue
            out.append(buf[i:end])
            pos = used = end - 1
        self._lead_used = used == pos < size
        if self._lead_used and pos == size - 1 and not final:
            self._buf = b"\x7e"  # shared constant: no slice of a large buffer
        else:
            self._buf = buf[pos:] if pos else buf
        self.garbage_bytes += garbage
        self.frames += len(out)
        return out

    def _scan_rfc1662(self, buf: bytes, final: bool) -> list[bytes]:
        # Flags are delimiters and idle fill, never garbage: a frame's closing flag stays
        # buffered because it may also open the next frame.
        size = len(buf)
        find = buf.find
        out: list[bytes] = []
        pos = 0
        garbage = 0
        while True:
            s = find(b"\x7e", pos)
            if s < 0:
                garbage += size - pos
                pos = size
                break
            garbage += s - pos
            pos = s
            e = find(b"\x7e", s + 1)
            if e < 0:
                if final:
                    if size - s > 1:
                        self.truncated += 1
                    garbage += size - s - 1
                    pos = size
                elif size - s > self._max_frame:
                    # No closing flag within the longest possible frame: drop it; the
                    # next flag seen opens a new frame.
                    self.oversize += 1
                    garbage += size - s - 1
                    pos = size
                break
            if e > s + 1:
                raw = buf[s : e + 1]
                try:
                    _decode_rfc1662(raw, self.max_info, self.accm)
                except FrameError as exc:
                    self._count_rfc1662(exc)
                    garbage += e - s - 1
                else:
                    out.append(raw)
            pos = e
        self._buf = buf[pos:] if pos else buf
        self.garbage_bytes += garbage
        self.frames += len(out)
        return out

    def _count_rfc1662(self, exc: FrameError) -> None:
        if isinstance(exc, BadFCS):
            self.bad_fcs += 1
        elif isinstance(exc, TooLong):
            self.oversize += 1
        elif isinstance(exc, BadLength):
            self.bad_length += 1
        elif isinstance(exc, BadHeader):
            self.bad_header += 1
        elif isinstance(exc, BadEscape):
            self.bad_escape += 1
        else:
            self.bad_flag += 1
