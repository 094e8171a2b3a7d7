"""0x2200 parameter layouts: shared vectors, round trips, malformed info."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import params
from common.params import (
    PARAM_NAMES,
    PID_LQI,
    TAG_CHAR,
    TAG_DATETIME,
    TAG_INT8U,
    TAG_INT16U,
    TAG_INT32U,
    TAG_STR,
    Event,
    EventAck,
    GetError,
    GetRequest,
    GetResponse,
    Message,
    MeterGet,
    MeterGetResponse,
    MeterSet,
    ParamError,
    SetRequest,
    SetResponse,
    TypedGetResponse,
    Value,
    parse_gateway,
    parse_request,
)
from common.rfc1662 import (
    CMD_ACTION,
    CMD_GET,
    CMD_GET_RESP,
    CMD_SERIAL_NET,
    CMD_SET,
    PROTO_PARAMS,
    PROTO_TRANSPARENT,
    Frame,
    decode,
    encode,
)

FAST = settings(max_examples=200, deadline=None)


def shared_path() -> Path:
    """The shared/ directory (see tests.conftest.shared_dir)."""
    from tests.conftest import shared_dir

    return shared_dir()


@cache
def param_vectors() -> dict[str, dict[str, Any]]:
    with open(shared_path() / "vectors" / "frames.json", encoding="utf-8") as f:
        frames = json.load(f)["frames"]
    return {v["name"]: v for v in frames if v["protocol"] == PROTO_PARAMS}


# What each 0x2200 example in frames.json means, by its name.
EXPECTED: dict[str, Message] = {
    "module->meter GET param 0x2801": MeterGet(0x2801),
    "module->meter SET param 0x2801 INT8U 5": MeterSet.of(0x2801, Value.u8(5)),
    "meter->module GET LQI 0x8003": GetRequest(PID_LQI),
    "module reply GET_RESP LQI=25 (untyped)": GetResponse(PID_LQI, bytes([25])),
    "module reply GET error for 0x8003": GetError(PID_LQI),
    "meter->module GET 0x9001 request id 0x0102": GetRequest(0x9001, 0x0102),
    "module reply GET_RESP STR 'SN123'": TypedGetResponse(0x9001, 0x0102, Value.octets(b"SN123")),
    "module reply GET_RESP INT8U 7": TypedGetResponse(0x9001, 0x0102, Value.u8(7)),
    "meter->module SET 0x9001 STR 'hello' request id 7": SetRequest(
        0x9001, 7, Value.octets(b"hello")
    ),
    "module reply SET_RESP success": SetResponse(0x9001, True),
    "meter->module SET 0x9002 INT16U 1234 request id 8": SetRequest(0x9002, 8, Value.u16(1234)),
    "module reply SET_RESP failed": SetResponse(0x9002, False),
    "meter->module EVENT 01 02": Event(b"\x01\x02"),
    "module ack of EVENT": EventAck(),
}


def test_every_param_vector_is_covered() -> None:
    assert set(param_vectors()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_param_vector_parses_and_rebuilds(name: str) -> None:
    v = param_vectors()[name]
    raw = bytes.fromhex(v["raw"])
    frame = decode(raw)
    parse = parse_request if name.startswith("meter->") else parse_gateway
    msg = parse(frame)
    assert msg == EXPECTED[name]
    assert msg.cmd == frame.cmd
    assert type(msg).from_info(frame.info) == msg
    assert msg.to_info() == frame.info
    assert encode(msg.to_frame()) == raw


def _raw(name: str) -> bytes:
    return bytes.fromhex(param_vectors()[name]["raw"])


def _req(name: str) -> Frame:
    return decode(_raw(name))


def test_reply_builders_match_vectors() -> None:
    lqi = _req("meter->module GET LQI 0x8003")
    assert encode(params.get_response(lqi, PID_LQI, b"\x19")) == _raw(
        "module reply GET_RESP LQI=25 (untyped)"
    )
    assert encode(params.get_error(lqi, PID_LQI)) == _raw("module reply GET error for 0x8003")
    typed = _req("meter->module GET 0x9001 request id 0x0102")
    assert encode(params.typed_get_response(typed, 0x9001, 0x0102, Value.octets(b"SN123"))) == (
        _raw("module reply GET_RESP STR 'SN123'")
    )
    set_req = _req("meter->module SET 0x9001 STR 'hello' request id 7")
    assert encode(params.set_response(set_req, 0x9001, True)) == _raw(
        "module reply SET_RESP success"
    )
    assert encode(params.set_response(set_req, 0x9002, False)) == _raw(
        "module reply SET_RESP failed"
    )
    event = _req("meter->module EVENT 01 02")
    assert encode(params.event_ack(event)) == _raw("module ack of EVENT")
    assert encode(params.meter_get(0x2801)) == _raw("module->meter GET param 0x2801")
    assert encode(params.meter_set(0x2801, Value.u8(5))) == _raw(
        "module->meter SET param 0x2801 INT8U 5"
    )
    assert params.meter_set(0x2801, b"\x11\x05") == params.meter_set(0x2801, Value.u8(5))


def test_reply_keeps_request_protocol() -> None:
    req = Frame(PROTO_TRANSPARENT, CMD_GET, b"\x03\x80")
    assert params.get_error(req, PID_LQI).protocol == PROTO_TRANSPARENT
    assert params.event_ack(req).protocol == PROTO_TRANSPARENT
    assert params.event_ack(req).cmd == CMD_SERIAL_NET
    assert params.reply(req, SetResponse(1, True)).protocol == PROTO_TRANSPARENT


def test_meter_answer_to_gateway_get() -> None:
    # The meter answers the gateway's GET/SET with C4 "pid plen data".
    f = Frame(PROTO_PARAMS, CMD_GET_RESP, b"\x01\x28\x03abc")
    assert parse_request(f) == MeterGetResponse(0x2801, b"abc")
    assert MeterGetResponse(0x2801, b"abc").to_info() == f.info


# --- values -----------------------------------------------------------------------------


def test_value_encodings() -> None:
    assert Value.char("name").to_bytes() == b"\x0a\x04name"
    assert Value.octets(b"\x00\xff").to_bytes() == b"\x09\x02\x00\xff"
    assert Value.u8(5).to_bytes() == b"\x11\x05"
    assert Value.u16(1234).to_bytes() == b"\x12\x04\xd2"
    assert Value.u32(0x01020304).to_bytes() == b"\x06\x01\x02\x03\x04"
    dt = bytes(range(12))
    assert Value.datetime(dt).to_bytes() == b"\x19" + dt
    assert Value.parse(b"\x12\x04\xd2rest") == (Value(TAG_INT16U, 1234), b"rest")
    assert Value.char("SN1").text == "SN1" and Value.u8(7).text == "7"


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        (TAG_INT8U, 256),
        (TAG_INT8U, -1),
        (TAG_INT16U, 0x10000),
        (TAG_INT32U, 1 << 32),
        (TAG_INT8U, True),
        (TAG_INT8U, b"\x01"),
        (TAG_STR, 5),
        (TAG_STR, bytes(256)),
        (TAG_CHAR, "text"),
        (TAG_DATETIME, bytes(11)),
        (0x55, b""),
    ],
)
def test_value_rejects_bad_fields(tag: int, value: Any) -> None:
    with pytest.raises(ParamError):
        Value(tag, value)


def test_value_char_must_be_ascii() -> None:
    with pytest.raises(ParamError, match="ASCII"):
        Value.char("näme")


@pytest.mark.parametrize(
    ("buf", "text"),
    [
        (b"", "no tag"),
        (b"\x11", "needs 1"),
        (b"\x12\x01", "needs 2"),
        (b"\x06\x01\x02\x03", "needs 4"),
        (b"\x19" + bytes(11), "12 bytes"),
        (b"\x09", "length byte"),
        (b"\x0a\x05abc", "says 5"),
        (b"\x42\x00", "unknown value tag 0x42"),
    ],
)
def test_value_parse_errors(buf: bytes, text: str) -> None:
    with pytest.raises(ParamError, match=text):
        Value.parse(buf)


values_st = st.one_of(
    st.builds(Value.u8, st.integers(0, 0xFF)),
    st.builds(Value.u16, st.integers(0, 0xFFFF)),
    st.builds(Value.u32, st.integers(0, 0xFFFFFFFF)),
    st.builds(Value.octets, st.binary(max_size=200)),
    st.builds(
        Value.char, st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
    ),
    st.builds(Value.datetime, st.binary(min_size=12, max_size=12)),
)


@FAST
@given(values_st, st.binary(max_size=8))
def test_value_round_trip(value: Value, rest: bytes) -> None:
    assert Value.parse(value.to_bytes() + rest) == (value, rest)


# --- message round trips ----------------------------------------------------------------

pid_st = st.integers(0, 0xFFFF)
rid_st = st.integers(0, 0xFFFF)
small_values_st = values_st.filter(lambda v: len(v.to_bytes()) <= 253)

from_meter_st: st.SearchStrategy[Message] = st.one_of(
    st.builds(GetRequest, pid_st, st.none() | rid_st),
    st.builds(SetRequest, pid_st, rid_st, small_values_st),
    st.builds(Event, st.binary(max_size=64)),
    st.builds(MeterGetResponse, pid_st, st.binary(max_size=255)),
    st.builds(SetResponse, pid_st, st.booleans()),
    st.builds(GetError, pid_st),
)
from_gateway_st: st.SearchStrategy[Message] = st.one_of(
    st.builds(MeterGet, pid_st),
    st.builds(MeterSet, pid_st, st.binary(max_size=64)),
    st.builds(TypedGetResponse, pid_st, rid_st, small_values_st),
    st.builds(GetError, pid_st),
    st.builds(SetResponse, pid_st, st.booleans()),
    st.just(EventAck()),
)


@FAST
@given(from_meter_st)
def test_from_meter_round_trip(msg: Message) -> None:
    frame = msg.to_frame()
    assert parse_request(decode(encode(frame))) == msg
    assert type(msg).from_info(msg.to_info()) == msg


@FAST
@given(from_gateway_st)
def test_from_gateway_round_trip(msg: Message) -> None:
    assert parse_gateway(decode(encode(msg.to_frame()))) == msg
    assert type(msg).from_info(msg.to_info()) == msg


@FAST
@given(pid_st, st.binary(max_size=255))
def test_untyped_get_response_round_trip(pid: int, data: bytes) -> None:
    msg = GetResponse(pid, data)
    assert GetResponse.from_info(msg.to_info()) == msg
    # The tap's best-effort parse gives back the same bytes either way.
    assert parse_gateway(msg.to_frame()).to_info() == msg.to_info()


@FAST
@given(st.integers(0, 0xFF), st.binary(max_size=40))
def test_parse_any_info_gives_message_or_param_error(cmd: int, info: bytes) -> None:
    frame = Frame(PROTO_PARAMS, cmd, info)
    for parse in (parse_request, parse_gateway):
        try:
            msg = parse(frame)
        except ParamError:
            continue
        assert msg.to_info() == info


# --- malformed info ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "info", "text"),
    [
        (CMD_GET, b"", "2 or 4 bytes"),
        (CMD_GET, b"\x03", "2 or 4 bytes"),
        (CMD_GET, b"\x03\x80\x01", "2 or 4 bytes"),
        (CMD_SET, b"\x01\x90", "plen byte missing"),
        (CMD_SET, b"\x01\x90\x09\x00\x07\x09\x05hell", "plen says 9"),
        (CMD_SET, b"\x01\x90\x01\x00", "request id missing"),
        (CMD_SET, b"\x01\x90\x02\x00\x07", "no tag"),
        (CMD_SET, b"\x01\x90\x05\x00\x07\x11\x05\x00", "1 bytes after the value"),
        (CMD_SET, b"\x01\x90\x04\x00\x07\x33\x05", "unknown value tag"),
        (CMD_SET, b"\x01\x90\x05\x00\x07\x09\x05h", "says 5"),
        (0xC5, b"\x01\x90\x01\x05", "ack must be 00 or 0c"),
        (0xC5, b"\x01\x90\x02\x00\x00", "ack must be 00 or 0c"),
        (0xC5, b"\x01", "too short for a pid"),
        (0xC8, b"\x03\x80\x01\x00", "want code 0c"),
        (CMD_GET_RESP, b"\x03\x80\x02\x19", "plen says 2"),
        (CMD_ACTION, b"", "unexpected cmd 0xC3"),
        (CMD_SERIAL_NET, b"\x01\x00", "unexpected cmd 0xBF"),
    ],
)
def test_parse_request_malformed(cmd: int, info: bytes, text: str) -> None:
    with pytest.raises(ParamError, match=text):
        parse_request(Frame(PROTO_PARAMS, cmd, info))


@pytest.mark.parametrize(
    ("cmd", "info"),
    [
        (CMD_GET, b"\x01\x28\x00\x00"),
        (CMD_SET, b"\x01"),
        (CMD_SERIAL_NET, b"\x01\x01"),
        (CMD_GET_RESP, b"\x03\x80\x05\x19"),
        (CMD_ACTION, b""),
    ],
)
def test_parse_gateway_malformed(cmd: int, info: bytes) -> None:
    with pytest.raises(ParamError):
        parse_gateway(Frame(PROTO_PARAMS, cmd, info))


@pytest.mark.parametrize(
    "build",
    [
        lambda: GetRequest(-1),
        lambda: GetRequest(0x10000),
        lambda: GetRequest(1, 0x10000),
        lambda: GetResponse(1, bytes(256)),
        lambda: GetResponse(1, "x"),
        lambda: SetResponse(1, 1),
        lambda: SetRequest(1, 2, b"\x11\x05"),
        lambda: MeterGetResponse(True, b""),
        lambda: Event("x"),
        lambda: MeterSet(1, None),
        lambda: SetRequest(1, 2, Value.octets(bytes(252))),
        lambda: TypedGetResponse(1, 2, Value.char(bytes(255))),
    ],
)
def test_messages_check_fields(build: Any) -> None:
    with pytest.raises(ParamError):
        build()


def test_param_error_is_value_error() -> None:
    assert issubclass(ParamError, ValueError)


def test_param_names() -> None:
    assert PARAM_NAMES[0x8003] == "lqi"
    assert params.param_name(params.PID_METER_SN) == "meter_sn"
    assert params.param_name(0x2861) == "meter_2861"
    assert params.param_name(0x300A) == "fw_transfer_300a"
    assert params.param_name(0x1234) == "pid_1234"
    expected = {0x8002, 0x8003, 0x8005, 0x8007, 0x280F, 0x2860, 0x2861}
    expected |= set(range(0x2801, 0x2808)) | set(range(0x3007, 0x300B))
    assert set(PARAM_NAMES) == expected


def test_tags() -> None:
    assert (TAG_CHAR, TAG_STR, TAG_INT8U, TAG_INT16U, TAG_INT32U, TAG_DATETIME) == (
        0x0A,
        0x09,
        0x11,
        0x12,
        0x06,
        0x19,
    )
    assert CMD_SET == 0xC1


def test_module_imports_only_the_codec() -> None:
    source = Path(params.__file__).read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(
        line.startswith(
            (
                "from __future__",
                "from dataclasses",
                "from typing",
                "from common.rfc",
                "from common.frozen",
            )
        )
        for line in imports
    ), imports
