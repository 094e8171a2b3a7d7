"""IEC 62056-47 wrapper: wrap/unwrap, stream feeding (whole, split, merged, bytewise),
bad headers as typed errors."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.dlms import DlmsError, decode
from common.dlms.wrapper import (
    HEADER_SIZE,
    BadWrapperLength,
    BadWrapperVersion,
    Unwrapper,
    WrapperError,
    WrapperPdu,
    unwrap,
    wrap,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# get-request for 0.0.40.0.0.255 attr 2, published in a Gurux log:
# https://gist.github.com/knogi/f3d4853b936164882e5ed653498e7b61
GET = bytes.fromhex("C001C1000F0000280000FF0200")
# Its wrapped form from client wPort 16 to the management logical device, wPort 1.
WRAPPED = bytes.fromhex("0001 0010 0001 000D".replace(" ", "")) + GET


def test_wrap_and_unwrap() -> None:
    assert wrap(GET, 16, 1) == WRAPPED
    pdu = unwrap(WRAPPED)
    assert pdu == WrapperPdu(1, 16, 1, GET)
    assert decode(pdu.apdu).obis == "0.0.40.0.0.255"


def test_wrap_rejects_empty_and_oversize() -> None:
    with pytest.raises(BadWrapperLength):
        wrap(b"", 1, 1)
    with pytest.raises(BadWrapperLength):
        wrap(b"\x00" * 0x10000, 1, 1)
    with pytest.raises(ValueError):
        wrap(GET, 0x10000, 1)


def _feed(u: Unwrapper, chunks: list[bytes]) -> list[WrapperPdu]:
    out: list[WrapperPdu] = []
    for c in chunks:
        out += u.feed(c)
    return out


@pytest.mark.parametrize("how", ["whole", "bytewise", "random", "merged"])
def test_stream_feeding(how: str) -> None:
    pdus = [
        WrapperPdu(1, 16, 1, GET),
        WrapperPdu(1, 1, 16, bytes(range(200))),
        WrapperPdu(1, 2, 3, b"x"),
    ]
    stream = b"".join(wrap(p.apdu, p.source, p.destination) for p in pdus)
    if how == "whole":
        chunks = [wrap(p.apdu, p.source, p.destination) for p in pdus]
    elif how == "bytewise":
        chunks = [bytes([b]) for b in stream]
    elif how == "random":
        rng = random.Random(7)
        chunks, i = [], 0
        while i < len(stream):
            n = rng.randint(1, 40)
            chunks.append(stream[i : i + n])
            i += n
    else:
        chunks = [stream]
    u = Unwrapper()
    assert _feed(u, chunks) == pdus
    assert u.pending == 0
    assert u.pdus == 3


def test_partial_pdu_stays_pending() -> None:
    u = Unwrapper()
    assert u.feed(WRAPPED[:5]) == []
    assert u.feed(WRAPPED[5:-1]) == []
    assert u.pending == len(WRAPPED) - 1
    assert u.feed(WRAPPED[-1:] + WRAPPED[:3]) == [WrapperPdu(1, 16, 1, GET)]
    assert u.pending == 3


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("0002 0010 0001 000D", BadWrapperVersion),
        ("0000 0010 0001 000D", BadWrapperVersion),
        ("0001 0010 0001 0000", BadWrapperLength),
        ("0001 0010 0001 0401", BadWrapperLength),  # above max_length=1024
    ],
)
def test_bad_header_raises_and_poisons(header: str, error: type[WrapperError]) -> None:
    u = Unwrapper(max_length=1024)
    bad = bytes.fromhex(header.replace(" ", "")) + GET
    with pytest.raises(error) as info:
        u.feed(WRAPPED + bad)
    assert isinstance(info.value, DlmsError)
    with pytest.raises(error):
        u.feed(WRAPPED)  # the stream is unusable after an error
    with pytest.raises(WrapperError):
        unwrap(bad, max_length=1024)


def test_bad_header_detected_before_the_body_arrives() -> None:
    u = Unwrapper()
    with pytest.raises(BadWrapperVersion):
        u.feed(bytes.fromhex("0007000100100005"))


def test_unwrap_length_mismatch() -> None:
    with pytest.raises(BadWrapperLength):
        unwrap(WRAPPED + b"\x00")
    with pytest.raises(BadWrapperLength):
        unwrap(WRAPPED[: HEADER_SIZE - 1])


def test_max_length_is_checked() -> None:
    with pytest.raises(ValueError):
        Unwrapper(max_length=0)


pdu_values = st.builds(
    WrapperPdu,
    st.just(1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(min_size=1, max_size=300),
)


@FAST
@given(st.lists(pdu_values, max_size=6), st.data())
def test_any_split_gives_the_same_pdus(pdus: list[WrapperPdu], data: st.DataObject) -> None:
    stream = b"".join(wrap(p.apdu, p.source, p.destination) for p in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    u = Unwrapper()
    assert _feed(u, chunks) == pdus
    assert u.pending == 0


@FAST
@given(st.binary(max_size=80))
def test_any_bytes_give_pdus_or_a_wrapper_error(raw: bytes) -> None:
    u = Unwrapper(max_length=64)
    try:
        pdus = u.feed(raw)
    except WrapperError:
        return
    assert sum(HEADER_SIZE + len(p.apdu) for p in pdus) + u.pending == len(raw)
