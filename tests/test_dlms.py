"""DLMS/COSEM APDU codec: published vectors, constructed vectors, typed errors, properties.

Published vectors were captured from real meters or clients and posted publicly. Most were
posted as whole HDLC frames: the test checks the frame's FCS (CRC-16/X.25, the same one
``common.rfc1662.fcs16`` computes) so a typo in the transcription fails loudly, then
decodes the APDU that follows the LLC header (E6 E6 00 / E6 E7 00).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.dlms import (
    LAYOUTS,
    Apdu,
    BitString,
    Blob,
    CompactArray,
    Data,
    Descriptor,
    DlmsError,
    EncodeError,
    Selection,
    Seq,
    TypeDesc,
    decode,
    decode_data,
    describe,
    encode,
    encode_data,
    format_datetime,
)
from common.dlms.errors import BadLength, BadTag, BadValue, TooDeep, TrailingBytes, Truncated
from common.rfc1662 import fcs16

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


def apdu_of_frame(frame: bytes) -> bytes:
    """Check an HDLC frame's FCS and length, return the APDU after its LLC header."""
    fcs = fcs16(frame[1:-3])
    assert (frame[-3], frame[-2]) == (fcs & 0xFF, fcs >> 8), "FCS mismatch: bad transcription"
    assert ((frame[1] & 0x07) << 8 | frame[2]) == len(frame) - 2, "HDLC length field"
    for llc in (b"\xe6\xe6\x00", b"\xe6\xe7\x00"):
        i = frame.find(llc)
        if i > 0:
            return frame[i + 3 : -3]
    raise AssertionError("no LLC header")


# --- published vectors ------------------------------------------------------------------
# Each: source (URL), HDLC frame or bare APDU, and what the decode must show.

PUBLISHED: list[dict[str, Any]] = [
    {
        # Gurux log of a Green Book style LN association, no security:
        # https://gist.github.com/knogi/f3d4853b936164882e5ed653498e7b61
        # (same log: https://pastebin.com/iKKsDimZ)
        "id": "aarq-ln-no-security",
        "frame": "7E A0 2B 03 21 10 FB AF E6 E6 00 60 1D A1 09 06 07 60 85 74 05 08 01 01"
        " BE 10 04 0E 01 00 00 00 06 5F 1F 04 00 00 1E 1D FF FF C5 E4 7E",
        "name": "aarq",
        "describe": "aarq context=LN user-info: initiate-request dlms=6 conformance=0x001E1D"
        " max-pdu=65535",
    },
    {
        # Same log: the meter's AARE, with a long-form length 82 00 29 for 41 octets.
        # https://gist.github.com/knogi/f3d4853b936164882e5ed653498e7b61
        "id": "aare-long-form-length",
        "frame": "7E A0 39 21 03 30 2E D2 E6 E7 00 61 82 00 29 A1 09 06 07 60 85 74 05 08 01 01"
        " A2 03 02 01 00 A3 05 A1 03 02 01 00 BE 10 04 0E 08 00 06 5F 1F 04 00 00 10 1D"
        " 03 EF 00 07 44 36 7E",
        "name": "aare",
        "result": 0,
        "describe": "aare accepted diag=user:0 context=LN user-info: initiate-response dlms=6"
        " conformance=0x00101D max-pdu=1007",
    },
    {
        # Same log: get-request for the association's object list (0.0.40.0.0.255 attr 2).
        # https://gist.github.com/knogi/f3d4853b936164882e5ed653498e7b61
        "id": "get-request-object-list",
        "frame": "7E A0 19 03 21 32 6F D8 E6 E6 00 C0 01 C1 00 0F 00 00 28 00 00 FF 02 00 91 53 7E",
        "name": "get-request",
        "variant": "normal",
        "invoke_id": 1,
        "class_id": 15,
        "obis": "0.0.40.0.0.255",
        "attribute": 2,
        "describe": "get-request normal iid=1 class=15 0.0.40.0.0.255 attr=2",
    },
    {
        # Gurux forum, "DLMS (HDLC) Packet Description needs": logical name attribute 1.
        # https://www.gurux.fi/index.php/node/20546
        "id": "get-request-logical-name",
        "frame": "7E A0 19 03 41 B2 32 39 E6 E6 00 C0 01 C1 00 0F 00 00 28 00 00 FF 01 00 F9 79 7E",
        "name": "get-request",
        "variant": "normal",
        "class_id": 15,
        "obis": "0.0.40.0.0.255",
        "attribute": 1,
    },
    {
        # Gurux forum, "what these three bytes represent": set-request on a single action
        # schedule (class 22) execution_time, array of {time 16:10:39, date 2017-04-06}.
        # https://www.gurux.fi/comment/10430
        "id": "set-request-single-action-schedule",
        "frame": "7E A0 2A 03 61 54 06 F1 E6 E6 00 C1 01 C1 00 16 00 00 0F 00 00 FF 04 00 01 01"
        " 02 02 09 04 10 0A 27 FF 09 05 07 E1 04 06 FF 56 D9 7E",
        "name": "set-request",
        "variant": "normal",
        "invoke_id": 1,
        "class_id": 22,
        "obis": "0.0.15.0.0.255",
        "attribute": 4,
        "value": Data(
            "array",
            (
                Data(
                    "structure",
                    (Data("octet-string", h("100A27FF")), Data("octet-string", h("07E10406FF"))),
                ),
            ),
        ),
    },
    {
        # Gurux Python client log (pastebin), SN referencing with low-level security,
        # password "00000000".  https://pastebin.com/XY1PSdHw
        "id": "aarq-sn-lls",
        "frame": "7E A0 44 03 41 10 B3 E1 E6 E6 00 60 36 A1 09 06 07 60 85 74 05 08 01 02 8A 02"
        " 07 80 8B 07 60 85 74 05 08 02 01 AC 0A 80 08 30 30 30 30 30 30 30 30 BE 10 04 0E"
        " 01 00 00 00 06 5F 1F 04 00 1C 03 20 FF FF 0B 87 7E",
        "name": "aarq",
        "auth": b"00000000",
        "describe": "aarq context=SN mechanism=low auth=8 octets user-info: initiate-request"
        " dlms=6 conformance=0x1C0320 max-pdu=65535",
    },
    {
        # Gurux forum "Decoding of AARQ packet byte by byte": HLS association whose
        # user-information is a glo-initiate-request (ciphered, SC 0x20, IC 1).
        # https://gurux.fi/node/24607
        "id": "aarq-glo-initiate",
        "frame": "7E A0 5F 03 41 10 07 E2 E6 E6 00 60 51 A1 09 06 07 60 85 74 05 08 01 03 A6 0A"
        " 04 08 48 50 4C 37 32 39 39 38 8A 02 07 80 8B 07 60 85 74 05 08 02 01 AC 12 80 10"
        " 31 31 31 31 31 31 31 31 31 31 31 31 31 31 31 31 BE 17 04 15 21 13 20 00 00 00 01"
        " E9 C5 31 32 60 76 62 DC 7A 94 A6 14 39 BF BE B5 7E",
        "name": "aarq",
        "calling_ap_title": b"HPL72998",
        "user": ("glo-initiate-request", 0x20, 1),
    },
    {
        # Same thread: the AARE, responding AP title and a glo-initiate-response.
        # https://gurux.fi/node/24607
        "id": "aare-glo-initiate",
        "frame": "7E A0 4A 41 03 30 EB A8 E6 E7 00 61 3C A1 09 06 07 60 85 74 05 08 01 03 A2 03"
        " 02 01 00 A3 05 A1 03 02 01 00 A4 0A 04 08 48 50 4C 00 00 10 F4 47 BE 17 04 15 28"
        " 13 20 00 00 00 00 83 07 05 F0 35 94 EE E1 A9 6C 27 CC A0 51 76 5F 7E",
        "name": "aare",
        "result": 0,
        "responding_ap_title": h("48504C000010F447"),
        "user": ("glo-initiate-response", 0x20, 0),
    },
    {
        # The glo-initiate-request of the AARQ above, as an APDU of its own.
        # https://gurux.fi/node/24607
        "id": "glo-initiate-request",
        "apdu": "21 13 20 00 00 00 01 E9 C5 31 32 60 76 62 DC 7A 94 A6 14 39 BF",
        "name": "glo-initiate-request",
        "security": (0x20, 1, None),
        "describe": "glo-initiate-request sc=0x20 ic=1 14 octets",
    },
    {
        # Gurux log with its XML: HIGH_SECURITY_SHA256, CallingAPTitle 0000000000009800,
        # CipheredInitiateRequest 211F3100 0F0026... (SC 0x31 = authenticated+encrypted,
        # suite 1).  https://gist.github.com/knogi/d64dec10f26930620952d6247d7521bd
        "id": "aarq-hls-sha256",
        "frame": "7E A0 6C 02 23 0B 10 CE 80 E6 E6 00 60 5D A1 09 06 07 60 85 74 05 08 01 03 A6"
        " 0A 04 08 00 00 00 00 00 00 98 00 8A 02 07 80 8B 07 60 85 74 05 08 02 06 AC 12 80"
        " 10 A6 0F E2 14 E2 B0 91 E1 54 4E 94 DB D9 3C F5 F2 BE 23 04 21 21 1F 31 00 0F 00"
        " 26 16 C7 46 7D 42 5A 79 F9 D6 48 1D 82 A6 7C C6 A0 95 8D 94 90 47 03 5B DF 66 DB"
        " BD 3D 7E",
        "name": "aarq",
        "mechanism": "2.16.756.5.8.2.6",
        "calling_ap_title": h("0000000000009800"),
        "auth": h("A60FE214E2B091E1544E94DBD93CF5F2"),
        "user": ("glo-initiate-request", 0x31, 0x000F0026),
    },
    {
        # amsreader bug report: Aidon push, data-notification with no date-time, one
        # structure {1.0.1.7.0.255, 368, {scaler 0, unit W (27)}}.
        # https://github.com/UtilitechAS/amsreader-firmware/issues/988
        "id": "data-notification-aidon-list1",
        "frame": "7E A0 2A 41 08 83 13 04 13 E6 E7 00 0F 40 00 00 00 00 01 01 02 03 09 06 01 00"
        " 01 07 00 FF 06 00 00 01 70 02 02 0F 00 16 1B 5D B7 7E",
        "name": "data-notification",
        "body": Data(
            "array",
            (
                Data(
                    "structure",
                    (
                        Data("octet-string", h("0100010700FF")),
                        Data("double-long-unsigned", 368),
                        Data("structure", (Data("integer", 0), Data("enum", 27))),
                    ),
                ),
            ),
        ),
    },
    {
        # amshan-homeassistant bug report: Aidon 6540 list with 12 elements, the
        # maintainer's breakdown names 1.1.0.2.129.255 = AIDON_V0001 and the meter id.
        # https://github.com/toreamun/amshan-homeassistant/issues/47
        "id": "data-notification-aidon-list2",
        "frame": "7ea10b41088313fa7ce6e7000f4000000000010c020209060101000281ff0a0b4149444f4e5f56"
        "30303031020209060000600100ff0a1037333539393932393032303831323036020209060000600107"
        "ff0a0436353430020309060100010700ff060000001102020f00161b020309060100020700ff060000"
        "000002020f00161b020309060100030700ff060000000002020f00161d020309060100040700ff0600"
        "00000f02020f00161d0203090601001f0700ff10000002020fff1621020309060100470700ff100000"
        "02020fff1621020309060100200700ff12094402020fff1623020309060100340700ff12094102020f"
        "ff1623020309060100480700ff12094b02020fff16233cda7e",
        "name": "data-notification",
        "first": ("visible-string", "AIDON_V0001"),
        "second": ("visible-string", "7359992902081206"),
        "count": 12,
    },
    {
        # README of notima/DLMS-COSEM (repository notima/DLMS-COSEM, path README.md):
        # "what a data frame from an AIDON smart meter might look like", 9 elements.
        "id": "data-notification-aidon-readme",
        "frame": "7e a0d2 41 0883 13 82d6 e6e700 0f 40000000 00 0109 0202 0906 0101000281ff"
        " 0a0b 4149444f4e5f5630303031 0202 0906 0000600100ff 0a10"
        " 37333539393932383930393431373432 0202 0906 0000600107ff 0a04 36353135 0203 0906"
        " 0100010700ff 06 00000552 0202 0f00 161b 0203 0906 0100020700ff 06 00000000 0202"
        " 0f00 161b 0203 0906 0100030700ff 06 000003e4 0202 0f00 161d 0203 0906"
        " 0100040700ff 06 00000000 0202 0f00 161d 0203 0906 01001f0700ff 10 005d 0202 0fff"
        " 1621 0203 0906 0100200700ff 12 09c4 0202 0fff 1623 e0c4 7e",
        "name": "data-notification",
        "first": ("visible-string", "AIDON_V0001"),
        "count": 9,
    },
    {
        # dlms-cosem bug report "HDLC frame could not be parsed when switching clients":
        # the meter's RLRE, reason normal, with an initiate-response (max PDU 239).
        # https://github.com/u9n/dlms-cosem/issues/95
        "id": "rlre-with-initiate-response",
        "frame": "7e a0 26 03 00 02 2c 29 52 00 d3 e6 e7 00 63 15 80 01 00 be 10 04 0e 08 00 06"
        " 5f 1f 04 00 00 52 1d 00 ef 00 07 df 05 7e",
        "name": "rlre",
        "reason": 0,
        "describe": "rlre reason=0 user-info: initiate-response dlms=6 conformance=0x00521D"
        " max-pdu=239",
    },
]

# Published captures that are *not* valid APDUs: the codec must say so with a DlmsError.
PUBLISHED_MALFORMED: list[dict[str, Any]] = [
    {
        # dlms-cosem "Parsing problem GetResponseWithList": the second result lacks its
        # Get-Data-Result CHOICE octet (the reporter blamed the meter's firmware).
        # https://github.com/u9n/dlms-cosem/issues/51
        "id": "get-response-with-list-missing-choice",
        "apdu": "c4 03 c1 02 00 00 02 05 12 02 d0 12 0c a8 11 18 11 1f 0f c0",
        "error": BadValue,
    },
    {
        # Gurux Python log: an SN meter's AARE whose user-information OCTET STRING says
        # 13 octets but the initiate-response takes 14 (its vaa-name's last octet is
        # left outside the AARE). https://pastebin.com/XY1PSdHw
        "id": "aare-sn-short-user-information",
        "frame": "7E A0 37 41 03 30 21 79 E6 E7 00 61 28 A1 09 06 07 60 85 74 05 08 01 02 A2 03"
        " 02 01 00 A3 05 A1 03 02 01 00 BE 0F 04 0D 08 00 06 5F 1F 04 00 18 02 20 09 60 FA"
        " 00 0A A8 7E",
        "error": Truncated,
    },
]


def _raw(v: dict[str, Any]) -> bytes:
    return apdu_of_frame(h(v["frame"])) if "frame" in v else h(v["apdu"])


@pytest.mark.parametrize("v", PUBLISHED, ids=lambda v: v["id"])
def test_published_vector(v: dict[str, Any]) -> None:
    raw = _raw(v)
    a = decode(raw)
    assert encode(a) == raw
    assert a.name == v["name"]
    for key in ("variant", "invoke_id", "class_id", "obis", "attribute", "result", "reason"):
        if key in v:
            assert getattr(a, key) == v[key], key
    for key in ("calling_ap_title", "responding_ap_title", "mechanism"):
        if key in v:
            assert getattr(a, key) == v[key], key
    if "auth" in v:
        assert a.authentication_value == v["auth"]
    if "describe" in v:
        assert describe(a) == v["describe"]
    if "value" in v:
        assert a.get("value") == v["value"]
    if "body" in v:
        assert a.get("body") == v["body"]
    if "first" in v:
        body = a.get("body").value
        assert len(body) == v["count"]
        first = body[0].value[1]
        assert (first.type, first.value) == v["first"]
        if "second" in v:
            second = body[1].value[1]
            assert (second.type, second.value) == v["second"]
    if "user" in v:
        ui = a.user_information
        assert ui is not None
        assert (ui.name, ui.security_control, ui.invocation_counter) == v["user"]
    if "security" in v:
        assert (a.security_control, a.invocation_counter, a.system_title) == v["security"]


@pytest.mark.parametrize("v", PUBLISHED_MALFORMED, ids=lambda v: v["id"])
def test_published_malformed(v: dict[str, Any]) -> None:
    with pytest.raises(v["error"]):
        decode(_raw(v))


def test_at_least_fifteen_published_vectors() -> None:
    assert len(PUBLISHED) + len(PUBLISHED_MALFORMED) >= 15


# --- constructed vectors ----------------------------------------------------------------
# No published capture was found for these; each is built by hand from the Green Book's
# ASN.1 (COSEM APDUs, A-XDR) and checked field by field.

CONSTRUCTED: list[tuple[str, str, str]] = [
    # (id, hex, describe)
    (
        "get-request-register",
        "C0 01 C1 00 03 01 00 01 08 00 FF 02 00",
        "get-request normal iid=1 class=3 1.0.1.8.0.255 attr=2",
    ),
    (
        "get-response-register",
        "C4 01 C1 00 06 00 01 E2 40",
        "get-response normal iid=1 ok double-long-unsigned 123456",
    ),
    (
        "get-response-denied",
        "C4 01 C1 01 03",
        "get-response normal iid=1 error read-write-denied",
    ),
    (
        "get-request-selective-by-range",
        "C0 01 C1 00 07 01 00 63 01 00 FF 02 01 01 02 04 02 04 12 00 08 09 06 00 00 01 00 00"
        " FF 0F 02 12 00 00 09 0C 07 E7 01 0D 05 15 00 00 00 80 00 00 09 0C 07 E7 01 0E 06"
        " 00 00 00 00 80 00 00 01 00",
        "get-request normal iid=1 class=7 1.0.99.1.0.255 attr=2 sel=1",
    ),
    ("get-request-next", "C0 02 C1 00 00 00 01", "get-request next iid=1 block=1"),
    (
        "get-request-with-list",
        "C0 03 C2 02 00 03 01 00 01 08 00 FF 02 00 00 03 01 00 02 08 00 FF 02 00",
        "get-request with-list iid=2 n=2 class=3 1.0.1.8.0.255 attr=2 ...",
    ),
    (
        "get-response-datablock-first",
        "C4 02 C1 00 00 00 00 01 00 06 01 02 02 02 11 00",
        "get-response with-datablock iid=1 block=1 last=0 6 octets",
    ),
    (
        "get-response-datablock-last",
        "C4 02 C1 01 00 00 00 02 00 02 11 01",
        "get-response with-datablock iid=1 block=2 last=1 2 octets",
    ),
    (
        "get-response-with-list",
        "C4 03 C1 02 00 12 00 E6 01 04",
        "get-response with-list iid=1 n=2 ok long-unsigned 230; error object-undefined",
    ),
    (
        "set-request-clock-time",
        "C1 01 C1 00 08 00 00 01 00 00 FF 02 00 09 0C 07 E5 0C 08 03 0D 0C 0A 00 FF C4 00",
        "set-request normal iid=1 class=8 0.0.1.0.0.255 attr=2"
        " octet-string 2021-12-08 13:12:10 dev=-60",
    ),
    ("set-response-success", "C5 01 C1 00", "set-response normal iid=1 success"),
    ("set-response-datablock", "C5 02 C1 00 00 00 03", "set-response datablock iid=1 block=3"),
    (
        "set-request-first-datablock",
        "C1 02 C1 00 12 00 00 2C 00 00 FF 02 00 00 00 00 00 01 03 AA BB CC",
        "set-request with-first-datablock iid=1 class=18 0.0.44.0.0.255 attr=2",
    ),
    (
        "action-request-remote-disconnect",
        "C3 01 C1 00 46 00 00 60 03 0A FF 01 01 0F 00",
        "action-request normal iid=1 class=70 0.0.96.3.10.255 method=1 integer 0",
    ),
    ("action-response-success", "C7 01 C1 00 00", "action-response normal iid=1 success"),
    (
        "action-response-with-data",
        "C7 01 C1 00 01 00 09 02 AB CD",
        "action-response normal iid=1 success ok octet-string abcd",
    ),
    (
        "exception-response",
        "D8 01 02",
        "exception-response service-not-allowed service-not-supported",
    ),
    (
        "exception-response-invocation-counter",
        "D8 01 06 00 00 00 2A",
        "exception-response service-not-allowed invocation-counter-error counter=42",
    ),
    (
        "confirmed-service-error",
        "0E 01 06 01",
        "confirmed-service-error service=1 error-type=6 error=1",
    ),
    (
        "event-notification",
        "C2 00 00 01 00 00 60 0B 00 FF 02 12 00 2A",
        "event-notification-request class=1 0.0.96.11.0.255 attr=2 long-unsigned 42",
    ),
    (
        "data-notification-with-time",
        "0F 00 00 00 01 0C 07 E5 0C 08 03 0D 0C 0A 00 FF C4 00 06 00 00 00 05",
        "data-notification id=0x00000001 time=2021-12-08 13:12:10 dev=-60 double-long-unsigned 5",
    ),
    (
        "glo-get-request",
        "C8 12 30 00 00 00 01 00 11 22 33 44 55 66 77 88 99 AA BB CC",
        "glo-get-request sc=0x30 ic=1 13 octets",
    ),
    (
        "general-glo-ciphering",
        "DB 08 4D 4D 4D 00 00 00 00 01 0A 30 00 00 00 07 01 02 03 04 05",
        "general-glo-ciphering title=4d4d4d0000000001 sc=0x30 ic=7 5 octets",
    ),
    (
        "general-block-transfer",
        "E0 81 00 01 00 00 03 C4 01 C1",
        "general-block-transfer block=1 ack=0 last=1 window=1 3 octets",
    ),
    (
        "rlrq-normal",
        "62 03 80 01 00",
        "rlrq reason=0",
    ),
    (
        "aare-rejected",
        "61 29 A1 09 06 07 60 85 74 05 08 01 01 A2 03 02 01 01 A3 05 A1 03 02 01 0D BE 10 04"
        " 0E 08 00 06 5F 1F 04 00 00 10 1D 03 EF 00 07",
        "aare rejected-permanent diag=user:13 context=LN user-info: initiate-response dlms=6"
        " conformance=0x00101D max-pdu=1007",
    ),
    (
        "compact-array",
        "C4 01 C1 00 13 01 00 02 12 04 00 01 00 02",
        "get-response normal iid=1 ok compact-array(1)",
    ),
]


@pytest.mark.parametrize("case", CONSTRUCTED, ids=lambda c: c[0])
def test_constructed_vector(case: tuple[str, str, str]) -> None:
    _, text, line = case
    raw = h(text)
    a = decode(raw)
    assert encode(a) == raw
    assert describe(a) == line


def test_issue_examples_exactly() -> None:
    req = decode(h("C0 01 C1 00 03 01 00 01 08 00 FF 02 00"))
    assert (req.name, req.variant, req.invoke_id) == ("get-request", "normal", 1)
    assert (req.class_id, req.obis, req.attribute, req.method) == (3, "1.0.1.8.0.255", 2, None)
    resp = decode(h("C4 01 C1 00 06 00 01 E2 40"))
    assert describe(resp) == "get-response normal iid=1 ok double-long-unsigned 123456"
    assert (resp.class_id, resp.obis, resp.attribute) == (None, None, None)
    act = decode(h("C3 01 C1 00 46 00 00 60 03 0A FF 01 01 0F 00"))
    assert (act.class_id, act.obis, act.method, act.attribute) == (70, "0.0.96.3.10.255", 1, None)
    dn = decode(h("0F 40 00 00 00 00 01 01 02 02 09 06 01 00 01 07 00 FF 06 00 00 01 70"))
    assert dn.invoke_id is None and dn.variant == ""


def test_compact_array_elements() -> None:
    a = decode(h("C4 01 C1 00 13 01 00 02 12 04 00 01 00 02"))
    ca = a.get("result").value
    assert isinstance(ca, CompactArray)
    assert ca.desc == TypeDesc("array", 2, (TypeDesc("long-unsigned"),))
    assert ca.elements == (Data("array", (Data("long-unsigned", 1), Data("long-unsigned", 2))),)


def test_security_header_of_general_glo() -> None:
    a = decode(h("DB 08 4D 4D 4D 00 00 00 00 01 0A 30 00 00 00 07 01 02 03 04 05"))
    assert (a.system_title, a.security_control, a.invocation_counter) == (
        h("4D4D4D0000000001"),
        0x30,
        7,
    )


# --- A-XDR data -------------------------------------------------------------------------

DATA_CASES: list[tuple[str, Data]] = [
    ("00", Data("null-data")),
    ("03 00", Data("boolean", False)),
    ("03 01", Data("boolean", True)),
    ("04 0C AB C0", Data("bit-string", BitString(12, h("ABC0")))),
    ("05 FF FF FF FE", Data("double-long", -2)),
    ("06 00 01 E2 40", Data("double-long-unsigned", 123456)),
    ("09 03 01 02 03", Data("octet-string", h("010203"))),
    ("0A 03 41 42 43", Data("visible-string", "ABC")),
    ("0C 03 E2 82 AC", Data("utf8-string", "\u20ac")),
    ("0D 12", Data("bcd", 0x12)),
    ("0F FF", Data("integer", -1)),
    ("10 80 00", Data("long", -32768)),
    ("11 FF", Data("unsigned", 255)),
    ("12 FF FF", Data("long-unsigned", 65535)),
    ("14 80 00 00 00 00 00 00 00", Data("long64", -(2**63))),
    ("15 FF FF FF FF FF FF FF FF", Data("long64-unsigned", 2**64 - 1)),
    ("16 1B", Data("enum", 27)),
    ("17 3F C0 00 00", Data("float32", 1.5)),
    ("18 40 09 21 FB 54 44 2D 18", Data("float64", math.pi)),
    ("19 07 E5 0C 08 03 0D 0C 0A 00 FF C4 00", Data("date-time", h("07E50C08030D0C0A00FFC400"))),
    ("1A 07 E1 04 06 FF", Data("date", h("07E10406FF"))),
    ("1B 10 0A 27 FF", Data("time", h("100A27FF"))),
    ("FF", Data("dont-care")),
    ("01 00", Data("array", ())),
    ("02 02 11 01 11 02", Data("structure", (Data("unsigned", 1), Data("unsigned", 2)))),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=lambda c: c[1].type)
def test_every_data_type(case: tuple[str, Data]) -> None:
    raw = h(case[0])
    d, pos = decode_data(raw)
    assert pos == len(raw)
    assert d == case[1]
    assert encode_data(d) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "03 FF",  # boolean TRUE as FF
        "09 81 03 01 02 03",  # non-minimal length
        "01 82 00 01 00",  # non-minimal count
        "17 7F 80 00 01",  # signalling NaN
        "18 7F F0 00 00 00 00 00 01",
        "0A 02 FF 80",  # visible-string octets above 0x7F
    ],
)
def test_data_odd_encodings_are_byte_exact(raw: str) -> None:
    b = h(raw)
    assert encode_data(decode_data(b)[0]) == b


def test_date_time_shown_as_date_only_when_valid() -> None:
    assert format_datetime(h("07E50C08030D0C0A00FFC400")) == "2021-12-08 13:12:10 dev=-60"
    assert format_datetime(h("FFFFFFFFFFFFFFFFFF800000")) == "*-*-* *:*:*"
    assert format_datetime(h("07E50D08030D0C0A00FFC400")) is None  # month 13
    assert format_datetime(h("00")) is None
    d = Data("octet-string", h("07E50C08030D0C0A00FFC400"))
    assert str(d) == "octet-string 2021-12-08 13:12:10 dev=-60"
    assert str(Data("octet-string", h("0100010800FF"))) == "octet-string 0100010800ff"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("", Truncated),
        ("06 00 01", Truncated),
        ("07", BadTag),
        ("09 80", BadLength),
        ("09 85 00 00 00 00 01", BadLength),
        ("0C 02 C3 28", BadValue),
        ("01 05 11 01", Truncated),
    ],
)
def test_data_errors(raw: str, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        decode_data(h(raw))


def test_deep_nesting_is_a_typed_error() -> None:
    with pytest.raises(TooDeep):
        decode(h("C4 01 C1 00") + b"\x01\x01" * 500 + b"\x00")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("", Truncated),
        ("C0", Truncated),
        ("C0 09 C1", BadTag),
        ("99", BadTag),
        ("C0 01 C1 00 03 01 00 01 08 00 FF 02 00 00", TrailingBytes),
        ("C0 01 C1 00 03 01 00 01 08 00 FF 02 02", BadValue),
        ("C4 01 C1 00 06 00 01", Truncated),
        ("01 00 00 00 06 5F 1E 04 00 00 1E 1D FF FF", BadValue),
        ("C8 03 30 00 00", BadValue),  # shorter than its security header
        ("60 03 A1 01 05", Truncated),
        ("60 05 A1 03 04 01 00", BadValue),  # context name is not an OID
        ("60 80", BadLength),
    ],
)
def test_apdu_errors(raw: str, error: type[DlmsError]) -> None:
    with pytest.raises(error):
        decode(h(raw))


def test_encode_rejects_bad_values() -> None:
    a = Apdu("get-response", "normal", (0xC1, Data("unsigned", 300)))
    with pytest.raises(EncodeError):
        encode(a)
    with pytest.raises(ValueError):
        Apdu("get-response", "bogus", ())
    with pytest.raises(ValueError):
        Data("no-such-type")


# --- properties -------------------------------------------------------------------------

_SIMPLE = {
    "null-data": st.none(),
    "dont-care": st.none(),
    "boolean": st.booleans(),
    "double-long": st.integers(-(2**31), 2**31 - 1),
    "double-long-unsigned": st.integers(0, 2**32 - 1),
    "octet-string": st.binary(max_size=20),
    "visible-string": st.text(st.characters(max_codepoint=255), max_size=10),
    "utf8-string": st.text(st.characters(exclude_categories=("Cs",)), max_size=10),
    "bcd": st.integers(0, 255),
    "integer": st.integers(-128, 127),
    "long": st.integers(-32768, 32767),
    "unsigned": st.integers(0, 255),
    "long-unsigned": st.integers(0, 65535),
    "long64": st.integers(-(2**63), 2**63 - 1),
    "long64-unsigned": st.integers(0, 2**64 - 1),
    "enum": st.integers(0, 255),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
    "date-time": st.binary(min_size=12, max_size=12),
    "date": st.binary(min_size=5, max_size=5),
    "time": st.binary(min_size=4, max_size=4),
}


@st.composite
def bit_strings(draw: st.DrawFn) -> Data:
    n = draw(st.integers(0, 40))
    data = draw(st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8))
    return Data("bit-string", BitString(n, data), draw(st.sampled_from([0, 0, 2])))


simple_data = st.one_of(
    *[st.builds(Data, st.just(t), s) for t, s in _SIMPLE.items()],
    bit_strings(),
)


def _compound(children: st.SearchStrategy[Data]) -> st.SearchStrategy[Data]:
    return st.builds(
        Data,
        st.sampled_from(["array", "structure"]),
        st.lists(children, max_size=4).map(tuple),
        st.sampled_from([0, 0, 0, 1, 2]),
    )


def _typed(desc: TypeDesc) -> st.SearchStrategy[Data]:
    if desc.type == "array":
        return st.tuples(*[_typed(desc.items[0])] * desc.count).map(lambda t: Data("array", t))
    if desc.type == "structure":
        return st.tuples(*[_typed(i) for i in desc.items]).map(lambda t: Data("structure", t))
    return st.builds(Data, st.just(desc.type), _SIMPLE[desc.type])


_ELEMENT_TYPES = [t for t in _SIMPLE if t not in ("null-data", "dont-care")]


@st.composite
def compact_arrays(draw: st.DrawFn) -> Data:
    simple = st.sampled_from(_ELEMENT_TYPES).map(TypeDesc)
    desc = draw(
        st.one_of(
            simple,
            st.builds(lambda i, n: TypeDesc("array", n, (i,)), simple, st.integers(1, 3)),
            st.lists(simple, min_size=1, max_size=3).map(
                lambda items: TypeDesc("structure", len(items), tuple(items))
            ),
        )
    )
    elements = draw(st.lists(_typed(desc), max_size=4))
    return Data("compact-array", CompactArray(desc, tuple(elements)))


data_values = st.recursive(st.one_of(simple_data, compact_arrays()), _compound, max_leaves=12)


@FAST
@given(data_values)
def test_data_round_trip(d: Data) -> None:
    raw = encode_data(d)
    back, pos = decode_data(raw)
    assert pos == len(raw)
    assert back == d
    assert encode_data(back) == raw


_BLOBS = st.builds(Blob, st.binary(max_size=24), st.sampled_from([0, 0, 1, 2]))
_CIPHER_BLOBS = st.builds(Blob, st.binary(min_size=5, max_size=24))
_DESC = st.builds(
    Descriptor, st.integers(0, 0xFFFF), st.binary(min_size=6, max_size=6), st.integers(0, 255)
)
_DAR = st.integers(0, 255)


def _kind(kind: str, sub: Any, name: str) -> st.SearchStrategy[Any]:
    u8 = st.integers(0, 255)
    if kind == "u8":
        return u8
    if kind == "u16":
        return st.integers(0, 0xFFFF)
    if kind == "u32":
        return st.integers(0, 2**32 - 1)
    if kind == "data":
        return data_values
    if kind == "desc":
        return _DESC
    if kind == "sel":
        return st.none() | st.builds(Selection, u8, data_values)
    if kind == "optdata":
        return st.none() | data_values
    if kind == "result":
        return data_values | _DAR
    if kind == "optresult":
        return st.none() | data_values | _DAR
    if kind == "rawresult":
        return _BLOBS | _DAR
    if kind == "octets":
        return _CIPHER_BLOBS if name == "ciphered-content" else _BLOBS
    if kind == "optoctets":
        return st.none() | _BLOBS
    if kind == "optu8":
        return st.none() | u8
    if kind == "conf":
        return st.integers(0, 0xFFFFFF)
    if kind == "exc":
        return st.tuples(st.integers(0, 5), st.none()) | st.tuples(
            st.just(6), st.integers(0, 2**32 - 1)
        )
    if kind == "keyinfo":
        return st.one_of(
            st.none(),
            st.tuples(st.just(0), u8),
            st.tuples(st.just(1), u8, _BLOBS),
            st.tuples(st.just(2), _BLOBS, _BLOBS),
        )
    if kind == "list":
        item = st.tuples(*[_kind(k, s, n) for n, k, s in sub])
        return st.builds(Seq, st.lists(item, max_size=3).map(tuple), st.sampled_from([0, 0, 1]))
    raise AssertionError(kind)


_LAYOUT_KEYS = [(n, v) for n, variants in LAYOUTS.items() for v in variants]


@st.composite
def apdus(draw: st.DrawFn) -> Apdu:
    name, variant = draw(st.sampled_from(_LAYOUT_KEYS))
    layout = LAYOUTS[name][variant][2]
    values = tuple(draw(_kind(k, s, n)) for n, k, s in layout)
    return Apdu(name, variant, values)


@FAST
@given(apdus())
def test_apdu_round_trip(a: Apdu) -> None:
    raw = encode(a)
    back = decode(raw)
    assert back == a
    assert encode(back) == raw
    describe(back)


@FAST
@given(st.binary(max_size=64))
def test_any_bytes_give_an_apdu_or_a_dlms_error(raw: bytes) -> None:
    try:
        a = decode(raw)
    except DlmsError:
        return
    assert encode(a) == raw
    assert isinstance(describe(a), str)


_SEEDS = [_raw(v) for v in PUBLISHED] + [h(c[1]) for c in CONSTRUCTED]


@FAST
@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
    st.integers(0, 400),
)
def test_mutated_vectors_give_an_apdu_or_a_dlms_error(
    seed: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    b = bytearray(seed)
    for i, v in flips:
        if b:
            b[i % len(b)] = v
    raw = bytes(b[: len(b) - cut % (len(b) + 1)])
    try:
        a = decode(raw)
    except DlmsError:
        return
    assert encode(a) == raw
    describe(a)


@FAST
@given(st.floats(width=32), st.floats())
def test_float_values_survive(f32: float, f64: float) -> None:
    for d, f in ((Data("float32", f32), f32), (Data("float64", f64), f64)):
        back = decode_data(encode_data(d))[0]
        assert isinstance(back.value, float)
        assert back.value == f or (math.isnan(f) and math.isnan(back.value))
    raw = b"\x17" + struct.pack(">f", f32)
    assert encode_data(decode_data(raw)[0]) == raw
