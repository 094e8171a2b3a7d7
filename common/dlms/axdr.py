"""A-XDR encoding of the DLMS/COSEM ``Data`` CHOICE: pure functions over bytes, no I/O.

Theory of operation (Green Book, "Data" and A-XDR rules):

* Every element is ``tag | content``. Fixed-size types (integers, floats, enum, bcd,
  boolean, date-time 12, date 5, time 4 octets) have no length. octet-string,
  visible-string and utf8-string carry a length; bit-string a length in *bits*; array
  and structure an element count. Lengths and counts use the A-XDR/BER length form: one
  octet below 0x80, else ``0x80 | n`` followed by ``n`` big-endian octets.
* compact-array is a type description (array: ``01 count16 desc``; structure:
  ``02 count desc...``; simple types: their tag) followed by a length-prefixed octet
  string of tag-less values, repeated until the octets are used up.

Decoding is byte-exact: whatever the value alone would not reproduce is kept beside it.
``Data.lw`` is the width of a long-form length when the sender did not use the shortest
form; ``Data.raw`` holds the content octets of a boolean that is neither 00 nor 01 or of a
float that does not survive a Python round trip (NaN payloads). So
``encode_data(decode_data(b)) == b`` for every ``b`` that decodes.

Python values: null-data and dont-care ``None``; array/structure a tuple of ``Data``;
boolean ``bool``; bit-string ``BitString``; all integer types, enum and bcd ``int``;
float32/float64 ``float``; octet-string, date-time, date, time ``bytes``;
visible-string ``str`` (latin-1, so any octet survives); utf8-string ``str``;
compact-array ``CompactArray``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

from common.dlms.errors import (
    BadLength,
    BadTag,
    BadValue,
    EncodeError,
    TooDeep,
    TrailingBytes,
    Truncated,
)

__all__ = [
    "MAX_DEPTH",
    "TYPE_NAMES",
    "TYPE_TAGS",
    "BitString",
    "CompactArray",
    "Data",
    "TypeDesc",
    "Value",
    "decode_data",
    "encode_data",
    "format_datetime",
    "read_length",
    "summary",
    "write_length",
]

#: Deepest nesting of arrays/structures (and compact-array descriptions) accepted.
MAX_DEPTH: Final = 32

TYPE_NAMES: Final[dict[int, str]] = {
    0: "null-data",
    1: "array",
    2: "structure",
    3: "boolean",
    4: "bit-string",
    5: "double-long",
    6: "double-long-unsigned",
    9: "octet-string",
    10: "visible-string",
    12: "utf8-string",
    13: "bcd",
    15: "integer",
    16: "long",
    17: "unsigned",
    18: "long-unsigned",
    19: "compact-array",
    20: "long64",
    21: "long64-unsigned",
    22: "enum",
    23: "float32",
    24: "float64",
    25: "date-time",
    26: "date",
    27: "time",
    255: "dont-care",
}
TYPE_TAGS: Final[dict[str, int]] = {name: tag for tag, name in TYPE_NAMES.items()}

# tag -> (size, signed)
_INTS: Final[dict[int, tuple[int, bool]]] = {
    5: (4, True),
    6: (4, False),
    13: (1, False),
    15: (1, True),
    16: (2, True),
    17: (1, False),
    18: (2, False),
    20: (8, True),
    21: (8, False),
    22: (1, False),
}
_FLOATS: Final[dict[int, str]] = {23: ">f", 24: ">d"}
_FIXED_OCTETS: Final[dict[int, int]] = {25: 12, 26: 5, 27: 4}


@dataclass(frozen=True, slots=True)
class BitString:
    """``nbits`` bits stored MSB first in ``data`` (padding bits kept as sent)."""

    nbits: int
    data: bytes

    def __post_init__(self) -> None:
        if self.nbits < 0 or len(self.data) != (self.nbits + 7) // 8:
            want = (self.nbits + 7) // 8
            raise ValueError(f"bit-string of {self.nbits} bits needs {want} octets")

    def __str__(self) -> str:
        return "".join(f"{b:08b}" for b in self.data)[: self.nbits]


@dataclass(frozen=True, slots=True)
class TypeDesc:
    """compact-array type description: a simple type, or array/structure of descriptions.

    ``count`` is the array's element count or the structure's item count; ``lw`` the
    long-form width of a structure's count when it was not minimal.
    """

    type: str
    count: int = 0
    items: tuple[TypeDesc, ...] = ()
    lw: int = 0


@dataclass(frozen=True, slots=True)
class CompactArray:
    """compact-array value: its description and its elements (tag-less on the wire)."""

    desc: TypeDesc
    elements: tuple[Data, ...]


Value: TypeAlias = (
    "None | bool | int | float | bytes | str | BitString | CompactArray | tuple[Data, ...]"
)


@dataclass(frozen=True, slots=True)
class Data:
    """One A-XDR data element: Green Book type name (e.g. ``"long-unsigned"``) and value.

    ``lw`` and ``raw`` only serve byte-exact round trips (see the module docstring);
    leave them at their defaults when building a value.
    """

    type: str
    value: Value = None
    lw: int = 0
    raw: bytes = b""

    def __post_init__(self) -> None:
        if self.type not in TYPE_TAGS:
            raise ValueError(f"unknown DLMS data type {self.type!r}")
        if not 0 <= self.lw <= 4:
            raise ValueError(f"length width must be 0..4, got {self.lw}")

    def __str__(self) -> str:
        return summary(self)


_new = object.__new__
_set_type = Data.__dict__["type"].__set__
_set_value = Data.__dict__["value"].__set__
_set_lw = Data.__dict__["lw"].__set__
_set_raw = Data.__dict__["raw"].__set__


def _mk(type_: str, value: Value, lw: int = 0, raw: bytes = b"") -> Data:
    """Build a Data whose fields the decoder already knows to be valid (fast path)."""
    d: Data = _new(Data)
    _set_type(d, type_)
    _set_value(d, value)
    _set_lw(d, lw)
    _set_raw(d, raw)
    return d


# --- lengths ----------------------------------------------------------------------------


def read_length(buf: bytes, pos: int) -> tuple[int, int, int]:
    """Read an A-XDR/BER definite length at ``pos``: ``(value, next_pos, lw)``.

    ``lw`` is 0 when the shortest form was used, else the long form's octet count.
    """
    if pos >= len(buf):
        raise Truncated("length expected, bytes ended")
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1, 0
    n = b & 0x7F
    if n == 0 or n > 4:
        raise BadLength(f"length octet 0x{b:02X} is not a definite length of 1..4 octets")
    end = pos + 1 + n
    if end > len(buf):
        raise Truncated("long-form length cut short")
    v = int.from_bytes(buf[pos + 1 : end], "big")
    minimal = 0 if v < 0x80 else (v.bit_length() + 7) // 8
    return v, end, 0 if n == minimal else n


def write_length(v: int, lw: int = 0) -> bytes:
    """Encode length ``v``: shortest form, or the long form with ``lw`` octets."""
    if v < 0:
        raise EncodeError(f"negative length {v}")
    if lw == 0:
        if v < 0x80:
            return bytes((v,))
        n = (v.bit_length() + 7) // 8
    else:
        n = lw
    if n > 4 or v >= 1 << (8 * n):
        raise EncodeError(f"length {v} does not fit in {n} octets")
    return bytes((0x80 | n,)) + v.to_bytes(n, "big")


# --- decoding ---------------------------------------------------------------------------


def decode_data(buf: bytes, pos: int = 0) -> tuple[Data, int]:
    """Decode one element at ``pos``; return it and the position after it."""
    try:
        return _dec(buf, pos, 0)
    except IndexError as exc:  # a fixed-size field ran past the end
        raise Truncated("data element cut short") from exc


def decode_all(buf: bytes) -> Data:
    """Decode exactly one element filling ``buf``."""
    d, pos = decode_data(buf, 0)
    if pos != len(buf):
        raise TrailingBytes(f"{len(buf) - pos} bytes after the data element")
    return d


def _take(buf: bytes, pos: int, n: int) -> bytes:
    end = pos + n
    if end > len(buf):
        raise Truncated(f"{n} octets expected, {len(buf) - pos} left")
    return buf[pos:end]


def _dec(buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
    if pos >= len(buf):
        raise Truncated("data tag expected, bytes ended")
    return _dec_value(buf[pos], buf, pos + 1, depth)


def _dec_value(tag: int, buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
    """Decode the content of a ``tag`` element starting at ``pos``."""
    spec = _INTS.get(tag)
    if spec is not None:
        size, signed = spec
        end = pos + size
        if end > len(buf):
            raise Truncated(f"{TYPE_NAMES[tag]} needs {size} octets")
        return _mk(TYPE_NAMES[tag], int.from_bytes(buf[pos:end], "big", signed=signed)), end
    if tag == 9:
        n, pos, lw = read_length(buf, pos)
        return _mk("octet-string", _take(buf, pos, n), lw), pos + n
    if tag == 1 or tag == 2:
        if depth >= MAX_DEPTH:
            raise TooDeep(f"data nested deeper than {MAX_DEPTH}")
        n, pos, lw = read_length(buf, pos)
        if n > len(buf) - pos:
            raise Truncated(f"{n} elements announced, {len(buf) - pos} octets left")
        items = []
        for _ in range(n):
            d, pos = _dec(buf, pos, depth + 1)
            items.append(d)
        return _mk(TYPE_NAMES[tag], tuple(items), lw), pos
    if tag == 0 or tag == 255:
        return _mk(TYPE_NAMES[tag], None), pos
    if tag == 3:
        b = _take(buf, pos, 1)
        return _mk("boolean", b[0] != 0, 0, b if b[0] > 1 else b""), pos + 1
    fixed = _FIXED_OCTETS.get(tag)
    if fixed is not None:
        return _mk(TYPE_NAMES[tag], _take(buf, pos, fixed)), pos + fixed
    if tag == 10:
        n, pos, lw = read_length(buf, pos)
        return _mk("visible-string", _take(buf, pos, n).decode("latin-1"), lw), pos + n
    if tag == 12:
        n, pos, lw = read_length(buf, pos)
        try:
            text = _take(buf, pos, n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadValue(f"utf8-string is not valid UTF-8: {exc.reason}") from None
        return _mk("utf8-string", text, lw), pos + n
    fmt = _FLOATS.get(tag)
    if fmt is not None:
        width = 4 if tag == 23 else 8
        b = _take(buf, pos, width)
        (v,) = struct.unpack(fmt, b)
        return _mk(TYPE_NAMES[tag], v, 0, b"" if struct.pack(fmt, v) == b else b), pos + width
    if tag == 4:
        nbits, pos, lw = read_length(buf, pos)
        nbytes = (nbits + 7) // 8
        return _mk("bit-string", BitString(nbits, _take(buf, pos, nbytes)), lw), pos + nbytes
    if tag == 19:
        if depth >= MAX_DEPTH:
            raise TooDeep(f"data nested deeper than {MAX_DEPTH}")
        desc, pos = _dec_desc(buf, pos, depth + 1)
        n, pos, lw = read_length(buf, pos)
        contents = _take(buf, pos, n)
        elements = []
        p = 0
        while p < n:
            el, q = _dec_typed(desc, contents, p, depth + 1)
            if q == p:
                raise BadValue("compact-array element type has no octets")
            elements.append(el)
            p = q
        return _mk("compact-array", CompactArray(desc, tuple(elements)), lw), pos + n
    raise BadTag(f"unknown data type tag 0x{tag:02X}")


def _dec_desc(buf: bytes, pos: int, depth: int) -> tuple[TypeDesc, int]:
    if depth >= MAX_DEPTH:
        raise TooDeep(f"type description nested deeper than {MAX_DEPTH}")
    if pos >= len(buf):
        raise Truncated("type description expected, bytes ended")
    tag = buf[pos]
    pos += 1
    if tag == 1:
        b = _take(buf, pos, 2)
        item, pos = _dec_desc(buf, pos + 2, depth + 1)
        return TypeDesc("array", int.from_bytes(b, "big"), (item,)), pos
    if tag == 2:
        n, pos, lw = read_length(buf, pos)
        if n > len(buf) - pos:
            raise Truncated(f"{n} structure items announced, {len(buf) - pos} octets left")
        items = []
        for _ in range(n):
            item, pos = _dec_desc(buf, pos, depth + 1)
            items.append(item)
        return TypeDesc("structure", n, tuple(items), lw), pos
    if tag == 19 or tag not in TYPE_NAMES:
        raise BadTag(f"type 0x{tag:02X} not allowed in a compact-array description")
    return TypeDesc(TYPE_NAMES[tag]), pos


def _dec_typed(desc: TypeDesc, buf: bytes, pos: int, depth: int) -> tuple[Data, int]:
    """Decode one tag-less value of type ``desc`` (compact-array contents)."""
    if desc.type == "array" or desc.type == "structure":
        if depth >= MAX_DEPTH:
            raise TooDeep(f"data nested deeper than {MAX_DEPTH}")
        items = []
        if desc.type == "array":
            for _ in range(desc.count):
                d, pos = _dec_typed(desc.items[0], buf, pos, depth + 1)
                items.append(d)
        else:
            for item in desc.items:
                d, pos = _dec_typed(item, buf, pos, depth + 1)
                items.append(d)
        return _mk(desc.type, tuple(items)), pos
    return _dec_value(TYPE_TAGS[desc.type], buf, pos, depth)


# --- encoding ---------------------------------------------------------------------------


def encode_data(d: Data) -> bytes:
    """Encode one element. Raises ``EncodeError`` for a value its type cannot hold."""
    out: list[bytes] = []
    try:
        _enc(d, out, 0)
    except EncodeError:
        raise
    except (OverflowError, struct.error, TypeError, ValueError, AttributeError) as exc:
        raise EncodeError(f"cannot encode {d.type}: {exc}") from None
    return b"".join(out)


def _enc(d: Data, out: list[bytes], depth: int) -> None:
    tag = TYPE_TAGS[d.type]
    out.append(bytes((tag,)))
    _enc_value(tag, d, out, depth)


def _enc_value(tag: int, d: Data, out: list[bytes], depth: int) -> None:
    v = d.value
    if depth > MAX_DEPTH:
        raise EncodeError(f"data nested deeper than {MAX_DEPTH}")
    spec = _INTS.get(tag)
    if spec is not None:
        if type(v) is not int:
            raise EncodeError(f"{d.type} value must be an int, got {type(v).__name__}")
        out.append(v.to_bytes(spec[0], "big", signed=spec[1]))
    elif tag == 1 or tag == 2:
        if not isinstance(v, tuple):
            raise EncodeError(f"{d.type} value must be a tuple of Data")
        out.append(write_length(len(v), d.lw))
        for item in v:
            _enc(item, out, depth + 1)
    elif tag == 0 or tag == 255:
        if v is not None:
            raise EncodeError(f"{d.type} has no value")
    elif tag == 3:
        if d.raw:
            if len(d.raw) != 1 or d.raw[0] == 0 or not v:
                raise EncodeError("boolean raw octet must be one non-zero octet for True")
            out.append(d.raw)
        else:
            if not isinstance(v, bool):
                raise EncodeError("boolean value must be a bool")
            out.append(b"\x01" if v else b"\x00")
    elif tag in (9, 25, 26, 27):
        if not isinstance(v, bytes):
            raise EncodeError(f"{d.type} value must be bytes")
        fixed = _FIXED_OCTETS.get(tag)
        if fixed is None:
            out.append(write_length(len(v), d.lw))
        elif len(v) != fixed:
            raise EncodeError(f"{d.type} must be {fixed} octets, got {len(v)}")
        out.append(v)
    elif tag == 10 or tag == 12:
        if not isinstance(v, str):
            raise EncodeError(f"{d.type} value must be a str")
        b = v.encode("latin-1" if tag == 10 else "utf-8")
        out.append(write_length(len(b), d.lw))
        out.append(b)
    elif tag == 23 or tag == 24:
        if d.raw:
            out.append(d.raw)
        else:
            if not isinstance(v, float):
                raise EncodeError(f"{d.type} value must be a float")
            out.append(struct.pack(_FLOATS[tag], v))
    elif tag == 4:
        if not isinstance(v, BitString):
            raise EncodeError("bit-string value must be a BitString")
        out.append(write_length(v.nbits, d.lw))
        out.append(v.data)
    elif tag == 19:
        if not isinstance(v, CompactArray):
            raise EncodeError("compact-array value must be a CompactArray")
        _enc_desc(v.desc, out, depth + 1)
        body: list[bytes] = []
        for el in v.elements:
            _enc_typed(v.desc, el, body, depth + 1)
        contents = b"".join(body)
        out.append(write_length(len(contents), d.lw))
        out.append(contents)
    else:  # pragma: no cover - TYPE_TAGS and the branches above cover every tag
        raise EncodeError(f"unknown type {d.type}")


def _enc_desc(desc: TypeDesc, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodeError(f"type description nested deeper than {MAX_DEPTH}")
    if desc.type == "array":
        if len(desc.items) != 1:
            raise EncodeError("array description needs exactly one item type")
        out.append(b"\x01" + desc.count.to_bytes(2, "big"))
        _enc_desc(desc.items[0], out, depth + 1)
    elif desc.type == "structure":
        out.append(b"\x02" + write_length(len(desc.items), desc.lw))
        for item in desc.items:
            _enc_desc(item, out, depth + 1)
    else:
        tag = TYPE_TAGS.get(desc.type)
        if tag is None or tag == 19:
            raise EncodeError(f"type {desc.type!r} not allowed in a compact-array description")
        out.append(bytes((tag,)))


def _enc_typed(desc: TypeDesc, d: Data, out: list[bytes], depth: int) -> None:
    if d.type != desc.type:
        raise EncodeError(f"compact-array element is {d.type}, description says {desc.type}")
    if desc.type == "array" or desc.type == "structure":
        v = d.value
        if not isinstance(v, tuple):
            raise EncodeError(f"{d.type} value must be a tuple of Data")
        descs = desc.items * desc.count if desc.type == "array" else desc.items
        if len(v) != len(descs):
            raise EncodeError(f"{d.type} has {len(v)} items, description says {len(descs)}")
        for sub, item in zip(descs, v, strict=True):
            _enc_typed(sub, item, out, depth + 1)
    else:
        _enc_value(TYPE_TAGS[desc.type], d, out, depth)


# --- display ----------------------------------------------------------------------------

_WILD: Final = (0xFF,)


def format_datetime(b: bytes) -> str | None:
    """A 12-octet COSEM date-time as ``YYYY-MM-DD HH:MM:SS[.hh][ dev=N]``, or None.

    None when a field is out of range (so an octet-string that merely has 12 octets is
    shown as hex). Not-specified and special values (FFFF year, FD/FE/FF others) print
    as ``*``.
    """
    if len(b) != 12:
        return None
    year = (b[0] << 8) | b[1]
    month, day, dow, hour, minute, second, hund = b[2:9]
    dev = int.from_bytes(b[9:11], "big", signed=True)
    if not (1 <= month <= 12 or month in (0xFD, 0xFE, 0xFF)):
        return None
    if not (1 <= day <= 31 or day in (0xFD, 0xFE, 0xFF)):
        return None
    if not (1 <= dow <= 7 or dow == 0xFF):
        return None
    if not (hour <= 23 or hour == 0xFF) or not (minute <= 59 or minute == 0xFF):
        return None
    if not (second <= 59 or second == 0xFF) or not (hund <= 99 or hund == 0xFF):
        return None
    if not (-840 <= dev <= 840 or dev == -0x8000):
        return None

    def f(v: int, width: int, wild: int = 0xFF) -> str:
        return "*" if v >= wild else f"{v:0{width}d}"

    text = (
        f"{'*' if year == 0xFFFF else f'{year:04d}'}-{f(month, 2, 0xFD)}-{f(day, 2, 0xFD)}"
        f" {f(hour, 2)}:{f(minute, 2)}:{f(second, 2)}"
    )
    if hund != 0xFF and hund:
        text += f".{hund:02d}"
    if dev != -0x8000:
        text += f" dev={dev}"
    return text


def summary(d: Data, limit: int = 80) -> str:
    """A short one-line rendering: ``type value`` (compound types show their size)."""
    v = d.value
    t = d.type
    if t in ("array", "structure") and isinstance(v, tuple):
        inner = " ".join(summary(x, limit) for x in v[:4])
        more = " ..." if len(v) > 4 else ""
        text = f"{t}({len(v)}) [{inner}{more}]"
    elif t == "compact-array" and isinstance(v, CompactArray):
        text = f"compact-array({len(v.elements)})"
    elif isinstance(v, bytes):
        shown = format_datetime(v) if len(v) == 12 and t in ("octet-string", "date-time") else None
        text = f"{t} {shown}" if shown else f"{t} {v.hex()}"
    elif isinstance(v, str):
        text = f"{t} {v!r}"
    elif v is None:
        text = t
    else:
        text = f"{t} {v}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
