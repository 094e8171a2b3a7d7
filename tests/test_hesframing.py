"""The pieces behind TCP_SERVER.framing and TCP_SERVER.spool.policy, without processes:
the framing helper, the APDU kinds, the spool's discard and the config keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.config import ConfigError, validate
from common.dlms import decode_first, is_whole_response, kind_of
from common.dlms.errors import TrailingBytes, Truncated
from common.dlms.kinds import PUSH_TAGS, RESPONSE_TAGS
from common.dlms.wrapper import BadWrapperLength, BadWrapperVersion
from common.spool import Spool
from services.client import Target
from services.hesframing import HesFraming
from tests.conftest import base_config

# APDUs used below (built by hand from the Green Book layouts).
GET_RESPONSE = bytes.fromhex("c401c100060001e240")  # get-response normal, dlu 123456
GET_REQUEST = bytes.fromhex("c001c100030100010800ff0200")
NOTIFICATION = bytes.fromhex("0f0000000300020209060100010800ff06000003e8")
EVENT = bytes.fromhex("c200000100000a0000ff02110a")  # event-notification-request
EXCEPTION = bytes.fromhex("d80102")
AARE = bytes.fromhex(
    "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000501f01f40007"
)
RLRE = bytes.fromhex("6303800100")


def test_raw_framing_passes_bytes_through():
    f = HesFraming()
    assert f.encode(b"\x01\x02") == b"\x01\x02" and f.max_payload is None
    assert f.fits(b"x" * 100_000)
    d = f.decoder()
    assert d.feed(b"abc") == [b"abc"] and d.feed(b"") == []


def test_wrapper_framing_wraps_with_the_configured_wports():
    f = HesFraming.from_config({"framing": "wrapper", "wrapper": {"source_wport": 1}})
    assert (f.source, f.destination) == (1, 16)
    f = HesFraming("wrapper", 0x0102, 0x0304)
    assert f.encode(GET_RESPONSE) == bytes.fromhex("0001 0102 0304 0009") + GET_RESPONSE
    assert f.fits(b"x" * 0xFFFF) and not f.fits(b"x" * 0x10000) and not f.fits(b"")
    assert str(f) == "wrapper(src=258,dst=772)"


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.data())
def test_wrapper_decoder_gives_each_apdu_whatever_the_reads(apdus, data):
    f = HesFraming("wrapper", 16, 1)
    stream = b"".join(f.encode(a) for a in apdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    d = f.decoder()
    out: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out.extend(d.feed(stream[a:b]))
    assert out == apdus and d.pending == 0


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (bytes.fromhex("0002 0010 0001 0005"), BadWrapperVersion),
        (bytes.fromhex("0001 0010 0001 0000"), BadWrapperLength),
        (b"HTTP/1.1", BadWrapperVersion),
    ],
)
def test_wrapper_decoder_bad_header_gives_what_came_before_then_stops(header, error):
    f = HesFraming("wrapper")
    d = f.decoder()
    assert d.feed(f.encode(b"\xc0\x01")[:5]) == [] and d.pending == 5
    assert d.feed(f.encode(b"\xc0\x01")[5:] + f.encode(b"\x0f") + header + b"12345") == [
        b"\xc0\x01",
        b"\x0f",
    ]
    assert isinstance(d.error, error) and d.pending == 0
    assert d.feed(f.encode(b"\xc0")) == [] and isinstance(d.error, error)
    assert f"{d.error}"


def test_apdu_kinds_from_the_first_octet():
    for apdu in (GET_RESPONSE, EXCEPTION, AARE, RLRE):
        assert kind_of(apdu) == "response" and is_whole_response(apdu)
    for apdu in (NOTIFICATION, EVENT):
        assert kind_of(apdu) == "push" and not is_whole_response(apdu)
    assert kind_of(GET_REQUEST) == "other" and kind_of(b"") == "other"
    # A response tag but not one whole APDU: the start of a longer one, or more.
    assert not is_whole_response(GET_RESPONSE[:-1])
    assert not is_whole_response(GET_RESPONSE + b"\x00")
    assert not RESPONSE_TAGS & PUSH_TAGS


def test_decode_first_splits_a_joined_stream():
    stream = NOTIFICATION + GET_RESPONSE + AARE + EXCEPTION
    seen = []
    while stream:
        apdu, n = decode_first(stream)
        seen.append(apdu.name)
        stream = stream[n:]
    assert seen == ["data-notification", "get-response", "aare", "exception-response"]
    with pytest.raises(Truncated):
        decode_first(AARE[:-3])
    with pytest.raises(TrailingBytes):
        from common.dlms import decode

        decode(NOTIFICATION + EXCEPTION)


def test_spool_discard_keeps_the_rest_in_order(tmp_path):
    spool = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=3600)
    items = [NOTIFICATION, GET_RESPONSE, GET_RESPONSE[:5], EVENT, AARE, b"\xc4", EXCEPTION]
    spool.append(items[2:])
    spool.push_front(items[:2])  # ids below the first ones
    asked: list[bytes] = []

    def confirm(data: bytes) -> bool:
        asked.append(data)
        return is_whole_response(data)

    n, nbytes = spool.discard(lambda first, _size: first in RESPONSE_TAGS, confirm)
    dropped = [GET_RESPONSE, AARE, EXCEPTION]
    assert (n, nbytes) == (3, sum(map(len, dropped)))
    # Only the payloads whose tag says response were read whole.
    assert sorted(asked) == sorted([GET_RESPONSE, GET_RESPONSE[:5], AARE, b"\xc4", EXCEPTION])
    left = [d for _, d in spool.peek(100)]
    assert left == [NOTIFICATION, GET_RESPONSE[:5], EVENT, b"\xc4"]
    assert (spool.count, spool.nbytes) == (4, sum(map(len, left)))
    assert spool.discard(lambda _f, size: size > 1000) == (0, 0)
    spool.close()
    again = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=3600)
    assert [d for _, d in again.peek(100)] == left
    again.close()


def test_config_keys_defaults_and_bad_values(tmp_path):
    cfg = validate(base_config(tmp_path))
    tcp = cfg["TCP_SERVER"]
    assert tcp["framing"] == "raw" and tcp["spool"]["policy"] == "all"
    assert tcp["wrapper"] == {"source_wport": 1, "destination_wport": 16}
    for bad, key in (
        ({"framing": "hdlc"}, "TCP_SERVER.framing"),
        ({"wrapper": {"source_wport": 70000}}, "TCP_SERVER.wrapper.source_wport"),
        ({"wrapper": {"src": 1}}, "TCP_SERVER.wrapper"),
        ({"spool": {"policy": "responses"}}, "TCP_SERVER.spool.policy"),
    ):
        with pytest.raises(ConfigError) as info:
            validate(base_config(tmp_path, TCP_SERVER=bad))
        assert key in str(info.value), info.value


def test_registration_too_long_for_the_wrapper_is_a_config_error(tmp_path):
    reg = {"payload": "00" * 70000, "format": "hex"}
    Target.from_config(validate(base_config(tmp_path, TCP_SERVER={"registration": reg})))
    cfg = validate(base_config(tmp_path, TCP_SERVER={"registration": reg, "framing": "wrapper"}))
    with pytest.raises(ConfigError, match="TCP_SERVER.registration.payload: 70000 bytes"):
        Target.from_config(cfg)
