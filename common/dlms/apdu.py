"""xDLMS and ACSE APDUs: ``decode``, ``encode`` and ``describe``, pure functions, no I/O.

Theory of operation (Green Book, "COSEM APDU" abstract syntax):

* The first octet is the APDU tag. ACSE APDUs (AARQ 60, AARE 61, RLRQ 62, RLRE 63) are
  BER: they are kept as a ``Tlv`` tree (``common.dlms.ber``) so that any field order and
  length form re-encodes exactly; accessors read the fields a meter engineer needs and the
  user-information's xDLMS APDU (initiate-request/-response, or its glo-/ded- ciphered
  form, or confirmed-service-error) is decoded as an ``Apdu`` too.
* Every other APDU is A-XDR. Get/set/action requests and responses start with a CHOICE
  octet (the variant: normal, next, with-list, ...), then the invoke-id-and-priority
  octet. Each (tag, variant) has a layout in ``LAYOUTS``: a list of ``(name, kind)``
  fields decoded in order; ``Apdu.values`` holds one Python value per field, so encoding
  is the same walk backwards. The layout tables are the wire format documentation.
* Ciphered APDUs (glo-*, ded-*, general-glo/ded-ciphering, general-ciphering) are named
  and their security header parsed (security control octet, invocation counter, system
  title); the ciphertext stays opaque.

Field kinds: ``u8``/``u16``/``u32`` big-endian integers; ``desc`` a cosem attribute or
method descriptor (``Descriptor``); ``sel`` OPTIONAL selective access (``Selection`` or
None); ``data`` A-XDR ``Data``; ``optdata`` OPTIONAL Data; ``result`` Get-Data-Result
(``Data``, or an ``int`` data-access-result); ``optresult`` OPTIONAL result;
``rawresult`` raw-data ``Blob`` or an ``int`` data-access-result; ``octets`` a
length-prefixed OCTET STRING (``Blob``); ``optoctets`` and ``optu8`` OPTIONAL ones;
``conf`` the conformance block (BER ``5F 1F 04 00`` + 24 bits, an ``int``); ``list``
a SEQUENCE OF the sub-layout (``Seq``); ``exc`` the exception service-error (``(code,
invocation counter or None)``); ``keyinfo`` general-ciphering key-info (None or a tuple).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from common.dlms.axdr import (
    Data,
    decode_data,
    encode_data,
    format_datetime,
    read_length,
    write_length,
)
from common.dlms.axdr import summary as data_summary
from common.dlms.ber import Tlv, decode_tlv, encode_tlv, oid_str
from common.dlms.count import CIPHERED
from common.dlms.errors import (
    BadTag,
    BadValue,
    DlmsError,
    EncodeError,
    TrailingBytes,
    Truncated,
)

__all__ = [
    "ACSE_TAGS",
    "LAYOUTS",
    "Apdu",
    "Blob",
    "Descriptor",
    "Selection",
    "Seq",
    "decode",
    "decode_first",
    "describe",
    "encode",
]


# --- field values -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Blob:
    """An A-XDR OCTET STRING field; ``lw`` keeps a non-minimal long-form length width."""

    data: bytes
    lw: int = 0


@dataclass(frozen=True, slots=True)
class Seq:
    """A SEQUENCE OF: one tuple of values per item; ``lw`` as in ``Blob``."""

    items: tuple[tuple[Any, ...], ...]
    lw: int = 0


@dataclass(frozen=True, slots=True)
class Descriptor:
    """cosem-attribute-descriptor / cosem-method-descriptor: class, instance, index."""

    class_id: int
    instance: bytes
    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.class_id <= 0xFFFF or not 0 <= self.index <= 0xFF:
            raise ValueError(f"descriptor out of range: {self.class_id}, {self.index}")
        if len(self.instance) != 6:
            raise ValueError(f"instance id (OBIS) must be 6 octets, got {len(self.instance)}")

    @property
    def obis(self) -> str:
        return ".".join(str(b) for b in self.instance)


@dataclass(frozen=True, slots=True)
class Selection:
    """Selective access: ``selector`` and its ``parameters``."""

    selector: int
    parameters: Data


# --- layouts ----------------------------------------------------------------------------

Layout = tuple[tuple[str, str, Any], ...]

_IIP = ("invoke-id-and-priority", "u8", None)
_BLOCK = ("block-number", "u32", None)
_DBSA = (("last-block", "u8", None), _BLOCK, ("raw-data", "octets", None))
_ATTR = ("attribute", "desc", None)
_SEL = ("access-selection", "sel", None)
_METHOD = ("method", "desc", None)
_ATTR_LIST = ("attributes", "list", (_ATTR, _SEL))
_RESULT_U8 = ("result", "u8", None)

#: (tag, variant) -> layout for the APDUs with a CHOICE octet after the tag.
_CHOICE_LAYOUTS: Final[dict[int, tuple[str, dict[int, tuple[str, Layout]]]]] = {
    0xC0: (
        "get-request",
        {
            1: ("normal", (_IIP, _ATTR, _SEL)),
            2: ("next", (_IIP, _BLOCK)),
            3: ("with-list", (_IIP, _ATTR_LIST)),
        },
    ),
    0xC4: (
        "get-response",
        {
            1: ("normal", (_IIP, ("result", "result", None))),
            2: (
                "with-datablock",
                (_IIP, ("last-block", "u8", None), _BLOCK, ("raw-data", "rawresult", None)),
            ),
            3: ("with-list", (_IIP, ("results", "list", (("result", "result", None),)))),
        },
    ),
    0xC1: (
        "set-request",
        {
            1: ("normal", (_IIP, _ATTR, _SEL, ("value", "data", None))),
            2: ("with-first-datablock", (_IIP, _ATTR, _SEL, *_DBSA)),
            3: ("with-datablock", (_IIP, *_DBSA)),
            4: (
                "with-list",
                (_IIP, _ATTR_LIST, ("values", "list", (("value", "data", None),))),
            ),
            5: ("with-list-and-first-datablock", (_IIP, _ATTR_LIST, *_DBSA)),
        },
    ),
    0xC5: (
        "set-response",
        {
            1: ("normal", (_IIP, _RESULT_U8)),
            2: ("datablock", (_IIP, _BLOCK)),
            3: ("last-datablock", (_IIP, _RESULT_U8, _BLOCK)),
            4: ("last-datablock-with-list", (_IIP, ("results", "list", (_RESULT_U8,)), _BLOCK)),
            5: ("with-list", (_IIP, ("results", "list", (_RESULT_U8,)))),
        },
    ),
    0xC3: (
        "action-request",
        {
            1: ("normal", (_IIP, _METHOD, ("parameters", "optdata", None))),
            2: ("next-pblock", (_IIP, _BLOCK)),
            3: (
                "with-list",
                (
                    _IIP,
                    ("methods", "list", (_METHOD,)),
                    ("parameters", "list", (("value", "data", None),)),
                ),
            ),
            4: ("with-first-pblock", (_IIP, _METHOD, *_DBSA)),
            5: ("with-list-and-first-pblock", (_IIP, ("methods", "list", (_METHOD,)), *_DBSA)),
            6: ("with-pblock", (_IIP, *_DBSA)),
        },
    ),
    0xC7: (
        "action-response",
        {
            1: ("normal", (_IIP, _RESULT_U8, ("return", "optresult", None))),
            2: ("with-pblock", (_IIP, *_DBSA)),
            3: (
                "with-list",
                (_IIP, ("results", "list", (_RESULT_U8, ("return", "optresult", None)))),
            ),
            4: ("next-pblock", (_IIP, _BLOCK)),
        },
    ),
}

_CIPHERED: Final = (("ciphered-content", "octets", None),)
_TITLES: Final = (
    ("transaction-id", "octets", None),
    ("originator-system-title", "octets", None),
    ("recipient-system-title", "octets", None),
    ("date-time", "octets", None),
    ("other-information", "octets", None),
)

#: tag -> (name, layout) for the APDUs without a CHOICE octet.
_PLAIN_LAYOUTS: Final[dict[int, tuple[str, Layout]]] = {
    0x01: (
        "initiate-request",
        (
            ("dedicated-key", "optoctets", None),
            ("response-allowed", "optu8", None),
            ("quality-of-service", "optu8", None),
            ("dlms-version", "u8", None),
            ("conformance", "conf", None),
            ("max-pdu-size", "u16", None),
        ),
    ),
    0x08: (
        "initiate-response",
        (
            ("quality-of-service", "optu8", None),
            ("dlms-version", "u8", None),
            ("conformance", "conf", None),
            ("max-pdu-size", "u16", None),
            ("vaa-name", "u16", None),
        ),
    ),
    0x0E: (
        "confirmed-service-error",
        (("service", "u8", None), ("error-type", "u8", None), ("error", "u8", None)),
    ),
    0x0F: (
        "data-notification",
        (
            ("long-invoke-id-and-priority", "u32", None),
            ("date-time", "octets", None),
            ("body", "data", None),
        ),
    ),
    0xC2: (
        "event-notification-request",
        (("time", "optoctets", None), _ATTR, ("value", "data", None)),
    ),
    0xD8: ("exception-response", (("state-error", "u8", None), ("service-error", "exc", None))),
    0xDB: ("general-glo-ciphering", (("system-title", "octets", None), *_CIPHERED)),
    0xDC: ("general-ded-ciphering", (("system-title", "octets", None), *_CIPHERED)),
    0xDD: ("general-ciphering", (*_TITLES, ("key-info", "keyinfo", None), *_CIPHERED)),
    0xDF: (
        "general-signing",
        (*_TITLES, ("content", "octets", None), ("signature", "octets", None)),
    ),
    0xE0: (
        "general-block-transfer",
        (
            ("block-control", "u8", None),
            ("block-number", "u16", None),
            ("block-number-ack", "u16", None),
            ("block-data", "octets", None),
        ),
    ),
}

_SERVICE_CIPHERED: Final[dict[int, str]] = CIPHERED
for _tag, _name in _SERVICE_CIPHERED.items():
    _PLAIN_LAYOUTS[_tag] = (_name, _CIPHERED)

ACSE_TAGS: Final[dict[int, str]] = {0x60: "aarq", 0x61: "aare", 0x62: "rlrq", 0x63: "rlre"}

#: name -> variant -> (tag, choice octet or None, layout). "" is the variant of plain APDUs.
LAYOUTS: Final[dict[str, dict[str, tuple[int, int | None, Layout]]]] = {}
for _tag, (_name, _variants) in _CHOICE_LAYOUTS.items():
    LAYOUTS[_name] = {v: (_tag, c, lay) for c, (v, lay) in _variants.items()}
for _tag, (_name, _lay) in _PLAIN_LAYOUTS.items():
    LAYOUTS[_name] = {"": (_tag, None, _lay)}
_ACSE_BY_NAME: Final = {name: tag for tag, name in ACSE_TAGS.items()}
_INVOKE_NAMES: Final = frozenset(name for name, _ in _CHOICE_LAYOUTS.values())
_SECURED: Final = frozenset(
    [*_SERVICE_CIPHERED.values(), "general-glo-ciphering", "general-ded-ciphering"]
    + ["general-ciphering"]
)


# --- the APDU value ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Apdu:
    """One xDLMS or ACSE APDU.

    Build one with ``name``, ``variant`` and ``values`` (one per field of
    ``LAYOUTS[name][variant]``; ACSE APDUs hold one ``Tlv``). The other fields are
    derived: ``invoke_id`` (low 4 bits of invoke-id-and-priority, get/set/action only),
    and for get/set/action-request ``normal``: ``class_id``, ``obis``, ``attribute`` or
    ``method``.
    """

    name: str
    variant: str = ""
    values: tuple[Any, ...] = ()
    invoke_id: int | None = field(default=None, init=False)
    class_id: int | None = field(default=None, init=False)
    obis: str | None = field(default=None, init=False)
    attribute: int | None = field(default=None, init=False)
    method: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.name in _ACSE_BY_NAME:
            if self.variant or len(self.values) != 1 or not isinstance(self.values[0], Tlv):
                raise ValueError(f"{self.name} holds exactly one Tlv and no variant")
            if self.values[0].tag != _ACSE_BY_NAME[self.name]:
                raise ValueError(f"{self.name} Tlv must have tag 0x{_ACSE_BY_NAME[self.name]:02X}")
            return
        variants = LAYOUTS.get(self.name)
        if variants is None:
            raise ValueError(f"unknown APDU name {self.name!r}")
        entry = variants.get(self.variant)
        if entry is None:
            raise ValueError(f"unknown {self.name} variant {self.variant!r}")
        if len(self.values) != len(entry[2]):
            raise ValueError(f"{self.name} {self.variant} takes {len(entry[2])} values")
        if self.name in _INVOKE_NAMES:
            iip = self.values[0]
            if type(iip) is int:
                object.__setattr__(self, "invoke_id", iip & 0x0F)
            if self.variant == "normal" and self.name in (
                "get-request",
                "set-request",
                "action-request",
            ):
                desc = self.values[1]
                if isinstance(desc, Descriptor):
                    object.__setattr__(self, "class_id", desc.class_id)
                    object.__setattr__(self, "obis", desc.obis)
                    key = "method" if self.name == "action-request" else "attribute"
                    object.__setattr__(self, key, desc.index)

    def get(self, name: str) -> Any:
        """The value of the top-level field ``name`` (KeyError if there is none)."""
        if self.name in _ACSE_BY_NAME:
            raise KeyError(name)
        layout = LAYOUTS[self.name][self.variant][2]
        for (fname, _, _), value in zip(layout, self.values, strict=True):
            if fname == name:
                return value
        raise KeyError(name)

    # ACSE accessors -----------------------------------------------------------------

    def _acse(self, tag: int) -> Tlv | None:
        if self.name not in _ACSE_BY_NAME:
            return None
        root: Tlv = self.values[0]
        return root.child(tag)

    def _acse_inner(self, tag: int, inner: int) -> bytes | None:
        t = self._acse(tag)
        if t is None:
            return None
        if not t.constructed:
            return t.value
        c = t.child(inner)
        return None if c is None else c.value

    @property
    def application_context(self) -> str | None:
        """AARQ/AARE application-context-name as a dotted OID."""
        v = self._acse_inner(0xA1, 0x06)
        return None if v is None else oid_str(v)

    @property
    def mechanism(self) -> str | None:
        """AARQ/AARE mechanism-name as a dotted OID."""
        v = self._acse_inner(0x8B if self.name == "aarq" else 0x89, 0)
        return None if v is None else oid_str(v)

    @property
    def calling_ap_title(self) -> bytes | None:
        return self._acse_inner(0xA6, 0x04) if self.name == "aarq" else None

    @property
    def responding_ap_title(self) -> bytes | None:
        return self._acse_inner(0xA4, 0x04) if self.name == "aare" else None

    @property
    def authentication_value(self) -> bytes | None:
        """calling- (AARQ, AC) or responding- (AARE, AA) authentication-value content."""
        t = self._acse(0xAC if self.name == "aarq" else 0xAA)
        if t is None or not t.children:
            return None
        return t.children[0].value

    @property
    def result(self) -> int | None:
        """AARE result (0 accepted, 1 rejected-permanent, 2 rejected-transient)."""
        v = self._acse_inner(0xA2, 0x02) if self.name == "aare" else None
        return None if v is None else int.from_bytes(v, "big", signed=True)

    @property
    def diagnostic(self) -> tuple[str, int] | None:
        """AARE result-source-diagnostic: ``("user"|"provider", value)``."""
        t = self._acse(0xA3) if self.name == "aare" else None
        if t is None or not t.children:
            return None
        c = t.children[0]
        src = "user" if c.tag == 0xA1 else "provider"
        v = c.children[0].value if c.children else c.value
        return src, int.from_bytes(v, "big", signed=True)

    @property
    def reason(self) -> int | None:
        """RLRQ/RLRE reason."""
        v = self._acse_inner(0x80, 0) if self.name in ("rlrq", "rlre") else None
        return None if v is None else int.from_bytes(v, "big", signed=True)

    @property
    def user_information(self) -> Apdu | None:
        """The xDLMS APDU carried in an ACSE APDU's user-information, decoded."""
        v = self._acse_inner(0xBE, 0x04)
        return None if v is None else decode(v)

    # security header ----------------------------------------------------------------

    def _content(self) -> bytes | None:
        if self.name not in _SECURED:
            return None
        blob: Blob = self.values[-1]
        return blob.data

    @property
    def security_control(self) -> int | None:
        c = self._content()
        return None if c is None else c[0]

    @property
    def invocation_counter(self) -> int | None:
        c = self._content()
        return None if c is None else int.from_bytes(c[1:5], "big")

    @property
    def system_title(self) -> bytes | None:
        if self.name in ("general-glo-ciphering", "general-ded-ciphering"):
            title: Blob = self.values[0]
            return title.data
        if self.name == "general-ciphering":
            orig: Blob = self.values[1]
            return orig.data
        return None


# --- decoding ---------------------------------------------------------------------------


def decode(apdu: bytes | bytearray | memoryview) -> Apdu:
    """Decode exactly one whole APDU; raise a ``DlmsError`` subclass for anything else."""
    buf = bytes(apdu)
    try:
        a, pos = _decode(buf)
    except DlmsError:
        raise
    except IndexError:
        raise Truncated("APDU cut short") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        raise BadValue(f"bad APDU field: {exc}") from None
    if pos != len(buf):
        raise TrailingBytes(f"{len(buf) - pos} bytes after the {a.name} APDU")
    return a


def decode_first(data: bytes | bytearray | memoryview) -> tuple[Apdu, int]:
    """Decode the APDU at the start of ``data``; return it and its length in octets.

    For byte streams without framing (raw TCP toward an HES, 0x2100 payloads joined
    again): ``Truncated`` means the APDU may still be completed by more bytes; any other
    ``DlmsError`` means the bytes are not an APDU this codec knows.
    """
    buf = bytes(data)
    try:
        return _decode(buf)
    except DlmsError:
        raise
    except IndexError:
        raise Truncated("APDU cut short") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        raise BadValue(f"bad APDU field: {exc}") from None


def _decode(buf: bytes) -> tuple[Apdu, int]:
    if not buf:
        raise Truncated("empty APDU")
    tag = buf[0]
    acse = ACSE_TAGS.get(tag)
    if acse is not None:
        tlv, pos = decode_tlv(buf, 0)
        a = Apdu(acse, "", (tlv,))
        _check_acse(a)
        return a, pos
    choice = _CHOICE_LAYOUTS.get(tag)
    if choice is not None:
        if len(buf) < 2:
            raise Truncated(f"{choice[0]} has no CHOICE octet")
        entry = choice[1].get(buf[1])
        if entry is None:
            raise BadTag(f"{choice[0]} has no variant {buf[1]}")
        values, pos = _dec_fields(entry[1], buf, 2)
        return Apdu(choice[0], entry[0], values), pos
    plain = _PLAIN_LAYOUTS.get(tag)
    if plain is None:
        raise BadTag(f"unknown APDU tag 0x{tag:02X}")
    values, pos = _dec_fields(plain[1], buf, 1)
    a = Apdu(plain[0], "", values)
    if a.name in _SECURED and len(values[-1].data) < 5:
        raise BadValue(f"{a.name} content shorter than its security header")
    return a, pos


def _check_acse(a: Apdu) -> None:
    root: Tlv = a.values[0]
    if not root.constructed:
        raise BadValue(f"{a.name} must be a constructed BER element")
    ui = root.child(0xBE)
    if ui is not None:
        if len(ui.children) != 1 or ui.children[0].tag != 0x04:
            raise BadValue("user-information must hold one OCTET STRING")
        decode(ui.children[0].value)
    for tag in (0xA1,):
        t = root.child(tag)
        if t is not None:
            if len(t.children) != 1 or t.children[0].tag != 0x06:
                raise BadValue("application-context-name must hold one OBJECT IDENTIFIER")
            oid_str(t.children[0].value)


def _u(buf: bytes, pos: int, n: int) -> int:
    end = pos + n
    if end > len(buf):
        raise Truncated(f"{n}-octet field expected, {len(buf) - pos} left")
    return int.from_bytes(buf[pos:end], "big")


def _blob(buf: bytes, pos: int) -> tuple[Blob, int]:
    n, pos, lw = read_length(buf, pos)
    end = pos + n
    if end > len(buf):
        raise Truncated(f"OCTET STRING of {n} octets, {len(buf) - pos} left")
    return Blob(buf[pos:end], lw), end


def _flag(buf: bytes, pos: int, what: str) -> int:
    if pos >= len(buf):
        raise Truncated(f"{what} expected, bytes ended")
    b = buf[pos]
    if b > 1:
        raise BadValue(f"{what}: CHOICE/OPTIONAL octet {b} is not 0 or 1")
    return b


def _dec_fields(layout: Layout, buf: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
    values: list[Any] = []
    for name, kind, sub in layout:
        v: Any
        if kind == "u8":
            v = _u(buf, pos, 1)
            pos += 1
        elif kind == "u32":
            v = _u(buf, pos, 4)
            pos += 4
        elif kind == "u16":
            v = _u(buf, pos, 2)
            pos += 2
        elif kind == "data":
            v, pos = decode_data(buf, pos)
        elif kind == "desc":
            if pos + 9 > len(buf):
                raise Truncated("descriptor needs 9 octets")
            v = Descriptor(_u(buf, pos, 2), buf[pos + 2 : pos + 8], buf[pos + 8])
            pos += 9
        elif kind == "result" or kind == "optresult":
            if kind == "optresult":
                present = _flag(buf, pos, name)
                pos += 1
                if not present:
                    values.append(None)
                    continue
            if _flag(buf, pos, name):
                v = _u(buf, pos + 1, 1)
                pos += 2
            else:
                v, pos = decode_data(buf, pos + 1)
        elif kind == "rawresult":
            if _flag(buf, pos, name):
                v = _u(buf, pos + 1, 1)
                pos += 2
            else:
                v, pos = _blob(buf, pos + 1)
        elif kind == "octets":
            v, pos = _blob(buf, pos)
        elif kind == "sel":
            if _flag(buf, pos, name):
                selector = _u(buf, pos + 1, 1)
                params, pos = decode_data(buf, pos + 2)
                v = Selection(selector, params)
            else:
                v = None
                pos += 1
        elif kind == "optdata":
            if _flag(buf, pos, name):
                v, pos = decode_data(buf, pos + 1)
            else:
                v = None
                pos += 1
        elif kind == "optoctets":
            if _flag(buf, pos, name):
                v, pos = _blob(buf, pos + 1)
            else:
                v = None
                pos += 1
        elif kind == "optu8":
            if _flag(buf, pos, name):
                v = _u(buf, pos + 1, 1)
                pos += 2
            else:
                v = None
                pos += 1
        elif kind == "list":
            n, pos, lw = read_length(buf, pos)
            if n > len(buf) - pos:
                raise Truncated(f"{name}: {n} items announced, {len(buf) - pos} octets left")
            items = []
            for _ in range(n):
                item, pos = _dec_fields(sub, buf, pos)
                items.append(item)
            v = Seq(tuple(items), lw)
        elif kind == "conf":
            if buf[pos : pos + 4] != b"\x5f\x1f\x04\x00":
                if len(buf) < pos + 4:
                    raise Truncated("conformance block cut short")
                raise BadValue(
                    f"conformance must start 5F 1F 04 00, got {buf[pos : pos + 4].hex()}"
                )
            v = _u(buf, pos + 4, 3)
            pos += 7
        elif kind == "exc":
            code = _u(buf, pos, 1)
            if code == 6:
                v = (code, _u(buf, pos + 1, 4))
                pos += 5
            else:
                v = (code, None)
                pos += 1
        elif kind == "keyinfo":
            if not _flag(buf, pos, name):
                v = None
                pos += 1
            else:
                which = _u(buf, pos + 1, 1)
                pos += 2
                if which == 0:
                    v = (0, _u(buf, pos, 1))
                    pos += 1
                elif which == 1:
                    kek = _u(buf, pos, 1)
                    key, pos = _blob(buf, pos + 1)
                    v = (1, kek, key)
                elif which == 2:
                    params_blob, pos = _blob(buf, pos)
                    key, pos = _blob(buf, pos)
                    v = (2, params_blob, key)
                else:
                    raise BadTag(f"key-info has no choice {which}")
        else:  # pragma: no cover - the layout tables only use the kinds above
            raise AssertionError(kind)
        values.append(v)
    return tuple(values), pos


# --- encoding ---------------------------------------------------------------------------


def encode(apdu: Apdu) -> bytes:
    """Encode ``apdu``. Raises ``EncodeError`` if a value does not fit its field."""
    try:
        if apdu.name in _ACSE_BY_NAME:
            return encode_tlv(apdu.values[0])
        tag, choice, layout = LAYOUTS[apdu.name][apdu.variant]
        out = [bytes((tag,)) if choice is None else bytes((tag, choice))]
        _enc_fields(layout, apdu.values, out)
        return b"".join(out)
    except DlmsError as exc:
        if isinstance(exc, EncodeError):
            raise
        raise EncodeError(str(exc)) from None
    except (OverflowError, TypeError, ValueError, AttributeError, KeyError) as exc:
        raise EncodeError(f"cannot encode {apdu.name} {apdu.variant}: {exc!r}") from None


def _enc_blob(b: Blob, out: list[bytes]) -> None:
    out.append(write_length(len(b.data), b.lw))
    out.append(b.data)


def _enc_result(v: Any, out: list[bytes]) -> None:
    if isinstance(v, Data):
        out.append(b"\x00")
        out.append(encode_data(v))
    else:
        out.append(b"\x01" + v.to_bytes(1, "big"))


def _enc_fields(layout: Layout, values: tuple[Any, ...], out: list[bytes]) -> None:
    if len(values) != len(layout):
        raise EncodeError(f"{len(values)} values for {len(layout)} fields")
    for (name, kind, sub), v in zip(layout, values, strict=True):
        if kind == "u8":
            out.append(v.to_bytes(1, "big"))
        elif kind == "u32":
            out.append(v.to_bytes(4, "big"))
        elif kind == "u16":
            out.append(v.to_bytes(2, "big"))
        elif kind == "data":
            out.append(encode_data(v))
        elif kind == "desc":
            out.append(v.class_id.to_bytes(2, "big") + v.instance + v.index.to_bytes(1, "big"))
        elif kind == "result":
            _enc_result(v, out)
        elif kind == "optresult":
            if v is None:
                out.append(b"\x00")
            else:
                out.append(b"\x01")
                _enc_result(v, out)
        elif kind == "rawresult":
            if isinstance(v, Blob):
                out.append(b"\x00")
                _enc_blob(v, out)
            else:
                out.append(b"\x01" + v.to_bytes(1, "big"))
        elif kind == "octets":
            _enc_blob(v, out)
        elif kind == "sel":
            if v is None:
                out.append(b"\x00")
            else:
                out.append(b"\x01" + v.selector.to_bytes(1, "big"))
                out.append(encode_data(v.parameters))
        elif kind == "optdata":
            if v is None:
                out.append(b"\x00")
            else:
                out.append(b"\x01")
                out.append(encode_data(v))
        elif kind == "optoctets":
            if v is None:
                out.append(b"\x00")
            else:
                out.append(b"\x01")
                _enc_blob(v, out)
        elif kind == "optu8":
            out.append(b"\x00" if v is None else b"\x01" + v.to_bytes(1, "big"))
        elif kind == "list":
            out.append(write_length(len(v.items), v.lw))
            for item in v.items:
                _enc_fields(sub, item, out)
        elif kind == "conf":
            out.append(b"\x5f\x1f\x04\x00" + v.to_bytes(3, "big"))
        elif kind == "exc":
            code, counter = v
            out.append(code.to_bytes(1, "big"))
            if code == 6:
                out.append(counter.to_bytes(4, "big"))
            elif counter is not None:
                raise EncodeError("only invocation-counter-error (6) carries a counter")
        elif kind == "keyinfo":
            if v is None:
                out.append(b"\x00")
            elif v[0] == 0:
                out.append(b"\x01\x00" + v[1].to_bytes(1, "big"))
            elif v[0] == 1:
                out.append(b"\x01\x01" + v[1].to_bytes(1, "big"))
                _enc_blob(v[2], out)
            elif v[0] == 2:
                out.append(b"\x01\x02")
                _enc_blob(v[1], out)
                _enc_blob(v[2], out)
            else:
                raise EncodeError(f"key-info has no choice {v[0]}")
        else:  # pragma: no cover
            raise AssertionError(kind)
        del name


# --- describe ---------------------------------------------------------------------------

DATA_ACCESS_RESULTS: Final[dict[int, str]] = {
    0: "success",
    1: "hardware-fault",
    2: "temporary-failure",
    3: "read-write-denied",
    4: "object-undefined",
    9: "object-class-inconsistent",
    11: "object-unavailable",
    12: "type-unmatched",
    13: "scope-of-access-violated",
    14: "data-block-unavailable",
    15: "long-get-aborted",
    16: "no-long-get-in-progress",
    17: "long-set-aborted",
    18: "no-long-set-in-progress",
    19: "data-block-number-invalid",
    250: "other-reason",
}
STATE_ERRORS: Final = {1: "service-not-allowed", 2: "service-unknown"}
SERVICE_ERRORS: Final = {
    1: "operation-not-possible",
    2: "service-not-supported",
    3: "other-reason",
    4: "pdu-too-long",
    5: "deciphering-error",
    6: "invocation-counter-error",
}
_CONTEXTS: Final = {
    "2.16.756.5.8.1.1": "LN",
    "2.16.756.5.8.1.2": "SN",
    "2.16.756.5.8.1.3": "LN-ciphered",
    "2.16.756.5.8.1.4": "SN-ciphered",
}
_MECHANISMS: Final = {
    "2.16.756.5.8.2.0": "none",
    "2.16.756.5.8.2.1": "low",
    "2.16.756.5.8.2.2": "high",
    "2.16.756.5.8.2.3": "high-md5",
    "2.16.756.5.8.2.4": "high-sha1",
    "2.16.756.5.8.2.5": "high-gmac",
    "2.16.756.5.8.2.6": "high-sha256",
    "2.16.756.5.8.2.7": "high-ecdsa",
}


def _dar(v: int) -> str:
    return DATA_ACCESS_RESULTS.get(v, f"result-{v}")


def _res(v: Any) -> str:
    return f"ok {data_summary(v)}" if isinstance(v, Data) else f"error {_dar(v)}"


def _desc(d: Descriptor, key: str) -> str:
    return f"class={d.class_id} {d.obis} {key}={d.index}"


def describe(apdu: Apdu) -> str:
    """One line a meter engineer reads at a glance."""
    head = apdu.name + (f" {apdu.variant}" if apdu.variant else "")
    if apdu.invoke_id is not None:
        head += f" iid={apdu.invoke_id}"
    try:
        tail = _describe_tail(apdu)
    except (DlmsError, KeyError, IndexError, AttributeError, TypeError) as exc:
        tail = f"<{type(exc).__name__}>"
    return f"{head} {tail}".rstrip()


def _describe_tail(a: Apdu) -> str:
    name = a.name
    if name in _ACSE_BY_NAME:
        return _describe_acse(a)
    if name in _SECURED:
        parts = []
        if a.system_title is not None:
            parts.append(f"title={a.system_title.hex()}")
        content: Blob = a.values[-1]
        parts.append(f"sc=0x{a.security_control:02X} ic={a.invocation_counter}")
        parts.append(f"{len(content.data) - 5} octets")
        return " ".join(parts)
    v = dict(zip((f[0] for f in LAYOUTS[name][a.variant][2]), a.values, strict=True))
    if "attribute" in v and isinstance(v["attribute"], Descriptor):
        text = _desc(v["attribute"], "attr")
        sel = v.get("access-selection")
        if sel is not None:
            text += f" sel={sel.selector}"
        if "value" in v:
            text += f" {data_summary(v['value'])}"
        return text
    if "method" in v and isinstance(v["method"], Descriptor):
        text = _desc(v["method"], "method")
        if v.get("parameters") is not None:
            text += f" {data_summary(v['parameters'])}"
        return text
    if name == "get-response" and a.variant == "normal":
        return _res(v["result"])
    if name in ("set-response", "action-response") and "result" in v:
        text = _dar(v["result"])
        if v.get("return") is not None:
            text += f" {_res(v['return'])}"
        if "block-number" in v:
            text += f" block={v['block-number']}"
        return text
    if "results" in v:
        items = v["results"].items
        shown = "; ".join(_res(i[0]) if name == "get-response" else _dar(i[0]) for i in items[:3])
        return f"n={len(items)} {shown}{' ...' if len(items) > 3 else ''}"
    if "raw-data" in v:
        raw = v["raw-data"]
        size = f"{len(raw.data)} octets" if isinstance(raw, Blob) else f"error {_dar(raw)}"
        return f"block={v['block-number']} last={v['last-block']} {size}"
    if "block-number" in v and len(v) == 2:
        return f"block={v['block-number']}"
    if "attributes" in v or "methods" in v:
        items = (v.get("attributes") or v["methods"]).items
        first = _desc(items[0][0], "attr" if "attributes" in v else "method") if items else ""
        return f"n={len(items)} {first}{' ...' if len(items) > 1 else ''}"
    if name == "data-notification":
        dt = v["date-time"].data
        when = format_datetime(dt) if dt else None
        text = f"id=0x{v['long-invoke-id-and-priority']:08X}"
        if when:
            text += f" time={when}"
        elif dt:
            text += f" time={dt.hex()}"
        return f"{text} {data_summary(v['body'])}"
    if name == "exception-response":
        code, counter = v["service-error"]
        text = (
            f"{STATE_ERRORS.get(v['state-error'], v['state-error'])} "
            f"{SERVICE_ERRORS.get(code, code)}"
        )
        return text + (f" counter={counter}" if counter is not None else "")
    if name == "confirmed-service-error":
        return f"service={v['service']} error-type={v['error-type']} error={v['error']}"
    if name in ("initiate-request", "initiate-response"):
        return (
            f"dlms={v['dlms-version']} conformance=0x{v['conformance']:06X}"
            f" max-pdu={v['max-pdu-size']}"
        )
    if name == "general-block-transfer":
        bc = v["block-control"]
        return (
            f"block={v['block-number']} ack={v['block-number-ack']} last={bc >> 7}"
            f" window={bc & 0x3F} {len(v['block-data'].data)} octets"
        )
    if name == "general-signing":
        return f"{len(v['content'].data)} octets signed"
    return ""


def _describe_acse(a: Apdu) -> str:
    parts = []
    if a.name == "aare":
        result = a.result
        parts.append(
            {0: "accepted", 1: "rejected-permanent", 2: "rejected-transient"}.get(
                result if result is not None else -1, f"result={result}"
            )
        )
        diag = a.diagnostic
        if diag is not None:
            parts.append(f"diag={diag[0]}:{diag[1]}")
    if a.name in ("rlrq", "rlre") and a.reason is not None:
        parts.append(f"reason={a.reason}")
    ctx = a.application_context
    if ctx is not None:
        parts.append(f"context={_CONTEXTS.get(ctx, ctx)}")
    mech = a.mechanism
    if mech is not None:
        parts.append(f"mechanism={_MECHANISMS.get(mech, mech)}")
    title = a.calling_ap_title or a.responding_ap_title
    if title:
        parts.append(f"title={title.hex()}")
    auth = a.authentication_value
    if auth is not None:
        parts.append(f"auth={len(auth)} octets")
    ui = a.user_information
    if ui is not None:
        parts.append(f"user-info: {describe(ui)}")
    return " ".join(parts)
