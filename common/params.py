"""0x2200 module-parameter messages: typed values for each info layout, no I/O.

The meter and the gateway ("module") get and set each other's parameters with 0x2200
frames (shared/docs/wire-format.md, "0x2200 info layouts"). ``pid`` is a little-endian
16-bit parameter id, ``rid`` a big-endian 16-bit request id, ``plen`` one byte giving the
length of what follows it. Typed values are DLMS A-XDR: ``tag [len] value``.

Meter asks, gateway answers::

    GET (C0)            pid                 -> GetRequest(pid)
    GET (C0), typed     pid rid             -> GetRequest(pid, rid)
    GET response (C4)   pid plen data       <- GetResponse(pid, data)      (untyped, e.g. LQI)
    GET response (C4)   pid plen rid value  <- TypedGetResponse(pid, rid, value)
    GET error (C8)      pid 01 0C           <- GetError(pid)
    SET (C1)            pid plen rid value  -> SetRequest(pid, rid, value)
    SET response (C5)   pid 01 00|0C        <- SetResponse(pid, ok)
    EVENT (C2)          event bytes         -> Event(data)
    EVENT ack (BF)      01 00               <- EventAck()

Gateway asks, meter answers::

    GET (C0)            pid                 <- MeterGet(pid)
    SET (C1)            pid data            <- MeterSet(pid, data)
    GET response (C4)   pid plen data       -> MeterGetResponse(pid, data)

Each message is a frozen value that checks its fields when built, has ``to_info()``
and ``from_info(info)`` (raising ``ParamError``), its ``cmd`` and ``to_frame(protocol)``.
A reply keeps the protocol id of the request it answers: use ``reply(request, message)``.
"""

from __future__ import annotations

from typing import ClassVar, Final, Self

from common.frozen import Frozen
from common.rfc1662 import (
    CMD_EVENT,
    CMD_GET,
    CMD_GET_ERROR,
    CMD_GET_RESP,
    CMD_SERIAL_NET,
    CMD_SET,
    CMD_SET_RESP,
    PROTO_PARAMS,
    Frame,
)

__all__ = [
    "ACK_FAILED",
    "ACK_OK",
    "PARAM_NAMES",
    "TAG_NAMES",
    "PID_DEVICE_NAME",
    "PID_FW_3007",
    "PID_FW_3008",
    "PID_FW_3009",
    "PID_FW_300A",
    "PID_LQI",
    "PID_METER_2801",
    "PID_METER_2802",
    "PID_METER_2803",
    "PID_METER_2804",
    "PID_METER_2805",
    "PID_METER_2806",
    "PID_METER_2807",
    "PID_METER_280F",
    "PID_METER_2860",
    "PID_METER_2861",
    "PID_METER_SN",
    "PID_MODULE_STATE",
    "TAG_CHAR",
    "TAG_DATETIME",
    "TAG_INT8U",
    "TAG_INT16U",
    "TAG_INT32U",
    "TAG_STR",
    "Event",
    "EventAck",
    "FromGateway",
    "FromMeter",
    "GetError",
    "GetRequest",
    "GetResponse",
    "Message",
    "MeterGet",
    "MeterGetResponse",
    "MeterSet",
    "ParamError",
    "SetRequest",
    "SetResponse",
    "TypedGetResponse",
    "Value",
    "event_ack",
    "get_error",
    "get_response",
    "meter_get",
    "meter_set",
    "param_name",
    "parse_gateway",
    "parse_request",
    "reply",
    "set_response",
    "typed_get_response",
]


class ParamError(ValueError):
    """A 0x2200 info field (or cmd) that does not match any layout."""


# --- value types ------------------------------------------------------------------------

TAG_STR: Final = 0x09  # octet-string: len, bytes
TAG_CHAR: Final = 0x0A  # visible-string: len, bytes
TAG_INT32U: Final = 0x06  # double-long-unsigned: 4 bytes BE
TAG_INT8U: Final = 0x11  # unsigned: 1 byte
TAG_INT16U: Final = 0x12  # long-unsigned: 2 bytes BE
TAG_DATETIME: Final = 0x19  # date-time: 12 bytes

_INT_SIZES: Final = {TAG_INT8U: 1, TAG_INT16U: 2, TAG_INT32U: 4}
_LEN_PREFIXED: Final = (TAG_CHAR, TAG_STR)
_DATETIME_LEN: Final = 12
#: Type names as the wire-format document gives them, by tag.
TAG_NAMES: Final = {
    TAG_CHAR: "CHAR",
    TAG_STR: "STR",
    TAG_INT8U: "INT8U",
    TAG_INT16U: "INT16U",
    TAG_INT32U: "INT32U",
    TAG_DATETIME: "DATETIME",
}


_set = object.__setattr__


class Value(Frozen):
    """A typed parameter value, A-XDR encoded as ``tag [len] value``.

    ``value`` is ``bytes`` for CHAR and STR (at most 255 bytes) and DATETIME (exactly
    12 bytes), and an ``int`` in range for INT8U, INT16U and INT32U.
    """

    __slots__ = ("tag", "value")
    __match_args__ = ("tag", "value")
    tag: int
    value: bytes | int

    def __init__(self, tag: int, value: bytes | int) -> None:
        v = value
        if tag in _INT_SIZES:
            if not isinstance(v, int) or isinstance(v, bool):
                raise ParamError(f"{TAG_NAMES[tag]} value must be an int, got {v!r}")
            bits = 8 * _INT_SIZES[tag]
            if not 0 <= v < 1 << bits:
                raise ParamError(f"{TAG_NAMES[tag]} value {v} out of range 0..{(1 << bits) - 1}")
        elif tag in _LEN_PREFIXED or tag == TAG_DATETIME:
            if not isinstance(v, bytes):
                raise ParamError(f"{TAG_NAMES[tag]} value must be bytes, got {v!r}")
            if tag == TAG_DATETIME:
                if len(v) != _DATETIME_LEN:
                    raise ParamError(f"DATETIME value must be 12 bytes, got {len(v)}")
            elif len(v) > 0xFF:
                raise ParamError(f"{TAG_NAMES[tag]} value is {len(v)} bytes, max 255")
        else:
            raise ParamError(f"unknown value tag {tag!r}")
        _set(self, "tag", tag)
        _set(self, "value", value)

    @classmethod
    def char(cls, text: str | bytes) -> Value:
        """CHAR (visible-string) from ASCII text."""
        if isinstance(text, str):
            try:
                text = text.encode("ascii")
            except UnicodeEncodeError as exc:
                raise ParamError(f"CHAR value must be ASCII: {exc}") from None
        return cls(TAG_CHAR, text)

    @classmethod
    def octets(cls, data: bytes) -> Value:
        """STR (octet-string)."""
        return cls(TAG_STR, bytes(data))

    @classmethod
    def u8(cls, n: int) -> Value:
        return cls(TAG_INT8U, n)

    @classmethod
    def u16(cls, n: int) -> Value:
        return cls(TAG_INT16U, n)

    @classmethod
    def u32(cls, n: int) -> Value:
        return cls(TAG_INT32U, n)

    @classmethod
    def datetime(cls, data: bytes) -> Value:
        """DATETIME from its 12 encoded DLMS date-time bytes."""
        return cls(TAG_DATETIME, bytes(data))

    def to_bytes(self) -> bytes:
        v = self.value
        if isinstance(v, int):
            return bytes((self.tag,)) + v.to_bytes(_INT_SIZES[self.tag], "big")
        if self.tag == TAG_DATETIME:
            return bytes((self.tag,)) + v
        return bytes((self.tag, len(v))) + v

    @classmethod
    def parse(cls, buf: bytes) -> tuple[Value, bytes]:
        """Parse one value from the front of ``buf``; return it and the bytes after it."""
        if not buf:
            raise ParamError("value missing: no tag byte")
        tag = buf[0]
        size = _INT_SIZES.get(tag)
        if size is not None:
            if len(buf) < 1 + size:
                raise ParamError(f"{TAG_NAMES[tag]} value needs {size} bytes, got {len(buf) - 1}")
            return cls(tag, int.from_bytes(buf[1 : 1 + size], "big")), buf[1 + size :]
        if tag == TAG_DATETIME:
            if len(buf) < 1 + _DATETIME_LEN:
                raise ParamError(f"DATETIME value needs 12 bytes, got {len(buf) - 1}")
            return cls(tag, bytes(buf[1:13])), buf[13:]
        if tag in _LEN_PREFIXED:
            if len(buf) < 2:
                raise ParamError(f"{TAG_NAMES[tag]} value missing its length byte")
            n = buf[1]
            if len(buf) < 2 + n:
                raise ParamError(
                    f"{TAG_NAMES[tag]} value says {n} bytes, only {len(buf) - 2} present"
                )
            return cls(tag, bytes(buf[2 : 2 + n])), buf[2 + n :]
        raise ParamError(f"unknown value tag 0x{tag:02X}")

    @property
    def text(self) -> str:
        """CHAR/STR value decoded as text (non-ASCII bytes replaced)."""
        if isinstance(self.value, int):
            return str(self.value)
        return self.value.decode("ascii", "replace")


# --- parameter ids ----------------------------------------------------------------------

PID_MODULE_STATE: Final = 0x8002
PID_LQI: Final = 0x8003  # one byte, untyped
PID_METER_SN: Final = 0x8005
PID_DEVICE_NAME: Final = 0x8007
# Meter-side parameters the gateway may read. The wire-format page gives their ids only,
# so they are named by number.
PID_METER_2801: Final = 0x2801
PID_METER_2802: Final = 0x2802
PID_METER_2803: Final = 0x2803
PID_METER_2804: Final = 0x2804
PID_METER_2805: Final = 0x2805
PID_METER_2806: Final = 0x2806
PID_METER_2807: Final = 0x2807
PID_METER_280F: Final = 0x280F
PID_METER_2860: Final = 0x2860
PID_METER_2861: Final = 0x2861
# Firmware-image transfer.
PID_FW_3007: Final = 0x3007
PID_FW_3008: Final = 0x3008
PID_FW_3009: Final = 0x3009
PID_FW_300A: Final = 0x300A

PARAM_NAMES: Final[dict[int, str]] = {
    PID_MODULE_STATE: "module_state",
    PID_LQI: "lqi",
    PID_METER_SN: "meter_sn",
    PID_DEVICE_NAME: "device_name",
    **{pid: f"meter_{pid:04x}" for pid in (*range(0x2801, 0x2808), 0x280F, 0x2860, 0x2861)},
    **{pid: f"fw_transfer_{pid:04x}" for pid in range(0x3007, 0x300B)},
}


def param_name(pid: int) -> str:
    """Readable name of a parameter id, ``pid_xxxx`` when unknown."""
    return PARAM_NAMES.get(pid, f"pid_{pid:04x}")


# --- field helpers ----------------------------------------------------------------------

ACK_OK: Final = 0x00
ACK_FAILED: Final = 0x0C


def _check_u16(name: str, v: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF:
        raise ParamError(f"{name} must be an int in 0..0xFFFF, got {v!r}")


def _check_bytes(name: str, v: object, max_len: int | None = None) -> None:
    if not isinstance(v, bytes):
        raise ParamError(f"{name} must be bytes, got {type(v).__name__}")
    if max_len is not None and len(v) > max_len:
        raise ParamError(f"{name} is {len(v)} bytes, max {max_len}")


def _pid(info: bytes, what: str) -> int:
    if len(info) < 2:
        raise ParamError(f"{what}: info is {len(info)} bytes, too short for a pid")
    return info[0] | (info[1] << 8)


def _pid_bytes(pid: int) -> bytes:
    return bytes((pid & 0xFF, pid >> 8))


def _plen_body(info: bytes, what: str) -> tuple[int, bytes]:
    """Split ``pid plen body`` and check that plen matches the body's length."""
    pid = _pid(info, what)
    if len(info) < 3:
        raise ParamError(f"{what}: plen byte missing")
    plen = info[2]
    if len(info) - 3 != plen:
        raise ParamError(f"{what}: plen says {plen} bytes, {len(info) - 3} follow")
    return pid, info[3:]


def _check_typed_value(value: object) -> None:
    if not isinstance(value, Value):
        raise ParamError(f"value must be a Value, got {type(value).__name__}")
    n = 2 + len(value.to_bytes())
    if n > 0xFF:
        raise ParamError(f"rid and value are {n} bytes, too long for plen (max 255)")


def _typed_body(pid: int, rid: int, value: Value) -> bytes:
    rest = rid.to_bytes(2, "big") + value.to_bytes()
    return _pid_bytes(pid) + bytes((len(rest),)) + rest


def _parse_typed(info: bytes, what: str) -> tuple[int, int, Value]:
    pid, body = _plen_body(info, what)
    if len(body) < 2:
        raise ParamError(f"{what}: request id missing")
    rid = (body[0] << 8) | body[1]
    value, rest = Value.parse(body[2:])
    if rest:
        raise ParamError(f"{what}: {len(rest)} bytes after the value")
    return pid, rid, value


# --- messages ---------------------------------------------------------------------------


class Message(Frozen):
    """Base of the 0x2200 messages: each sets ``cmd`` and implements the layout."""

    __slots__ = ()
    cmd: ClassVar[int]

    def to_info(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        """Parse this message's layout from an info field; raise ``ParamError``."""
        raise NotImplementedError

    def to_frame(self, protocol: int = PROTO_PARAMS) -> Frame:
        return Frame(protocol, self.cmd, self.to_info())


class GetRequest(Message):
    """Meter -> gateway GET (C0): info ``pid`` (untyped) or ``pid rid`` (typed)."""

    cmd: ClassVar[int] = CMD_GET
    __slots__ = ("pid", "rid")
    __match_args__ = ("pid", "rid")
    pid: int
    rid: int | None

    def __init__(self, pid: int, rid: int | None = None) -> None:
        _check_u16("pid", pid)
        if rid is not None:
            _check_u16("rid", rid)
        _set(self, "pid", pid)
        _set(self, "rid", rid)

    @property
    def typed(self) -> bool:
        return self.rid is not None

    def to_info(self) -> bytes:
        if self.rid is None:
            return _pid_bytes(self.pid)
        return _pid_bytes(self.pid) + self.rid.to_bytes(2, "big")

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        if len(info) == 2:
            return cls(_pid(info, "GET"))
        if len(info) == 4:
            return cls(_pid(info, "GET"), (info[2] << 8) | info[3])
        raise ParamError(f"GET: info must be 2 or 4 bytes, got {len(info)}")


class _PlenData(Message):
    """The layout ``pid plen data``, shared by two messages."""

    what: ClassVar[str] = "pid plen data"
    cmd: ClassVar[int] = CMD_GET_RESP
    __slots__ = ("pid", "data")
    __match_args__ = ("pid", "data")
    pid: int
    data: bytes

    def __init__(self, pid: int, data: bytes) -> None:
        _check_u16("pid", pid)
        _check_bytes("data", data, 0xFF)
        _set(self, "pid", pid)
        _set(self, "data", data)

    def to_info(self) -> bytes:
        return _pid_bytes(self.pid) + bytes((len(self.data),)) + self.data

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        pid, data = _plen_body(info, cls.what)
        return cls(pid, bytes(data))


class GetResponse(_PlenData):
    """Gateway -> meter untyped GET response (C4): ``pid plen data`` (LQI: ``03 80 01 xx``)."""

    __slots__ = ()
    what: ClassVar[str] = "GET response"


class _Typed(Message):
    """The typed layout ``pid plen rid tag [len] value``, shared by two messages."""

    what: ClassVar[str] = "typed message"
    __slots__ = ("pid", "rid", "value")
    __match_args__ = ("pid", "rid", "value")
    pid: int
    rid: int
    value: Value

    def __init__(self, pid: int, rid: int, value: Value) -> None:
        _check_u16("pid", pid)
        _check_u16("rid", rid)
        _check_typed_value(value)
        _set(self, "pid", pid)
        _set(self, "rid", rid)
        _set(self, "value", value)

    def to_info(self) -> bytes:
        return _typed_body(self.pid, self.rid, self.value)

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        return cls(*_parse_typed(info, cls.what))


class TypedGetResponse(_Typed):
    """Gateway -> meter typed GET response (C4): ``pid plen rid tag [len] value``."""

    cmd: ClassVar[int] = CMD_GET_RESP
    what: ClassVar[str] = "typed GET response"
    __slots__ = ()


class GetError(Message):
    """GET error response (C8): ``pid 01 0C``."""

    cmd: ClassVar[int] = CMD_GET_ERROR
    __slots__ = ("pid",)
    __match_args__ = ("pid",)
    pid: int

    def __init__(self, pid: int) -> None:
        _check_u16("pid", pid)
        _set(self, "pid", pid)

    def to_info(self) -> bytes:
        return _pid_bytes(self.pid) + bytes((1, ACK_FAILED))

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        pid, body = _plen_body(info, "GET error")
        if body != bytes((ACK_FAILED,)):
            raise ParamError(f"GET error: want code 0c, got {body.hex()}")
        return cls(pid)


class SetRequest(_Typed):
    """Meter -> gateway SET (C1): ``pid plen rid tag [len] value``."""

    cmd: ClassVar[int] = CMD_SET
    what: ClassVar[str] = "SET"
    __slots__ = ()


class SetResponse(Message):
    """SET response (C5): ``pid 01 ack``, ack ``00`` success or ``0C`` failed."""

    cmd: ClassVar[int] = CMD_SET_RESP
    __slots__ = ("pid", "ok")
    __match_args__ = ("pid", "ok")
    pid: int
    ok: bool

    def __init__(self, pid: int, ok: bool) -> None:
        _check_u16("pid", pid)
        if not isinstance(ok, bool):
            raise ParamError(f"ok must be a bool, got {ok!r}")
        _set(self, "pid", pid)
        _set(self, "ok", ok)

    def to_info(self) -> bytes:
        return _pid_bytes(self.pid) + bytes((1, ACK_OK if self.ok else ACK_FAILED))

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        pid, body = _plen_body(info, "SET response")
        if len(body) != 1 or body[0] not in (ACK_OK, ACK_FAILED):
            raise ParamError(f"SET response: ack must be 00 or 0c, got {body.hex()}")
        return cls(pid, body[0] == ACK_OK)


class Event(Message):
    """Meter -> gateway EVENT (C2): the event bytes, opaque here."""

    cmd: ClassVar[int] = CMD_EVENT
    __slots__ = ("data",)
    __match_args__ = ("data",)
    data: bytes

    def __init__(self, data: bytes) -> None:
        _check_bytes("data", data)
        _set(self, "data", data)

    def to_info(self) -> bytes:
        return self.data

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        return cls(bytes(info))


_EVENT_ACK_INFO: Final = b"\x01\x00"


class EventAck(Message):
    """Gateway -> meter acknowledgement of an EVENT: info ``01 00``, sent with cmd BF."""

    cmd: ClassVar[int] = CMD_SERIAL_NET
    __slots__ = ()

    def to_info(self) -> bytes:
        return _EVENT_ACK_INFO

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        if info != _EVENT_ACK_INFO:
            raise ParamError(f"EVENT ack: want info 01 00, got {bytes(info).hex(' ')}")
        return cls()


class MeterGet(Message):
    """Gateway -> meter GET (C0): info ``pid``."""

    cmd: ClassVar[int] = CMD_GET
    __slots__ = ("pid",)
    __match_args__ = ("pid",)
    pid: int

    def __init__(self, pid: int) -> None:
        _check_u16("pid", pid)
        _set(self, "pid", pid)

    def to_info(self) -> bytes:
        return _pid_bytes(self.pid)

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        if len(info) != 2:
            raise ParamError(f"meter GET: info must be 2 bytes, got {len(info)}")
        return cls(_pid(info, "meter GET"))


class MeterSet(Message):
    """Gateway -> meter SET (C1): info ``pid`` then the value bytes (e.g. ``11 05``)."""

    cmd: ClassVar[int] = CMD_SET
    __slots__ = ("pid", "data")
    __match_args__ = ("pid", "data")
    pid: int
    data: bytes

    def __init__(self, pid: int, data: bytes) -> None:
        _check_u16("pid", pid)
        _check_bytes("data", data)
        _set(self, "pid", pid)
        _set(self, "data", data)

    @classmethod
    def of(cls, pid: int, value: Value) -> MeterSet:
        """SET ``pid`` to a typed value (``tag [len] value``)."""
        return cls(pid, value.to_bytes())

    def to_info(self) -> bytes:
        return _pid_bytes(self.pid) + self.data

    @classmethod
    def from_info(cls, info: bytes) -> Self:
        return cls(_pid(info, "meter SET"), bytes(info[2:]))


class MeterGetResponse(_PlenData):
    """Meter -> gateway answer (C4) to the gateway's GET or SET: ``pid plen data``."""

    __slots__ = ()
    what: ClassVar[str] = "meter GET response"


# --- parsing whole frames ---------------------------------------------------------------

FromMeter = GetRequest | SetRequest | Event | MeterGetResponse | SetResponse | GetError
FromGateway = (
    MeterGet | MeterSet | GetResponse | TypedGetResponse | GetError | SetResponse | EventAck
)


def parse_request(frame: Frame) -> FromMeter:
    """Parse a 0x2200 frame that arrived from the meter, by its cmd.

    C0 GetRequest, C1 SetRequest, C2 Event, C4 MeterGetResponse (the meter's answer to
    the gateway's GET/SET), C5 SetResponse, C8 GetError. Anything else, or info that does
    not fit the layout, raises ``ParamError``.
    """
    cmd, info = frame.cmd, frame.info
    if cmd == CMD_GET:
        return GetRequest.from_info(info)
    if cmd == CMD_SET:
        return SetRequest.from_info(info)
    if cmd == CMD_EVENT:
        return Event.from_info(info)
    if cmd == CMD_GET_RESP:
        return MeterGetResponse.from_info(info)
    if cmd == CMD_SET_RESP:
        return SetResponse.from_info(info)
    if cmd == CMD_GET_ERROR:
        return GetError.from_info(info)
    raise ParamError(f"unexpected cmd 0x{cmd:02X} from the meter on 0x{frame.protocol:04X}")


def parse_gateway(frame: Frame) -> FromGateway:
    """Parse a 0x2200 frame the gateway sent to the meter (for taps and tests).

    A C4 answer is typed when its body is exactly ``rid`` and one valid value, and
    untyped otherwise: the bytes alone cannot always tell (an untyped answer could look
    typed), so this is a best effort.
    """
    cmd, info = frame.cmd, frame.info
    if cmd == CMD_GET:
        return MeterGet.from_info(info)
    if cmd == CMD_SET:
        return MeterSet.from_info(info)
    if cmd == CMD_GET_RESP:
        try:
            return TypedGetResponse.from_info(info)
        except ParamError:
            return GetResponse.from_info(info)
    if cmd == CMD_GET_ERROR:
        return GetError.from_info(info)
    if cmd == CMD_SET_RESP:
        return SetResponse.from_info(info)
    if cmd == CMD_SERIAL_NET:
        return EventAck.from_info(info)
    raise ParamError(f"unexpected cmd 0x{cmd:02X} from the gateway on 0x{frame.protocol:04X}")


# --- builders ---------------------------------------------------------------------------


def reply(request: Frame, message: Message) -> Frame:
    """Frame carrying ``message`` in answer to ``request``, keeping its protocol id."""
    return message.to_frame(request.protocol)


def get_response(request: Frame, pid: int, data: bytes) -> Frame:
    """Untyped GET response (C4) ``pid plen data``, e.g. LQI."""
    return reply(request, GetResponse(pid, data))


def typed_get_response(request: Frame, pid: int, rid: int, value: Value) -> Frame:
    """Typed GET response (C4) ``pid plen rid tag [len] value``."""
    return reply(request, TypedGetResponse(pid, rid, value))


def get_error(request: Frame, pid: int) -> Frame:
    """GET error response (C8) ``pid 01 0C``."""
    return reply(request, GetError(pid))


def set_response(request: Frame, pid: int, ok: bool) -> Frame:
    """SET response (C5) ``pid 01 00|0C``."""
    return reply(request, SetResponse(pid, ok))


def event_ack(request: Frame) -> Frame:
    """Acknowledgement of an EVENT: cmd BF, info ``01 00``."""
    return reply(request, EventAck())


def meter_get(pid: int) -> Frame:
    """The gateway's GET toward the meter: 0x2200 C0 ``pid``."""
    return MeterGet(pid).to_frame()


def meter_set(pid: int, data: bytes | Value) -> Frame:
    """The gateway's SET toward the meter: 0x2200 C1 ``pid`` then the value bytes."""
    if isinstance(data, Value):
        return MeterSet.of(pid, data).to_frame()
    return MeterSet(pid, data).to_frame()
