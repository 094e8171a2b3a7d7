"""Minimal BER (X.690) TLV codec for the ACSE APDUs (AARQ, AARE, RLRQ, RLRE).

Only what DLMS/COSEM uses: one-octet tags (class and constructed bit included in the
octet), definite lengths of up to 4 octets. A constructed element (bit 0x20) is decoded
into its children, a primitive one keeps its content octets. ``Tlv.lw`` keeps a long-form
length width the sender used where a shorter form existed, so re-encoding is byte-exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from common.dlms.axdr import read_length, write_length
from common.dlms.errors import BadTag, BadValue, EncodeError, TooDeep, Truncated

__all__ = ["MAX_BER_DEPTH", "Tlv", "decode_tlv", "encode_tlv", "oid_str"]

MAX_BER_DEPTH: Final = 8


@dataclass(frozen=True, slots=True)
class Tlv:
    """One BER element: ``tag`` octet, and ``value`` (primitive) or ``children``."""

    tag: int
    value: bytes = b""
    children: tuple[Tlv, ...] = ()
    lw: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 0xFF or self.tag & 0x1F == 0x1F:
            raise ValueError(f"BER tag must be one octet below tag number 31, got {self.tag}")
        if self.value and self.constructed:
            raise ValueError("a constructed element has children, not a value")
        if self.children and not self.constructed:
            raise ValueError("a primitive element has a value, not children")

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def child(self, tag: int) -> Tlv | None:
        """The first child with ``tag``, or None."""
        for c in self.children:
            if c.tag == tag:
                return c
        return None


def decode_tlv(buf: bytes, pos: int = 0, depth: int = 0) -> tuple[Tlv, int]:
    """Decode one element at ``pos``; return it and the position after it."""
    if depth > MAX_BER_DEPTH:
        raise TooDeep(f"BER nested deeper than {MAX_BER_DEPTH}")
    if pos >= len(buf):
        raise Truncated("BER tag expected, bytes ended")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise BadTag(f"multi-octet BER tag 0x{tag:02X} not supported")
    n, pos, lw = read_length(buf, pos + 1)
    end = pos + n
    if end > len(buf):
        raise Truncated(f"BER element 0x{tag:02X} announces {n} octets, {len(buf) - pos} left")
    if not tag & 0x20:
        return Tlv(tag, buf[pos:end], (), lw), end
    children = []
    while pos < end:
        c, pos = decode_tlv(buf[:end], pos, depth + 1)
        children.append(c)
    return Tlv(tag, b"", tuple(children), lw), end


def encode_tlv(t: Tlv) -> bytes:
    """Encode ``t`` and its children."""
    if t.constructed:
        body = b"".join(encode_tlv(c) for c in t.children)
    else:
        body = t.value
    if not isinstance(body, bytes):
        raise EncodeError("BER value must be bytes")
    return bytes((t.tag,)) + write_length(len(body), t.lw) + body


def oid_str(b: bytes) -> str:
    """Dotted form of a BER OBJECT IDENTIFIER's content octets."""
    if not b or b[-1] & 0x80:
        raise BadValue(f"bad object identifier {b.hex()}")
    arcs: list[int] = []
    v = 0
    for octet in b:
        v = (v << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(v)
            v = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])
