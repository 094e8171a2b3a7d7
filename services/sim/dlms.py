"""DLMS/COSEM for the simulators: APDUs built with ``common.dlms``, a meter's object model,
and a splitter for streams that carry APDUs back to back.

The HES simulator is the DLMS client: it opens an association (``aarq``: no security,
logical-name referencing), reads with ``get_request``/``get_next`` and releases
(``rlrq``). The meter simulator is the server: ``MeterModel.answer`` takes one request
APDU and returns the response APDUs (AARE, get-responses, RLRE, exception-response),
cutting a value larger than the client's max-PDU-size into blocks (get-response
with-datablock, continued by get-request next). ``ApduStream`` finds the APDUs in a byte
stream that has no framing (a raw TCP stream, or 0x2100 payloads that TCP merged or the
client split at ``UART.max_info``). No I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from common.dlms import (
    Apdu,
    Blob,
    Data,
    Descriptor,
    DlmsError,
    Tlv,
    Truncated,
    decode,
    decode_first,
    describe,
    encode,
    encode_data,
)

OBIS_CLOCK = bytes((0, 0, 1, 0, 0, 255))  # clock, class 8
OBIS_ENERGY = bytes((1, 0, 1, 8, 0, 255))  # active energy import, register class 3
OBIS_PROFILE = bytes((1, 0, 99, 1, 0, 255))  # load profile, profile generic class 7
CLASS_REGISTER = 3
CLASS_CLOCK = 8
CLASS_PROFILE = 7
#: The meter's objects: OBIS -> interface class.
OBJECTS = {OBIS_CLOCK: CLASS_CLOCK, OBIS_ENERGY: CLASS_REGISTER, OBIS_PROFILE: CLASS_PROFILE}

#: Application context "logical name referencing, no ciphering" (2.16.756.5.8.1.1).
CONTEXT_LN = bytes.fromhex("60857405080101")
DLMS_VERSION = 6
#: Proposed by the HES: every service this client can use.
CLIENT_CONFORMANCE = 0x007E1F
#: What the meter grants of it: get, set, action, selective access, block transfer with get.
METER_CONFORMANCE = 0x00181D
METER_MAX_PDU = 1024
VAA_NAME_LN = 0x0007
#: invoke-id-and-priority: high priority, confirmed service, and the invoke id.
IIP_CONFIRMED = 0xC0
#: Octets of a get-response with-datablock besides its raw data (tag, choice, iid,
#: last-block, block-number, choice, a length of up to 3 octets), with a margin.
BLOCK_OVERHEAD = 16
#: Load profile entries: a day of 15-minute periods.
PROFILE_ENTRIES = 96
PROFILE_PERIOD_S = 900

DAR_OBJECT_UNDEFINED = 4
DAR_CLASS_INCONSISTENT = 9
DAR_NO_LONG_GET = 16
DAR_BLOCK_NUMBER_INVALID = 19


def dlms_datetime(t: float) -> bytes:
    """12-octet COSEM date-time, UTC (deviation 0, status not specified)."""
    tm = time.gmtime(t)
    return (
        tm.tm_year.to_bytes(2, "big")
        + bytes((tm.tm_mon, tm.tm_mday, tm.tm_wday + 1, tm.tm_hour, tm.tm_min, tm.tm_sec))
        + b"\x00\x00\x00\x00"
    )


def text(data: bytes) -> str:
    """``describe()`` of one whole APDU, or why it is not one."""
    try:
        return describe(decode(data))
    except DlmsError as exc:
        return f"not an APDU ({type(exc).__name__})"


# --- the client's requests -----------------------------------------------------------


def aarq(max_pdu: int) -> bytes:
    """AARQ: LN referencing, no security, proposing ``max_pdu`` as what the client
    can receive."""
    initiate = Apdu(
        "initiate-request", "", (None, None, None, DLMS_VERSION, CLIENT_CONFORMANCE, max_pdu)
    )
    return encode(
        Apdu(
            "aarq",
            "",
            (
                Tlv(
                    0x60,
                    children=(
                        Tlv(0xA1, children=(Tlv(0x06, CONTEXT_LN),)),
                        Tlv(0xBE, children=(Tlv(0x04, encode(initiate)),)),
                    ),
                ),
            ),
        )
    )


def rlrq() -> bytes:
    """RLRQ, reason normal."""
    return encode(Apdu("rlrq", "", (Tlv(0x62, children=(Tlv(0x80, b"\x00"),)),)))


def get_request(iid: int, class_id: int, obis: bytes, attr: int) -> bytes:
    """get-request normal, no selective access."""
    desc = Descriptor(class_id, obis, attr)
    return encode(Apdu("get-request", "normal", (IIP_CONFIRMED | (iid & 0x0F), desc, None)))


def get_next(iid: int, block: int) -> bytes:
    """get-request next: the client has block ``block``, asks for the one after."""
    return encode(Apdu("get-request", "next", (IIP_CONFIRMED | (iid & 0x0F), block)))


# --- the meter ------------------------------------------------------------------------


def _release(tag: int) -> bytes:
    return encode(Apdu("rlre", "", (Tlv(tag, children=(Tlv(0x80, b"\x00"),)),)))


def aare(accepted: bool, max_pdu: int = METER_MAX_PDU, conformance: int = 0) -> bytes:
    """AARE; accepted with the initiate-response, or rejected (context not supported)."""
    fields = [
        Tlv(0xA1, children=(Tlv(0x06, CONTEXT_LN),)),
        Tlv(0xA2, children=(Tlv(0x02, b"\x00" if accepted else b"\x01"),)),
        Tlv(0xA3, children=(Tlv(0xA1, children=(Tlv(0x02, b"\x00" if accepted else b"\x02"),)),)),
    ]
    if accepted:
        initiate = Apdu(
            "initiate-response", "", (None, DLMS_VERSION, conformance, max_pdu, VAA_NAME_LN)
        )
        fields.append(Tlv(0xBE, children=(Tlv(0x04, encode(initiate)),)))
    return encode(Apdu("aare", "", (Tlv(0x61, children=tuple(fields)),)))


@dataclass
class LongGet:
    """A get whose value goes out in blocks."""

    iid: int
    data: bytes
    size: int  # raw-data octets per block
    sent: int = 0  # blocks sent


class MeterModel:
    """The meter's objects and its side of the association.

    GETs are answered with or without an association (a real meter wants one; this
    one is lenient, so the gateway's tests can ask it directly).
    """

    def __init__(self, energy: Callable[[], int], clock: Callable[[], float] = time.time) -> None:
        self.energy = energy
        self.clock = clock
        self.associated = False
        self.client_max_pdu = 0xFFFF
        self.long_get: LongGet | None = None

    def value(self, class_id: int, obis: bytes, attr: int) -> Data | int:
        """An attribute's value, or a data-access-result."""
        objects = {
            OBIS_CLOCK: CLASS_CLOCK,
            OBIS_ENERGY: CLASS_REGISTER,
            OBIS_PROFILE: CLASS_PROFILE,
        }
        if obis not in objects:
            return DAR_OBJECT_UNDEFINED
        if objects[obis] != class_id:
            return DAR_CLASS_INCONSISTENT
        if obis == OBIS_CLOCK and attr == 2:
            return Data("octet-string", dlms_datetime(self.clock()))
        if obis == OBIS_ENERGY and attr == 2:
            return Data("double-long-unsigned", self.energy() & 0xFFFFFFFF)
        if obis == OBIS_ENERGY and attr == 3:  # scaler 0, unit Wh (30)
            return Data("structure", (Data("integer", 0), Data("enum", 30)))
        if obis == OBIS_PROFILE and attr == 2:
            return self.profile()
        return DAR_OBJECT_UNDEFINED

    def profile(self) -> Data:
        """The load profile buffer: (clock, energy) every 15 minutes, oldest first."""
        now = int(self.clock()) // PROFILE_PERIOD_S * PROFILE_PERIOD_S
        energy = self.energy()
        rows = []
        for i in range(PROFILE_ENTRIES, 0, -1):
            at = now - i * PROFILE_PERIOD_S
            rows.append(
                Data(
                    "structure",
                    (
                        Data("octet-string", dlms_datetime(at)),
                        Data("double-long-unsigned", max(0, energy - 25 * i)),
                    ),
                )
            )
        return Data("array", tuple(rows))

    def answer(self, request: bytes, limit: int) -> list[bytes]:
        """The response APDUs to one request; ``limit`` is the largest APDU the meter
        can put in one frame (``UART.max_info``)."""
        try:
            apdu = decode(request)
        except DlmsError:
            return [self.exception()]
        iip = apdu.values[0] if apdu.invoke_id is not None else 0
        if apdu.name == "aarq":
            ok = apdu.application_context == "2.16.756.5.8.1.1"
            ui = apdu.user_information if ok else None
            ok = ok and ui is not None and ui.name == "initiate-request"
            if not ok:
                return [aare(False)]
            assert ui is not None
            self.associated = True
            self.client_max_pdu = int(ui.get("max-pdu-size"))
            conformance = int(ui.get("conformance")) & METER_CONFORMANCE
            return [aare(True, METER_MAX_PDU, conformance)]
        if apdu.name == "rlrq":
            self.associated = False
            self.long_get = None
            return [_release(0x63)]
        if apdu.name == "get-request" and apdu.variant == "normal":
            assert apdu.class_id is not None and apdu.obis is not None
            desc: Descriptor = apdu.values[1]
            value = self.value(desc.class_id, desc.instance, desc.index)
            normal = encode(Apdu("get-response", "normal", (iip, value)))
            room = min(self.client_max_pdu, limit)
            if len(normal) <= room or not isinstance(value, Data):
                return [normal]
            self.long_get = LongGet(iip, encode_data(value), max(1, room - BLOCK_OVERHEAD))
            return [self.next_block(iip, 0)]
        if apdu.name == "get-request" and apdu.variant == "next":
            return [self.next_block(iip, int(apdu.values[1]))]
        return [self.exception()]

    def next_block(self, iip: int, have: int) -> bytes:
        """The block after ``have`` of the long get in progress."""
        lg = self.long_get
        if lg is None:
            return encode(Apdu("get-response", "normal", (iip, DAR_NO_LONG_GET)))
        if have != lg.sent:
            self.long_get = None
            return encode(
                Apdu("get-response", "with-datablock", (iip, 1, have + 1, DAR_BLOCK_NUMBER_INVALID))
            )
        start = lg.sent * lg.size
        chunk = lg.data[start : start + lg.size]
        lg.sent += 1
        last = start + lg.size >= len(lg.data)
        if last:
            self.long_get = None
        return encode(
            Apdu("get-response", "with-datablock", (iip, int(last), lg.sent, Blob(chunk)))
        )

    @staticmethod
    def exception() -> bytes:
        """exception-response: service-not-allowed, service-not-supported."""
        return encode(Apdu("exception-response", "", (1, (2, None))))


# --- streams without framing ----------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """What ``ApduStream`` found: one APDU (``apdu`` set) or bytes that are not one."""

    data: bytes
    apdu: Apdu | None = None
    error: str = ""


class ApduStream:
    """APDUs back to back in a byte stream: ``feed`` returns the whole ones.

    An APDU cut short waits for the rest (``pending``); ``flush`` gives it up (a
    caller does so after a quiet moment). Bytes that cannot start an APDU come back
    as one ``Piece`` with ``error`` set, with everything buffered, and the stream
    starts afresh. At most ``max_hold`` octets wait.
    """

    def __init__(self, max_hold: int = 1 << 17) -> None:
        self.max_hold = max_hold
        self._buf = b""

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Piece]:
        buf = self._buf + data
        out: list[Piece] = []
        while buf:
            try:
                apdu, n = decode_first(buf)
            except Truncated:
                if len(buf) > self.max_hold:
                    out.append(Piece(buf, None, "too long"))
                    buf = b""
                break
            except DlmsError as exc:
                out.append(Piece(buf, None, type(exc).__name__))
                buf = b""
                break
            out.append(Piece(buf[:n], apdu))
            buf = buf[n:]
        self._buf = buf
        return out

    def flush(self) -> list[Piece]:
        buf, self._buf = self._buf, b""
        return [Piece(buf, None, "Truncated")] if buf else []
